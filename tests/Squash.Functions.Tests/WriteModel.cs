using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.Storage;

namespace Squash.Functions.Tests;

/// <summary>
/// What the write tests share (strong reads, ingest): a small index built from random rows with attributes (colour, price,
/// n) and optionally string ids, a plain in-memory model of its rows, random writes through the HTTP API applied to the
/// model too (upserts that add or replace — with category values and numbers the build never saw, vectors far outside the
/// built data, some without attributes —, deletes, deletes by filter), and exact queries checked against brute force
/// over the model. The model and the filters' predicates are written independently of the server's code.
/// </summary>
internal static class WriteModel
{
    public const int Dims = 4, Rows = 60;
    private static readonly string[] BuiltColours = ["red", "blue"];
    private static readonly string[] Colours = ["red", "blue", "green", "purple"];

    public sealed record Item(float[] Vector, string? Colour, double? Price, long? N);

    /// <summary>A filter as JSON for the API and as a predicate for the model.</summary>
    public sealed record Filter(string Json, Func<Item, bool> Matches);

    public static string F(double x) => x.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>Row i's id: "doc-i" with ids, else its row number.</summary>
    public static string IdOf(bool withIds, int i) => withIds ? $"doc-{i}" : i.ToString(CultureInfo.InvariantCulture);

    // Prices were built in [0.5, 59.5]; writes go up to 150 and below 0, past the edge cells.
    public static Filter RandomFilter(Random rng) => rng.Next(6) switch
    {
        0 => new("""{"colour":"green"}""", i => i.Colour == "green"),
        1 => new("""{"colour":{"$in":["red","purple"]}}""", i => i.Colour is "red" or "purple"),
        2 => rng.NextDouble() is var p ? new($"{{\"price\":{{\"$lt\":{F(p * 160 - 10)}}}}}", i => i.Price < p * 160 - 10) : null!,
        3 => rng.Next(60) is var n ? new($"{{\"$or\":[{{\"n\":{{\"$gte\":{n}}}}},{{\"colour\":{{\"$exists\":false}}}}]}}", i => i.N >= n || i.Colour is null) : null!,
        4 => rng.NextDouble() is var q ? new($"{{\"price\":{{\"$gt\":{F(q * 160 - 10)}}}}}", i => i.Price > q * 160 - 10) : null!,
        _ => new("""{"$not":{"colour":"blue"}}""", i => i.Colour != "blue"),
    };

    /// <summary>Builds and publishes the index in a folder store at <paramref name="root"/>; returns the model of its rows.</summary>
    public static async Task<(Dictionary<string, Item> Model, IndexStore Store)> BuildAsync(string root, string index, int seed, bool withIds, int partitions = 4)
    {
        var rng = new Random(seed);
        var model = new Dictionary<string, Item>(StringComparer.Ordinal);
        var data = new float[Rows * Dims];
        var lines = new StringBuilder();
        for (int i = 0; i < Rows; i++)
        {
            var v = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
            v.CopyTo(data, i * Dims);
            var item = new Item(v, BuiltColours[i % 2], i + 0.5, i);
            model[IdOf(withIds, i)] = item;
            var id = withIds ? $"\"id\":\"doc-{i}\"," : "";
            lines.AppendLine($"{{{id}\"attributes\":{{\"colour\":\"{item.Colour}\",\"price\":{F(item.Price!.Value)},\"n\":{item.N}}}}}");
        }
        var store = new IndexStore(new FolderBlobStore(root), index);
        await IndexPublisher.BuildAndPublishAsync(store, data, Rows, Dims, new IndexBuildOptions
        {
            Partitions = partitions, Seed = seed, Attributes = AttributeReader.ReadJsonLines(new StringReader(lines.ToString()), "s.jsonl"),
        });
        return (model, store);
    }

    /// <summary>One random write through the API, applied to the model too.</summary>
    public static async Task WriteAsync(HttpClient client, string index, Random rng, Dictionary<string, Item> model, Func<string> newId, string context)
    {
        var body = new StringBuilder("{");
        int kind = rng.Next(5);
        if (kind == 0)
        {
            body.Append(DeleteWhere(rng, model));
        }
        else if (kind == 1)
        {
            var ids = Enumerable.Range(0, rng.Next(1, 4))
                .Select(_ => rng.Next(3) == 0 ? newId() : model.Keys.ElementAtOrDefault(rng.Next(Math.Max(1, model.Count))) ?? newId()).Distinct().ToArray();
            body.Append("\"deletes\":[" + string.Join(',', ids.Select(id => $"\"{id}\"")) + "]");
            foreach (var id in ids) model.Remove(id);
        }
        else
        {
            var items = new List<string>();
            var used = new HashSet<string>();
            for (int u = rng.Next(1, 8); u > 0; u--)
            {
                var id = rng.Next(2) == 0 && model.Count > 0 ? model.Keys.ElementAt(rng.Next(model.Count)) : newId();
                if (!used.Add(id)) continue;
                // Some vectors far outside the built data (past the partitions' radii and outer code cells).
                double scale = rng.Next(6) == 0 ? 4 : 1;
                var v = Enumerable.Range(0, Dims).Select(_ => (float)((rng.NextDouble() - (scale > 1 ? 0.5 : 0)) * scale)).ToArray();
                Item item = rng.Next(5) == 0 ? new Item(v, null, null, null) : new Item(v, Colours[rng.Next(Colours.Length)], Math.Round(rng.NextDouble() * 160 - 10, 2), rng.Next(80));
                model[id] = item;
                items.Add(Upsert(id, item));
            }
            body.Append("\"upserts\":[" + string.Join(',', items) + "]");
        }
        body.Append('}');
        await PostAsync(client, index, body.ToString(), context);
    }

    /// <summary>A random deleteWhere as a member of a write's body, applied to the model too.</summary>
    public static string DeleteWhere(Random rng, Dictionary<string, Item> model)
    {
        var where = RandomFilter(rng);
        foreach (var id in model.Where(e => where.Matches(e.Value)).Select(e => e.Key).ToArray()) model.Remove(id);
        return $"\"deleteWhere\":{where.Json}";
    }

    /// <summary>One upsert item of a write's body, with the item's attributes when it has them.</summary>
    public static string Upsert(string id, Item item)
    {
        var attributes = item.Colour is null ? "" : $",\"attributes\":{{\"colour\":\"{item.Colour}\",\"price\":{F(item.Price!.Value)},\"n\":{item.N}}}";
        return $"{{\"id\":\"{id}\",\"vector\":{Bodies.Vector(item.Vector)}{attributes}}}";
    }

    /// <summary>Sends a write's body through the API; it must be acknowledged.</summary>
    public static async Task PostAsync(HttpClient client, string index, string body, string context)
    {
        var written = await client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json(body));
        Assert.True(written.StatusCode == HttpStatusCode.OK, $"{context}: {await written.Content.ReadAsStringAsync()}");
    }

    /// <summary>
    /// An exact query at <paramref name="consistency"/> answers the model's k nearest (with the filter), with their
    /// attributes, reports <paramref name="watermark"/>, and reports its tail exactly when strong.
    /// </summary>
    public static async Task AssertAnswer(HttpClient client, string index, bool withIds, float[] query, Filter? filter, string consistency,
        Dictionary<string, Item> model, long watermark, string context)
    {
        const int k = 10;
        var filterPart = filter is null ? "" : $",\"filter\":{filter.Json}";
        var response = await client.PostAsync($"/api/indexes/{index}/query",
            Bodies.Json($"{{\"vector\":{Bodies.Vector(query)},\"k\":{k}{filterPart},\"include\":[\"colour\",\"price\"],\"options\":{{\"exact\":true,\"consistency\":\"{consistency}\"}}}}"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{context}: {text}");
        using var doc = JsonDocument.Parse(text);
        // Distances equal to float precision may come in either order: both sides list such ties by id.
        static double Tie(double d) => Math.Round(d, 5);
        var expected = model.Where(e => filter is null || filter.Matches(e.Value))
            .Select(e => (Id: e.Key, D: Math.Sqrt(e.Value.Vector.Select((x, j) => (double)(x - query[j]) * (x - query[j])).Sum()), e.Value.Colour, e.Value.Price))
            .OrderBy(x => x.D).Take(k).OrderBy(x => Tie(x.D)).ThenBy(x => x.Id, StringComparer.Ordinal).ToArray();
        // An index with ids names rows by string; one without by row number (a JSON number, tail rows included).
        string IdOf(JsonElement r)
        {
            var id = r.GetProperty("id");
            Assert.True(id.ValueKind == (withIds ? JsonValueKind.String : JsonValueKind.Number), $"{context}: id {id.GetRawText()}");
            return withIds ? id.GetString()! : id.GetInt64().ToString(CultureInfo.InvariantCulture);
        }
        var results = doc.RootElement.GetProperty("results").EnumerateArray()
            .OrderBy(r => Tie(r.GetProperty("distance").GetSingle())).ThenBy(IdOf, StringComparer.Ordinal).ToArray();
        Assert.True(expected.Select(e => e.Id).SequenceEqual(results.Select(IdOf)),
            $"{context}: expected [{string.Join(", ", expected.Select(e => $"{e.Id} {e.D:F5}"))}] got [{string.Join(", ", results.Select(r => $"{r.GetProperty("id").GetRawText()} {r.GetProperty("distance").GetSingle():F5}"))}]");
        for (int i = 0; i < results.Length; i++)
        {
            // A tolerance, not rounding to 4 places: two values a hair apart can round either side of a last digit.
            Assert.Equal(expected[i].D, results[i].GetProperty("distance").GetSingle(), 1e-4);
            var attributes = results[i].GetProperty("attributes");
            var colour = attributes.TryGetProperty("colour", out var c) ? c.GetString() : null;
            double? price = attributes.TryGetProperty("price", out var pr) && pr.ValueKind == JsonValueKind.Number ? pr.GetDouble() : null;
            Assert.True(expected[i].Colour == colour && expected[i].Price == price,
                $"{context}: {expected[i].Id} has colour {expected[i].Colour} price {expected[i].Price}, the answer says {colour} {price}");
        }
        Assert.Equal(watermark, doc.RootElement.GetProperty("indexedSequence").GetInt64());
        Assert.True(doc.RootElement.TryGetProperty("tailItems", out _) == (consistency == "strong"), $"{context}: tailItems reported only by strong reads");
    }
}
