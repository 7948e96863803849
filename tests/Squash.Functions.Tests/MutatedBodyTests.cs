using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.Storage;

namespace Squash.Functions.Tests;

/// <summary>
/// Every boundary is an input: valid bodies of /query, /scan and /vectors, mutated at random (a field removed, a value of
/// another type or out of any range, a body cut short or with a byte changed, fields added), must get an answer the API
/// documents — 200, or a problem+json 400/404/409/413 — and never a 500 or a hang. The seed of each case is in the message.
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class MutatedBodyTests(IndexFixture fx)
{
    private const int Cases = 150;

    private static readonly HttpStatusCode[] Documented =
        [HttpStatusCode.OK, HttpStatusCode.BadRequest, HttpStatusCode.NotFound, HttpStatusCode.Conflict, HttpStatusCode.RequestEntityTooLarge];

    /// <summary>Values that stand where another belongs: other JSON types, the edges of numbers, long and nested things.</summary>
    private static JsonNode? Odd(Random rng) => rng.Next(17) switch
    {
        0 => null,
        1 => JsonValue.Create(true),
        2 => JsonValue.Create(""),
        3 => JsonValue.Create("x"),
        4 => JsonValue.Create(0),
        5 => JsonValue.Create(-1),
        6 => JsonNode.Parse("1e308"),
        7 => JsonNode.Parse("-1e308"),
        8 => JsonValue.Create(2147483648L),
        9 => JsonValue.Create(1.5),
        10 => new JsonArray(),
        11 => new JsonObject(),
        12 => new JsonArray(1, 2),
        13 => new JsonObject { ["a"] = 1 },
        14 => JsonValue.Create("NaN"),
        15 => JsonValue.Create(new string('z', 5000)),
        _ => JsonNode.Parse(new string('[', 40) + new string(']', 40)),
    };

    private static List<JsonNode> Nodes(JsonNode root)
    {
        var all = new List<JsonNode> { root };
        for (int i = 0; i < all.Count; i++)
        {
            if (all[i] is JsonObject o) all.AddRange(o.Select(p => p.Value).OfType<JsonNode>());
            else if (all[i] is JsonArray a) all.AddRange(a.OfType<JsonNode>());
        }
        return all;
    }

    /// <summary>One to three structural changes of the body, or a textual one (cut short, a byte changed).</summary>
    private static string Mutate(string valid, Random rng)
    {
        if (rng.Next(5) == 0)
        {
            var bytes = Encoding.UTF8.GetBytes(valid);
            switch (rng.Next(3))
            {
                case 0: return Encoding.UTF8.GetString(bytes, 0, rng.Next(bytes.Length));
                // Nesting deeper than any parser's default limit, somewhere in the body.
                case 1: int at = rng.Next(valid.Length); return valid[..at] + new string('[', 300) + new string(']', 300) + valid[at..];
            }
            const string Chars = "{}[],:\"0-9e.ntf \\";
            bytes[rng.Next(bytes.Length)] = (byte)Chars[rng.Next(Chars.Length)];
            return Encoding.UTF8.GetString(bytes);
        }
        var root = JsonNode.Parse(valid)!;
        for (int change = rng.Next(1, 4); change > 0; change--)
        {
            var nodes = Nodes(root);
            var target = nodes[rng.Next(nodes.Count)];
            var parent = target.Parent;
            switch (rng.Next(4))
            {
                case 0 when parent is JsonObject o:
                    o.Remove(target.GetPropertyName());
                    break;
                case 0 when parent is JsonArray a:
                    a.RemoveAt(target.GetElementIndex());
                    break;
                case 1 when parent is JsonObject o:
                    o[target.GetPropertyName()] = Odd(rng);
                    break;
                case 1 when parent is JsonArray a:
                    a[target.GetElementIndex()] = Odd(rng);
                    break;
                case 2 when target is JsonObject o:
                    o["extra" + rng.Next(3)] = Odd(rng);
                    break;
                case 2 when target is JsonArray a:
                    a.Add(Odd(rng));
                    break;
                default:
                    if (parent is JsonArray arr && target.DeepClone() is var copy) arr.Add(copy);
                    break;
            }
        }
        return root.ToJsonString();
    }

    private static async Task AssertDocumentedAnswers(HttpClient client, string path, string valid, int seed0)
    {
        // The valid body first: a mutation test over a body that is refused anyway would test nothing.
        var ok = await client.PostAsync(path, Bodies.Json(valid));
        Assert.True(ok.StatusCode == HttpStatusCode.OK, $"the valid body of {path} was refused: {await ok.Content.ReadAsStringAsync()}");
        var failures = new List<string>();
        for (int seed = seed0; seed < seed0 + Cases; seed++)
        {
            var body = Mutate(valid, new Random(seed));
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            var response = await client.PostAsync(path, Bodies.Json(body), timeout.Token);
            var text = await response.Content.ReadAsStringAsync(timeout.Token);
            string? wrong = null;
            if (!Documented.Contains(response.StatusCode)) wrong = $"answered {(int)response.StatusCode}";
            else if (response.StatusCode != HttpStatusCode.OK)
            {
                if (response.Content.Headers.ContentType?.MediaType != "application/problem+json") wrong = $"{(int)response.StatusCode} without problem+json";
                else
                {
                    using var problem = JsonDocument.Parse(text);
                    bool names = problem.RootElement.TryGetProperty("errors", out var errors) && errors.EnumerateObject().Any()
                        || problem.RootElement.TryGetProperty("detail", out var detail) && detail.GetString() is { Length: > 0 };
                    if (!names) wrong = $"a {(int)response.StatusCode} that names nothing";
                    else if (text.Contains("   at ", StringComparison.Ordinal)) wrong = "a stack trace in the answer";
                }
            }
            if (wrong is not null) failures.Add($"seed {seed}: {wrong} to {(body.Length > 400 ? body[..400] + "…" : body)}\n  {text}");
        }
        Assert.True(failures.Count == 0, $"{failures.Count} of {Cases} mutated bodies of {path} got an undocumented answer:\n" + string.Join('\n', failures.Take(8)));
    }

    [Fact]
    public async Task MutatedQueriesGetDocumentedAnswers()
    {
        using var app = fx.App(2, 1);
        var valid = "{\"vector\":" + Bodies.Vector(fx.Queries[0]) + ",\"k\":5,\"filter\":{\"colour\":{\"$in\":[\"red\",\"blue\"]},\"price\":{\"$lt\":500},\"tags\":\"t1\"},"
            + "\"include\":[\"colour\",\"price\"],\"options\":{\"hammingKeepPercent\":50,\"branching\":2,\"depth\":1,\"consistency\":\"eventual\"}}";
        await AssertDocumentedAnswers(app.CreateClient(), $"/api/indexes/{IndexFixture.AttributedIndexName}/query", valid, 1000);
    }

    [Fact]
    public async Task MutatedScansGetDocumentedAnswers()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        using var info = JsonDocument.Parse(await client.GetStringAsync($"/api/indexes/{IndexFixture.IndexName}"));
        var scan = new JsonObject
        {
            ["version"] = info.RootElement.GetProperty("version").GetString(),
            ["vectors"] = new JsonArray(JsonNode.Parse(Bodies.Vector(fx.Queries[1]))),
            ["k"] = 5,
            ["options"] = new JsonObject(),
            ["plans"] = new JsonArray(new JsonArray(0, 1, 2, 3)),
            ["node"] = new JsonObject { ["id"] = 0, ["partitions"] = new JsonArray(0, 1, 2, 3), ["children"] = new JsonArray() },
        };
        await AssertDocumentedAnswers(client, $"/api/indexes/{IndexFixture.IndexName}/scan", scan.ToJsonString(), 2000);
    }

    [Fact]
    public async Task MutatedWritesGetDocumentedAnswers()
    {
        // Its own index: the writes that a mutation leaves valid land in its log.
        var index = "mutated-" + Guid.NewGuid().ToString("N")[..12];
        var lines = string.Join('\n', Enumerable.Range(0, 40).Select(i => $"{{\"id\":\"doc-{i}\",\"attributes\":{{\"colour\":\"c{i % 3}\",\"price\":{i}.5,\"tags\":[\"t{i % 4}\"]}}}}"));
        var rng = new Random(9);
        await IndexPublisher.BuildAndPublishAsync(new IndexStore(new FolderBlobStore(fx.Root), index),
            Enumerable.Range(0, 40 * 4).Select(_ => (float)rng.NextDouble()).ToArray(), 40, 4,
            new IndexBuildOptions { Partitions = 2, Seed = 1, Attributes = AttributeReader.ReadJsonLines(new StringReader(lines), "m.jsonl") });
        using var app = fx.App(2, 1);
        var valid = """
            {"upserts":[{"id":"doc-1","vector":[0.1,0.2,0.3,0.4],"attributes":{"colour":"c9","price":2.5,"tags":["a","b"]}},
                        {"id":"new-1","vector":[0.5,0.5,0.5,0.5]}],
             "deletes":["doc-2","doc-3"],"deleteWhere":{"price":{"$gt":30}}}
            """;
        await AssertDocumentedAnswers(app.CreateClient(), $"/api/indexes/{index}/vectors", valid, 3000);
    }
}
