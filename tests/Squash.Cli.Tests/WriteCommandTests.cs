using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Squash.LocalHost;
using Squash.Testing;

namespace Squash.Cli.Tests;

/// <summary>
/// <c>squash upsert</c> and <c>squash delete</c> through the local function host's write API: after each command, a
/// strong exact query through the function tree equals brute force over a model of what was written; bad input is one
/// error line that names the flag or the row, and says what was already written.
/// </summary>
public sealed class WriteCommandTests
{
    private const int Dims = 6, Built = 120;

    private sealed record Row(float[] Vector, string Colour);

    [Fact]
    public async Task UpsertAndDeleteThroughTheApiEqualBruteForceOverTheModel()
    {
        using var dir = new TempDir();
        var rng = new Random(61);
        string[] colours = ["red", "green", "blue"];
        var model = new Dictionary<string, Row>(StringComparer.Ordinal);
        var built = TempDir.Random(Built, Dims, 61).ToArray();
        var lines = new List<string>();
        for (int i = 0; i < Built; i++)
        {
            model[$"doc-{i}"] = new Row(built[i], colours[i % 3]);
            lines.Add($"{{\"id\":\"doc-{i}\",\"attributes\":{{\"colour\":\"{colours[i % 3]}\"}}}}");
        }
        File.WriteAllLines(dir.File("base.jsonl"), lines);
        var build = await CliRunner.RunAsync("build", "--store", "dir:" + dir.File("store"), "--index", "shop", "--vectors", dir.Fvecs("base.fvecs", built),
            "--attributes", dir.File("base.jsonl"), "--partitions", "4");
        Assert.True(build.Exit == 0, build.Err);

        await using var host = new LocalFunctionHost(new LocalHostOptions
        {
            Store = "dir:" + dir.File("store"), Port = FreePorts.Next(), ProcessorPools = 1, MaxInstancesPerPool = 1, Log = _ => { },
        });
        await host.StartAsync();
        var endpoint = host.BaseAddress.ToString().TrimEnd('/');
        using var http = new HttpClient { BaseAddress = host.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };

        // 250 upserts, 3 requests of at most 100: the first 60 replace built rows, the rest are new ids.
        var upserts = TempDir.Random(250, Dims, 62).ToArray();
        lines.Clear();
        for (int i = 0; i < upserts.Length; i++)
        {
            var id = i < 60 ? $"doc-{i * 2}" : $"new-{i}";
            model[id] = new Row(upserts[i], colours[(i + 1) % 3]);
            lines.Add($"{{\"id\":\"{id}\",\"attributes\":{{\"colour\":\"{colours[(i + 1) % 3]}\"}}}}");
        }
        File.WriteAllLines(dir.File("up.jsonl"), lines);
        var up = await CliRunner.RunAsync("upsert", "--endpoint", endpoint, "--index", "shop", "--vectors", dir.Fvecs("up.fvecs", upserts),
            "--attributes", dir.File("up.jsonl"), "--batch-size", "100", "--concurrency", "2");
        Assert.True(up.Exit == 0, up.Err);
        Assert.StartsWith("upserted 250 vector(s) into 'shop' in 3 request(s): sequences 1–3;", up.Out);
        await AssertStrongAnswers(http, model, rng, "after upsert");

        var del = await CliRunner.RunAsync("delete", "--endpoint", endpoint, "--index", "shop", "--ids", "doc-1,new-70,nothing-here");
        Assert.True(del.Exit == 0, del.Err);
        Assert.Equal("deleted 3 id(s) from 'shop' in 1 request(s): sequence 4", del.Out.Trim());
        model.Remove("doc-1");
        model.Remove("new-70");
        var where = await CliRunner.RunAsync("delete", "--endpoint", endpoint, "--index", "shop", "--where", "{\"colour\":\"red\"}");
        Assert.True(where.Exit == 0, where.Err);
        Assert.Equal("deleted what matches --where from 'shop': sequence 5", where.Out.Trim());
        foreach (var id in model.Where(e => e.Value.Colour == "red").Select(e => e.Key).ToList()) model.Remove(id);
        await AssertStrongAnswers(http, model, rng, "after deletes");

        // Rows without ids take --first-id; an index with string ids refuses nothing here ("7" is a string id).
        var plain = await CliRunner.RunAsync("upsert", "--endpoint", endpoint, "--index", "shop", "--vectors", dir.Fvecs("plain.fvecs", TempDir.Random(2, Dims, 63)),
            "--first-id", "7");
        Assert.True(plain.Exit == 0, plain.Err);
        Assert.StartsWith("upserted 2 vector(s) into 'shop' in 1 request(s): sequence 6;", plain.Out);

        // A refused request names its rows and each bad item by row; requests acknowledged before it are said to be durable.
        var bad = upserts.Take(3).ToArray();
        File.WriteAllLines(dir.File("bad.jsonl"), [
            "{\"id\":\"b-0\",\"attributes\":{\"colour\":\"red\"}}",
            "{\"id\":\"b-1\",\"attributes\":{\"colour\":\"red\"}}",
            "{\"id\":\"b-2\",\"attributes\":{\"size\":3}}",
        ]);
        var refused = await CliRunner.RunAsync("upsert", "--endpoint", endpoint, "--index", "shop", "--vectors", dir.Fvecs("bad.fvecs", bad),
            "--attributes", dir.File("bad.jsonl"), "--batch-size", "2", "--concurrency", "1", "--idempotency-key", "run-1");
        CliRunner.AssertOneErrorLine(refused.Exit, refused.Err,
            "request 1 (row 2) was refused: row 2 (attributes.size): is not an attribute of the index (it has: colour); "
            + "2 item(s) in 1 other request(s) were written (sequence 7); after fixing the input, run again with --idempotency-key run-1 to send the rest without repeating them");
        // Run again with the same key and the row fixed: request 0 is recognised (not written twice), request 1 lands.
        File.WriteAllLines(dir.File("bad.jsonl"), [
            "{\"id\":\"b-0\",\"attributes\":{\"colour\":\"red\"}}",
            "{\"id\":\"b-1\",\"attributes\":{\"colour\":\"red\"}}",
            "{\"id\":\"b-2\",\"attributes\":{\"colour\":\"blue\"}}",
        ]);
        var again = await CliRunner.RunAsync("upsert", "--endpoint", endpoint, "--index", "shop", "--vectors", dir.File("bad.fvecs"),
            "--attributes", dir.File("bad.jsonl"), "--batch-size", "2", "--concurrency", "1", "--idempotency-key", "run-1");
        Assert.True(again.Exit == 0, again.Err);
        Assert.StartsWith("upserted 3 vector(s) into 'shop' in 2 request(s): sequences 7–8;", again.Out);

        CliRunner.AssertOneErrorLine((await CliRunner.RunAsync("upsert", "--endpoint", endpoint, "--index", "shop", "--vectors", dir.Fvecs("wide.fvecs", TempDir.Random(1, Dims + 1, 1)), "--first-id", "0")) is var w ? w.Exit : 0, w.Err,
            $"--vectors: '{dir.File("wide.fvecs")}' has {Dims + 1} dimensions but index 'shop' has {Dims}");
        CliRunner.AssertOneErrorLine((await CliRunner.RunAsync("upsert", "--endpoint", endpoint, "--index", "nope", "--vectors", dir.File("plain.fvecs"), "--first-id", "0")) is var n ? n.Exit : 0, n.Err,
            "--index: the endpoint has no index named 'nope' (build it first: writes need its schema and dimensions)");
        CliRunner.AssertOneErrorLine((await CliRunner.RunAsync("upsert", "--endpoint", endpoint, "--index", "shop", "--vectors", dir.File("plain.fvecs"))) is var f ? f.Exit : 0, f.Err,
            "--first-id is required when the rows carry no ids (no --attributes with an 'id' per row): row i is then written as id FIRST-ID + i");
        File.WriteAllLines(dir.File("twice.jsonl"), ["{\"id\":\"x\"}", "{\"id\":\"x\"}"]);
        CliRunner.AssertOneErrorLine((await CliRunner.RunAsync("upsert", "--endpoint", endpoint, "--index", "shop", "--vectors", dir.File("plain.fvecs"), "--attributes", dir.File("twice.jsonl"))) is var t ? t.Exit : 0, t.Err,
            "--vectors: id 'x' is given to rows 0 and 1; give each id once per run (requests in flight land in any order)");
        CliRunner.AssertOneErrorLine((await CliRunner.RunAsync("delete", "--endpoint", endpoint, "--index", "shop", "--ids", "a", "--where", "{}")) is var d ? d.Exit : 0, d.Err,
            "give exactly one of --ids, --ids-file and --where");
        CliRunner.AssertOneErrorLine((await CliRunner.RunAsync("upsert", "--endpoint", endpoint, "--index", "shop", "--vectors", dir.File("plain.fvecs"), "--first-id", "0", "--batch-size", "1001")) is var b ? b.Exit : 0, b.Err,
            "--batch-size must be 1 to 1000, got 1001");
    }

    private static async Task AssertStrongAnswers(HttpClient http, Dictionary<string, Row> model, Random rng, string context)
    {
        for (int q = 0; q < 4; q++)
        {
            var query = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
            var body = $"{{\"vector\":[{string.Join(",", query.Select(x => x.ToString("R", CultureInfo.InvariantCulture)))}],\"k\":10,\"options\":{{\"exact\":true,\"consistency\":\"strong\"}}}}";
            using var response = await http.PostAsync("api/indexes/shop/query", new StringContent(body, Encoding.UTF8, "application/json"));
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, $"{context}: {text}");
            var expected = model.Select(e => (Id: e.Key, D: Math.Sqrt(e.Value.Vector.Select((x, j) => (double)(x - query[j]) * (x - query[j])).Sum())))
                .OrderBy(x => x.D).Take(10).ToArray();
            using var doc = JsonDocument.Parse(text);
            var got = doc.RootElement.GetProperty("results").EnumerateArray().Select(r => (Id: r.GetProperty("id").GetString()!, D: (double)r.GetProperty("distance").GetSingle())).ToArray();
            Assert.True(expected.Length == got.Length, $"{context} query {q}: {got.Length} results, expected {expected.Length}");
            for (int i = 0; i < got.Length; i++) Assert.Equal(expected[i].D, got[i].D, 4);
            Assert.True(expected.Select(e => e.Id).ToHashSet().SetEquals(got.Select(g => g.Id)),
                $"{context} query {q}: expected [{string.Join(", ", expected.Select(e => e.Id))}] got [{string.Join(", ", got.Select(g => g.Id))}]");
        }
    }
}
