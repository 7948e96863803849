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
}
