using System.Text.Json;

namespace Squash.Functions.Tests;

/// <summary>
/// Strong reads through the HTTP API and the invocation tree: after every write of a random sequence (<see cref="WriteModel"/>:
/// upserts that add or replace, deletes, deletes by filter, new category values), an exact strong query equals brute force
/// over a plain in-memory model of the data, with and without a filter; an eventual query still answers from the published version.
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class StrongReadTests(IndexFixture fx)
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 0)]
    [InlineData(3, 2)]
    public async Task StrongExactQueriesEqualBruteForceAfterEveryWrite(int seed, int depth)
    {
        var rng = new Random(seed);
        var index = "strong-" + Guid.NewGuid().ToString("N")[..12];
        var (model, _) = await WriteModel.BuildAsync(fx.Root, index, seed, withIds: true);
        var published = model.ToDictionary(e => e.Key, e => e.Value);
        using var app = fx.App(2, depth);
        var client = app.CreateClient();
        int newIds = 0;

        for (int step = 0; step < 25; step++)
        {
            var context = $"seed {seed} step {step}";
            await WriteModel.WriteAsync(client, index, rng, model, () => $"new-{newIds++}", context);
            // Reads: strong sees the model (with and without a filter); eventual still sees the published version.
            var query = Enumerable.Range(0, WriteModel.Dims).Select(_ => (float)rng.NextDouble()).ToArray();
            var filter = rng.Next(2) == 0 ? WriteModel.RandomFilter(rng) : null;
            await WriteModel.AssertAnswer(client, index, true, query, filter, "strong", model, 0, $"{context} strong {filter?.Json}");
            if (step % 5 == 0) await WriteModel.AssertAnswer(client, index, true, query, filter, "eventual", published, 0, $"{context} eventual {filter?.Json}");
        }
    }

    /// <summary>
    /// A warm instance starts a strong query's scan with the tail it already holds and checks the log's end meanwhile: a
    /// write acknowledged after that tail was read (here by the same instance, through the API) must still be in the
    /// answer — the query runs again with it — and so must a delete of it.
    /// </summary>
    [Theory]
    [InlineData(4, 1)]
    [InlineData(5, 0)]
    public async Task AWriteAfterTheHeldTailIsSeenByTheNextStrongQuery(int seed, int depth)
    {
        var rng = new Random(seed);
        var index = "strong-late-" + Guid.NewGuid().ToString("N")[..12];
        var (model, _) = await WriteModel.BuildAsync(fx.Root, index, seed, withIds: true);
        using var app = fx.App(2, depth);
        var client = app.CreateClient();
        var context = $"seed {seed} depth {depth}";
        // A first write and a strong query: the instance now holds the tail up to that write.
        int newIds = 0;
        await WriteModel.WriteAsync(client, index, rng, model, () => $"first-{newIds++}", context);
        var query = Enumerable.Range(0, WriteModel.Dims).Select(_ => (float)rng.NextDouble()).ToArray();
        await WriteModel.AssertAnswer(client, index, true, query, null, "strong", model, 0, $"{context} warm");

        // The query's own vector under a new id: the next strong answer must start with it, at distance 0.
        await Write(client, index, $"{{\"upserts\":[{{\"id\":\"late\",\"vector\":{Bodies.Vector(query)}}}]}}", context);
        model["late"] = new WriteModel.Item(query, null, null, null);
        await WriteModel.AssertAnswer(client, index, true, query, null, "strong", model, 0, $"{context} after the upsert");

        await Write(client, index, "{\"deletes\":[\"late\"]}", context);
        model.Remove("late");
        await WriteModel.AssertAnswer(client, index, true, query, null, "strong", model, 0, $"{context} after the delete");

        static async Task Write(HttpClient client, string index, string body, string context)
        {
            var response = await client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json(body));
            Assert.True(response.StatusCode == System.Net.HttpStatusCode.OK, $"{context}: {await response.Content.ReadAsStringAsync()}");
        }
    }

    /// <summary>
    /// A tail whose deleteWheres hold more clauses than a scan node takes for them (FilterCompiler.MaxTailClauses, 10,000):
    /// the coordinator resolves the rows they delete into excluded rows instead of sending them in the filter, so the
    /// nodes' filter stays within the scan endpoint's bound and exact strong queries still equal brute force — with no
    /// filter, a model filter, and a query filter of 2,000 clauses of its own — through a tree and on the coordinator alone.
    /// </summary>
    [Theory]
    [InlineData(7, 1, true)]
    [InlineData(8, 0, false)]
    public async Task TailDeleteWheresPastTheirClauseBudgetAreExcludedRowsAndStrongReadsStayExact(int seed, int depth, bool withIds)
    {
        var rng = new Random(seed);
        var index = "strong-where-" + Guid.NewGuid().ToString("N")[..12];
        var (model, _) = await WriteModel.BuildAsync(fx.Root, index, seed, withIds);
        using var app = fx.App(2, depth);
        var client = app.CreateClient();
        var context = $"seed {seed} depth {depth} ids {withIds}";
        // $or, a 2-clause term that deletes and 9,997 one-clause terms that match nothing: 10,000 clauses each, 20,000 together.
        static string Where(string deleting) =>
            "{\"$or\":[" + deleting + "," + string.Join(",", Enumerable.Range(0, 9_997).Select(i => $"{{\"price\":{i + 1000}.25}}")) + "]}";
        var wheres = new (string Json, Func<WriteModel.Item, bool> Matches)[]
        {
            (Where("{\"n\":{\"$lt\":12}}"), i => i.N < 12),
            (Where("{\"price\":{\"$gte\":47}}"), i => i.Price >= 47),
        };
        int deleted = 0;
        foreach (var (json, matches) in wheres)
        {
            var written = await client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json($"{{\"deleteWhere\":{json}}}"));
            Assert.True(written.StatusCode == System.Net.HttpStatusCode.OK, $"{context}: {await written.Content.ReadAsStringAsync()}");
            foreach (var id in model.Where(e => matches(e.Value)).Select(e => e.Key).ToArray()) { model.Remove(id); deleted++; }
        }
        Assert.True(deleted > 10, $"{context}: the deleteWheres delete {deleted} rows");

        var query = Enumerable.Range(0, WriteModel.Dims).Select(_ => (float)rng.NextDouble()).ToArray();
        await WriteModel.AssertAnswer(client, index, withIds, query, null, "strong", model, 0, $"{context} unfiltered");
        // The rows the deleteWheres delete reached the nodes as excluded rows: an exact query scans every partition.
        var response = await client.PostAsync($"/api/indexes/{index}/query",
            Bodies.Json($"{{\"vector\":{Bodies.Vector(query)},\"k\":5,\"options\":{{\"exact\":true,\"consistency\":\"strong\"}}}}"));
        using (var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync()))
            Assert.Equal(deleted, doc.RootElement.GetProperty("stats").GetProperty("excludedRows").GetInt32());

        // Writes after them, and filters: a model filter, and a wide one of 2,000 clauses (near the 10,000 a query may send, a
        // cold node's two compiles overran the tests' 2 s child timeout, and the answer came back incomplete).
        int newIds = 0;
        for (int step = 0; step < 6; step++)
        {
            var stepContext = $"{context} step {step}";
            await WriteModel.WriteAsync(client, index, rng, model, () => withIds ? $"new-{newIds++}" : (WriteModel.Rows + newIds++).ToString(System.Globalization.CultureInfo.InvariantCulture), stepContext);
            query = Enumerable.Range(0, WriteModel.Dims).Select(_ => (float)rng.NextDouble()).ToArray();
            var filter = WriteModel.RandomFilter(rng);
            await WriteModel.AssertAnswer(client, index, withIds, query, filter, "strong", model, 0, $"{stepContext} {filter.Json}");
            var wide = new WriteModel.Filter("{\"$or\":[{\"colour\":\"red\"}," + string.Join(",", Enumerable.Range(0, 1_998).Select(i => $"{{\"n\":{i + 100}}}")) + "]}",
                i => i.Colour == "red" || i.N >= 100 && i.N < 2_098);
            await WriteModel.AssertAnswer(client, index, withIds, query, wide, "strong", model, 0, $"{stepContext} 2,000-clause filter");
        }
    }

    /// <summary>
    /// A log batch past the watermark that is damaged (a flipped byte, cut short, emptied) or deleted while a later one
    /// exists: a strong query is a 500 problem naming the index and the blob (not a bare 500 from an unhandled exception),
    /// every time it is asked, while eventual queries keep answering from the indexed version.
    /// </summary>
    [Theory]
    [InlineData("flipped")]
    [InlineData("truncated")]
    [InlineData("emptied")]
    [InlineData("deleted")]
    public async Task ADamagedLogBatchMakesAStrongQueryA500ProblemNamingTheIndexAndTheBlob(string damage)
    {
        var index = "strong-damaged-" + Guid.NewGuid().ToString("N")[..12];
        await WriteModel.BuildAsync(fx.Root, index, 6, withIds: true);
        const string query = "{\"vector\":[0.5,0.5,0.5,0.5],\"k\":3,\"options\":{\"consistency\":\"strong\"}}";
        using (var writer = fx.App(2, 1))
        {
            var client = writer.CreateClient();
            for (int i = 0; i < 3; i++)
            {
                var written = await client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json($"{{\"upserts\":[{{\"id\":\"w{i}\",\"vector\":[{i},1,2,3]}}]}}"));
                Assert.True(written.StatusCode == System.Net.HttpStatusCode.OK, await written.Content.ReadAsStringAsync());
            }
        }
        var blob = Path.Combine(fx.Root, index, "log", "batches", "000000000002");
        var bytes = await File.ReadAllBytesAsync(blob);
        switch (damage)
        {
            case "flipped": bytes[bytes.Length / 2] ^= 0x5a; await File.WriteAllBytesAsync(blob, bytes); break;
            case "truncated": await File.WriteAllBytesAsync(blob, bytes[..(bytes.Length / 2)]); break;
            case "emptied": await File.WriteAllBytesAsync(blob, []); break;
            default: File.Delete(blob); break;
        }

        using var app = fx.App(2, 1);
        var reader = app.CreateClient();
        for (int attempt = 0; attempt < 2; attempt++)
        {
            var problem = await Problems.Read(await reader.PostAsync($"/api/indexes/{index}/query", Bodies.Json(query)), System.Net.HttpStatusCode.InternalServerError);
            Assert.Equal("Index damaged", problem.GetProperty("title").GetString());
            var detail = problem.GetProperty("detail").GetString()!;
            Assert.StartsWith($"index '{index}' is damaged: a strong query cannot read its write-ahead log", detail);
            Assert.Contains($"'{index}/log/batches/000000000002'", detail);
            Assert.DoesNotContain(fx.Root, detail);
        }
        var eventual = await reader.PostAsync($"/api/indexes/{index}/query", Bodies.Json(query.Replace("strong", "eventual", StringComparison.Ordinal)));
        Assert.True(eventual.StatusCode == System.Net.HttpStatusCode.OK, await eventual.Content.ReadAsStringAsync());
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
