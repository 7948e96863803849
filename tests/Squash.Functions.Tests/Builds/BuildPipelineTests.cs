using System.Net;
using System.Text;
using System.Text.Json;
using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.Search;
using Squash.Storage;
using Squash.Storage.Builds;

namespace Squash.Functions.Tests.Builds;

/// <summary>
/// Builds through the four queue functions, delivered from the Azurite queues with the host's invocation payloads:
/// the result equals the in-process build byte for byte, and the faults of at-least-once delivery, failures,
/// cancels, concurrent builds and changing sources end as they must.
/// </summary>
[Collection(nameof(BuildQueueCollection))]
public sealed class BuildPipelineTests
{
    private const int Count = 2400, Dims = 16, Seed = 7;
    private static readonly string[] Colours = ["red", "green", "blue"];

    /// <summary>A mixture of <paramref name="clusters"/> clusters (seeded), so partitions are real clusters.</summary>
    private static float[] Data(int seed = Seed, int count = Count, int dims = Dims, int clusters = 12)
    {
        var rng = new Random(seed);
        var centres = Enumerable.Range(0, clusters * dims).Select(_ => (float)(rng.NextDouble() * 20)).ToArray();
        var data = new float[count * dims];
        for (int i = 0; i < count; i++)
        {
            int c = rng.Next(clusters);
            for (int j = 0; j < dims; j++) data[i * dims + j] = centres[c * dims + j] + (float)(rng.NextDouble() * 2 - 1);
        }
        return data;
    }

    private static string AttributeLines() =>
        string.Join('\n', Enumerable.Range(0, Count).Select(i => $"{{\"id\":\"doc-{i}\",\"attributes\":{{\"colour\":\"{Colours[i % 3]}\",\"price\":{i % 97}}}}}"));

    /// <summary>The source as two blobs under a prefix (an .fvecs and an .npy, split mid-chunk) and the attributes.</summary>
    private static async Task UploadSourceAsync(BuildTestApp app, float[] data)
    {
        const int split = 1000;
        await app.UploadAsync("src/part-0.fvecs", BuildTestApp.Fvecs(data[..(split * Dims)], Dims));
        await app.UploadAsync("src/part-1.npy", BuildTestApp.Npy(data[(split * Dims)..], Dims));
        await app.UploadAsync("attrs.jsonl", Encoding.UTF8.GetBytes(AttributeLines()));
    }

    private const string Request = """{"source":{"vectors":"src","attributes":"attrs.jsonl"},"options":{"partitions":10,"seed":7,"chunkRows":700}}""";

    private static async Task<IndexStore> InProcessAsync(float[] data)
    {
        var store = new IndexStore(new FolderBlobStore(Path.Combine(Path.GetTempPath(), "squash-inproc-" + Guid.NewGuid().ToString("N"))), "products");
        var table = AttributeReader.ReadJsonLines(new StringReader(AttributeLines()), "attrs.jsonl");
        await CalibratedBuild.BuildAndPublishAsync(store, data, Count, Dims, new IndexBuildOptions { Partitions = 10, Seed = Seed, Attributes = table });
        return store;
    }

    [Fact]
    public async Task AQueueBuildEqualsTheInProcessBuildByteForByteAndAnswersTheSame()
    {
        using var app = await BuildTestApp.StartAsync();
        var data = Data();
        await UploadSourceAsync(app, data);
        var buildId = await app.SubmitOkAsync("products", Request);
        // At-least-once delivery: the first assign message is delivered again after it finished.
        bool resent = false;
        var view = default(JsonElement);
        await app.DriveAsync(async () =>
        {
            view = await app.ShowAsync("products", buildId);
            return BuildStatus.IsTerminal(view.GetProperty("status").GetString()!);
        }, TimeSpan.FromSeconds(180), async stage =>
        {
            var first = app.Deliveries.FirstOrDefault(d => d.Function == "build-assign" && d.Status == 200);
            if (!resent && first.Function is not null)
            {
                resent = true;
                await BuildTestApp.Queue("squash-build-assign").SendMessageAsync(first.Message);
            }
        });
        Assert.True(view.GetProperty("status").GetString() == "succeeded", view.ToString());
        Assert.Equal(2, app.Deliveries.Count(d => d.Function == "build-assign" && d.Message == app.Deliveries.First(x => x.Function == "build-assign").Message));
        // The redelivered task counted once.
        Assert.Equal(Count, view.GetProperty("vectors").GetProperty("assigned").GetInt64());
        Assert.Equal(Count, view.GetProperty("vectors").GetProperty("encoded").GetInt64());
        Assert.True(view.GetProperty("current").GetBoolean());
        var version = view.GetProperty("version").GetString()!;

        var queued = new IndexStore(app.Store, "products");
        Assert.Equal(version, (await queued.GetCurrentAsync())!.Value.Version);
        var reference = await InProcessAsync(data);
        var a = await queued.ReadManifestAsync(version);
        var b = await reference.OpenCurrentAsync();
        Assert.Equal(b.Partitions.Count, a.Partitions.Count);
        foreach (var segment in IndexStore.BlobsNamedBy(b))
        {
            var queuedBytes = await app.Store.ReadAllAsync(queued.VersionPrefix(version) + segment.Name);
            var referenceBytes = await reference.Blobs.ReadAllAsync(reference.VersionPrefix(b.Version) + segment.Name);
            Assert.True(queuedBytes.AsSpan().SequenceEqual(referenceBytes), $"segment {segment.Name} differs (seed {Seed})");
        }
        // The routing compared above holds the colour's per-partition value centroids (the queue build's encode tasks wrote them too).
        Assert.Equal([b.Attributes!.IndexOf("colour")], (await queued.ReadRoutingAsync(a)).ValueCentroids.Select(v => v.Attribute));
        Assert.Equal(JsonSerializer.Serialize(b.Calibration!.Plans), JsonSerializer.Serialize(a.Calibration!.Plans));
        // The in-process build found its filtered neighbours from its input while building, the queue build partition by partition.
        Assert.NotNull(b.Calibration.Filtered);
        Assert.Equal(JsonSerializer.Serialize(b.Calibration.Filtered), JsonSerializer.Serialize(a.Calibration.Filtered));
        Assert.Equal(JsonSerializer.Serialize(b.Attributes), JsonSerializer.Serialize(a.Attributes));

        var queuedEngine = new SearchEngine(await OpenedIndex.OpenAsync(queued));
        var referenceEngine = new SearchEngine(await OpenedIndex.OpenAsync(reference));
        var rng = new Random(11);
        for (int q = 0; q < 40; q++)
        {
            var query = data.AsSpan(rng.Next(Count) * Dims, Dims).ToArray().Select(v => v + (float)rng.NextDouble()).ToArray();
            var options = new SearchOptions { K = 10, Recall = SearchOptions.DefaultRecall };
            var x = queuedEngine.Search(query, options);
            var y = referenceEngine.Search(query, options);
            Assert.Equal(y.Ids, x.Ids);
            Assert.Equal(y.Distances, x.Distances);
        }
        // The work blobs are gone; the job record stays.
        await foreach (var blob in app.Store.ListAsync($"products/build-work/{buildId}/")) Assert.Fail($"left behind: {blob.Name}");
    }

    /// <summary>
    /// A queue build that calibrates on the user's queries and filter families (blobs named in the request) equals the
    /// in-process build given the same files: the same held-out nothing, the same exact neighbours, the same families in the
    /// same bands. 320 queries: both keep the first 300 (the sample a build of 2,400 vectors takes), and each filter blob
    /// holds one line per query of the whole file, blank lines and "null" included.
    /// </summary>
    [Fact]
    public async Task AQueueBuildCalibratedOnTheUsersQueriesAndFiltersEqualsTheInProcessBuild()
    {
        const int queries = 320, querySeed = 19;
        var data = Data();
        var rng = new Random(querySeed);
        var query = new float[queries * Dims];
        for (int q = 0; q < queries; q++)
        {
            int row = rng.Next(Count);
            for (int j = 0; j < Dims; j++) query[q * Dims + j] = data[row * Dims + j] + (float)(rng.NextDouble() - 0.5);
        }
        var colour = Enumerable.Range(0, queries).Select(q => q % 4 == 0 ? "null" : $"{{\"colour\":\"{Colours[q % 3]}\"}}").ToArray();
        var price = Enumerable.Range(0, queries).Select(q => $"{{\"price\":{{\"$lt\":{10 + q % 30}}}}}").ToArray();
        string File(string[] lines) => string.Join('\n', lines.Select((l, i) => i == 7 ? "\n" + l : l)) + "\n";

        using var app = await BuildTestApp.StartAsync();
        await UploadSourceAsync(app, data);
        await app.UploadAsync("cal/queries.fvecs", BuildTestApp.Fvecs(query, Dims));
        await app.UploadAsync("cal/colour.jsonl", Encoding.UTF8.GetBytes(File(colour)));
        await app.UploadAsync("cal/price.jsonl", Encoding.UTF8.GetBytes(File(price)));
        var buildId = await app.SubmitOkAsync("products", """{"source":{"vectors":"src","attributes":"attrs.jsonl","calibrationQueries":"cal/queries.fvecs","calibrationFilters":["cal/colour.jsonl","cal/price.jsonl"]},"options":{"partitions":10,"seed":7,"chunkRows":700}}""");
        var view = await app.RunToEndAsync("products", buildId);
        Assert.True(view.GetProperty("status").GetString() == "succeeded", view.ToString());
        Assert.Equal("cal/queries.fvecs", view.GetProperty("source").GetProperty("calibrationQueries").GetString());
        var queued = new IndexStore(app.Store, "products");
        var a = await queued.ReadManifestAsync(view.GetProperty("version").GetString()!);

        var reference = new IndexStore(new FolderBlobStore(Path.Combine(Path.GetTempPath(), "squash-inproc-" + Guid.NewGuid().ToString("N"))), "products");
        var table = AttributeReader.ReadJsonLines(new StringReader(AttributeLines()), "attrs.jsonl");
        const int kept = 300;
        var given = new[] { ("colour.jsonl", colour), ("price.jsonl", price) }
            .Select(f => CalibrationFilterFile.Parse(f.Item1, File(f.Item2).Split('\n')).Family(kept)).ToArray();
        var calibration = new CalibrationQueries(query[..(kept * Dims)], kept, Dims, null, "queries", Filters: given);
        await CalibratedBuild.BuildAndPublishAsync(reference, data, Count, Dims, new IndexBuildOptions { Partitions = 10, Seed = Seed, Attributes = table },
            calibration: calibration);
        var b = await reference.OpenCurrentAsync();
        Assert.Equal("queries", b.Calibration!.Source);
        Assert.Equal(kept, b.Calibration.Queries);
        // Nothing held out: every base row is in the index, in both.
        Assert.Equal(Count, a.Count);
        // Both keep the queries (for the recalibration after writes) in their own version's folder, with the same bytes (compared below).
        Assert.Equal(b.Calibration.QueriesBlob! with { Version = a.Version }, a.Calibration!.QueriesBlob);
        Assert.Equal(["calibration-filters/0/colour.jsonl", "calibration-filters/1/price.jsonl"], a.Calibration.FilterBlobs!.Select(f => f.Name));
        Assert.Equal(b.Calibration.FilterBlobs!.Select(f => f with { Version = a.Version }), a.Calibration.FilterBlobs!);
        Assert.Equal(JsonSerializer.Serialize(b.Calibration), JsonSerializer.Serialize(a.Calibration with
        {
            Seconds = b.Calibration.Seconds, QueriesBlob = b.Calibration.QueriesBlob, FilterBlobs = b.Calibration.FilterBlobs,
        }));
        Assert.Equal(["colour.jsonl", "price.jsonl"], a.Calibration.Filtered!.SelectMany(band => band.Families).Select(f => f[..f.IndexOf(':')]).Distinct().Order());
        foreach (var segment in IndexStore.BlobsNamedBy(b))
        {
            var queuedBytes = await app.Store.ReadAllAsync(queued.VersionPrefix(a.Version) + segment.Name);
            var referenceBytes = await reference.Blobs.ReadAllAsync(reference.VersionPrefix(b.Version) + segment.Name);
            Assert.True(queuedBytes.AsSpan().SequenceEqual(referenceBytes), $"segment {segment.Name} differs (seed {Seed}, query seed {querySeed})");
        }
    }

    /// <summary>
    /// Past 100,000 vectors the calibration measures fewer rows than its sample against exact neighbours (here 750 of
    /// 1,200): the assign tasks find exact neighbours for those only and the publish task measures the rest against the
    /// reference plan in a second pass over the partitions. The result still equals the in-process build's.
    /// </summary>
    [Fact]
    public async Task AQueueBuildWhoseCalibrationIsPartlyExactEqualsTheInProcessBuild()
    {
        const int count = 160_000, dims = 4, seed = 5;
        var data = Data(seed, count, dims, clusters: 40);
        Assert.Equal(1_200, CalibratedBuild.CalibrationRows(count, seed)!.Length);
        Assert.Equal(750, RecallCalibrator.ExactQueries(count, 1_200));
        using var app = await BuildTestApp.StartAsync();
        await app.UploadAsync("big.fvecs", BuildTestApp.Fvecs(data, dims));
        var buildId = await app.SubmitOkAsync("big", $$$"""{"source":{"vectors":"big.fvecs"},"options":{"seed":{{{seed}}},"chunkRows":50000}}""");
        var view = default(JsonElement);
        await app.DriveAsync(async () =>
        {
            view = await app.ShowAsync("big", buildId);
            return BuildStatus.IsTerminal(view.GetProperty("status").GetString()!);
        }, TimeSpan.FromSeconds(300));
        Assert.True(view.GetProperty("status").GetString() == "succeeded", view.ToString());
        var queued = new IndexStore(app.Store, "big");
        var a = await queued.ReadManifestAsync(view.GetProperty("version").GetString()!);

        var reference = new IndexStore(new FolderBlobStore(Path.Combine(Path.GetTempPath(), "squash-inproc-" + Guid.NewGuid().ToString("N"))), "big");
        await CalibratedBuild.BuildAndPublishAsync(reference, data, count, dims, new IndexBuildOptions { Seed = seed });
        var b = await reference.OpenCurrentAsync();
        Assert.Equal(1_200, b.Calibration!.Queries);
        Assert.Equal(1_200, a.Calibration!.Queries);
        Assert.Equal(JsonSerializer.Serialize(b.Calibration.Plans), JsonSerializer.Serialize(a.Calibration.Plans));
        Assert.Equal(b.Partitions.Count, a.Partitions.Count);
        foreach (var segment in IndexStore.BlobsNamedBy(b))
        {
            var queuedBytes = await app.Store.ReadAllAsync(queued.VersionPrefix(a.Version) + segment.Name);
            var referenceBytes = await reference.Blobs.ReadAllAsync(reference.VersionPrefix(b.Version) + segment.Name);
            Assert.True(queuedBytes.AsSpan().SequenceEqual(referenceBytes), $"segment {segment.Name} differs (seed {seed})");
        }
    }

    [Fact]
    public async Task ATaskThatAlwaysFailsEndsInThePoisonQueueAndFailsTheJobNamingIt()
    {
        using var app = await BuildTestApp.StartAsync();
        await UploadSourceAsync(app, Data());
        var buildId = await app.SubmitOkAsync("products", Request);
        // Once the assign stage is done, partition 0's rows are damaged: encoding them fails on every delivery.
        bool damaged = false;
        var view = default(JsonElement);
        await app.DriveAsync(async () =>
        {
            view = await app.ShowAsync("products", buildId);
            return BuildStatus.IsTerminal(view.GetProperty("status").GetString()!);
        }, TimeSpan.FromSeconds(180), async stage =>
        {
            if (damaged || stage != "encode" || (await app.ShowAsync("products", buildId)).GetProperty("status").GetString() != "encoding") return;
            damaged = true;
            // The first run of chunk 0's runs blob (trained partition 0's rows) gets a flipped byte: only the task that
            // encodes partition 0 reads it.
            var name = $"products/build-work/{buildId}/runs/c000000.run";
            var bytes = await app.Store.ReadAllAsync(name);
            bytes[80] ^= 0xff;
            await app.Store.WriteAsync(name, bytes, WriteCondition.Overwrite);
        });
        Assert.Equal("failed", view.GetProperty("status").GetString());
        var error = view.GetProperty("error");
        Assert.Equal("task-failed", error.GetProperty("code").GetString());
        Assert.Equal("encode[0]", error.GetProperty("task").GetString());
        Assert.EndsWith($"(failed on all {BuildTestApp.MaxDequeueCount} deliveries)", error.GetProperty("message").GetString());
        Assert.Contains("runs/c000000.run", error.GetProperty("message").GetString());
        var poisoned = (await BuildTestApp.Queue("squash-build-encode-poison").PeekMessagesAsync(10)).Value;
        Assert.Equal($$"""{"index":"products","buildId":"{{buildId}}","stage":"encode","task":0}""", Assert.Single(poisoned).Body.ToString());
        Assert.Null(await new IndexStore(app.Store, "products").GetCurrentAsync());
    }

    [Fact]
    public async Task ACancelMidBuildPublishesNothing()
    {
        using var app = await BuildTestApp.StartAsync();
        await UploadSourceAsync(app, Data());
        var buildId = await app.SubmitOkAsync("products", Request);
        bool cancelled = false;
        await app.DriveAsync(async () =>
        {
            if (!cancelled && app.Deliveries.Count(d => d.Function == "build-encode" && d.Status == 200) >= 2)
            {
                using var response = await app.Client.DeleteAsync($"/api/indexes/products/builds/{buildId}");
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                cancelled = true;
            }
            // Done when cancelled and every queue is empty (the rest of the messages were delivered and skipped).
            if (!cancelled) return false;
            foreach (var stage in BuildStages.All)
                if ((await BuildTestApp.Queue(BuildStages.QueueName(stage)).PeekMessagesAsync(1)).Value.Length > 0) return false;
            return true;
        }, TimeSpan.FromSeconds(180));
        var view = await app.ShowAsync("products", buildId);
        Assert.Equal("cancelled", view.GetProperty("status").GetString());
        var store = new IndexStore(app.Store, "products");
        Assert.Null(await store.GetCurrentAsync());
        var version = JsonDocument.Parse((await app.Store.ReadAllAsync(BuildJobStore.JobName("products", buildId)))).RootElement.GetProperty("version").GetString()!;
        await foreach (var blob in app.Store.ListAsync(store.VersionPrefix(version)))
            Assert.False(blob.Name.EndsWith("manifest.json", StringComparison.Ordinal), "a cancelled build wrote a manifest");
    }

    [Fact]
    public async Task TwoBuildsOfOneIndexAtOnceBothFinishAndTheNewerVersionIsCurrent()
    {
        using var app = await BuildTestApp.StartAsync();
        await UploadSourceAsync(app, Data());
        var first = await app.SubmitOkAsync("products", Request);
        var second = await app.SubmitOkAsync("products", Request.Replace("\"seed\":7", "\"seed\":8"));
        JsonElement a = default, b = default;
        await app.DriveAsync(async () =>
        {
            a = await app.ShowAsync("products", first);
            b = await app.ShowAsync("products", second);
            return BuildStatus.IsTerminal(a.GetProperty("status").GetString()!) && BuildStatus.IsTerminal(b.GetProperty("status").GetString()!);
        }, TimeSpan.FromSeconds(240));
        Assert.Equal("succeeded", a.GetProperty("status").GetString());
        Assert.Equal("succeeded", b.GetProperty("status").GetString());
        var store = new IndexStore(app.Store, "products");
        var versions = new[] { a.GetProperty("version").GetString()!, b.GetProperty("version").GetString()! };
        // Both versions are whole; the pointer names the newer id (version ids order builds by submission).
        foreach (var v in versions) await store.VerifyCompleteAsync(await store.ReadManifestAsync(v));
        var newest = versions.Max(StringComparer.Ordinal)!;
        Assert.Equal(newest, (await store.GetCurrentAsync())!.Value.Version);
        Assert.True((newest == versions[1] ? b : a).GetProperty("current").GetBoolean());
    }

    [Fact]
    public async Task ASourceThatChangesMidBuildFailsTheJobWithTheReason()
    {
        using var app = await BuildTestApp.StartAsync();
        var data = Data();
        await UploadSourceAsync(app, data);
        var buildId = await app.SubmitOkAsync("products", Request);
        bool changed = false;
        var view = default(JsonElement);
        await app.DriveAsync(async () =>
        {
            view = await app.ShowAsync("products", buildId);
            return BuildStatus.IsTerminal(view.GetProperty("status").GetString()!);
        }, TimeSpan.FromSeconds(180), async stage =>
        {
            if (changed || stage != "assign" || (await app.ShowAsync("products", buildId)).GetProperty("status").GetString() != "assigning") return;
            changed = true;
            var other = (float[])data.Clone();
            other[5 * Dims] += 1;
            await app.UploadAsync("src/part-1.npy", BuildTestApp.Npy(other[(1000 * Dims)..], Dims));
        });
        Assert.Equal("failed", view.GetProperty("status").GetString());
        var error = view.GetProperty("error");
        Assert.Equal("source-changed", error.GetProperty("code").GetString());
        Assert.StartsWith("assign[", error.GetProperty("task").GetString());
        Assert.StartsWith("source blob 'src/part-1.npy' changed after the build was submitted (ETag ", error.GetProperty("message").GetString());
        Assert.EndsWith("now); submit the build again", error.GetProperty("message").GetString());
        Assert.Null(await new IndexStore(app.Store, "products").GetCurrentAsync());
    }
}

/// <summary>What only a pass over all the data can find fails the job in the train task, naming the blob and row.</summary>
[Collection(nameof(BuildQueueCollection))]
public sealed class BuildBadDataTests
{
    [Fact]
    public async Task ANaNRowAndAnAttributesFileOfTheWrongLengthFailTheJobWithTheReason()
    {
        using var app = await BuildTestApp.StartAsync();
        const int dims = 6;
        var data = Enumerable.Range(0, 500 * dims).Select(i => (float)(i % 13)).ToArray();
        data[321 * dims + 4] = float.NaN;
        await app.UploadAsync("bad.fvecs", BuildTestApp.Fvecs(data, dims));
        await app.UploadAsync("good.fvecs", BuildTestApp.Fvecs(Enumerable.Range(0, 500 * dims).Select(i => (float)(i % 13)).ToArray(), dims));
        await app.UploadAsync("short.csv", Encoding.UTF8.GetBytes("price\n" + string.Join('\n', Enumerable.Range(0, 499))));

        var nan = await app.SubmitOkAsync("products", """{"source":{"vectors":"bad.fvecs"},"options":{"partitions":2,"chunkRows":100}}""");
        var view = await app.RunToEndAsync("products", nan);
        Assert.Equal(("bad-source", "bad.fvecs: NaN at row 321, column 4", "train[0]"), BuildMessageTests.Error(view));

        var rows = await app.SubmitOkAsync("products", """{"source":{"vectors":"good.fvecs","attributes":"short.csv"},"options":{"partitions":2}}""");
        view = await app.RunToEndAsync("products", rows);
        Assert.Equal(("bad-input", "the attributes blob 'short.csv' has 499 rows but there are 500 vectors (rows are matched by position)", "train[0]"), BuildMessageTests.Error(view));
        Assert.Null(await new IndexStore(app.Store, "products").GetCurrentAsync());
    }

    /// <summary>
    /// A queue build into an index whose write log holds writes of another dimension or id mode (which ingest would apply
    /// on top of it, and fail on) fails naming the conflict: in train when the writes are there, at publish when one
    /// arrives during the build; the index keeps its version. A build of the log's shape still publishes.
    /// </summary>
    [Fact]
    public async Task AWriteLogOfAnotherDimensionOrIdModeFailsTheJobBeforeItPublishes()
    {
        using var app = await BuildTestApp.StartAsync();
        const int n = 500;
        float[] Vectors(int dims) => Enumerable.Range(0, n * dims).Select(i => (float)(i % 13 + i % dims)).ToArray();
        var store = new IndexStore(app.Store, "products");
        var built = await IndexPublisher.BuildAndPublishAsync(store, Vectors(6), n, 6, new IndexBuildOptions { Partitions = 2 });
        await app.UploadAsync("six.fvecs", BuildTestApp.Fvecs(Vectors(6), 6));
        await app.UploadAsync("eight.fvecs", BuildTestApp.Fvecs(Vectors(8), 8));
        await app.UploadAsync("ids.jsonl", Encoding.UTF8.GetBytes(string.Join('\n', Enumerable.Range(0, n).Select(i => $"{{\"id\":\"sku-{i}\",\"attributes\":{{\"n\":{i}}}}}"))));
        var log = new Squash.Storage.Writes.WriteLog(app.Store, "products");
        async Task WriteAsync() =>
            await log.AppendAsync(new Squash.Storage.Writes.WriteBatch { CreatedUtc = DateTimeOffset.UtcNow, Upserts = [new("7", new float[6])] }, null, "r", 0);
        string Refusal(long through, string differences) =>
            $"index 'products' has writes in its write-ahead log (through sequence {through}) made against version {built.Version}, which has {differences}: " +
            "a build takes the whole log again on top of its rows, and ingest could not apply those writes as they were made; build into another index, " +
            "or, if those writes are no longer wanted, delete the index's log (the blobs under 'products/log/') first";

        // The log is empty when train looks; a write lands before publish.
        var during = await app.SubmitOkAsync("products", """{"source":{"vectors":"eight.fvecs"},"options":{"partitions":2,"chunkRows":100}}""");
        bool written = false;
        JsonElement view = default;
        await app.DriveAsync(async () => BuildStatus.IsTerminal((view = await app.ShowAsync("products", during)).GetProperty("status").GetString()!), TimeSpan.FromSeconds(120),
            beforeDelivery: async stage =>
            {
                if (written || stage != BuildStages.Publish || (await app.ShowAsync("products", during)).GetProperty("status").GetString() != BuildStatus.Publishing) return;
                await WriteAsync();
                written = true;
            });
        Assert.True(written, "the build ended before its publish");
        Assert.Equal(("bad-input", Refusal(1, "6 dimensions where this build has 8"), "publish[0]"), BuildMessageTests.Error(view));

        // The writes are there when train looks.
        async Task<(string?, string?, string?)> Fails(string request) =>
            BuildMessageTests.Error(await app.RunToEndAsync("products", await app.SubmitOkAsync("products", request)));
        Assert.Equal(("bad-input", Refusal(1, "6 dimensions where this build has 8"), "train[0]"),
            await Fails("""{"source":{"vectors":"eight.fvecs"},"options":{"partitions":2}}"""));
        Assert.Equal(("bad-input", Refusal(1, "rows named by number where this build has string ids"), "train[0]"),
            await Fails("""{"source":{"vectors":"six.fvecs","attributes":"ids.jsonl"},"options":{"partitions":2}}"""));
        Assert.Equal(built.Version, (await store.GetCurrentAsync())!.Value.Version);

        var same = await app.RunToEndAsync("products", await app.SubmitOkAsync("products", """{"source":{"vectors":"six.fvecs"},"options":{"partitions":2}}"""));
        Assert.Equal("succeeded", same.GetProperty("status").GetString());
        Assert.NotEqual(built.Version, (await store.GetCurrentAsync())!.Value.Version);
    }

    /// <summary>
    /// What `squash build` refuses in its input fails a queue build in train too, naming the blob and its row: a norm past
    /// 10^15 (its float32 distances overflow; the queue build used to succeed with it) and an all-zero row under cosine.
    /// </summary>
    [Fact]
    public async Task ARowTooLongOrZeroUnderCosineFailsTheJobNamingTheBlobAndRow()
    {
        using var app = await BuildTestApp.StartAsync();
        const int dims = 4;
        float[] Rows(int n) => Enumerable.Range(0, n * dims).Select(i => 1f + i % 7).ToArray();
        var longRow = Rows(200);
        longRow[37 * dims] = 3e38f;
        await app.UploadAsync("parts/a.fvecs", BuildTestApp.Fvecs(Rows(150), dims));
        await app.UploadAsync("parts/b.fvecs", BuildTestApp.Fvecs(longRow, dims));
        var zeroRow = Rows(200);
        Array.Clear(zeroRow, 5 * dims, dims);
        await app.UploadAsync("zero.fvecs", BuildTestApp.Fvecs(zeroRow, dims));

        var tooLong = await app.SubmitOkAsync("products", """{"source":{"vectors":"parts"},"options":{"partitions":2,"chunkRows":100}}""");
        Assert.Equal(("bad-source", "parts/b.fvecs: row 37 has norm 3E+38, larger than the largest a vector may have (10^15): its float32 distances would overflow", "train[0]"),
            BuildMessageTests.Error(await app.RunToEndAsync("products", tooLong)));
        var zero = await app.SubmitOkAsync("products", """{"source":{"vectors":"zero.fvecs"},"options":{"partitions":2,"metric":"cosine"}}""");
        Assert.Equal(("bad-source", "zero.fvecs: row 5 is all zeros: a zero vector has no direction, so it has no cosine distance", "train[0]"),
            BuildMessageTests.Error(await app.RunToEndAsync("products", zero)));
        Assert.Null(await new IndexStore(app.Store, "products").GetCurrentAsync());
    }

    /// <summary>The user's calibration queries and filters are read whole by the train task: a bad one fails the job there, naming the blob and the row or line.</summary>
    [Fact]
    public async Task BadCalibrationQueriesOrFiltersFailTheJobInTrainNamingTheBlob()
    {
        using var app = await BuildTestApp.StartAsync();
        const int dims = 6, queries = 4;
        await app.UploadAsync("base.fvecs", BuildTestApp.Fvecs(Enumerable.Range(0, 500 * dims).Select(i => (float)(i % 13)).ToArray(), dims));
        await app.UploadAsync("attrs.csv", Encoding.UTF8.GetBytes("price\n" + string.Join('\n', Enumerable.Range(0, 500))));
        var query = Enumerable.Range(0, queries * dims).Select(i => (float)(i % 7)).ToArray();
        await app.UploadAsync("q.fvecs", BuildTestApp.Fvecs(query, dims));
        query[2 * dims + 3] = float.NaN;
        await app.UploadAsync("nan.fvecs", BuildTestApp.Fvecs(query, dims));
        await app.UploadAsync("three.jsonl", Encoding.UTF8.GetBytes("null\n{\"price\":1}\n\n{\"price\":2}\n"));
        await app.UploadAsync("bad.jsonl", Encoding.UTF8.GetBytes("null\n{\"price\":1}\n\n{\"colour\":\"red\"}\nnull\n"));

        async Task<(string?, string?, string?)> Fails(string source)
        {
            var id = await app.SubmitOkAsync("products", $$$"""{"source":{"vectors":"base.fvecs","attributes":"attrs.csv",{{{source}}}},"options":{"partitions":2}}""");
            return BuildMessageTests.Error(await app.RunToEndAsync("products", id));
        }
        Assert.Equal(("bad-source", "nan.fvecs: NaN at row 2, column 3", "train[0]"), await Fails("\"calibrationQueries\":\"nan.fvecs\""));
        Assert.Equal(("bad-input", "calibration filter blob 'three.jsonl' has 3 filters; the calibration queries blob 'q.fvecs' has 4 queries (one filter per query, null for none)", "train[0]"),
            await Fails("\"calibrationQueries\":\"q.fvecs\",\"calibrationFilters\":[\"three.jsonl\"]"));
        Assert.Equal(("bad-input", "calibration filter blob 'bad.jsonl' line 4: filter $.colour: unknown attribute 'colour'", "train[0]"),
            await Fails("\"calibrationQueries\":\"q.fvecs\",\"calibrationFilters\":[\"bad.jsonl\"]"));
        Assert.Null(await new IndexStore(app.Store, "products").GetCurrentAsync());
    }
}
