using System.Net;
using System.Text.Json;
using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.Storage;
using Squash.Storage.Writes;

namespace Squash.Functions.Tests;

/// <summary>
/// POST /api/indexes/{index}/vectors: what is refused (one 400 naming every bad item, nothing written), what is
/// acknowledged (a sequence, only once the batch blob is in the store), idempotent retries, and the lag that
/// GET /api/indexes/{index} reports. Each test writes to its own index, so the shared fixture's indexes stay as built.
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class WriteApiTests(IndexFixture fx)
{
    private const int Dims = 4;

    /// <summary>A small index with ids and one attribute of every type, in the fixture's store.</summary>
    private string NewIndex()
    {
        var name = "writes-" + Guid.NewGuid().ToString("N")[..12];
        var lines = string.Join('\n', Enumerable.Range(0, 60).Select(i =>
            $"{{\"id\":\"doc-{i}\",\"attributes\":{{\"colour\":\"{(i % 2 == 0 ? "red" : "blue")}\",\"price\":{i}.5,\"n\":{i},\"ok\":true,\"tags\":[\"t{i % 3}\"]}}}}"));
        var rng = new Random(3);
        var data = Enumerable.Range(0, 60 * Dims).Select(_ => (float)rng.NextDouble()).ToArray();
        IndexPublisher.BuildAndPublishAsync(new IndexStore(new FolderBlobStore(fx.Root), name), data, 60, Dims, new IndexBuildOptions
        {
            Partitions = 3, Seed = 1, Attributes = AttributeReader.ReadJsonLines(new StringReader(lines), "w.jsonl"),
        }).GetAwaiter().GetResult();
        return name;
    }

    private WriteLog Log(string index) => new(new FolderBlobStore(fx.Root), index);

    private static async Task<HttpResponseMessage> Post(HttpClient client, string index, string body, string? key = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, $"/api/indexes/{index}/vectors") { Content = Bodies.Json(body) };
        if (key is not null) request.Headers.Add("Idempotency-Key", key);
        return await client.SendAsync(request);
    }

    /// <summary>A deleteWhere is a client's filter too: more than 10,000 clauses is a 400 naming it, and nothing is written.</summary>
    [Fact]
    public async Task ADeleteWhereOfMoreThanTenThousandClausesIs400()
    {
        var index = NewIndex();
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var filter = "{\"$or\":[" + string.Join(",", Enumerable.Range(0, 10_000).Select(i => $"{{\"n\":{i}}}")) + "]}";
        var errors = await Problems.BadRequest(await Post(client, index, "{\"deleteWhere\":" + filter + "}"));
        Assert.Equal(["holds more than 10,000 clauses (each attribute, operator, $and, $or and $not counts once; the values of an $in list count as one): use $in for a long list of values, or split the request"],
            errors["deleteWhere"]);
        Assert.Equal(0, await Log(index).LatestSequenceAsync(0, CancellationToken.None));
    }

    [Fact]
    public async Task EveryBadItemIsNamedInOne400AndNothingIsWritten()
    {
        var index = NewIndex();
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var body = """
            {"upserts":[
              {"id":"a","vector":[1,2,3,4],"attributes":{"colour":"red","price":1.5}},
              {"id":"","vector":[1,2,3]},
              {"id":"a","vector":[1,2,3,4],"attributes":{"colour":7,"size":3,"n":1.5,"ok":"yes","tags":["x",1]}},
              {"vector":[1,2,3,4]}
            ],
            "deletes":["b","a",""],
            "deleteWhere":{"price":{"$lt":"cheap"}}}
            """;
        var errors = await Problems.BadRequest(await Post(client, index, body));
        var expected = new Dictionary<string, string[]>
        {
            ["upserts[1].id"] = ["must not be empty"],
            ["upserts[1].vector"] = ["has 3 dimensions; the index has 4"],
            ["upserts[2].id"] = ["'a' appears twice in this request (also upserts[0].id)"],
            ["upserts[2].attributes.colour"] = ["must be a string (attribute type category), got the number 7"],
            ["upserts[2].attributes.size"] = ["is not an attribute of the index (it has: colour, price, n, ok, tags)"],
            ["upserts[2].attributes.n"] = ["must be a whole number (attribute type integer), got the number 1.5"],
            ["upserts[2].attributes.ok"] = ["must be true or false (attribute type bool), got a string"],
            ["upserts[2].attributes.tags"] = ["must be an array of strings (attribute type tags), got an array holding a value that is not a string"],
            ["upserts[3].id"] = ["is required (a string)"],
            ["deletes[1]"] = ["'a' appears twice in this request (also upserts[0].id)"],
            ["deletes[2]"] = ["must not be empty"],
            ["deleteWhere.price.$lt"] = ["expected a number for number attribute 'price', got a string"],
        };
        Assert.Equal(expected.OrderBy(e => e.Key), errors.OrderBy(e => e.Key));
        Assert.Equal(0, await Log(index).LatestSequenceAsync());
        Assert.Empty(await new FolderBlobStore(fx.Root).ListAsync(index + "/log/").ToListAsync());
    }

    /// <summary>
    /// An integer attribute takes a whole number however it is written (5.0 and 5e0 are 5, as filters read them), and the
    /// log holds it as 5, so a strong read, ingest and <c>include</c> agree; 5.5 and a whole number past 64 bits stay 400s.
    /// </summary>
    [Fact]
    public async Task AnIntegerAttributeTakesAWholeNumberWrittenWithAPointOrAnExponent()
    {
        var index = NewIndex();
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var refused = await Problems.BadRequest(await Post(client, index, """
            {"upserts":[{"id":"a","vector":[1,2,3,4],"attributes":{"n":5.0}},{"id":"b","vector":[1,2,3,4],"attributes":{"n":5.5}},
              {"id":"c","vector":[1,2,3,4],"attributes":{"n":1e30}}]}
            """));
        Assert.Equal(new Dictionary<string, string[]>
        {
            ["upserts[1].attributes.n"] = ["must be a whole number (attribute type integer), got the number 5.5"],
            ["upserts[2].attributes.n"] = ["must be a whole number (attribute type integer), got the number 1e30"],
        }.OrderBy(e => e.Key), refused.OrderBy(e => e.Key));

        var ok = await Post(client, index, """
            {"upserts":[{"id":"five-point","vector":[9,9,9,9],"attributes":{"n":5.0,"price":2.0}},{"id":"five-exp","vector":[9,9,9,8],"attributes":{"n":5e0}},
              {"id":"big","vector":[9,9,8,8],"attributes":{"n":-9.007199254740993E15}}]}
            """);
        Assert.True(ok.StatusCode == HttpStatusCode.OK, await ok.Content.ReadAsStringAsync());
        var batch = (await Log(index).TryReadBatchAsync(1))!;
        Assert.Equal(["5", "5", "-9007199254740993"], batch.Upserts!.Select(u => u.Attributes!.Value.GetProperty("n").GetRawText()));
        Assert.Equal("2.0", batch.Upserts![0].Attributes!.Value.GetProperty("price").GetRawText()); // a number attribute is kept as sent

        async Task<string[]> Found(string consistency)
        {
            var answer = await client.PostAsync($"/api/indexes/{index}/query", Bodies.Json(
                "{\"vector\":[9,9,9,9],\"k\":10,\"filter\":{\"n\":5},\"include\":[\"n\"],\"options\":{\"exact\":true,\"consistency\":\"" + consistency + "\"}}"));
            var text = await answer.Content.ReadAsStringAsync();
            Assert.True(answer.StatusCode == HttpStatusCode.OK, text);
            using var doc = JsonDocument.Parse(text);
            return doc.RootElement.GetProperty("results").EnumerateArray()
                .Select(r => $"{r.GetProperty("id").GetString()} n={r.GetProperty("attributes").GetProperty("n").GetRawText()}").Order().ToArray();
        }
        string[] expected = ["doc-5 n=5", "five-exp n=5", "five-point n=5"];
        Assert.Equal(expected, await Found("strong"));
        var run = await Squash.Search.Writes.LogIngest.RunAsync(new IndexStore(new FolderBlobStore(fx.Root), index), Log(index));
        Assert.Equal(1, run.ToSequence);
        using var fresh = fx.App(2, 1);
        client = fresh.CreateClient();
        Assert.Equal(expected, await Found("eventual"));
    }

    /// <summary>
    /// A bound written with more digits than a double holds (2.9999999999999999999 is 3 as a double) decides a row the same
    /// way in a strong read's log tail as once the row is indexed, on number and integer attributes and every comparison.
    /// </summary>
    [Fact]
    public async Task ABoundTooPreciseForADoubleMatchesTheSameRowsBeforeAndAfterIngest()
    {
        var index = NewIndex();
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var ok = await Post(client, index, """
            {"upserts":[{"id":"three","vector":[9,9,9,9],"attributes":{"n":3,"price":3}},{"id":"four","vector":[9,9,9,8],"attributes":{"n":4,"price":4}},
              {"id":"two","vector":[9,9,8,8],"attributes":{"n":2,"price":2}}]}
            """);
        Assert.True(ok.StatusCode == HttpStatusCode.OK, await ok.Content.ReadAsStringAsync());
        string[] bounds =
        [
            "{\"$gt\":2.9999999999999999999}", "{\"$gte\":3.0000000000000000001}", "{\"$lt\":3.0000000000000000001}",
            "{\"$lte\":2.9999999999999999999}", "{\"$eq\":2.9999999999999999999}", "{\"$in\":[2.9999999999999999999]}",
            "{\"$in\":[3.0000000000000000001, 7]}", "{\"$ne\":3.0000000000000000001}", "{\"$nin\":[2.9999999999999999999]}",
        ];
        async Task<string> Found(HttpClient c, string consistency, string attribute, string bound)
        {
            var answer = await c.PostAsync($"/api/indexes/{index}/query", Bodies.Json(
                "{\"vector\":[9,9,9,9],\"k\":100,\"filter\":{\"" + attribute + "\":" + bound + "},\"options\":{\"exact\":true,\"consistency\":\"" + consistency + "\"}}"));
            var text = await answer.Content.ReadAsStringAsync();
            Assert.True(answer.StatusCode == HttpStatusCode.OK, text);
            using var doc = JsonDocument.Parse(text);
            var ids = doc.RootElement.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("id").GetString()!)
                .Where(id => id is "three" or "four" or "two").Order();
            return $"{attribute} {bound}: {string.Join(",", ids)}";
        }
        var attributes = new[] { "n", "price" };
        var before = new List<string>();
        foreach (var a in attributes) foreach (var b in bounds) before.Add(await Found(client, "strong", a, b));
        // Integers compare with the bound as written; numbers as doubles (the bound rounds to 3, as a stored value would).
        string[] expected =
        [
            "four,three", "four", "three,two", "two", "", "", "", "four,three,two", "four,three,two",
            "four", "four,three", "two", "three,two", "three", "three", "three", "four,two", "four,two",
        ];
        Assert.Equal(attributes.SelectMany(a => bounds.Select(b => $"{a} {b}: ")).Zip(expected, (q, e) => q + e), before);
        var run = await Squash.Search.Writes.LogIngest.RunAsync(new IndexStore(new FolderBlobStore(fx.Root), index), Log(index));
        Assert.Equal(1, run.ToSequence);
        using var fresh = fx.App(2, 1);
        var after = new List<string>();
        foreach (var a in attributes) foreach (var b in bounds) after.Add(await Found(fresh.CreateClient(), "eventual", a, b));
        Assert.Equal(before, after);
    }

    [Fact]
    public async Task AnIndexWithoutIdsTakesRowNumbersAndAnInnerProductIndexNoVectorLongerThanItsLargest()
    {
        var rng = new Random(4);
        var data = Enumerable.Range(0, 60 * Dims).Select(_ => (float)rng.NextDouble()).ToArray();
        double maxNorm = Enumerable.Range(0, 60).Max(i => Math.Sqrt(data.AsSpan(i * Dims, Dims).ToArray().Sum(x => (double)x * x)));
        var index = "writes-ip-" + Guid.NewGuid().ToString("N")[..8];
        await IndexPublisher.BuildAndPublishAsync(new IndexStore(new FolderBlobStore(fx.Root), index), data, 60, Dims,
            new IndexBuildOptions { Partitions = 3, Seed = 1, Metric = Squash.Core.Metric.InnerProduct });
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        float far = (float)(maxNorm * 1.5 / 2); // a vector (far, far, far, far) has norm 1.5 × the largest
        var errors = await Problems.BadRequest(await Post(client, index, $$"""
            {"upserts":[{"id":"17","vector":[0.1,0.1,0.1,0.1]},{"id":"sku-1","vector":[0.1,0.1,0.1,0.1]},{"id":"017","vector":[0.1,0.1,0.1,0.1]},
              {"id":"60","vector":{{Bodies.Vector([far, far, far, far])}}}]}
            """));
        Assert.Equal(["'sku-1' is not a row number; this index was built without ids, so its rows are named 0, 1, … (at most 2147483646)"], errors["upserts[1].id"]);
        Assert.Equal(["'017' is not a row number; this index was built without ids, so its rows are named 0, 1, … (at most 2147483646)"], errors["upserts[2].id"]);
        Assert.StartsWith($"has norm {Math.Sqrt(4.0 * far * far):G6}, above the index's largest norm", errors["upserts[3].vector"].Single());
        Assert.Equal(3, errors.Count);
        Assert.Equal(0, await Log(index).LatestSequenceAsync());
        // Row numbers and a vector as long as the longest are fine.
        var longest = Enumerable.Range(0, 60).MaxBy(i => data.AsSpan(i * Dims, Dims).ToArray().Sum(x => (double)x * x));
        var ok = await Post(client, index, $$"""{"upserts":[{"id":"17","vector":[0.1,0.1,0.1,0.1]},{"id":"60","vector":{{Bodies.Vector(data.AsSpan(longest * Dims, Dims).ToArray())}}}]}""");
        Assert.True(ok.StatusCode == HttpStatusCode.OK, await ok.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task TheBodyIsCheckedAsAWholeToo()
    {
        var index = NewIndex();
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        Assert.Equal(["names nothing to write: give upserts, deletes or deleteWhere"], (await Problems.BadRequest(await Post(client, index, "{}")))["body"]);
        var many = "{\"deletes\":[" + string.Join(',', Enumerable.Range(0, 1001).Select(i => $"\"d{i}\"")) + "]}";
        Assert.Equal(["at most 1,000 items per request (upserts + deletes), got 1,001; split it into several requests"], (await Problems.BadRequest(await Post(client, index, many)))["body"]);
        Assert.Equal(["is not a field of this request; the fields are: upserts, deletes, deleteWhere"], (await Problems.BadRequest(await Post(client, index, """{"inserts":[]}""")))["inserts"]);
        Assert.Equal(["must be a number, got the string \"1\""], (await Problems.BadRequest(await Post(client, index, """{"upserts":[{"id":"a","vector":["1",2,3,4]}]}""")))["upserts[0].vector[0]"]);
        Assert.Equal(["must be 1 to 200 visible ASCII characters"], (await Problems.BadRequest(await Post(client, index, """{"deletes":["a"]}""", key: "has space")))["Idempotency-Key"]);
        var unknown = await Problems.Read(await Post(client, "no-such-index", """{"deletes":["a"]}"""), HttpStatusCode.NotFound);
        Assert.Equal("no index named 'no-such-index' is published (build it first: writes need its schema and partitions)", unknown.GetProperty("detail").GetString());
        Assert.Equal(0, await Log(index).LatestSequenceAsync());
    }

    [Fact]
    public async Task AnAcknowledgedWriteIsInTheLogAndTheIndexReportsItsLag()
    {
        var index = NewIndex();
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        using (var info = JsonDocument.Parse(await client.GetStringAsync($"/api/indexes/{index}")))
        {
            Assert.Equal(0, info.RootElement.GetProperty("indexedSequence").GetInt64());
            Assert.Equal(0, info.RootElement.GetProperty("latestSequence").GetInt64());
            Assert.Equal(0, info.RootElement.GetProperty("lag").GetInt64());
            Assert.False(info.RootElement.TryGetProperty("lagSeconds", out _));
        }
        var body = """{"upserts":[{"id":"new-1","vector":[0.5,0.5,0.5,0.5],"attributes":{"colour":"green","tags":["t9"],"price":null}}],"deletes":["doc-3"],"deleteWhere":{"n":{"$gte":50}}}""";
        var response = await Post(client, index, body);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("""{"sequence":1,"replayed":false}""", await response.Content.ReadAsStringAsync());
        response = await Post(client, index, """{"deletes":["doc-4"]}""");
        Assert.Equal("""{"sequence":2,"replayed":false}""", await response.Content.ReadAsStringAsync());

        // What the log holds is what was sent: the acknowledgement came after the batch was durable.
        var batch = (await Log(index).TryReadBatchAsync(1))!;
        Assert.Equal("new-1", batch.Upserts![0].Id);
        Assert.Equal([0.5f, 0.5f, 0.5f, 0.5f], batch.Upserts[0].Vector);
        Assert.Equal("green", batch.Upserts[0].Attributes!.Value.GetProperty("colour").GetString());
        Assert.Equal(["doc-3"], batch.Deletes);
        Assert.Equal(50, batch.DeleteWhere!.Value.GetProperty("n").GetProperty("$gte").GetInt32());

        using var after = JsonDocument.Parse(await client.GetStringAsync($"/api/indexes/{index}"));
        Assert.Equal(0, after.RootElement.GetProperty("indexedSequence").GetInt64());
        Assert.Equal(2, after.RootElement.GetProperty("latestSequence").GetInt64());
        Assert.Equal(2, after.RootElement.GetProperty("lag").GetInt64());
        Assert.InRange(after.RootElement.GetProperty("lagSeconds").GetDouble(), 0, 60);
    }

    [Fact]
    public async Task ARetryWithTheSameIdempotencyKeyIsAppliedOnceAndAReusedKeyIs409()
    {
        var index = NewIndex();
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        const string body = """{"upserts":[{"id":"x","vector":[1,1,1,1]}]}""";
        Assert.Equal("""{"sequence":1,"replayed":false}""", await (await Post(client, index, body, "order-77")).Content.ReadAsStringAsync());
        await Post(client, index, """{"deletes":["doc-1"]}""");
        // The same request again (spacing differs: it is the same request) gets the first sequence; nothing is appended.
        var again = await Post(client, index, body.Replace(",", ", "), "order-77");
        Assert.Equal(HttpStatusCode.OK, again.StatusCode);
        Assert.Equal("""{"sequence":1,"replayed":true}""", await again.Content.ReadAsStringAsync());
        Assert.Equal(2, await Log(index).LatestSequenceAsync());
        var reused = await Problems.Read(await Post(client, index, """{"deletes":["x"]}""", "order-77"), HttpStatusCode.Conflict);
        Assert.Equal("Idempotency-Key 'order-77' was first used for a different request (sequence 1); use a new key for a new request", reused.GetProperty("detail").GetString());
    }

    private static string Base64(params float[] v) => Convert.ToBase64String(System.Runtime.InteropServices.MemoryMarshal.AsBytes(v.AsSpan()));

    [Fact]
    public async Task AVectorMayBeBase64OfLittleEndianFloat32AndIsTheSameRequestAsTheArray()
    {
        var index = NewIndex();
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        float[] v = [0.5f, -0.25f, 1e-3f, 3.0000002f];
        var response = await Post(client, index, $$$"""{"upserts":[{"id":"b64","vector":"{{{Base64(v)}}}","attributes":{"colour":"red"}}]}""", "b64-1");
        Assert.Equal("""{"sequence":1,"replayed":false}""", await response.Content.ReadAsStringAsync());
        var batch = (await Log(index).TryReadBatchAsync(1))!;
        Assert.Equal(v, batch.Upserts![0].Vector);
        Assert.Equal("red", batch.Upserts[0].Attributes!.Value.GetProperty("colour").GetString());
        // The same vector as an array, with the same key: the same request, replayed.
        var again = await Post(client, index, $$$"""{"upserts":[{"id":"b64","vector":{{{Bodies.Vector(v)}}},"attributes":{"colour":"red"}}]}""", "b64-1");
        Assert.Equal("""{"sequence":1,"replayed":true}""", await again.Content.ReadAsStringAsync());
        Assert.Equal(1, await Log(index).LatestSequenceAsync());
        // A JSON writer may escape base64's '/' or '+': the escaped string is the same vector.
        float[] w = [BitConverter.Int32BitsToSingle(0x3F7FFFFF), 1, 2, 3];
        var escaped = Base64(w).Replace("/", "\\/");
        Assert.Contains("\\/", escaped);
        var third = await Post(client, index, $$$"""{"upserts":[{"id":"esc","vector":"{{{escaped}}}"}]}""");
        Assert.Equal("""{"sequence":2,"replayed":false}""", await third.Content.ReadAsStringAsync());
        Assert.Equal(w, (await Log(index).TryReadBatchAsync(2))!.Upserts![0].Vector);
    }

    [Fact]
    public async Task ABase64VectorOfTheWrongLengthOrNotBase64IsA400NamingIt()
    {
        var index = NewIndex();
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        async Task<Dictionary<string, string[]>> Bad(string body) => await Problems.BadRequest(await Post(client, index, body));
        Assert.Equal(new Dictionary<string, string[]> { ["upserts[1].vector"] = ["decodes to 5 bytes, not a whole number of float32 values (4 bytes each, little-endian)"] },
            await Bad($$"""{"upserts":[{"id":"a","vector":"{{Base64(1, 2, 3, 4)}}"},{"id":"b","vector":"AAAAAAA="}]}"""));
        Assert.Equal(new Dictionary<string, string[]> { ["upserts[0].vector"] = ["is a string but not base64 (RFC 4648, with padding) of little-endian float32 values"] },
            await Bad("""{"upserts":[{"id":"a","vector":"not base64!"}]}"""));
        Assert.Equal(new Dictionary<string, string[]> { ["upserts[0].vector"] = ["must be an array of numbers or a base64 string of little-endian float32 values"] },
            await Bad("""{"upserts":[{"id":"a","vector":5}]}"""));
        // Decoded, the dimensions and values are checked as an array's are; every bad item is named at once.
        Assert.Equal(new Dictionary<string, string[]>
            {
                ["upserts[0].vector"] = ["has 3 dimensions; the index has 4"],
                ["upserts[1].vector[2]"] = ["is not a finite number"],
            },
            await Bad($$"""{"upserts":[{"id":"a","vector":"{{Base64(1, 2, 3)}}"},{"id":"b","vector":"{{Base64(1, 2, float.NaN, 4)}}"}]}"""));
        // A good base64 vector beside a body error elsewhere is not mistaken for a bad array.
        Assert.Equal(new Dictionary<string, string[]> { ["upserts[1].vector[0]"] = ["must be a number, got the string \"x\""] },
            await Bad($$"""{"upserts":[{"id":"a","vector":"{{Base64(1, 2, 3, 4)}}"},{"id":"b","vector":["x",1,2,3]}]}"""));
        Assert.Equal(0, await Log(index).LatestSequenceAsync());
    }

    [Fact]
    public async Task ARetryOfARequestAnEarlierBuildLoggedIsStillReplayed()
    {
        var index = NewIndex();
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        const string body = """{"upserts":[{"id":"x","vector":[1,2,3,4.5]}],"deletes":["doc-2"]}""";
        // What a build before the binary log did: the request re-serialised as JSON, hashed, and the batch logged under the key.
        var request = JsonSerializer.Deserialize(body, Squash.Functions.Writes.WriteApiJson.Default.WriteRequest)!;
        var earlierHash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(
            JsonSerializer.SerializeToUtf8Bytes(request, Squash.Functions.Writes.WriteApiJson.Default.WriteRequest)));
        var first = await Log(index).AppendAsync(new WriteBatch { Upserts = [new UpsertItem("x", [1, 2, 3, 4.5f])], Deletes = ["doc-2"] }, "old-1", earlierHash, 0);
        Assert.Equal(1, first.Sequence);
        var retry = await Post(client, index, body.Replace(",", " , "), "old-1");
        Assert.Equal("""{"sequence":1,"replayed":true}""", await retry.Content.ReadAsStringAsync());
        await Problems.Read(await Post(client, index, """{"upserts":[{"id":"x","vector":[1,2,3,4.25]}],"deletes":["doc-2"]}""", "old-1"), HttpStatusCode.Conflict);
        Assert.Equal(1, await Log(index).LatestSequenceAsync());
    }
}
