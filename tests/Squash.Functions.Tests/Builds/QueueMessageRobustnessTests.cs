using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Squash.Functions.Writes;
using Squash.Storage;

namespace Squash.Functions.Tests.Builds;

/// <summary>
/// Queue messages that are late, replayed or name what cannot be read: each is a logged no-op or a dropped message that
/// names the reason, never a failed job that had succeeded, a bare 500, or a message that asks again forever.
/// </summary>
[Collection(nameof(BuildQueueCollection))]
public sealed class QueueMessageRobustnessTests
{
    private static async Task<(int Status, string[] Logs)> Invoke(BuildTestApp app, string function, string binding, string messageText, int dequeue = 1)
    {
        var payload = JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["Data"] = new Dictionary<string, object> { [binding] = messageText },
            ["Metadata"] = new Dictionary<string, object> { ["DequeueCount"] = dequeue.ToString(), ["Id"] = "\"m-1\"" },
        });
        using var response = await app.Client.PostAsync("/" + function, new StringContent(payload, Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        using var doc = JsonDocument.Parse(text);
        var logs = doc.RootElement.TryGetProperty("Logs", out var l) ? l.EnumerateArray().Select(x => x.GetString()!).ToArray() : [text];
        return ((int)response.StatusCode, logs);
    }

    private static string Message(string buildId, string stage, int task) =>
        $$"""{"index":"products","buildId":"{{buildId}}","stage":"{{stage}}","task":{{task}}}""";

    /// <summary>
    /// Every stage's message delivered again after the build succeeded is skipped and the index stays as published; one
    /// naming a task the build never had is skipped too (before, the log said "failed: bad message" of a build that had
    /// succeeded and still had).
    /// </summary>
    [Fact]
    public async Task MessagesDeliveredAgainAfterTheBuildSucceededAreSkippedAndChangeNothing()
    {
        using var app = await BuildTestApp.StartAsync();
        var rng = new Random(1);
        await app.UploadAsync("data/base.fvecs", BuildTestApp.Fvecs(Enumerable.Range(0, 400 * 4).Select(_ => (float)rng.NextDouble()).ToArray(), 4));
        var buildId = await app.SubmitOkAsync("products", """{"source":{"vectors":"data/base.fvecs"},"options":{"partitions":4}}""");
        var built = await app.RunToEndAsync("products", buildId);
        Assert.Equal("succeeded", built.GetProperty("status").GetString());
        var current = await new IndexStore(app.Store, "products").GetCurrentAsync();

        foreach (var (stage, task) in new[] { ("train", 0), ("assign", 0), ("encode", 0), ("publish", 0), ("assign", 99) })
        {
            var (status, logs) = await Invoke(app, "build-" + stage, "task", Message(buildId, stage, task));
            Assert.Equal(200, status);
            Assert.Equal([$"build {buildId} is succeeded: {stage}[{task}] skipped"], logs);
        }
        var after = await app.ShowAsync("products", buildId);
        Assert.Equal("succeeded", after.GetProperty("status").GetString());
        Assert.False(after.TryGetProperty("error", out var error) && error.ValueKind != JsonValueKind.Null, after.ToString());
        Assert.Equal(current, await new IndexStore(app.Store, "products").GetCurrentAsync());
    }

    /// <summary>
    /// A job record that is not JSON: its task message is dropped with a line naming the record (no delivery could read it;
    /// before, each was a bare 500 until the poison queue), and show and cancel are 500 problems naming it (the list
    /// shows it apart: <see cref="OneDamagedJobRecordDoesNotHideTheIndexsOtherBuilds"/>).
    /// </summary>
    [Fact]
    public async Task ADamagedJobRecordDropsItsMessagesAndTheBuildsApiNamesIt()
    {
        using var app = await BuildTestApp.StartAsync();
        await app.UploadAsync("data/base.fvecs", BuildTestApp.Fvecs(new float[40 * 4], 4));
        var buildId = await app.SubmitOkAsync("products", """{"source":{"vectors":"data/base.fvecs"},"options":{"partitions":2}}""");
        var record = $"products/builds/{buildId}/job.json";
        await app.Store.WriteAsync(record, Encoding.UTF8.GetBytes("{\"buildId\":"), WriteCondition.Overwrite);

        var (status, logs) = await Invoke(app, "build-train", "task", Message(buildId, "train", 0));
        Assert.Equal(200, status);
        var line = Assert.Single(logs);
        Assert.StartsWith($"dropped message train[0]: build record '{record}' is not valid: ", line);
        Assert.EndsWith("; the build cannot go on (delete the record, and build again)", line);

        foreach (var response in new[]
        {
            await app.Client.GetAsync($"/api/indexes/products/builds/{buildId}"),
            await app.Client.DeleteAsync($"/api/indexes/products/builds/{buildId}"),
        })
        {
            var problem = await Problems.Read(response, HttpStatusCode.InternalServerError);
            Assert.Equal("Build record damaged", problem.GetProperty("title").GetString());
            Assert.StartsWith($"build record '{record}' is not valid: ", problem.GetProperty("detail").GetString());
        }
    }

    /// <summary>
    /// Records damaged two ways (not JSON; JSON whose required "stages" is null) among good ones: the list answers 200 with
    /// the good builds under "builds" and each damaged one under "damaged", newest first, naming its record and what is
    /// wrong; show of each is the 500 problem naming the record. Before, one such record made the whole list a 500, and
    /// the null "stages" made show a bare 500.
    /// </summary>
    [Fact]
    public async Task OneDamagedJobRecordDoesNotHideTheIndexsOtherBuilds()
    {
        using var app = await BuildTestApp.StartAsync();
        await app.UploadAsync("data/base.fvecs", BuildTestApp.Fvecs(new float[40 * 4], 4));
        var ids = new List<string>();
        for (int i = 0; i < 4; i++)
            ids.Add(await app.SubmitOkAsync("products", """{"source":{"vectors":"data/base.fvecs"},"options":{"partitions":2,"seed":""" + i + "}}"));
        ids.Sort(StringComparer.Ordinal);
        string Record(string id) => $"products/builds/{id}/job.json";
        await app.Store.WriteAsync(Record(ids[1]), Encoding.UTF8.GetBytes("not json"), WriteCondition.Overwrite);
        var shapeless = JsonNode.Parse(await app.Store.ReadAllAsync(Record(ids[2])))!.AsObject();
        shapeless["stages"] = null;
        await app.Store.WriteAsync(Record(ids[2]), Encoding.UTF8.GetBytes(shapeless.ToJsonString()), WriteCondition.Overwrite);

        using var response = await app.Client.GetAsync("/api/indexes/products/builds");
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"HTTP {(int)response.StatusCode}: {text}");
        using var list = JsonDocument.Parse(text);
        Assert.Equal([ids[3], ids[0]], list.RootElement.GetProperty("builds").EnumerateArray().Select(b => b.GetProperty("buildId").GetString()!).ToArray());
        Assert.All(list.RootElement.GetProperty("builds").EnumerateArray(), b => Assert.Equal("queued", b.GetProperty("status").GetString()));
        var damaged = list.RootElement.GetProperty("damaged").EnumerateArray().ToArray();
        Assert.Equal([ids[2], ids[1]], damaged.Select(d => d.GetProperty("buildId").GetString()!).ToArray());
        Assert.Equal([Record(ids[2]), Record(ids[1])], damaged.Select(d => d.GetProperty("record").GetString()!).ToArray());
        Assert.Equal($"build record '{Record(ids[2])}' is not valid: 'stages' is null", damaged[0].GetProperty("problem").GetString());
        Assert.StartsWith($"build record '{Record(ids[1])}' is not valid: ", damaged[1].GetProperty("problem").GetString());

        foreach (var id in new[] { ids[1], ids[2] })
        {
            var problem = await Problems.Read(await app.Client.GetAsync($"/api/indexes/products/builds/{id}"), HttpStatusCode.InternalServerError);
            Assert.Equal("Build record damaged", problem.GetProperty("title").GetString());
            Assert.StartsWith($"build record '{Record(id)}' is not valid: ", problem.GetProperty("detail").GetString());
        }
        // Without a damaged record the field is absent, as before.
        using var other = JsonDocument.Parse(await app.Client.GetStringAsync("/api/indexes/others/builds"));
        Assert.False(other.RootElement.TryGetProperty("damaged", out _), other.RootElement.ToString());
    }

    /// <summary>
    /// A calibrate message naming an index that is not published is dropped with a line saying so. Before, the run counted
    /// it a failed calibration, wrote a lease under that name and sent itself again after its back-off, for ever.
    /// </summary>
    [Fact]
    public async Task ACalibrateMessageForAnIndexThatIsNotPublishedIsDroppedAndNotSentAgain()
    {
        using var app = await BuildTestApp.StartAsync();
        var queue = BuildTestApp.Queue(CalibrationEndpoints.QueueName);
        await queue.CreateIfNotExistsAsync();
        await queue.ClearMessagesAsync();

        var (status, logs) = await Invoke(app, CalibrationEndpoints.FunctionName, "message", "{\"index\":\"nope\"}");
        Assert.Equal(200, status);
        Assert.Equal(["calibrate nope: no index named 'nope' is published; nothing to calibrate"], logs);
        Assert.Equal(0, (await queue.GetPropertiesAsync()).Value.ApproximateMessagesCount); // invisible ones count too
        Assert.Empty(await app.Store.ListAsync("nope/").ToListAsync());
    }

    /// <summary>
    /// A calibrate message on an index that is damaged for good (its current pointer is not a pointer): the first failure
    /// asks again after its back-off; once LogIngest.MaxCalibrationAttempts failed in a row the function gives up with a
    /// line naming the index and the last error, and sends nothing again. Before, it sent itself again after each
    /// back-off (30 s up to 30 min), for ever.
    /// </summary>
    [Fact]
    public async Task ACalibrateMessageOnADamagedIndexGivesUpAfterTheMaximumAttemptsAndIsNotSentAgain()
    {
        using var app = await BuildTestApp.StartAsync();
        var queue = BuildTestApp.Queue(CalibrationEndpoints.QueueName);
        await queue.CreateIfNotExistsAsync();
        await queue.ClearMessagesAsync();
        await app.Store.WriteAsync("broken/current", Encoding.UTF8.GetBytes("not a pointer"), WriteCondition.Overwrite);

        var (status, logs) = await Invoke(app, CalibrationEndpoints.FunctionName, "message", "{\"index\":\"broken\"}");
        Assert.Equal(200, status);
        Assert.StartsWith("calibrate broken: failed: CorruptIndexException: ", Assert.Single(logs));
        Assert.Equal(1, (await queue.GetPropertiesAsync()).Value.ApproximateMessagesCount); // asked again after the back-off
        await queue.ClearMessagesAsync();

        // The lease as the attempt before the last one leaves it (its back-off over): the next failure is the last.
        var lease = Squash.Storage.Writes.IngestLease.CalibrationNameFor("broken");
        await app.Store.WriteAsync(lease, Encoding.UTF8.GetBytes(
            $$"""{"holder":"earlier","expiresUtc":"2000-01-01T00:00:00+00:00","failures":{{Squash.Search.Writes.LogIngest.MaxCalibrationAttempts - 1}}}"""), WriteCondition.Overwrite);
        (status, logs) = await Invoke(app, CalibrationEndpoints.FunctionName, "message", "{\"index\":\"broken\"}");
        Assert.Equal(200, status);
        var line = Assert.Single(logs);
        Assert.StartsWith($"calibrate broken: failed {Squash.Search.Writes.LogIngest.MaxCalibrationAttempts} times in a row, the last: CorruptIndexException: ", line);
        Assert.Contains("given up, not retried", line);
        Assert.Equal(0, (await queue.GetPropertiesAsync()).Value.ApproximateMessagesCount); // invisible ones count too
    }
}
