using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.Storage;

namespace Squash.Functions.Tests;

/// <summary>
/// Strong reads through the HTTP API and the invocation tree: after every write of a random sequence (upserts that add
/// or replace, deletes, deletes by filter, new category values), an exact strong query equals brute force over a plain
/// in-memory model of the data, with and without a filter; an eventual query still answers from the published version.
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class StrongReadTests(IndexFixture fx)
{
    private const int Dims = 4, Rows = 60;
    private static readonly string[] Colours = ["red", "blue", "green"];

    private sealed record Item(float[] Vector, string? Colour, double? Price, long? N);

    /// <summary>A filter as JSON for the API and as a predicate for the model (written independently of the server's code).</summary>
    private sealed record Filter(string Json, Func<Item, bool> Matches);

    private static string F(double x) => x.ToString("R", CultureInfo.InvariantCulture);

    private static Filter RandomFilter(Random rng) => rng.Next(5) switch
    {
        0 => new("""{"colour":"green"}""", i => i.Colour == "green"),
        1 => new("""{"colour":{"$in":["red","green"]}}""", i => i.Colour is "red" or "green"),
        2 => rng.NextDouble() is var p ? new($"{{\"price\":{{\"$lt\":{F(p * 60)}}}}}", i => i.Price < p * 60) : null!,
        3 => rng.Next(60) is var n ? new($"{{\"$or\":[{{\"n\":{{\"$gte\":{n}}}}},{{\"colour\":{{\"$exists\":false}}}}]}}", i => i.N >= n || i.Colour is null) : null!,
        _ => new("""{"$not":{"colour":"blue"}}""", i => i.Colour != "blue"),
    };

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 0)]
    [InlineData(3, 2)]
    public async Task StrongExactQueriesEqualBruteForceAfterEveryWrite(int seed, int depth)
    {
        var rng = new Random(seed);
        var index = "strong-" + Guid.NewGuid().ToString("N")[..12];
        var model = new Dictionary<string, Item>(StringComparer.Ordinal);
        var data = new float[Rows * Dims];
        var lines = new StringBuilder();
        for (int i = 0; i < Rows; i++)
        {
            var v = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
            v.CopyTo(data, i * Dims);
            var item = new Item(v, Colours[i % 2], i + 0.5, i);
            model[$"doc-{i}"] = item;
            lines.AppendLine($"{{\"id\":\"doc-{i}\",\"attributes\":{{\"colour\":\"{item.Colour}\",\"price\":{F(item.Price!.Value)},\"n\":{item.N}}}}}");
        }
        await IndexPublisher.BuildAndPublishAsync(new IndexStore(new FolderBlobStore(fx.Root), index), data, Rows, Dims, new IndexBuildOptions
        {
            Partitions = 4, Seed = seed, Attributes = AttributeReader.ReadJsonLines(new StringReader(lines.ToString()), "s.jsonl"),
        });
        var published = model.ToDictionary(e => e.Key, e => e.Value);
        using var app = fx.App(2, depth);
        var client = app.CreateClient();
        int newIds = 0;

        for (int step = 0; step < 25; step++)
        {
            // One write: a batch of upserts (new ids and replacements, some without attributes), deletes, or a delete by filter.
            var body = new StringBuilder("{");
            int kind = rng.Next(4);
            if (kind == 0)
            {
                var where = RandomFilter(rng);
                body.Append($"\"deleteWhere\":{where.Json}");
                foreach (var id in model.Where(e => where.Matches(e.Value)).Select(e => e.Key).ToArray()) model.Remove(id);
            }
            else if (kind == 1)
            {
                var ids = Enumerable.Range(0, rng.Next(1, 4)).Select(_ => rng.Next(3) == 0 ? $"gone-{rng.Next(100)}" : model.Keys.ElementAtOrDefault(rng.Next(Math.Max(1, model.Count))) ?? "none").Distinct().ToArray();
                body.Append("\"deletes\":[" + string.Join(',', ids.Select(id => $"\"{id}\"")) + "]");
                foreach (var id in ids) model.Remove(id);
            }
            else
            {
                var items = new List<string>();
                var used = new HashSet<string>();
                for (int u = rng.Next(1, 6); u > 0; u--)
                {
                    var id = rng.Next(2) == 0 && model.Count > 0 ? model.Keys.ElementAt(rng.Next(model.Count)) : $"new-{newIds++}";
                    if (!used.Add(id)) continue;
                    var v = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
                    Item item = rng.Next(5) == 0 ? new Item(v, null, null, null) : new Item(v, Colours[rng.Next(3)], Math.Round(rng.NextDouble() * 60, 2), rng.Next(60));
                    model[id] = item;
                    var attributes = item.Colour is null ? "" : $",\"attributes\":{{\"colour\":\"{item.Colour}\",\"price\":{F(item.Price!.Value)},\"n\":{item.N}}}";
                    items.Add($"{{\"id\":\"{id}\",\"vector\":{Bodies.Vector(v)}{attributes}}}");
                }
                body.Append("\"upserts\":[" + string.Join(',', items) + "]");
            }
            body.Append('}');
            var written = await client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json(body.ToString()));
            Assert.True(written.StatusCode == HttpStatusCode.OK, $"seed {seed} step {step}: {await written.Content.ReadAsStringAsync()}");

            // Reads: strong sees the model (with and without a filter); eventual still sees the published version.
            var query = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
            var filter = rng.Next(2) == 0 ? RandomFilter(rng) : null;
            await AssertAnswer(client, index, query, filter, "strong", model, $"seed {seed} step {step} strong {filter?.Json}");
            if (step % 5 == 0) await AssertAnswer(client, index, query, filter, "eventual", published, $"seed {seed} step {step} eventual {filter?.Json}");
        }
    }

    private static async Task AssertAnswer(HttpClient client, string index, float[] query, Filter? filter, string consistency,
        Dictionary<string, Item> model, string context)
    {
        const int k = 10;
        var filterPart = filter is null ? "" : $",\"filter\":{filter.Json}";
        var response = await client.PostAsync($"/api/indexes/{index}/query",
            Bodies.Json($"{{\"vector\":{Bodies.Vector(query)},\"k\":{k}{filterPart},\"include\":[\"colour\"],\"options\":{{\"exact\":true,\"consistency\":\"{consistency}\"}}}}"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{context}: {text}");
        using var doc = JsonDocument.Parse(text);
        var expected = model.Where(e => filter is null || filter.Matches(e.Value))
            .Select(e => (Id: e.Key, D: Math.Sqrt(e.Value.Vector.Select((x, j) => (double)(x - query[j]) * (x - query[j])).Sum()), e.Value.Colour))
            .OrderBy(x => x.D).Take(k).ToArray();
        var results = doc.RootElement.GetProperty("results").EnumerateArray().ToArray();
        Assert.True(expected.Select(e => e.Id).SequenceEqual(results.Select(r => r.GetProperty("id").GetString())),
            $"{context}: expected [{string.Join(", ", expected.Select(e => $"{e.Id} {e.D:F5}"))}] got [{string.Join(", ", results.Select(r => $"{r.GetProperty("id").GetString()} {r.GetProperty("distance").GetSingle():F5}"))}]");
        for (int i = 0; i < results.Length; i++)
        {
            Assert.Equal(expected[i].D, results[i].GetProperty("distance").GetSingle(), 4);
            var colour = results[i].GetProperty("attributes").TryGetProperty("colour", out var c) ? c.GetString() : null;
            Assert.True(expected[i].Colour == colour, $"{context}: {expected[i].Id} has colour {expected[i].Colour}, the answer says {colour}");
        }
        Assert.Equal(0, doc.RootElement.GetProperty("indexedSequence").GetInt64());
        Assert.Equal(consistency == "strong", doc.RootElement.TryGetProperty("tailItems", out _));
    }

    [Fact]
    public async Task ConsistencyIsValidatedAndScanNodesRefuseIt()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var bad = await Problems.BadRequest(await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query",
            Bodies.Json("{\"vector\":" + Bodies.Vector(new float[IndexFixture.Dims]) + ",\"options\":{\"consistency\":\"linearizable\"}}")));
        Assert.Equal(["must be \"strong\" or \"eventual\", got \"linearizable\""], bad["options.consistency"]);
    }
}
