using System.Net;
using System.Text.Json;
using Squash.Search;

namespace Squash.Functions.Tests;

/// <summary>Every numeric option has a documented range, numbers are numbers, and every problem is named in JSON terms.</summary>
[Collection(nameof(IndexCollection))]
public sealed class QueryValidationTests(IndexFixture fx)
{
    private string Vector => Bodies.Vector(fx.Queries[1]);

    private async Task<Dictionary<string, string[]>> BadQuery(string body, IReadOnlyDictionary<string, string>? settings = null)
    {
        using var app = fx.App(2, 1, settings: settings);
        return await Problems.BadRequest(await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Bodies.Json(body)));
    }

    public static TheoryData<string, string, string> OutOfRange => new()
    {
        { "\"k\":0", "k", "k must be between 1 and 10000, got 0" },
        { "\"k\":10001", "k", "k must be between 1 and 10000, got 10001" },
        { "\"options\":{\"centroidFactor\":0.5}", "options.centroidFactor", "must be a number between 1 and 1000, got 0.5" },
        { "\"options\":{\"centroidFactor\":1e308}", "options.centroidFactor", "must be a number between 1 and 1000, got 1E+308" },
        { "\"options\":{\"hammingKeepPercent\":0}", "options.hammingKeepPercent", "must be in (0, 100], got 0" },
        { "\"options\":{\"hammingKeepPercent\":100.5}", "options.hammingKeepPercent", "must be in (0, 100], got 100.5" },
        { "\"options\":{\"rerankFactor\":0}", "options.rerankFactor", "must be between 1 and 1000, got 0" },
        // k · rerankFactor overflowed 32 bits: the query was answered with no results and complete:true.
        { "\"k\":10,\"options\":{\"rerankFactor\":2147483647}", "options.rerankFactor", "must be between 1 and 1000, got 2147483647" },
        { "\"options\":{\"branching\":0}", "options.branching", "must be between 1 and 16, got 0" },
        { "\"options\":{\"branching\":17}", "options.branching", "must be between 1 and 16, got 17" },
        { "\"options\":{\"depth\":-1}", "options.depth", "must be between 0 and 4, got -1" },
        { "\"options\":{\"depth\":5}", "options.depth", "must be between 0 and 4, got 5" },
        { "\"options\":{\"recall\":0}", "options.recall", "must be a number in (0, 1], got 0" },
        { "\"options\":{\"recall\":1.5}", "options.recall", "must be a number in (0, 1], got 1.5" },
        { "\"options\":{\"recall\":0.9,\"rerankFactor\":4}", "options.recall", "cannot be combined with centroidFactor, rerankFactor or maxPartitions: ask for a recall target, or set the plan yourself" },
        { "\"options\":{\"recall\":0.9,\"centroidFactor\":1.2}", "options.recall", "cannot be combined with centroidFactor, rerankFactor or maxPartitions: ask for a recall target, or set the plan yourself" },
        { "\"options\":{\"recall\":0.9,\"maxPartitions\":4}", "options.recall", "cannot be combined with centroidFactor, rerankFactor or maxPartitions: ask for a recall target, or set the plan yourself" },
        { "\"options\":{\"maxPartitions\":0}", "options.maxPartitions", "must be at least 1, got 0" },
    };

    [Theory]
    [MemberData(nameof(OutOfRange))]
    public async Task ANumericOptionOutsideItsRangeIs400NamingTheField(string fields, string field, string message)
    {
        var errors = await BadQuery("{\"vector\":" + Vector + "," + fields + "}");
        Assert.Equal([field], errors.Keys);
        Assert.Equal([message], errors[field]);
    }

    [Fact]
    public async Task APartitionCapIsPartOfAHandSetPlanForUnfilteredQueriesOnly()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var q = fx.Queries[3];
        // CF 1000 would scan all 12 partitions; the cap keeps the nearest 2 (they hold far more than k rows).
        var response = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query",
            Bodies.Json("{\"vector\":" + Bodies.Vector(q) + ",\"k\":5,\"options\":{\"centroidFactor\":1000,\"maxPartitions\":2}}"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        using var doc = JsonDocument.Parse(text);
        var expected = fx.Engine.Search(q, new SearchOptions { K = 5, CentroidFactor = 1000, MaxPartitions = 2 });
        Assert.Equal(2, expected.Stats.PartitionsPlanned);
        Assert.Equal(expected.Ids, doc.RootElement.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("row").GetInt64()).ToArray());
        Assert.Equal(2, doc.RootElement.GetProperty("stats").GetProperty("maxPartitions").GetInt32());
        // With a filter the cap is refused, naming the field (the filter itself is valid on this index).
        var errors = await Problems.BadRequest(await client.PostAsync($"/api/indexes/{IndexFixture.AttributedIndexName}/query",
            Bodies.Json("{\"vector\":" + Bodies.Vector(q) + ",\"filter\":{\"colour\":\"red\"},\"options\":{\"maxPartitions\":4}}")));
        Assert.Equal(["options.maxPartitions"], errors.Keys);
        Assert.Equal(["applies to unfiltered queries only: a filtered query's plan walks the partitions until its filter's estimated matches are reached"], errors["options.maxPartitions"]);
    }

    [Fact]
    public async Task TheLargestKAndRerankFactorAreAnsweredExactlyLikeTheEngine()
    {
        using var app = fx.App(2, 1);
        var q = fx.Queries[2];
        var response = await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.IndexName}/query",
            Bodies.Json("{\"vector\":" + Bodies.Vector(q) + ",\"k\":10000,\"options\":{\"rerankFactor\":1000}}"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        using var doc = JsonDocument.Parse(text);
        Assert.True(doc.RootElement.GetProperty("complete").GetBoolean());
        var expected = fx.Engine.Search(q, new SearchOptions { K = 10_000, RerankFactor = 1000 });
        Assert.Equal(expected.Ids, doc.RootElement.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("row").GetInt64()).ToArray());
    }

    [Fact]
    public async Task ATreeLargerThanMaxTreeNodesIs400NamingBranchingAndDepth()
    {
        // 16 + 16² + 16³ + 16⁴ = 69,904 billed invocations for one exact query, if allowed.
        var errors = await BadQuery("{\"vector\":" + Vector + ",\"options\":{\"branching\":16,\"depth\":4}}");
        const string message = "a tree with branching 16 and depth 4 has 69904 nodes; this app allows at most 128";
        Assert.Equal(["options.branching", "options.depth"], errors.Keys.Order());
        Assert.Equal([message], errors["options.branching"]);
        Assert.Equal([message], errors["options.depth"]);
    }

    [Fact]
    public async Task MaxTreeNodesComesFromConfigurationAndNamesOnlyTheFieldsTheQuerySet()
    {
        var small = new Dictionary<string, string> { ["Squash:MaxTreeNodes"] = "10" };
        // The app's branching is 2: depth 3 gives 2 + 4 + 8 = 14 nodes.
        var errors = await BadQuery("{\"vector\":" + Vector + ",\"options\":{\"depth\":3}}", small);
        Assert.Equal(["a tree with branching 2 and depth 3 has 14 nodes; this app allows at most 10"], errors["options.depth"]);
        Assert.False(errors.ContainsKey("options.branching"));

        using var app = fx.App(2, 1, settings: small);
        var allowed = await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.IndexName}/query",
            Bodies.Json("{\"vector\":" + Vector + ",\"options\":{\"branching\":3,\"depth\":1}}"));
        Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
    }

    public static TheoryData<string, string, string> WrongTypes => new()
    {
        { "\"k\":\"5\"", "k", "must be a whole number, got the string \"5\"" },
        { "\"k\":5.5", "k", "must be a whole number, got 5.5" },
        { "\"k\":1e9", "k", "must be written in digits only, without an exponent or a decimal point (e.g. 1000000000), got 1e9" },
        { "\"k\":10.0", "k", "must be written in digits only, without an exponent or a decimal point (e.g. 10), got 10.0" },
        { "\"k\":1e10", "k", "must be a whole number between -2147483648 and 2147483647, got 1e10" },
        { "\"options\":{\"rerankFactor\":\"2\"}", "options.rerankFactor", "must be a whole number, got the string \"2\"" },
        { "\"options\":{\"centroidFactor\":\"1.5\"}", "options.centroidFactor", "must be a number, got the string \"1.5\"" },
        { "\"options\":{\"exact\":\"yes\"}", "options.exact", "must be true or false, got the string \"yes\"" },
        { "\"options\":[]", "options", "must be a JSON object, got an array" },
        { "\"include\":\"colour\"", "include", "must be an array, got the string \"colour\"" },
    };

    [Theory]
    [MemberData(nameof(WrongTypes))]
    public async Task AValueOfTheWrongJsonTypeIs400SayingWhatTheFieldTakes(string fields, string field, string message)
    {
        var errors = await BadQuery("{\"vector\":" + Vector + "," + fields + "}");
        Assert.Equal([field], errors.Keys);
        Assert.Equal([message], errors[field]);
    }

    [Fact]
    public async Task EveryUnknownFieldIsNamedWithTheFieldsThatExist()
    {
        var errors = await BadQuery("{\"vector\":" + Vector + ",\"topK\":5,\"namespace\":\"x\",\"options\":{\"nprobe\":3},\"k\":\"5\"}");
        Assert.Equal(["k", "namespace", "options.nprobe", "topK"], errors.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(["is not a field of this request; the fields are: vector, vectors, k, filter, include, options"], errors["topK"]);
        Assert.Equal(["is not a field here; the fields are: exact, recall, centroidFactor, hammingKeepPercent, rerankFactor, maxPartitions, branching, depth, consistency"], errors["options.nprobe"]);
    }

    [Theory]
    [InlineData("{\"vector\":{}}", "vector", "must be an array of numbers or a base64 string of little-endian float32 values")]
    [InlineData("[1, 2]", "body", "must be a JSON object, got an array")]
    [InlineData("\"text\"", "body", "must be a JSON object, got the string \"text\"")]
    [InlineData("{\"vectors\":[[1,2],\"x\"]}", "vectors[1]", "is a string but not base64 (RFC 4648, with padding) of little-endian float32 values")]
    [InlineData("{\"vectors\":{}}", "vectors", "must be an array of vectors, each an array of numbers or a base64 string of little-endian float32 values")]
    public async Task MessagesSpeakJsonNotDotNet(string body, string field, string message)
    {
        var errors = await BadQuery(body);
        Assert.Equal([message], errors[field]);
    }

    /// <summary>
    /// A query's vector may be base64 of its little-endian float32 values, as an upsert's (docs/writes.md): one vector, and
    /// each vector of a batch (the two forms mixed), is answered exactly as its array is.
    /// </summary>
    [Fact]
    public async Task ABase64QueryVectorIsAnsweredAsItsArray()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        async Task<string[]> Results(string vectors)
        {
            var response = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Bodies.Json("{" + vectors + ",\"k\":10,\"options\":{\"exact\":true}}"));
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, text);
            using var doc = JsonDocument.Parse(text);
            var answers = doc.RootElement.TryGetProperty("answers", out var batch) ? batch.EnumerateArray().ToArray() : [doc.RootElement];
            return answers.Select(a => a.GetProperty("results").GetRawText()).ToArray();
        }
        float[] q0 = fx.Queries[0], q1 = fx.Queries[1];
        var asArray = await Results("\"vector\":" + Bodies.Vector(q0));
        Assert.Contains("\"distance\"", asArray[0]);
        Assert.Equal(asArray, await Results("\"vector\":\"" + Bodies.Base64(q0) + "\""));
        var batchAsArrays = await Results("\"vectors\":[" + Bodies.Vector(q0) + "," + Bodies.Vector(q1) + "]");
        Assert.Equal(2, batchAsArrays.Length);
        Assert.Equal(batchAsArrays, await Results("\"vectors\":[\"" + Bodies.Base64(q0) + "\"," + Bodies.Vector(q1) + "]"));
        Assert.Equal(batchAsArrays, await Results("\"vectors\":[\"" + Bodies.Base64(q0) + "\",\"" + Bodies.Base64(q1) + "\"]"));
    }

    /// <summary>A base64 query vector that is not base64, not a whole number of floats, of the wrong dimension or not finite is a 400 naming it.</summary>
    [Fact]
    public async Task ABase64QueryVectorOfTheWrongLengthOrNotBase64IsA400NamingIt()
    {
        var good = Bodies.Base64(fx.Queries[0]);
        async Task<(string Field, string Message)> Bad(string body)
        {
            var errors = await BadQuery(body);
            var (field, messages) = Assert.Single(errors);
            return (field, Assert.Single(messages));
        }
        Assert.Equal(("vector", "is a string but not base64 (RFC 4648, with padding) of little-endian float32 values"), await Bad("{\"vector\":\"not base64!\"}"));
        Assert.Equal(("vector", "decodes to 5 bytes, not a whole number of float32 values (4 bytes each, little-endian)"), await Bad("{\"vector\":\"AAAAAAA=\"}"));
        Assert.Equal(("vector", "has 3 dimensions; the index has 24"), await Bad("{\"vector\":\"" + Bodies.Base64(1, 2, 3) + "\"}"));
        var notFinite = (float[])fx.Queries[0].Clone();
        notFinite[5] = float.PositiveInfinity;
        Assert.Equal(("vector", "contains a value that is not a finite number"), await Bad("{\"vector\":\"" + Bodies.Base64(notFinite) + "\"}"));
        Assert.Equal(("vectors[1]", "is a string but not base64 (RFC 4648, with padding) of little-endian float32 values"),
            await Bad("{\"vectors\":[\"" + good + "\",\"not base64!\"]}"));
        Assert.Equal(("vectors[0]", "has 3 dimensions; the index has 24"), await Bad("{\"vectors\":[\"" + Bodies.Base64(1, 2, 3) + "\",\"" + good + "\"]}"));
        // A good base64 vector beside a body error elsewhere is not mistaken for a bad array.
        Assert.Equal(("vectors[1][0]", "must be a number, got the string \"x\""), await Bad("{\"vectors\":[\"" + good + "\",[\"x\",1]]}"));
        Assert.Equal(("k", "must be a whole number, got the string \"5\""), await Bad("{\"vectors\":[\"" + good + "\"],\"k\":\"5\"}"));
        Assert.Equal(("k", "must be a whole number, got the string \"5\""), await Bad("{\"vector\":\"" + good + "\",\"k\":\"5\"}"));
    }

    [Fact]
    public async Task MalformedJsonNamesWhereItBroke()
    {
        var errors = await BadQuery("{\"vector\": [1, 2,");
        Assert.StartsWith("is not valid JSON: ", Assert.Single(errors["vector[2]"]));
        errors = await BadQuery("{\"vectors\": [[1, 2], \"AACAPwAAAEA=\", [3");
        Assert.StartsWith("is not valid JSON: '3' is an invalid end of a number", Assert.Single(errors["vectors[2][0]"]));
    }
}
