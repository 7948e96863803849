using System.Globalization;
using System.Net;
using System.Text.Json;
using Squash.Index.Build;
using Squash.Search.Builds;
using Squash.Search.Writes;
using Squash.Storage;
using Squash.Storage.Builds;
using Squash.Storage.Writes;
using Squash.Testing;

namespace Squash.Functions.Tests;

/// <summary>
/// A build of another shape (dimension, or ids against rows named by number) and a write of the old shape at once: the
/// build checks the write log just before it publishes, so a write landing after that check and before the pointer moves
/// used to be acknowledged and then fail every ingest run on the new version. Either the build or the write must give way.
/// The interleavings are fixed by hooks on the store (the write runs inside the build's pointer write, or the build inside
/// the write's batch write), not raced.
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class ShapeChangeRaceTests(IndexFixture fx)
{
    private const int Rows = WriteModel.Rows;
    private static readonly Dictionary<string, string> Settings = new() { ["Squash:CurrentRecheck"] = "00:00:00" };

    private static float[] Vectors(int seed, int count, int dims)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count * dims).Select(_ => (float)rng.NextDouble()).ToArray();
    }

    private static string Upsert(string id, float[] vector) => $$"""{"upserts":[{"id":"{{id}}","vector":{{Bodies.Vector(vector)}}}]}""";

    /// <summary>Runs <paramref name="write"/> just before the build's first write of the pointer (its reservation) or its second (the move).</summary>
    private static void RunBeforePointerWrite(HookedStore building, int pointerWrite, Func<Task> write)
    {
        building.Hook = pointerWrite == 1 ? write : () =>
        {
            building.Hook = write;
            building.Arm();
            return Task.CompletedTask;
        };
        building.Arm();
    }

    private static async Task AssertAcknowledgedAsFirstAsync(HttpResponseMessage? write)
    {
        Assert.NotNull(write);
        Assert.True(write.StatusCode == HttpStatusCode.OK, await write.Content.ReadAsStringAsync());
        Assert.Equal(1, JsonDocument.Parse(await write.Content.ReadAsStringAsync()).RootElement.GetProperty("sequence").GetInt64());
    }

    /// <summary>The refused build left the old version current without a reservation, and ingest applies the kept write to it.</summary>
    private static async Task AssertOldVersionKeptAndWriteIngestedAsync(IndexStore store, string oldVersion)
    {
        var pointer = await store.ReadPointerAsync();
        Assert.Equal((oldVersion, (IndexStore.ShapeReservation?)null), (pointer!.Version, pointer.Reserved));
        var run = await LogIngest.RunAsync(store, new WriteLog(store.Blobs, store.Name)).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.True(run.Published);
        Assert.Empty(run.Skipped);
        var after = await store.OpenCurrentAsync();
        Assert.Equal((Rows + 1L, 1L, WriteModel.Dims), (after.Count, after.IndexedSequence, after.Dimensions));
    }

    /// <summary>
    /// The write lands after the build's last check of the log and reads the pointer before the build moves it: either
    /// before the build reserves the pointer for its shape (its check under the reservation finds the write), or after
    /// (the write sees the reservation and clears it, the build's move fails and its next check finds the write). Either
    /// way the write is acknowledged, the build is refused, and the write is ingested into the version it was made against.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task AWriteBetweenTheBuildsLastCheckAndItsPublishIsKeptAndTheBuildIsRefused(int pointerWrite)
    {
        var index = "shape-kept-" + Guid.NewGuid().ToString("N")[..8];
        var (_, store) = await WriteModel.BuildAsync(fx.Root, index, 51, withIds: false);
        var before = await store.OpenCurrentAsync();
        using var app = fx.App(2, 0, settings: Settings);
        var client = app.CreateClient();

        HttpResponseMessage? write = null;
        var building = new HookedStore(new FolderBlobStore(fx.Root)) { Suffix = $"{index}/current" };
        Func<Task> writeNow = async () => write = await client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json(Upsert("60", Vectors(52, 1, WriteModel.Dims))));
        RunBeforePointerWrite(building, pointerWrite, writeNow);
        var refused = await Assert.ThrowsAsync<WriteLogConflictException>(() => IndexPublisher.BuildAndPublishAsync(new IndexStore(building, index),
            Vectors(53, Rows, WriteModel.Dims + 2), Rows, WriteModel.Dims + 2, new IndexBuildOptions { Partitions = 2, Seed = 53 }).WaitAsync(TimeSpan.FromMinutes(2)));

        await AssertAcknowledgedAsFirstAsync(write);
        Assert.StartsWith($"index '{index}' has writes in its write-ahead log (through sequence 1) made against version {before.Version}, which has 4 dimensions where this build has 6",
            refused.Message);
        await AssertOldVersionKeptAndWriteIngestedAsync(store, before.Version);
    }

    /// <summary>
    /// The same interleavings through the queue build's publish task (BuildTaskRunner, the stages run in this process),
    /// which guards its pointer move as IndexPublisher does: the write lands after the task's last check of the log,
    /// before its reservation or between the reservation and the move. The write is acknowledged, the job fails in its
    /// publish task naming the write, the pointer keeps the old version without a reservation, and ingest applies the write.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task AWriteBetweenAQueueBuildsLastCheckAndItsPublishIsKeptAndTheJobFailsNamingIt(int pointerWrite)
    {
        var index = "shape-queue-" + Guid.NewGuid().ToString("N")[..8];
        var (_, store) = await WriteModel.BuildAsync(fx.Root, index, 81, withIds: false);
        var before = await store.OpenCurrentAsync();
        using var app = fx.App(2, 0, settings: Settings);
        var client = app.CreateClient();

        // The build's source: six dimensions where the index has four.
        var building = new HookedStore(new FolderBlobStore(fx.Root)) { Suffix = $"{index}/current" };
        var source = $"{index}-six.fvecs";
        await building.WriteAsync(source, Builds.BuildTestApp.Fvecs(Vectors(83, Rows, WriteModel.Dims + 2), WriteModel.Dims + 2), WriteCondition.Overwrite);
        var (job, errors) = await Squash.Functions.Builds.BuildSubmission.ResolveAsync(building, index, new Squash.Functions.Builds.BuildRequest
        {
            Source = new Squash.Functions.Builds.BuildSourceRequest { Vectors = source },
            Options = new Squash.Functions.Builds.BuildOptionsRequest { Partitions = 2, Seed = 83 },
        }, null, null, DateTimeOffset.UtcNow, CancellationToken.None);
        Assert.Empty(errors);
        var jobs = new BuildJobStore(building);
        await jobs.CreateAsync(job!, null, "shape-queue");
        var queue = new InOrderBuildQueue();
        await queue.SendAsync(new BuildTaskMessage { Index = index, BuildId = job!.BuildId, Stage = BuildStages.Train, Task = 0 }, CancellationToken.None);
        var runner = new BuildTaskRunner(jobs, queue, new QueueStageWork());

        HttpResponseMessage? write = null;
        Func<Task> writeNow = async () => write = await client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json(Upsert("60", Vectors(82, 1, WriteModel.Dims))));
        RunBeforePointerWrite(building, pointerWrite, writeNow);
        var delivered = new List<string>();
        while (queue.Pending.TryDequeue(out var message))
        {
            Assert.True(delivered.Count < 50, "the build did not end");
            await runner.RunAsync(message, 1, 5, CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(2));
            delivered.Add(message.Describe());
        }

        await AssertAcknowledgedAsFirstAsync(write);
        var failed = (await jobs.GetAsync(index, job.BuildId))!.Value.Job;
        Assert.Equal(BuildStatus.Failed, failed.Status);
        Assert.Equal(("bad-input", "publish[0]"), (failed.Error!.Code, failed.Error.Task));
        Assert.StartsWith($"index '{index}' has writes in its write-ahead log (through sequence 1) made against version {before.Version}, which has 4 dimensions where this build has 6",
            failed.Error.Message);
        Assert.Equal("publish[0]", delivered[^1]);
        await AssertOldVersionKeptAndWriteIngestedAsync(store, before.Version);
    }

    /// <summary>
    /// The build publishes after the write was validated against the old version and before its batch lands: the write is
    /// refused with a 409 naming the field that no longer fits, ingest skips its batch by sequence (and goes on: a later
    /// write in the new shape is applied), and a strong query does not read it either.
    /// </summary>
    [Theory]
    [InlineData(false, WriteModel.Dims + 2, "60", "upserts[0].vector", "has 4 dimensions; the index now has 6")]
    [InlineData(true, WriteModel.Dims, "sku-1", "upserts[0].id", "'sku-1' is not a row number; the index now names its rows by number (it was built without ids)")]
    public async Task AWriteWhoseBatchLandsAfterABuildOfAnotherShapeIsRefusedAndNeverApplied(bool oldHasIds, int newDims, string id, string field, string problem)
    {
        var index = "shape-refused-" + Guid.NewGuid().ToString("N")[..8];
        var (_, store) = await WriteModel.BuildAsync(fx.Root, index, 61, withIds: oldHasIds);
        var newRows = Vectors(63, Rows, newDims);
        Squash.Index.Model.IndexManifest? published = null;
        HookedStore? appStore = null;
        using var app = fx.App(2, 0, settings: Settings, wrapStore: b => appStore = new HookedStore(b)
        {
            Suffix = $"{index}/log/batches/000000000001",
            Hook = async () => published = await IndexPublisher.BuildAndPublishAsync(new IndexStore(new FolderBlobStore(fx.Root), index),
                newRows, Rows, newDims, new IndexBuildOptions { Partitions = 2, Seed = 63 }),
        });
        var client = app.CreateClient();
        appStore!.Arm();

        var write = await client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json(Upsert(id, Vectors(62, 1, WriteModel.Dims)))).WaitAsync(TimeSpan.FromMinutes(2));
        var refusal = await Problems.Read(write, HttpStatusCode.Conflict);
        Assert.NotNull(published);
        Assert.Equal(new Dictionary<string, string[]> { [field] = [problem] }, Problems.Errors(refusal));
        Assert.Equal($"version {published.Version} of index '{index}' was published while this write was made (log sequence 1, which ingest skips); "
            + "send the write again in the index's new shape, with a new Idempotency-Key", refusal.GetProperty("detail").GetString());

        // A strong query reads the tail past the new version's watermark 0 (batch 1): it skips the refused batch.
        var query = Vectors(64, 1, newDims);
        await AssertExactAsync(client, index, query, Numbered(newRows, newDims), "strong", "after the refused write");

        // Ingest skips it, names it, and moves past it; the next write, in the new shape, is applied.
        var log = new WriteLog(store.Blobs, index);
        var run = await LogIngest.RunAsync(store, log).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.True(run.Published);
        Assert.Equal([new SkippedBatch(1, $"{field} {problem}")], run.Skipped);
        Assert.Equal($"; skipped log batch 1 ({field} {problem})", run.SkippedSummary);
        Assert.Equal((Rows + 0L, 1L), ((await store.OpenCurrentAsync()).Count, (await store.OpenCurrentAsync()).IndexedSequence));
        var added = Vectors(65, 1, newDims);
        var next = await client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json(Upsert("60", added)));
        Assert.True(next.StatusCode == HttpStatusCode.OK, await next.Content.ReadAsStringAsync());
        var second = await LogIngest.RunAsync(store, log).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.Empty(second.Skipped);
        var current = await store.OpenCurrentAsync();
        Assert.Equal((Rows + 1L, 2L), (current.Count, current.IndexedSequence));
        await AssertExactAsync(client, index, query, Numbered([.. newRows, .. added], newDims), "eventual", "after the next write's ingest");
    }

    /// <summary>Fails every compare-and-swap of <see cref="Pointer"/> while <see cref="Contended"/>, as if the pointer changed under each.</summary>
    private sealed class ContendedPointerStore(IBlobStore inner, string pointer) : PassThroughStore(inner)
    {
        private int _refused;
        public bool Contended { get; set; } = true;
        public int Refused => _refused;
        public override Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken ct = default)
        {
            if (Contended && name == pointer)
            {
                Interlocked.Increment(ref _refused);
                throw new BlobConditionFailedException(name, "changed (test)");
            }
            return Inner.WriteAsync(name, data, condition, ct);
        }
    }

    /// <summary>
    /// A build of another shape holds the pointer's reservation and the write cannot clear it: the pointer changes under each
    /// compare-and-swap. After a bounded number of attempts the write is a 503 (it was an exception, a 500), not acknowledged;
    /// sent again with the same key once the pointer is quiet, it clears the reservation, is acknowledged as the same batch
    /// and is not written twice.
    /// </summary>
    [Fact]
    public async Task AReservationTheWriteCannotClearIsA503AndTheRetryWithTheSameKeyStands()
    {
        var index = "shape-contended-" + Guid.NewGuid().ToString("N")[..8];
        var (_, store) = await WriteModel.BuildAsync(fx.Root, index, 71, withIds: false);
        var before = (await store.ReadPointerAsync())!;
        await store.SetReservationAsync(before.Version, before.ETag, new IndexStore.ShapeReservation("v-other", WriteModel.Dims + 2, false));
        ContendedPointerStore? contended = null;
        using var app = fx.App(2, 0, settings: Settings, wrapStore: b => contended = new ContendedPointerStore(b, $"{index}/current"));
        var client = app.CreateClient();

        HttpRequestMessage Write() => new(HttpMethod.Post, $"/api/indexes/{index}/vectors")
        {
            Content = Bodies.Json(Upsert("60", Vectors(72, 1, WriteModel.Dims))),
            Headers = { { "Idempotency-Key", "contended-1" } },
        };
        var refused = await client.SendAsync(Write()).WaitAsync(TimeSpan.FromMinutes(2));
        var problem = await Problems.Read(refused, HttpStatusCode.ServiceUnavailable);
        Assert.Equal("1", refused.Headers.RetryAfter?.ToString());
        Assert.Equal("The write was not acknowledged", problem.GetProperty("title").GetString());
        Assert.Equal($"index '{index}': the index's pointer changed under each of {WriteLogConflict.MaxPointerAttempts} attempts to check the write "
            + "against a build of another shape; its batch is in the log and is applied only if it fits the index's shape; "
            + "send the request again (with the same Idempotency-Key, it is applied once)", problem.GetProperty("detail").GetString());
        Assert.Equal(WriteLogConflict.MaxPointerAttempts, contended!.Refused);
        Assert.Equal(new IndexStore.ShapeReservation("v-other", WriteModel.Dims + 2, false), (await store.ReadPointerAsync())!.Reserved);

        contended.Contended = false;
        var retried = await client.SendAsync(Write()).WaitAsync(TimeSpan.FromMinutes(2));
        var body = await retried.Content.ReadAsStringAsync();
        Assert.True(retried.StatusCode == HttpStatusCode.OK, body);
        using var accepted = JsonDocument.Parse(body);
        Assert.Equal((1L, true), (accepted.RootElement.GetProperty("sequence").GetInt64(), accepted.RootElement.GetProperty("replayed").GetBoolean()));
        var after = (await store.ReadPointerAsync())!;
        Assert.Equal((before.Version, (IndexStore.ShapeReservation?)null), (after.Version, after.Reserved));
    }

    /// <summary>
    /// Batches in the log that do not fit the current version (as a refused write leaves, or a log written by an older
    /// build of the service) are skipped by every ingest run, each named by its sequence and why, and the batches around
    /// them are applied, by ingest and by strong reads: before, the first such batch failed every run ("expected 4 dimensions, got 6"), so the index
    /// never indexed another write.
    /// </summary>
    [Fact]
    public async Task IngestSkipsBatchesThatDoNotFitTheVersionByNameAndAppliesTheRest()
    {
        var index = "shape-skip-" + Guid.NewGuid().ToString("N")[..8];
        var (model, store) = await WriteModel.BuildAsync(fx.Root, index, 71, withIds: false);
        var log = new WriteLog(store.Blobs, index);
        WriteBatch Batch(params UpsertItem[] upserts) => new() { CreatedUtc = DateTimeOffset.UtcNow, Upserts = upserts };
        float[] first = Vectors(72, 1, WriteModel.Dims), third = Vectors(75, 1, WriteModel.Dims);
        await log.AppendAsync(Batch(new UpsertItem("60", first)), null, "", 0);
        await log.AppendAsync(Batch(new UpsertItem("61", Vectors(73, 1, 6)), new UpsertItem("sku-1", Vectors(74, 1, WriteModel.Dims))), null, "", 0);
        await log.AppendAsync(new WriteBatch { CreatedUtc = DateTimeOffset.UtcNow, Deletes = ["0"], Upserts = [new UpsertItem("62", third)] }, null, "", 0);

        // A strong read passes over batch 2 as well, and sees batches 1 and 3.
        using (var app = fx.App(2, 0, settings: Settings))
        {
            var live = model.Where(e => e.Key != "0").Select(e => (e.Key, e.Value.Vector))
                .Append(("60", first)).Append(("62", third));
            await AssertExactAsync(app.CreateClient(), index, Vectors(77, 1, WriteModel.Dims), live, "strong", "before ingest");
        }

        var run = await LogIngest.RunAsync(store, log).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.True(run.Published);
        Assert.Equal([new SkippedBatch(2, "upserts[0].vector has 6 dimensions; the index now has 4; "
            + "upserts[1].id 'sku-1' is not a row number; the index now names its rows by number (it was built without ids)")], run.Skipped);
        Assert.Equal((2, 2, 1), (run.Batches, run.Upserts, run.Deleted));
        var current = await store.OpenCurrentAsync();
        Assert.Equal((Rows + 1L, 3L), (current.Count, current.IndexedSequence));

        // Nothing left to apply: the next run does nothing, and later writes are applied.
        Assert.Null((await LogIngest.RunAsync(store, log)).Version);
        await log.AppendAsync(Batch(new UpsertItem("63", Vectors(76, 1, WriteModel.Dims))), null, "", 3);
        var next = await LogIngest.RunAsync(store, log).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.Empty(next.Skipped);
        Assert.Equal((Rows + 2L, 4L), ((await store.OpenCurrentAsync()).Count, (await store.OpenCurrentAsync()).IndexedSequence));
    }

    /// <summary>An exact query answers the brute-force nearest of <paramref name="rows"/>, by id (row numbers, as JSON numbers).</summary>
    private static async Task AssertExactAsync(HttpClient client, string index, float[] query, IEnumerable<(string Id, float[] Vector)> rows, string consistency, string context)
    {
        const int k = 5;
        var response = await client.PostAsync($"/api/indexes/{index}/query",
            Bodies.Json($$$"""{"vector":{{{Bodies.Vector(query)}}},"k":{{{k}}},"options":{"exact":true,"consistency":"{{{consistency}}}"}}"""));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{context}: {text}");
        var expected = rows.OrderBy(r => r.Vector.Select((x, j) => (double)(x - query[j]) * (x - query[j])).Sum()).Take(k).Select(r => r.Id);
        var got = JsonDocument.Parse(text).RootElement.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("id").GetRawText());
        Assert.True(expected.SequenceEqual(got), $"{context}: expected [{string.Join(", ", expected)}], got {text}");
    }

    /// <summary>Row i of <paramref name="data"/> (<paramref name="dims"/> a row) named i.</summary>
    private static IEnumerable<(string Id, float[] Vector)> Numbered(float[] data, int dims) =>
        Enumerable.Range(0, data.Length / dims).Select(i => (i.ToString(CultureInfo.InvariantCulture), data.AsSpan(i * dims, dims).ToArray()));
}
