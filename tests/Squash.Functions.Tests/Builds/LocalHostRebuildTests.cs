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
using Squash.Testing;

namespace Squash.Functions.Tests.Builds;

/// <summary>
/// The full rebuild end to end on the local host (`squash serve --store azure:…`) and Azurite: writes replace more than half
/// the rows, the queue-triggered ingest queues one rebuild, the build-stage functions run it, writes keep arriving while it
/// runs, and the ingest function publishes it with those writes applied: the watermark never moves back, and exact eventual
/// queries then equal brute force over everything written.
/// </summary>
[Collection(nameof(BuildQueueCollection))]
public sealed class LocalHostRebuildTests
{
    private const int Rows = 200, Dims = 6;


    [Fact]
    public async Task ReplacingMoreThanHalfTheRowsRebuildsThroughTheQueueWithWritesAppliedOnTop()
    {
        const int seed = 23;
        var rng = new Random(seed);
        var index = await LocalHostWriteIndex.BuildAsync("rebuild", rng, seed, Rows, Dims);
        var (blobs, store, model) = (index.Blobs, index.Store, index.Model);
        var built = (await store.GetCurrentAsync())!.Value.Version;

        await using var host = index.Host();
        await host.StartAsync();
        using var client = new HttpClient { BaseAddress = host.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };

        long latest = 0, watermark = 0;
        async Task WriteAsync(IEnumerable<string> ids)
        {
            var items = ids.Select(id =>
            {
                var v = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
                model[id] = v;
                return $"{{\"id\":\"{id}\",\"vector\":{Bodies.Vector(v)},\"attributes\":{{\"shelf\":\"s{rng.Next(5)}\"}}}}";
            }).ToArray();
            using var written = await client.PostAsync("/api/indexes/items/vectors", new StringContent("{\"upserts\":[" + string.Join(',', items) + "]}", Encoding.UTF8, "application/json"));
            var text = await written.Content.ReadAsStringAsync();
            Assert.True(written.StatusCode == HttpStatusCode.OK, text);
            latest = JsonDocument.Parse(text).RootElement.GetProperty("sequence").GetInt64();
        }
        async Task<JsonElement> InfoAsync()
        {
            var info = JsonDocument.Parse(await client.GetStringAsync("/api/indexes/items")).RootElement.Clone();
            long indexed = info.GetProperty("indexedSequence").GetInt64();
            Assert.True(indexed >= watermark, $"the watermark moved back from {watermark}: {info}");
            watermark = indexed;
            return info;
        }

        // 120 of 200 rows replaced, 20 a request: past half, ingest queues one rebuild.
        var order = model.Keys.OrderBy(_ => rng.Next()).Take(120).ToArray();
        foreach (var chunk in order.Chunk(20)) await WriteAsync(chunk);

        // Writes keep arriving (and are indexed) while the rebuild runs, until ingest has published it.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(240);
        int fresh = 0, during = 0;
        JsonElement rebuild;
        while (true)
        {
            var info = await InfoAsync();
            if (info.TryGetProperty("rebuild", out rebuild) && rebuild.GetProperty("status").GetString() is "published" or "failed" or "cancelled" or "superseded") break;
            Assert.True(DateTime.UtcNow < deadline, $"the rebuild was not published: {info}");
            if (during < 10) { await WriteAsync([$"new-{fresh++}", model.Keys.ElementAt(rng.Next(model.Count))]); during++; }
            await Task.Delay(300);
        }
        Assert.Equal("published", rebuild.GetProperty("status").GetString());
        var buildId = rebuild.GetProperty("buildId").GetString()!;

        // The ingest function catches up with the last writes; the current version descends from the rebuild.
        while (true)
        {
            var info = await InfoAsync();
            if (info.GetProperty("indexedSequence").GetInt64() == latest) break;
            Assert.True(DateTime.UtcNow < deadline, $"ingest did not catch up: {info}");
            await Task.Delay(200);
        }
        var m = await store.OpenCurrentAsync();
        var job = (await new BuildJobStore(blobs).GetAsync("items", buildId))!.Value.Job;
        Assert.Equal(job.Version, m.BuiltFrom);
        Assert.NotEqual(built, m.Lineage);
        Assert.Equal(model.Count, m.Count);
        // Exactly one rebuild.
        Assert.Single(await new BuildJobStore(blobs).ListAsync("items", 10));

        await index.AssertExactAnswersAsync(client, rng, latest);
    }
}
