using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Squash.Functions.Writes;
using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.LocalHost;
using Squash.Storage;
using Squash.Storage.Builds;
using Squash.Storage.Writes;
using Squash.Testing;

namespace Squash.Functions.Tests.Builds;

/// <summary>
/// Writes through the local host (`squash serve --store azure:…`) on Azurite: every acknowledged write queues an ingest,
/// the queue-triggered <c>ingest</c> function applies the log, and the published version's watermark reaches the last
/// acknowledged sequence; eventual exact queries then equal brute force over the written data.
/// </summary>
[Collection(nameof(BuildQueueCollection))]
public sealed class LocalHostIngestTests
{
    private const int Rows = 200, Dims = 6, Writes = 30;


    [Fact]
    public async Task WritesThroughTheLocalHostAreIngestedByTheQueueFunctionAndVisibleToEventualQueries()
    {
        const int seed = 17;
        var rng = new Random(seed);
        var index = await LocalHostWriteIndex.BuildAsync("ingest", rng, seed, Rows, Dims);
        var model = index.Model;

        await using var host = index.Host();
        await host.StartAsync();
        using var client = new HttpClient { BaseAddress = host.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };

        int fresh = 0;
        for (int w = 0; w < Writes; w++)
        {
            string body;
            if (rng.Next(4) == 0)
            {
                var id = model.Keys.ElementAt(rng.Next(model.Count));
                model.Remove(id);
                body = $"{{\"deletes\":[\"{id}\"]}}";
            }
            else
            {
                var items = new List<string>();
                for (int u = 0; u < 5; u++)
                {
                    var id = rng.Next(2) == 0 ? model.Keys.ElementAt(rng.Next(model.Count)) : $"new-{fresh++}";
                    if (items.Any(x => x.Contains($"\"{id}\"", StringComparison.Ordinal))) continue;
                    var v = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
                    model[id] = v;
                    items.Add($"{{\"id\":\"{id}\",\"vector\":{Bodies.Vector(v)},\"attributes\":{{\"shelf\":\"s{rng.Next(5)}\"}}}}");
                }
                body = "{\"upserts\":[" + string.Join(',', items) + "]}";
            }
            using var written = await client.PostAsync("/api/indexes/items/vectors", new StringContent(body, Encoding.UTF8, "application/json"));
            Assert.True(written.StatusCode == HttpStatusCode.OK, $"write {w}: {await written.Content.ReadAsStringAsync()}");
        }

        // The queue function catches up: the watermark reaches the last acknowledged sequence (deadline: 120 s).
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(120);
        JsonElement info;
        while (true)
        {
            info = JsonDocument.Parse(await client.GetStringAsync("/api/indexes/items")).RootElement.Clone();
            if (info.GetProperty("indexedSequence").GetInt64() == Writes) break;
            Assert.True(DateTime.UtcNow < deadline, $"ingest did not catch up: {info}");
            await Task.Delay(200);
        }
        Assert.Equal(Writes, info.GetProperty("latestSequence").GetInt64());

        await index.AssertExactAnswersAsync(client, rng, Writes);
    }

    /// <summary>
    /// A build through the queue after <c>gc --log</c> deleted the oldest batches: the build publishes watermark 0, and the
    /// log is taken again from its oldest batch left (docs/writes.md, gc) — by strong reads at once, and by the ingest
    /// function once the next write asks for it. The deleted batches' writes are not in the new version. Before, the
    /// strong reads were a 500 and every ingest failed on "log batch 1 … is missing although a later one exists".
    /// </summary>
    [Fact]
    public async Task AQueueBuildAfterGcLogTakesTheLogFromItsOldestBatchLeft()
    {
        const int seed = 23;
        var rng = new Random(seed);
        var index = await LocalHostWriteIndex.BuildAsync("gclog", rng, seed, Rows, Dims);
        var files = new Dictionary<string, float[]>(index.Model, StringComparer.Ordinal);
        // The same rows as a build source: item-i is row i, its shelf s(i mod 3), as LocalHostWriteIndex built them.
        var data = Enumerable.Range(0, Rows).SelectMany(i => files[$"item-{i}"]).ToArray();
        await index.Blobs.WriteAsync("src/items.fvecs", BuildTestApp.Fvecs(data, Dims), WriteCondition.Overwrite);
        await index.Blobs.WriteAsync("src/items.jsonl", Encoding.UTF8.GetBytes(string.Join('\n',
            Enumerable.Range(0, Rows).Select(i => $"{{\"id\":\"item-{i}\",\"attributes\":{{\"shelf\":\"s{i % 3}\"}}}}"))), WriteCondition.Overwrite);

        await using var host = index.Host(new Dictionary<string, string> { ["Squash:CurrentRecheck"] = "00:00:00" });
        await host.StartAsync();
        using var client = new HttpClient { BaseAddress = host.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        float[] Vector() => Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
        async Task Write(string body, long sequence)
        {
            using var written = await client.PostAsync("/api/indexes/items/vectors", new StringContent(body, Encoding.UTF8, "application/json"));
            var text = await written.Content.ReadAsStringAsync();
            Assert.True(written.StatusCode == HttpStatusCode.OK, text);
            Assert.Contains($"\"sequence\":{sequence}", text);
        }
        string Upsert(string id, float[] v) => $"{{\"id\":\"{id}\",\"vector\":{Bodies.Vector(v)},\"attributes\":{{\"shelf\":\"w\"}}}}";
        async Task<JsonElement> IngestedThrough(long sequence)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(120);
            while (true)
            {
                var info = JsonDocument.Parse(await client.GetStringAsync("/api/indexes/items")).RootElement.Clone();
                if (info.GetProperty("indexedSequence").GetInt64() == sequence) return info;
                Assert.True(DateTime.UtcNow < deadline, $"ingest did not reach sequence {sequence}: {info}");
                await Task.Delay(200);
            }
        }

        // 1 and 2 are deleted by gc below; 3, the newest, stays.
        await Write("{\"upserts\":[" + Upsert("item-0", Vector()) + "," + Upsert("new-0", Vector()) + "]}", 1);
        await Write("{\"deletes\":[\"item-1\"]}", 2);
        var (replaced, added) = (Vector(), Vector());
        await Write("{\"upserts\":[" + Upsert("item-2", replaced) + "," + Upsert("new-1", added) + "],\"deletes\":[\"item-3\"]}", 3);
        await IngestedThrough(3);
        // What `squash gc --log` does.
        var gc = await index.Store.CollectGarbageAsync(keep: 0, grace: TimeSpan.Zero);
        Assert.Equal(3, gc.LogIndexedByAllKept);
        Assert.Equal(2, await new WriteLog(index.Blobs, "items").DeleteBatchesThroughAsync(3));

        using var submit = await client.PostAsync("/api/indexes/items/builds", new StringContent(
            $"{{\"source\":{{\"vectors\":\"src/items.fvecs\",\"attributes\":\"src/items.jsonl\"}},\"options\":{{\"partitions\":5,\"seed\":{seed},\"calibrate\":false}}}}",
            Encoding.UTF8, "application/json"));
        Assert.True(submit.StatusCode == HttpStatusCode.Accepted, await submit.Content.ReadAsStringAsync());
        var buildDeadline = DateTime.UtcNow + TimeSpan.FromSeconds(240);
        JsonElement view;
        while (true)
        {
            view = JsonDocument.Parse(await client.GetStringAsync(submit.Headers.Location!.OriginalString)).RootElement.Clone();
            if (BuildStatus.IsTerminal(view.GetProperty("status").GetString()!)) break;
            Assert.True(DateTime.UtcNow < buildDeadline, $"the build did not finish in time: {view}");
            await Task.Delay(200);
        }
        Assert.True(view.GetProperty("status").GetString() == "succeeded" && view.GetProperty("current").GetBoolean(), view.ToString());

        // The files, and of the log only batch 3.
        var model = new Dictionary<string, float[]>(files, StringComparer.Ordinal) { ["item-2"] = replaced, ["new-1"] = added };
        model.Remove("item-3");
        await index.AssertExactAnswersAsync(client, rng, 0, "strong", model);
        var waiting = JsonDocument.Parse(await client.GetStringAsync("/api/indexes/items")).RootElement;
        Assert.Equal((0L, 3L, 1L), (waiting.GetProperty("indexedSequence").GetInt64(), waiting.GetProperty("latestSequence").GetInt64(), waiting.GetProperty("lag").GetInt64()));

        // The next write asks for an ingest, which applies batches 3 and 4 on top of the build.
        await Write("{\"deletes\":[\"new-1\",\"item-4\"]}", 4);
        model.Remove("new-1");
        model.Remove("item-4");
        await index.AssertExactAnswersAsync(client, rng, 0, "strong", model);
        await IngestedThrough(4);
        await index.AssertExactAnswersAsync(client, rng, 4, "eventual", model);
        var m = await index.Store.OpenCurrentAsync();
        Assert.Equal(model.Count, m.Count);
    }

    /// <summary>
    /// The app's own queue requests are storage operations of the invocation that sends them: an upsert's ingest trigger
    /// (the queue's creation on the instance's first use, then the send), the SDK's retry of a refused request included,
    /// comes back in the queue count of <c>x-squash-storage-ops</c>, equal to what reached the queue service, and the
    /// host's meter bills exactly that many queue operations to the pool that ran it.
    /// </summary>
    [Fact]
    public async Task AnUpsertReportsEveryQueueRequestItSentRetriesIncludedAndTheMeterBillsThem()
    {
        const int seed = 29;
        var rng = new Random(seed);
        var index = await LocalHostWriteIndex.BuildAsync("queueops", rng, seed, Rows, Dims);
        // Only the app's instances talk to the queues through the proxy; the host's listeners go straight to Azurite.
        await using var proxy = await CountingQueueProxy.StartAsync(AzuriteTestStore.ConnectionString);
        await using var host = index.Host(new Dictionary<string, string> { ["AzureWebJobsStorage"] = proxy.ConnectionString });
        await host.StartAsync();
        using var client = new HttpClient { BaseAddress = host.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        // A warm coordinator first: its start-up is not the upsert's.
        (await client.GetAsync("/api/indexes/items")).EnsureSuccessStatusCode();
        long QueueOperationsMetered() => host.Snapshot().Pools.Single(p => p.Pool == "coordinator").StorageOperations.QueueOperations;
        long wireBefore = proxy.Requests, meteredBefore = QueueOperationsMetered();
        Assert.Equal(0, wireBefore);

        proxy.RefuseNext(1);
        var v = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
        using var written = await client.PostAsync("/api/indexes/items/vectors", new StringContent(
            $"{{\"upserts\":[{{\"id\":\"new-0\",\"vector\":{Bodies.Vector(v)},\"attributes\":{{\"shelf\":\"s1\"}}}}]}}", Encoding.UTF8, "application/json"));
        Assert.True(written.StatusCode == HttpStatusCode.OK, await written.Content.ReadAsStringAsync());
        // Read at once: the ingest it asked for is invisible for a second, so nothing else has reached the queues yet.
        long wire = proxy.Requests - wireBefore, metered = QueueOperationsMetered() - meteredBefore;

        var reported = StorageOperations.ParseHeader(written.Headers.GetValues(StorageOperationsHeader.Name).Single());
        Assert.NotNull(reported);
        // Create Queue refused, its retry, Put Message.
        Assert.Equal(3, wire);
        Assert.Equal(wire, reported.Value.QueueOperations);
        Assert.Equal(wire, metered);
    }
}
