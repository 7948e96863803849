using System.Text.Json;
using System.Text.Json.Nodes;
using Squash.Cli.Commands;
using Squash.Functions.Api;

namespace Squash.Cli.Tests;

/// <summary>`query --json` speaks the HTTP API's vocabulary: id = the user's id, row = the row number, camelCase stats.</summary>
public sealed class JsonOutputTests
{
    /// <summary>The stats the HTTP API reports (AnswerStats), in its JSON names.</summary>
    private static readonly HashSet<string> HttpStatsNames = typeof(AnswerStats).GetProperties()
        .Select(p => JsonNamingPolicy.CamelCase.ConvertName(p.Name)).ToHashSet();

    private static void AssertHttpVocabulary(JsonObject answer, int query)
    {
        Assert.Equal(["query", "results", "complete", "missingPartitions", "stats"], answer.Select(p => p.Key));
        Assert.Equal(query, answer["query"]!.GetValue<int>());
        Assert.True(answer["complete"]!.GetValue<bool>());
        Assert.Empty(answer["missingPartitions"]!.AsArray());
        foreach (var key in answer["stats"]!.AsObject().Select(p => p.Key))
            Assert.True(HttpStatsNames.Contains(key), $"stats.{key} is not a name the HTTP API uses");
    }

    [Fact]
    public async Task InProcessAnswersUseIdForTheUsersIdAndRowForTheRowNumber()
    {
        using var dir = new TempDir();
        var rows = TempDir.Random(300, 6, 11).ToArray();
        var vectors = dir.Fvecs("base.fvecs", rows);
        var queries = dir.Fvecs("q.fvecs", [rows[7], rows[42]]);
        File.WriteAllText(dir.File("a.jsonl"), string.Concat(Enumerable.Range(0, rows.Length).Select(i => $"{{\"id\":\"sku-{i}\",\"attributes\":{{\"n\":{i}}}}}\n")));
        var (bexit, _, berr) = await CliRunner.RunAsync("build", "--index", dir.File("ids"), "--vectors", vectors, "--partitions", "3", "--attributes", dir.File("a.jsonl"));
        Assert.True(bexit == 0, berr);
        var (exit, output, err) = await CliRunner.RunAsync("query", "--index", dir.File("ids"), "--vectors", queries, "--k", "3", "--json", "--exact");
        Assert.True(exit == 0, err);
        var lines = output.Trim().Split('\n').Select(l => JsonNode.Parse(l)!.AsObject()).ToArray();
        Assert.Equal(2, lines.Length);
        for (int q = 0; q < 2; q++)
        {
            AssertHttpVocabulary(lines[q], q);
            var best = lines[q]["results"]!.AsArray()[0]!.AsObject();
            Assert.Equal(["id", "row", "distance"], best.Select(p => p.Key));
            int row = q == 0 ? 7 : 42; // each query is a stored vector: its own row is nearest, at distance 0
            Assert.Equal($"sku-{row}", best["id"]!.GetValue<string>());
            Assert.Equal(row, best["row"]!.GetValue<long>());
            Assert.True(best["distance"]!.GetValue<float>() < 1e-3f, best.ToJsonString());
        }
        Assert.True(lines[0]["stats"]!["partitionsScanned"]!.GetValue<int>() > 0);
    }

    [Fact]
    public async Task WithoutIdsTheIdIsTheRowNumberAndAStoreAddsWhatTheQueryRead()
    {
        using var dir = new TempDir();
        var rows = TempDir.Random(300, 6, 12).ToArray();
        var vectors = dir.Fvecs("base.fvecs", rows);
        var queries = dir.Fvecs("q.fvecs", [rows[5]]);
        var store = "dir:" + dir.File("store");
        var (bexit, _, berr) = await CliRunner.RunAsync("build", "--store", store, "--index", "plain", "--vectors", vectors, "--partitions", "3");
        Assert.True(bexit == 0, berr);
        var (exit, output, err) = await CliRunner.RunAsync("query", "--store", store, "--index", "plain", "--vectors", queries, "--k", "2", "--json");
        Assert.True(exit == 0, err);
        var answer = JsonNode.Parse(output.Trim())!.AsObject();
        AssertHttpVocabulary(answer, 0);
        var best = answer["results"]!.AsArray()[0]!.AsObject();
        Assert.Equal(5, best["id"]!.GetValue<long>());
        Assert.Equal(5, best["row"]!.GetValue<long>());
        var stats = answer["stats"]!.AsObject();
        Assert.True(stats["bytesRead"]!.GetValue<long>() > 0);
        Assert.Equal(0, stats["cacheHits"]!.GetValue<int>());
        Assert.True(stats["cacheMisses"]!.GetValue<int>() > 0);
    }

    /// <summary>Through --endpoint the HTTP answer is printed as it came, with the query's number in front.</summary>
    [Fact]
    public void EndpointAnswersGetTheQueryNumberFirst()
    {
        var http = """{"results":[{"id":"a","row":3,"distance":0.5}],"complete":true,"missingPartitions":[],"stats":{"invocations":1}}""";
        Assert.Equal("""{"query":4,"results":[{"id":"a","row":3,"distance":0.5}],"complete":true,"missingPartitions":[],"stats":{"invocations":1}}""",
            CliJson.WithQueryNumber(4, http));
    }
}
