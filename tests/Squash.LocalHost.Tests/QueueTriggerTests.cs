using Squash.Functions;
using System.Diagnostics;
using System.Text.Json;
using Squash.Testing;

namespace Squash.LocalHost.Tests;

/// <summary>
/// The local host runs queue-triggered functions as the Functions host does, end to end: messages on Azurite queues,
/// the probe handler as real processes on the builder pool, invocations over HTTP with the custom-handler payload.
/// </summary>
public sealed class QueueTriggerTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60); // a bound, not a speed claim: a loaded machine starts processes slowly

    [Fact]
    public async Task TheHandlerGetsTheHostsPayloadAndARetryComesWithTheNextDequeueCount()
    {
        await using var run = await ProbeRun.CreateAsync();
        // A quote and non-ASCII letters: the host escapes only what JSON requires, as Newtonsoft does.
        const string text = """{"id":"payload","mode":"failFirst","note":"a \"quoted\" wörd"}""";
        var sent = (await run.SendAsync(text)).Value;

        await run.UntilAsync(async () => run.Records("payload") is [_, { Outcome: "succeeded" }] && await ProbeRun.CountAsync(run.Queue) == 0,
            Deadline, "the message failed once, succeeded on its second delivery and was deleted");

        var records = run.Records("payload");
        Assert.Equal([1, 2], records.Select(r => r.DequeueCount));
        Assert.Equal("failed", records[0].Outcome);
        foreach (var (record, delivery) in records.Zip([1, 2]))
        {
            var request = record.Request;
            Assert.Equal("POST", request.GetProperty("method").GetString());
            Assert.Equal("/probe", request.GetProperty("path").GetString());
            Assert.StartsWith("application/json", request.GetProperty("contentType").GetString());
            Assert.True(Guid.TryParse(request.GetProperty("invocationId").GetString(), out _));
            Assert.Equal(QueueInvocation.HostVersion, request.GetProperty("hostVersion").GetString());
            Assert.Equal("Azure-Functions-Host/" + QueueInvocation.HostVersion, request.GetProperty("userAgent").GetString());

            var body = record.Body;
            Assert.Equal(["Data", "Metadata"], body.EnumerateObject().Select(p => p.Name));
            // Data.task: the message text JSON-encoded again (a JSON string holding the message's JSON text).
            var data = body.GetProperty("Data");
            Assert.Equal(["task"], data.EnumerateObject().Select(p => p.Name));
            Assert.Equal("\"" + text.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"", data.GetProperty("task").GetString());

            var metadata = body.GetProperty("Metadata");
            Assert.Equal(["DequeueCount", "ExpirationTime", "Id", "InsertionTime", "NextVisibleTime", "PopReceipt", "sys"],
                metadata.EnumerateObject().Select(p => p.Name));
            // Primitives as their JSON text: a number's digits, a string quoted.
            Assert.Equal(delivery.ToString(), metadata.GetProperty("DequeueCount").GetString());
            Assert.Equal("\"" + sent.MessageId + "\"", metadata.GetProperty("Id").GetString());
            Assert.Equal(sent.InsertionTime, Quoted<DateTimeOffset>(metadata, "InsertionTime"));
            Assert.Equal(sent.ExpirationTime, Quoted<DateTimeOffset>(metadata, "ExpirationTime"));
            Assert.True(Quoted<DateTimeOffset>(metadata, "NextVisibleTime") > sent.InsertionTime);
            Assert.NotEmpty(Quoted<string>(metadata, "PopReceipt"));
            var sys = metadata.GetProperty("sys");
            Assert.Equal("probe", sys.GetProperty("MethodName").GetString());
            Assert.True(DateTime.TryParse(sys.GetProperty("UtcNow").GetString(), out _));
            Assert.True(Guid.TryParse(sys.GetProperty("RandGuid").GetString(), out _));
        }
        Assert.NotEqual(records[0].Request.GetProperty("invocationId").GetString(), records[1].Request.GetProperty("invocationId").GetString());
        Assert.Equal(0, await ProbeRun.CountAsync(run.Poison));

        // Metered like HTTP invocations: both deliveries are executions of the builder pool, with busy time and a cost.
        var builder = run.Host.Snapshot().Pools.Single(p => p.Pool == "builder");
        Assert.Equal(2, builder.Executions);
        Assert.True(builder.BusySeconds > 0);
        Assert.True(builder.CostUsd > 0);
        Assert.Equal(1, builder.ColdStarts);
        // /admin/instances shows the builder pool.
        using var client = new HttpClient { BaseAddress = run.Host.BaseAddress, Timeout = Deadline };
        using var admin = JsonDocument.Parse(await client.GetStringAsync("/admin/instances"));
        var pool = admin.RootElement.GetProperty("pools").EnumerateArray().Single(p => p.GetProperty("pool").GetString() == "builder");
        Assert.Equal(2, pool.GetProperty("executions").GetInt64());
        // The builder pool takes no HTTP traffic: it is not a processor pool.
        using var routed = await client.GetAsync("/pools/builder/");
        Assert.Equal(System.Net.HttpStatusCode.NotFound, routed.StatusCode);
    }

    [Fact]
    public async Task ASuccessIsDeletedAndAMessageThatAlwaysFailsEndsInThePoisonQueueAfterMaxDequeueCount()
    {
        await using var run = await ProbeRun.CreateAsync();
        const string failing = """{"id":"bad","mode":"fail"}""";
        await run.SendAsync(failing);
        await run.SendAsync("""{"id":"good"}""");

        await run.UntilAsync(async () => await ProbeRun.CountAsync(run.Poison) == 1 && await ProbeRun.CountAsync(run.Queue) == 0,
            Deadline, "the failing message reached the poison queue and the queue emptied");

        Assert.Equal([1], run.Records("good").Select(r => r.DequeueCount));
        Assert.Equal("succeeded", run.Records("good")[0].Outcome);
        // host.json maxDequeueCount is 3: three deliveries, each failed, then the poison queue (no fourth invocation).
        Assert.Equal([1, 2, 3], run.Records("bad").Select(r => r.DequeueCount));
        Assert.All(run.Records("bad"), r => Assert.Equal("failed", r.Outcome));
        var poisoned = (await run.Poison.ReceiveMessagesAsync(32)).Value;
        Assert.Equal([failing], poisoned.Select(m => m.MessageText));
        Assert.Empty((await run.Queue.PeekMessagesAsync(32)).Value);
        Assert.Contains(run.Reports, line => line.Contains($"moved to {run.QueueName}-poison", StringComparison.Ordinal) && line.Contains("HTTP 500", StringComparison.Ordinal));
        var snapshot = run.Host.Snapshot();
        Assert.Equal(4, snapshot.Pools.Single(p => p.Pool == "builder").Executions);
        // The listeners' own queue requests are billed: at least a receive, two retry delays (update), a send to the poison
        // queue and two deletes; priced as queue operations and part of the total.
        Assert.True(snapshot.QueueListenerOperations >= 6, $"{snapshot.QueueListenerOperations} queue requests");
        Assert.Equal(snapshot.QueueListenerOperations * PriceTable.QueuePer10k / 10_000, snapshot.QueueListenerCostUsd, 15);
        Assert.Equal(snapshot.Pools.Sum(p => p.CostUsd) + snapshot.QueueListenerCostUsd, snapshot.TotalCostUsd, 15);
        Assert.Contains("Azure Storage", snapshot.StoragePricing, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AMessageThatIsNotBase64GoesToThePoisonQueueWithoutAnInvocation()
    {
        await using var run = await ProbeRun.CreateAsync();
        const string foreign = "not base64: {\"id\":\"foreign\"}";
        await run.RawQueue.SendMessageAsync(foreign);
        await run.SendAsync("""{"id":"after"}""");

        await run.UntilAsync(async () => await ProbeRun.CountAsync(run.Poison) == 1 && run.Records("after") is [{ Outcome: "succeeded" }] && await ProbeRun.CountAsync(run.Queue) == 0,
            Deadline, "the undecodable message was poisoned and the next one ran");

        Assert.Empty(run.Records("foreign"));
        // Read back with the app's encoding, the poison queue holds exactly what the foreign producer wrote.
        Assert.Equal([foreign], (await run.Poison.ReceiveMessagesAsync(32)).Value.Select(m => m.MessageText));
        Assert.Contains(run.Reports, line => line.Contains("is not valid base64", StringComparison.Ordinal));
    }

    [Fact]
    public async Task AnInstanceKilledMidInvocationGetsTheMessageRedeliveredToANewInstance()
    {
        await using var run = await ProbeRun.CreateAsync();
        await run.SendAsync("""{"id":"killed","mode":"slowFirst","ms":60000}""");
        await run.UntilAsync(() => run.Records("killed").Count == 1, Deadline, "the first delivery started");
        var first = run.Records("killed")[0];
        Process.GetProcessById(first.Pid).Kill();

        await run.UntilAsync(async () => run.Records("killed") is [_, { Outcome: "succeeded" }] && await ProbeRun.CountAsync(run.Queue) == 0,
            Deadline, "the message was redelivered, succeeded and was deleted");

        var records = run.Records("killed");
        Assert.Equal([1, 2], records.Select(r => r.DequeueCount));
        Assert.Null(records[0].Outcome);
        Assert.NotEqual(first.Pid, records[1].Pid);
        var builder = run.Host.Pools["builder"];
        Assert.Equal(1, builder.Replaced);
        Assert.Equal(2, builder.ColdStarts);
        Assert.Equal(0, await ProbeRun.CountAsync(run.Poison));
    }

    [Fact]
    public async Task AnInvocationLongerThanTheLeaseIsNotDeliveredTwiceWhileItRuns()
    {
        // Leased for 3 s, renewed at half-time; the invocation takes 7.5 s (2.5 leases). A renewal may come up to 1.5 s
        // late (a loaded machine, another copy of the suite) before the message would reappear.
        await using var run = await ProbeRun.CreateAsync(lease: TimeSpan.FromSeconds(3));
        await run.SendAsync("""{"id":"long","mode":"slow","ms":7500}""");

        await run.UntilAsync(async () => run.Records("long") is [{ Outcome: "succeeded" }] && await ProbeRun.CountAsync(run.Queue) == 0,
            Deadline, "the long invocation finished and its message was deleted");

        // A second poll round after it, so that a message left visible by a lost lease would have been received again.
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.Equal([1], run.Records("long").Select(r => r.DequeueCount));
        Assert.Equal(1, run.Host.Snapshot().Pools.Single(p => p.Pool == "builder").Executions);
    }

    [Fact]
    public async Task ALongQueueStartsMoreThanOneBuilderInstanceUpToTheCap()
    {
        // Queued before the host starts, so the scaler's first look sees them all: 12 messages at batchSize 2 want 6 instances; the cap is 3.
        await using var run = await ProbeRun.CreateAsync(startHost: false);
        for (int i = 0; i < 12; i++) await run.SendAsync($$"""{"id":"m{{i}}","mode":"slow","ms":1500}""");
        await run.StartHostAsync(maxBuilders: 3);

        await run.UntilAsync(async () => run.Records().Count(r => r.Outcome == "succeeded") == 12 && await ProbeRun.CountAsync(run.Queue) == 0,
            Deadline, "all 12 messages ran and were deleted");

        var records = run.Records();
        Assert.Equal(12, records.Count);
        Assert.All(records, r => Assert.Equal(1, r.DequeueCount)); // none delivered twice
        int processes = records.Select(r => r.Pid).Distinct().Count();
        Assert.InRange(processes, 2, 3);
        var builder = run.Host.Pools["builder"];
        Assert.InRange(builder.ColdStarts, 2, 3);
        Assert.Equal(12, builder.Meter().Executions);
    }

    /// <summary>
    /// One instance never runs more than batchSize + newBatchThreshold invocations of a function at once (host.json: 2 + the
    /// default 1): it takes a new batch only when no more than newBatchThreshold are left running. Without that rule it
    /// would take every message of the queue at once.
    /// </summary>
    [Fact]
    public async Task AnInstanceRunsAtMostBatchSizePlusNewBatchThresholdAtOnce()
    {
        await using var run = await ProbeRun.CreateAsync(startHost: false);
        for (int i = 0; i < 8; i++) await run.SendAsync($$"""{"id":"c{{i}}","mode":"slow","ms":{{600 + 150 * i}}}""");
        await run.StartHostAsync(maxBuilders: 1);

        await run.UntilAsync(async () => run.Records().Count(r => r.Outcome == "succeeded") == 8 && await ProbeRun.CountAsync(run.Queue) == 0,
            Deadline, "all 8 messages ran on the one instance");

        // Each invocation's span on the instance: from its record to its outcome file.
        var spans = Directory.EnumerateFiles(run.RecordFolder, "*.json").Select(file =>
        {
            var started = DateTime.Parse(JsonDocument.Parse(File.ReadAllText(file)).RootElement.GetProperty("startedUtc").GetString()!, null, System.Globalization.DateTimeStyles.RoundtripKind);
            return (Start: started, End: File.GetLastWriteTimeUtc(Path.ChangeExtension(file, ".done")));
        }).ToList();
        int most = spans.Max(s => spans.Count(o => o.Start <= s.Start && s.Start < o.End));
        Assert.InRange(most, 2, 3);
        Assert.Single(run.Records().Select(r => r.Pid).Distinct());
    }

    [Fact]
    public async Task AFolderStoreRunsNoQueueListener()
    {
        var folder = Directory.CreateTempSubdirectory("squash-queue-dir-");
        try
        {
            await using var host = new LocalFunctionHost(new LocalHostOptions
            {
                Store = "dir:" + folder.FullName, Port = FreePorts.Next(), AppPath = ProbeRun.ProbeApp, LogFolder = Path.Combine(folder.FullName, "logs"),
                AppSettings = new Dictionary<string, string> { ["PROBE_QUEUE"] = "unused", ["PROBE_RECORDS"] = folder.FullName },
            });
            await host.StartAsync();
            Assert.Null(host.QueueTriggers);
            Assert.DoesNotContain("builder", host.Pools.Keys);
        }
        finally { folder.Delete(true); }
    }

    /// <summary>A metadata value sent as the JSON text of a string: parsed twice.</summary>
    private static T Quoted<T>(JsonElement metadata, string name) => JsonSerializer.Deserialize<T>(metadata.GetProperty(name).GetString()!)!;
}
