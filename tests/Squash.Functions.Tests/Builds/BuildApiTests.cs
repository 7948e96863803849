using System.Net;
using Microsoft.AspNetCore.Hosting;
using System.Text;
using System.Text.Json;
using Squash.Storage.Builds;

namespace Squash.Functions.Tests.Builds;

/// <summary>The builds API: what is refused before 202 (exact problem+json), idempotency, show, list and cancel.</summary>
[Collection(nameof(BuildQueueCollection))]
public sealed class BuildApiTests
{
    private const int Dims = 12;

    private static float[] Vectors(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n * Dims).Select(_ => (float)rng.NextDouble()).ToArray();
    }

    private static async Task<BuildTestApp> AppWithSourcesAsync()
    {
        var app = await BuildTestApp.StartAsync();
        await app.UploadAsync("data/base.fvecs", BuildTestApp.Fvecs(Vectors(500, 1), Dims));
        await app.UploadAsync("data/attrs.jsonl", Encoding.UTF8.GetBytes(string.Join('\n', Enumerable.Range(0, 500).Select(i => $"{{\"attributes\":{{\"n\":{i}}}}}"))));
        // Three records of 12 dimensions (52 bytes each) and 10 bytes of a fourth.
        await app.UploadAsync("data/cut.fvecs", BuildTestApp.Fvecs(Vectors(4, 2), Dims)[..(3 * 52 + 10)]);
        await app.UploadAsync("parts/a.fvecs", BuildTestApp.Fvecs(Vectors(10, 3), Dims));
        await app.UploadAsync("parts/b.fvecs", BuildTestApp.Fvecs(Vectors(10, 4), 8));
        await app.UploadAsync("data/notes.txt", [1, 2, 3]);
        return app;
    }

    private static async Task<Dictionary<string, string[]>> BadRequest(BuildTestApp app, string body, string? key = null)
    {
        using var response = await app.SubmitAsync("products", body, key);
        var problem = await Problems.Read(response, HttpStatusCode.BadRequest);
        return Problems.Errors(problem);
    }

    private static void Only(Dictionary<string, string[]> errors, string field, string message)
    {
        Assert.True(errors.Count == 1 && errors.ContainsKey(field), string.Join("; ", errors.Select(e => $"{e.Key}: {string.Join(" | ", e.Value)}")));
        Assert.Equal([message], errors[field]);
    }

    [Fact]
    public async Task FieldsAreCheckedBeforeAnythingIsRead()
    {
        using var app = await AppWithSourcesAsync();
        Only(await BadRequest(app, "{}"), "source", "is required: {\"vectors\": \"<blob name or prefix>\"}");
        Only(await BadRequest(app, """{"source":{}}"""), "source.vectors", "is required: the name of a vector blob (.fvecs, .bvecs, .npy) or a prefix");
        Only(await BadRequest(app, """{"source":{"vectors":"../x.fvecs"}}"""), "source.vectors", "'../x.fvecs' is not a valid blob name (no leading '/', no empty, '.' or '..' parts)");
        Only(await BadRequest(app, """{"source":{"vectors":"data/base.fvecs","attributes":"data/attrs.xml"}}"""), "source.attributes", "'data/attrs.xml' must be a .jsonl or .csv blob");
        Only(await BadRequest(app, """{"source":{"vectors":"data/base.fvecs","schema":{"n":"integer"}}}"""), "source.schema", "needs source.attributes");
        Only(await BadRequest(app, """{"source":{"vectors":"data/base.fvecs","attributes":"data/attrs.jsonl","schema":{"n":"decimal"}}}"""),
            "source.schema.n", "must be number, integer, bool, category or tags, got \"decimal\"");
        Only(await BadRequest(app, """{"source":{"vectors":"data/base.fvecs"},"options":{"metric":"manhattan"}}"""), "options.metric", "must be \"l2\", \"cosine\" or \"ip\", got \"manhattan\"");
        Only(await BadRequest(app, """{"source":{"vectors":"data/base.fvecs"},"options":{"bitsPerDim":6,"maxBits":4}}"""), "options.bitsPerDim", "(6) cannot exceed maxBits (4)");
        Only(await BadRequest(app, """{"source":{"vectors":"data/base.fvecs"},"options":{"energy":1.5}}"""), "options.energy", "must be in (0, 1], got 1.5");
        Only(await BadRequest(app, """{"source":{"vectors":"data/base.fvecs"},"options":{"partitions":-1}}"""), "options.partitions", "must be ≥ 0 (0 picks clamp(N / 1000, 1, 4096)), got -1");
        // The body's shape is checked field by field as every endpoint does it.
        var unknown = await BadRequest(app, """{"source":{"vectors":"data/base.fvecs"},"options":{"bits":4}}""");
        Only(unknown, "options.bits", "is not a field here; the fields are: metric, partitions, bitsPerDim, maxBits, energy, seed, calibrate, chunkRows");
        Only(await BadRequest(app, """{"source":{"vectors":"data/base.fvecs"},"options":{"seed":"7"}}"""), "options.seed", "must be a whole number, got the string \"7\"");
        Only(await BadRequest(app, """{"source":{"vectors":"data/base.fvecs"}}""", key: "has space"), "Idempotency-Key", "must be 1 to 200 visible ASCII characters");
    }

    [Fact]
    public async Task SourcesAreReadBeforeTheJobIsAccepted()
    {
        using var app = await AppWithSourcesAsync();
        Only(await BadRequest(app, """{"source":{"vectors":"data/missing.fvecs"}}"""), "source.vectors", "no blob named 'data/missing.fvecs' and no blobs under 'data/missing.fvecs/' in the store");
        Only(await BadRequest(app, """{"source":{"vectors":"data/cut.fvecs"}}"""), "source.vectors", "data/cut.fvecs: truncated record 3: has 10 of 52 bytes");
        Only(await BadRequest(app, """{"source":{"vectors":"data/notes.txt"}}"""), "source.vectors", "blob 'data/notes.txt' is not a vector file (.fvecs, .bvecs or .npy)");
        Only(await BadRequest(app, """{"source":{"vectors":"parts"}}"""), "source.vectors", "blob 'parts/b.fvecs' has 8 dimensions; 'parts/a.fvecs' has 12 (every blob of a source must agree)");
        Only(await BadRequest(app, """{"source":{"vectors":"data/base.fvecs","attributes":"data/none.jsonl"}}"""), "source.attributes", "no blob named 'data/none.jsonl' in the store");
        Only(await BadRequest(app, """{"source":{"vectors":"data/base.fvecs"},"options":{"partitions":501}}"""), "options.partitions", "(501) cannot exceed the number of vectors (500)");
        Only(await BadRequest(app, """{"source":{"vectors":"data/base.fvecs"},"options":{"chunkRows":10000000}}"""), "options.chunkRows",
            "a chunk of 10,000,000 rows × 12 dimensions is 457 MB of float32; at most 256 MB");
        // Nothing was stored for any of them.
        Assert.Empty(JsonDocument.Parse(await app.Client.GetStringAsync("/api/indexes/products/builds")).RootElement.GetProperty("builds").EnumerateArray());
    }

    [Fact]
    public async Task CalibrationQueriesAndFiltersAreCheckedBeforeTheJobIsAccepted()
    {
        using var app = await AppWithSourcesAsync();
        await app.UploadAsync("cal/q.fvecs", BuildTestApp.Fvecs(Vectors(20, 5), Dims));
        await app.UploadAsync("cal/f.jsonl", Encoding.UTF8.GetBytes(string.Join('\n', Enumerable.Repeat("""{"n":{"$lt":9}}""", 20))));
        const string withAttributes = "\"vectors\":\"data/base.fvecs\",\"attributes\":\"data/attrs.jsonl\"";
        Only(await BadRequest(app, $$$"""{"source":{{{{withAttributes}}},"calibrationQueries":"cal/q.txt"}}"""), "source.calibrationQueries",
            "'cal/q.txt' must be a vector blob (.fvecs, .bvecs or .npy)");
        Only(await BadRequest(app, $$$"""{"source":{{{{withAttributes}}},"calibrationQueries":"cal/q.fvecs"},"options":{"calibrate":false}}"""), "source.calibrationQueries",
            "cannot be combined with options.calibrate: false");
        Only(await BadRequest(app, $$$"""{"source":{{{{withAttributes}}},"calibrationFilters":["cal/f.jsonl"]}}"""), "source.calibrationFilters",
            "needs source.calibrationQueries (line i is the filter of query i)");
        Only(await BadRequest(app, """{"source":{"vectors":"data/base.fvecs","calibrationQueries":"cal/q.fvecs","calibrationFilters":["cal/f.jsonl"]}}"""), "source.calibrationFilters",
            "needs source.attributes: the filters name attributes");
        Only(await BadRequest(app, $$$"""{"source":{{{{withAttributes}}},"calibrationQueries":"cal/q.fvecs","calibrationFilters":["cal/f.jsonl","cal/f.jsonl"]}}"""), "source.calibrationFilters",
            "names a blob twice (each blob is one family)");
        Only(await BadRequest(app, $$$"""{"source":{{{{withAttributes}}},"calibrationQueries":"cal/q.fvecs","calibrationFilters":["cal/f.jsonl","other/f.jsonl"]}}"""), "source.calibrationFilters",
            "'cal/f.jsonl' and 'other/f.jsonl' have the same file name, which names a family: rename one");
        Only(await BadRequest(app, $$$"""{"source":{{{{withAttributes}}},"calibrationQueries":"cal/q.fvecs","calibrationFilters":["cal/f.jsonl",null]}}"""), "source.calibrationFilters[1]",
            "must be a blob name, got null");
        // Then the blobs: the queries' header and dimensions, each filter blob's existence.
        Only(await BadRequest(app, $$$"""{"source":{{{{withAttributes}}},"calibrationQueries":"cal/none.fvecs"}}"""), "source.calibrationQueries", "no blob named 'cal/none.fvecs' in the store");
        Only(await BadRequest(app, $$$"""{"source":{{{{withAttributes}}},"calibrationQueries":"data/cut.fvecs"}}"""), "source.calibrationQueries", "data/cut.fvecs: truncated record 3: has 10 of 52 bytes");
        Only(await BadRequest(app, $$$"""{"source":{{{{withAttributes}}},"calibrationQueries":"parts/b.fvecs"}}"""), "source.calibrationQueries", "'parts/b.fvecs' has 8 dimensions; the vectors have 12");
        Only(await BadRequest(app, $$$"""{"source":{{{{withAttributes}}},"calibrationQueries":"cal/q.fvecs","calibrationFilters":["cal/f.jsonl","cal/g.jsonl"]}}"""), "source.calibrationFilters[1]",
            "no blob named 'cal/g.jsonl' in the store");
        Assert.Empty(JsonDocument.Parse(await app.Client.GetStringAsync("/api/indexes/products/builds")).RootElement.GetProperty("builds").EnumerateArray());
        // Accepted, the job shows what it calibrates on.
        var id = await app.SubmitOkAsync("products", $$$"""{"source":{{{{withAttributes}}},"calibrationQueries":"cal/q.fvecs","calibrationFilters":["cal/f.jsonl"]}}""");
        var source = (await app.ShowAsync("products", id)).GetProperty("source");
        Assert.Equal("""{"vectors":"data/base.fvecs","blobs":1,"attributes":"data/attrs.jsonl","calibrationQueries":"cal/q.fvecs","calibrationFilters":["cal/f.jsonl"]}""", source.GetRawText());
    }

    [Fact]
    public async Task AnAcceptedBuildIsQueuedWithItsTrainTaskAndCanBeShownListedAndCancelled()
    {
        using var app = await AppWithSourcesAsync();
        using var response = await app.SubmitAsync("products", """{"source":{"vectors":"data/base.fvecs"},"options":{"partitions":4,"chunkRows":120}}""");
        var text = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var buildId = JsonDocument.Parse(text).RootElement.GetProperty("buildId").GetString()!;
        Assert.Equal($$"""{"buildId":"{{buildId}}","status":"queued"}""", text);
        Assert.Equal($"/api/indexes/products/builds/{buildId}", response.Headers.Location!.OriginalString);

        // The train message names the job and nothing else, base64 on the wire as the queue trigger expects.
        var messages = (await BuildTestApp.Queue("squash-build-train").PeekMessagesAsync(10)).Value;
        var message = Assert.Single(messages);
        Assert.Equal($$"""{"index":"products","buildId":"{{buildId}}","stage":"train","task":0}""", message.Body.ToString());

        var view = await app.ShowAsync("products", buildId);
        Assert.Equal("queued", view.GetProperty("status").GetString());
        Assert.Equal(500, view.GetProperty("vectors").GetProperty("total").GetInt64());
        Assert.Equal(12, view.GetProperty("vectors").GetProperty("dimensions").GetInt32());
        Assert.Equal("""[{"stage":"train","done":0,"total":1},{"stage":"assign","done":0,"total":5},{"stage":"encode","done":0,"total":4},{"stage":"publish","done":0,"total":1}]""",
            view.GetProperty("stages").GetRawText());
        var list = JsonDocument.Parse(await app.Client.GetStringAsync("/api/indexes/products/builds")).RootElement.GetProperty("builds");
        Assert.Equal(buildId, Assert.Single(list.EnumerateArray()).GetProperty("buildId").GetString());

        using var cancel = await app.Client.DeleteAsync($"/api/indexes/products/builds/{buildId}");
        Assert.Equal(HttpStatusCode.OK, cancel.StatusCode);
        Assert.Equal("cancelled", (await app.ShowAsync("products", buildId)).GetProperty("status").GetString());
        using var again = await app.Client.DeleteAsync($"/api/indexes/products/builds/{buildId}");
        var problem = await Problems.Read(again, HttpStatusCode.Conflict);
        Assert.Equal($"build {buildId} has already been cancelled", problem.GetProperty("detail").GetString());

        using var missing = await app.Client.GetAsync("/api/indexes/products/builds/b20261203-121530123-3f9a1c0b7e2d");
        Assert.Equal("index 'products' has no build 'b20261203-121530123-3f9a1c0b7e2d'", (await Problems.Read(missing, HttpStatusCode.NotFound)).GetProperty("detail").GetString());
        using var badId = await app.Client.GetAsync("/api/indexes/products/builds/latest");
        Only(await Problems.BadRequest(badId), "buildId", "'latest' is not a build id (such as b20261203-121530123-3f9a1c0b7e2d)");
    }

    [Fact]
    public async Task TheSameIdempotencyKeyReturnsTheSameJobAndADifferentRequestUnderItIsAConflict()
    {
        using var app = await AppWithSourcesAsync();
        const string body = """{"source":{"vectors":"data/base.fvecs"},"options":{"partitions":4}}""";
        var first = await app.SubmitOkAsync("products", body, key: "nightly-2026-12-03");
        var second = await app.SubmitOkAsync("products", body, key: "nightly-2026-12-03");
        Assert.Equal(first, second);
        var other = await app.SubmitOkAsync("products", body);
        Assert.NotEqual(first, other);
        var listed = JsonDocument.Parse(await app.Client.GetStringAsync("/api/indexes/products/builds")).RootElement.GetProperty("builds")
            .EnumerateArray().Select(b => b.GetProperty("buildId").GetString()).Order().ToArray();
        Assert.Equal(new[] { first, other }.Order().ToArray(), listed);

        using var conflict = await app.SubmitAsync("products", """{"source":{"vectors":"data/base.fvecs"},"options":{"partitions":5}}""", key: "nightly-2026-12-03");
        var problem = await Problems.Read(conflict, HttpStatusCode.Conflict);
        Assert.Equal($"Idempotency-Key 'nightly-2026-12-03' was first used for build {first} with a different request; use a new key for a new request", problem.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task WithoutAQueueAccountBuildsAreRefusedWith503()
    {
        var root = Directory.CreateTempSubdirectory("squash-noqueue-");
        try
        {
            using var factory = new Microsoft.AspNetCore.Mvc.Testing.WebApplicationFactory<Program>().WithWebHostBuilder(b =>
            {
                b.UseSetting("Squash:Store", "dir:" + root.FullName);
                b.UseSetting("AzureWebJobsStorage", "");
            });
            using var client = factory.CreateClient();
            using var response = await client.PostAsync("/api/indexes/products/builds", new StringContent("""{"source":{"vectors":"x.fvecs"}}""", Encoding.UTF8, "application/json"));
            var problem = await Problems.Read(response, HttpStatusCode.ServiceUnavailable);
            Assert.Equal("builds need a queue (serve with --store azure:...)", problem.GetProperty("detail").GetString());
            using var list = await client.GetAsync("/api/indexes/products/builds");
            await Problems.Read(list, HttpStatusCode.ServiceUnavailable);
        }
        finally { root.Delete(true); }
    }
}
