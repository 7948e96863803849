using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Squash.LocalHost;
using Squash.Storage;
using Squash.Testing;

namespace Squash.Cli.Tests;

/// <summary>
/// A build from files publishes watermark 0 and takes the write log again on top of the files; after <c>squash gc --log</c>
/// deleted the log's oldest batches, only the batches still there can be taken (docs/writes.md, gc). Before, a build over
/// such a log left an index whose ingest failed on the first deleted batch ("log batch 1 … is missing although a later
/// one exists") and whose strong queries were a 500.
/// </summary>
public sealed class BuildAfterLogGcTests
{
    private const int Dims = 6, Built = 120;

    [Fact]
    public async Task ABuildAfterGcLogTakesTheLogFromItsOldestBatchLeftInIngestAndStrongReads()
    {
        using var dir = new TempDir();
        var rng = new Random(71);
        string store = "dir:" + dir.File("store");
        var files = new Dictionary<string, float[]>(StringComparer.Ordinal);
        var built = TempDir.Random(Built, Dims, 71).ToArray();
        for (int i = 0; i < Built; i++) files[$"doc-{i}"] = built[i];
        File.WriteAllLines(dir.File("base.jsonl"), Enumerable.Range(0, Built).Select(i => $"{{\"id\":\"doc-{i}\",\"attributes\":{{\"shelf\":\"s{i % 3}\"}}}}"));
        var vectors = dir.Fvecs("base.fvecs", built);
        async Task Build()
        {
            var build = await CliRunner.RunAsync("build", "--store", store, "--index", "shop", "--vectors", vectors, "--attributes", dir.File("base.jsonl"),
                "--partitions", "4", "--no-calibration");
            Assert.True(build.Exit == 0, build.Err);
        }
        await Build();

        await using var host = new LocalFunctionHost(new LocalHostOptions
        {
            Store = store, Port = FreePorts.Next(), ProcessorPools = 1, MaxInstancesPerPool = 1, Log = _ => { },
            AppSettings = new Dictionary<string, string> { ["Squash:CurrentRecheck"] = "00:00:00" },
        });
        await host.StartAsync();
        var endpoint = host.BaseAddress.ToString().TrimEnd('/');
        using var http = new HttpClient { BaseAddress = host.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };

        // Sequences 1–2 replace doc-0…9 and add new-0…9, 3 deletes doc-50, 4 replaces doc-10…14 and adds new-100…104.
        async Task Upsert(string name, string[] ids, float[][] rows)
        {
            File.WriteAllLines(dir.File(name + ".jsonl"), ids.Select(id => $"{{\"id\":\"{id}\",\"attributes\":{{\"shelf\":\"w\"}}}}"));
            var up = await CliRunner.RunAsync("upsert", "--endpoint", endpoint, "--index", "shop", "--vectors", dir.Fvecs(name + ".fvecs", rows),
                "--attributes", dir.File(name + ".jsonl"), "--batch-size", "10", "--concurrency", "1");
            Assert.True(up.Exit == 0, up.Err);
        }
        var first = TempDir.Random(20, Dims, 72).ToArray();
        var firstIds = Enumerable.Range(0, 10).Select(i => $"doc-{i}").Concat(Enumerable.Range(0, 10).Select(i => $"new-{i}")).ToArray();
        await Upsert("first", firstIds, first);
        var del = await CliRunner.RunAsync("delete", "--endpoint", endpoint, "--index", "shop", "--ids", "doc-50");
        Assert.True(del.Exit == 0, del.Err);
        var last = TempDir.Random(10, Dims, 73).ToArray();
        var lastIds = Enumerable.Range(10, 5).Select(i => $"doc-{i}").Concat(Enumerable.Range(100, 5).Select(i => $"new-{i}")).ToArray();
        await Upsert("last", lastIds, last);

        var ingest = await CliRunner.RunAsync("ingest", "--store", store, "--index", "shop");
        Assert.True(ingest.Exit == 0, ingest.Err);
        Assert.StartsWith("batches 1–4:", ingest.Out);
        var gc = await CliRunner.RunAsync("gc", "--store", store, "--index", "shop", "--keep", "0", "--grace", "0", "--log");
        Assert.True(gc.Exit == 0, gc.Err);
        Assert.Contains("write log: deleted 3 batch(es) at or below sequence 4", gc.Out);

        // The files again: the new version holds them and nothing of the log, which ingest takes from batch 4, the oldest left.
        await Build();
        var model = new Dictionary<string, float[]>(files, StringComparer.Ordinal);
        for (int i = 0; i < lastIds.Length; i++) model[lastIds[i]] = last[i];
        await AssertExactAnswers(http, model, rng, "strong", 0, "built over the trimmed log");
        using (var info = JsonDocument.Parse(await http.GetStringAsync("api/indexes/shop")))
        {
            var root = info.RootElement;
            Assert.Equal((0L, 4L, 1L), (root.GetProperty("indexedSequence").GetInt64(), root.GetProperty("latestSequence").GetInt64(), root.GetProperty("lag").GetInt64()));
            Assert.True(root.TryGetProperty("lagSeconds", out _), $"batch 4 waits, so its age is the lag: {root}");
        }

        var again = await CliRunner.RunAsync("ingest", "--store", store, "--index", "shop");
        Assert.True(again.Exit == 0, again.Err);
        Assert.StartsWith("batches 4–4: 10 upserts, 5 rows removed", again.Out);
        var m = await new IndexStore(new FolderBlobStore(dir.File("store")), "shop").OpenCurrentAsync();
        Assert.Equal((4L, (long)model.Count), (m.IndexedSequence, m.Count));
        await AssertExactAnswers(http, model, rng, "eventual", 4, "ingested over the trimmed log");

        // Writing goes on past the end of the log.
        var more = await CliRunner.RunAsync("delete", "--endpoint", endpoint, "--index", "shop", "--ids", "new-100,doc-0");
        Assert.True(more.Exit == 0, more.Err);
        Assert.Equal("deleted 2 id(s) from 'shop' in 1 request(s): sequence 5", more.Out.Trim());
        model.Remove("new-100");
        model.Remove("doc-0");
        await AssertExactAnswers(http, model, rng, "strong", 4, "written after");
    }

    /// <summary>Exact queries at <paramref name="consistency"/> answer the model's 10 nearest and report <paramref name="watermark"/>.</summary>
    private static async Task AssertExactAnswers(HttpClient http, Dictionary<string, float[]> model, Random rng, string consistency, long watermark, string context)
    {
        for (int q = 0; q < 6; q++)
        {
            var query = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
            var body = $"{{\"vector\":[{string.Join(",", query.Select(x => x.ToString("R", CultureInfo.InvariantCulture)))}],\"k\":10,"
                + $"\"options\":{{\"exact\":true,\"consistency\":\"{consistency}\"}}}}";
            using var response = await http.PostAsync("api/indexes/shop/query", new StringContent(body, Encoding.UTF8, "application/json"));
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, $"{context}: {text}");
            using var doc = JsonDocument.Parse(text);
            Assert.Equal(watermark, doc.RootElement.GetProperty("indexedSequence").GetInt64());
            var expected = model.Select(e => (Id: e.Key, D: Math.Sqrt(e.Value.Select((x, j) => (double)(x - query[j]) * (x - query[j])).Sum())))
                .OrderBy(x => x.D).Take(10).ToArray();
            var got = doc.RootElement.GetProperty("results").EnumerateArray().Select(r => (Id: r.GetProperty("id").GetString()!, D: (double)r.GetProperty("distance").GetSingle())).ToArray();
            Assert.True(expected.Select(e => e.Id).ToHashSet().SetEquals(got.Select(g => g.Id)),
                $"{context}, {consistency} query {q}: expected [{string.Join(", ", expected.Select(e => e.Id))}] got [{string.Join(", ", got.Select(g => g.Id))}]");
            for (int i = 0; i < got.Length; i++) Assert.Equal(expected[i].D, got[i].D, 4);
        }
    }
}
