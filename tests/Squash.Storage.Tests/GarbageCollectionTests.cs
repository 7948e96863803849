using Squash.Index.Build;

namespace Squash.Storage.Tests;

public sealed class GarbageCollectionTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-gc-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    /// <summary>The system clock moved by a fixed amount: "two hours from now" without waiting.</summary>
    private sealed class ShiftedClock(TimeSpan shift) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => System.GetUtcNow() + shift;
    }

    private static float[] Data(int n, int d, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n * d).Select(_ => (float)rng.NextDouble()).ToArray();
    }

    private static async Task<List<string>> Names(IBlobStore s, string prefix)
    {
        var names = new List<string>();
        await foreach (var b in s.ListAsync(prefix)) names.Add(b.Name);
        return names;
    }

    private static readonly TimeSpan Hour = TimeSpan.FromHours(1);

    [Fact]
    public async Task KeepsTheNewestVersionsAndCurrentAndDeletesTheRest()
    {
        var folder = new FolderBlobStore(_root);
        var store = new IndexStore(folder, "products");
        var other = new IndexStore(folder, "other");
        await IndexPublisher.BuildAndPublishAsync(other, Data(100, 4, 9), 100, 4, new IndexBuildOptions { Partitions = 2 });
        var published = new List<string>();
        for (int i = 0; i < 4; i++)
            published.Add((await IndexPublisher.BuildAndPublishAsync(store, Data(100, 4, i), 100, 4, new IndexBuildOptions { Partitions = 2 })).Version);
        // A failed build's leftovers: a newer version that current does not name.
        var leftover = VersionIds.New(DateTimeOffset.UtcNow.AddMinutes(1));
        await folder.WriteAsync(store.VersionPrefix(leftover) + "p00000.codes.seg", new byte[] { 1 }, WriteCondition.IfNotExists);
        Assert.Equal(published.Append(leftover), await store.ListVersionsAsync());

        // Two hours on, nothing is within the grace period.
        var later = new ShiftedClock(2 * Hour);
        var result = await store.CollectGarbageAsync(keep: 2, grace: Hour, later);
        // The two newest are published[3] (current) and the leftover.
        Assert.Equal(published.Take(3), result.Deleted);
        Assert.Equal([new(published[3], IndexStore.KeptReason.Current), new(leftover, IndexStore.KeptReason.Newest)], result.Kept);
        Assert.Equal(new[] { published[3], leftover }, await store.ListVersionsAsync());
        Assert.Equal(published[3], (await store.OpenCurrentAsync()).Version);
        // Other indexes in the same store are untouched.
        Assert.Single(await other.ListVersionsAsync());

        Assert.Equal(new[] { leftover }, (await store.CollectGarbageAsync(keep: 0, grace: Hour, later)).Deleted);
        Assert.Equal(new[] { published[3] }, await store.ListVersionsAsync());
        Assert.NotEmpty(await Names(folder, store.VersionPrefix(published[3])));
        Assert.Empty((await store.CollectGarbageAsync(keep: 0, grace: Hour, later)).Deleted);
    }

    [Fact]
    public async Task VersionsBeingBuiltOrRecentlyCurrentAreKeptForTheGracePeriod()
    {
        var folder = new FolderBlobStore(_root);
        var store = new IndexStore(folder, "products");
        // v1 was built five hours ago (its id and its blobs say so) and stays current until v2 publishes now.
        var v1 = VersionIds.New(DateTimeOffset.UtcNow.AddHours(-5));
        var sink = store.CreateSink(v1);
        var m1 = await IndexBuilder.BuildAsync(Data(100, 4, 1), 100, 4, new IndexBuildOptions { Partitions = 2 }, v1, sink);
        Assert.True((await store.PublishAsync(sink, m1)).Published);
        foreach (var f in Directory.EnumerateFiles(Path.Combine(_root, "products", "versions", v1)))
            File.SetLastWriteTimeUtc(f, DateTime.UtcNow.AddHours(-5));
        var v2 = (await IndexPublisher.BuildAndPublishAsync(store, Data(100, 4, 2), 100, 4, new IndexBuildOptions { Partitions = 2 })).Version;
        // A build in flight: segments written, no manifest yet.
        var building = IndexStore.NewVersionId();
        await folder.WriteAsync(store.VersionPrefix(building) + "p00000.codes.seg", new byte[] { 1 }, WriteCondition.IfNotExists);

        // Half an hour on: v1 stopped being current less than the grace period ago, so a reader may still use it.
        var soon = await store.CollectGarbageAsync(keep: 0, grace: Hour, new ShiftedClock(TimeSpan.FromMinutes(30)));
        Assert.Empty(soon.Deleted);
        Assert.Equal([new(v1, IndexStore.KeptReason.RecentlyCurrent), new(v2, IndexStore.KeptReason.Current), new(building, IndexStore.KeptReason.Recent)], soon.Kept);

        var later = await store.CollectGarbageAsync(keep: 0, grace: Hour, new ShiftedClock(2 * Hour));
        Assert.Equal(new[] { v1, building }, later.Deleted);
        Assert.Equal(v2, (await store.OpenCurrentAsync()).Version);
    }

    [Fact]
    public async Task OldCounterIdsSortBeforeNewIdsAndByNumber()
    {
        var folder = new FolderBlobStore(_root);
        var store = new IndexStore(folder);
        var newer = IndexStore.NewVersionId();
        foreach (var v in new[] { newer, "v1000000", "v000010", "v000009" })
            await folder.WriteAsync(store.VersionPrefix(v) + "manifest.json", new byte[] { 1 }, WriteCondition.IfNotExists);
        Assert.Equal(new[] { "v000009", "v000010", "v1000000", newer }, await store.ListVersionsAsync());
    }

    /// <summary>
    /// Nothing under the index at all (a mistyped folder or name) is no index, as for a reader; a name that holds only
    /// other blobs (a first build's upload) has no version to collect, and that is no error.
    /// </summary>
    [Fact]
    public async Task AnEmptyStoreIsNoIndexAndOneWithoutVersionsHasNothingToCollect()
    {
        var folder = new FolderBlobStore(_root);
        var store = new IndexStore(folder);
        Assert.Empty(await store.ListVersionsAsync());
        var none = await Assert.ThrowsAsync<IndexNotFoundException>(() => store.CollectGarbageAsync(3, Hour));
        Assert.Equal($"no index at {folder.Description} (nothing is stored there)", none.Message);
        var named = new IndexStore(folder, "products");
        await folder.WriteAsync("other/current", new byte[] { 1 }, WriteCondition.IfNotExists);
        none = await Assert.ThrowsAsync<IndexNotFoundException>(() => named.CollectGarbageAsync(3, Hour));
        Assert.Equal($"no index at {folder.Description} under 'products' (nothing is stored there)", none.Message);
        await folder.WriteAsync(Squash.Storage.Builds.UploadCollection.Prefix("products") + "base.fvecs", new byte[] { 1 }, WriteCondition.IfNotExists);
        var collected = await named.CollectGarbageAsync(3, Hour);
        Assert.Empty(collected.Deleted);
        Assert.Empty(collected.Kept);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => store.CollectGarbageAsync(-1, Hour));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => store.CollectGarbageAsync(1, TimeSpan.FromSeconds(-1)));
    }

    /// <summary>
    /// A lost or dangling <c>current</c> pointer: gc cannot tell which version readers use, so it refuses (naming the
    /// pointer) instead of collecting every published version.
    /// </summary>
    [Fact]
    public async Task AMissingOrDanglingCurrentPointerDeletesNothing()
    {
        var folder = new FolderBlobStore(_root);
        var store = new IndexStore(folder, "products");
        var versions = new List<string>();
        for (int i = 0; i < 2; i++)
            versions.Add((await IndexPublisher.BuildAndPublishAsync(store, Data(100, 4, i), 100, 4, new IndexBuildOptions { Partitions = 2 })).Version);
        var later = new ShiftedClock(2 * Hour);

        var pointer = Path.Combine(_root, "products", "current");
        var saved = await File.ReadAllBytesAsync(pointer);
        File.Delete(pointer);
        var missing = await Assert.ThrowsAsync<Squash.Index.Format.CorruptIndexException>(() => store.CollectGarbageAsync(keep: 0, grace: TimeSpan.Zero, later));
        Assert.Contains("'products/current'", missing.Message);
        Assert.Equal(versions, await store.ListVersionsAsync());
        // Within the grace period a missing pointer may be a first build's publish in progress (manifest written, pointer
        // not yet): gc runs, and the grace rule keeps the young versions.
        var young = await store.CollectGarbageAsync(keep: 0, grace: TimeSpan.FromHours(1));
        Assert.Empty(young.Deleted);
        Assert.All(young.Kept, k => Assert.Equal(IndexStore.KeptReason.Recent, k.Reason));
        Assert.Equal(versions, await store.ListVersionsAsync());

        var gone = VersionIds.New(DateTimeOffset.UtcNow.AddHours(1));
        await File.WriteAllTextAsync(pointer, $"{{\"version\":\"{gone}\",\"manifest\":\"products/versions/{gone}/manifest.json\"}}");
        var dangling = await Assert.ThrowsAsync<Squash.Index.Format.CorruptIndexException>(() => store.CollectGarbageAsync(keep: 0, grace: TimeSpan.Zero, later));
        Assert.Contains(gone, dangling.Message);
        Assert.Equal(versions, await store.ListVersionsAsync());

        // Restored, gc collects as before.
        await File.WriteAllBytesAsync(pointer, saved);
        Assert.Equal(new[] { versions[0] }, (await store.CollectGarbageAsync(keep: 0, grace: TimeSpan.Zero, later)).Deleted);
    }

    private static async Task SubmitJobAsync(IBlobStore store, string index, string status, string vectors, string? attributes,
        string? calibrationQueries = null, string[]? calibrationFilters = null)
    {
        var now = DateTimeOffset.UtcNow;
        var job = new Squash.Storage.Builds.BuildJob
        {
            BuildId = Squash.Storage.Builds.BuildJobStore.NewBuildId(now), Index = index, Status = status, CreatedUtc = now, Version = VersionIds.New(now),
            Source = new Squash.Storage.Builds.BuildSourceSpec { Vectors = vectors, Attributes = attributes }, Options = new Squash.Storage.Builds.BuildJobOptions(),
            Blobs = [new Squash.Storage.Builds.BuildSourceBlob(vectors, "\"e\"", 8, "fvecs", "float32", 1, 1, 0, 4)],
            AttributesBlob = attributes is null ? null : new Squash.Storage.Builds.BuildAttributesBlob(attributes, "\"e\"", 1),
            CalibrationQueriesBlob = calibrationQueries is null ? null : new Squash.Storage.Builds.BuildSourceBlob(calibrationQueries, "\"e\"", 8, "fvecs", "float32", 1, 1, 0, 4),
            CalibrationFilterBlobs = calibrationFilters?.Select(f => new Squash.Storage.Builds.BuildAttributesBlob(f, "\"e\"", 1)).ToArray(),
            Count = 1, Dimensions = 1, ChunkRows = 1, Partitions = 1,
            // The four stages, as every job has them (a record without them is damaged: nothing can show it).
            Stages = Squash.Storage.Builds.BuildStages.All.Select(s => new Squash.Storage.Builds.StageProgress(s, 0, 1)).ToArray(),
        };
        await new Squash.Storage.Builds.BuildJobStore(store).CreateAsync(job, null, "h");
    }

    /// <summary>
    /// Uploads for builds: those an unfinished build reads stay, whatever their age; those only finished builds (or none)
    /// read go once older than the grace period; other indexes' uploads and versions are not touched.
    /// </summary>
    [Fact]
    public async Task UploadsNoUnfinishedBuildReadsAreCollectedAfterTheGracePeriod()
    {
        var folder = new FolderBlobStore(_root);
        string[] names = ["products/uploads/a1/base.fvecs", "products/uploads/b2/base.fvecs", "products/uploads/b2/attrs.jsonl", "products/uploads/c3/old.fvecs", "other/uploads/d4/x.fvecs",
            "products/uploads/e5/cal.fvecs", "products/uploads/f6/own.jsonl", "products/uploads/f7/done.fvecs"];
        foreach (var name in names) await folder.WriteAsync(name, new byte[] { 1 }, WriteCondition.IfNotExists);
        await SubmitJobAsync(folder, "products", Squash.Storage.Builds.BuildStatus.Encoding, names[1], names[2], names[5], [names[6]]);
        await SubmitJobAsync(folder, "products", Squash.Storage.Builds.BuildStatus.Succeeded, names[3], null, names[7]);
        await SubmitJobAsync(folder, "products", Squash.Storage.Builds.BuildStatus.Queued, "products/elsewhere.fvecs", null);

        // Within the grace period nothing goes; an unfinished build's calibration queries and filters are in use as its source is.
        var young = await Squash.Storage.Builds.UploadCollection.CollectAsync(folder, "products", Hour);
        Assert.Empty(young.Deleted);
        Assert.Equal([names[2], names[1], names[5], names[6]], young.InUse);
        Assert.Equal([names[0], names[3], names[7]], young.Recent);

        var result = await Squash.Storage.Builds.UploadCollection.CollectAsync(folder, "products", Hour, new ShiftedClock(2 * Hour));
        Assert.Equal([names[0], names[3], names[7]], result.Deleted);
        Assert.Equal([names[2], names[1], names[5], names[6]], result.InUse);
        Assert.Empty(result.Recent);
        Assert.Equal([names[2], names[1], names[5], names[6]], await Names(folder, "products/uploads/"));
        Assert.Equal([names[4]], await Names(folder, "other/uploads/"));
        // The job records are not uploads.
        Assert.Equal(3, (await Names(folder, "products/builds/")).Count);
    }
}

public sealed class VersionIdTests
{
    [Fact]
    public void NewIdsAreDistinctSortByStartTimeAndCarryIt()
    {
        var t0 = new DateTimeOffset(2025, 6, 12, 10, 15, 30, 123, TimeSpan.Zero);
        var id = VersionIds.New(t0);
        Assert.Matches("^v20250612-101530123-[0-9a-f]{12}$", id);
        Assert.Equal(t0, VersionIds.StartedUtc(id));
        Assert.Null(VersionIds.StartedUtc("v000042"));

        // Same millisecond: still distinct (the random part).
        var same = Enumerable.Range(0, 10_000).Select(_ => VersionIds.New(t0)).ToList();
        Assert.Equal(same.Count, same.Distinct().Count());
        // Later starts sort later, by plain ordinal order too.
        var later = VersionIds.New(t0.AddMilliseconds(1));
        Assert.All(same, s => Assert.True(string.CompareOrdinal(s, later) < 0 && VersionIds.Compare(s, later) < 0));
        Assert.True(VersionIds.Compare("v999999", id) < 0);
        Assert.True(VersionIds.Compare("v000099", "v1000000") < 0);
    }

    [Theory]
    [InlineData("v000042", true)]
    [InlineData("v20250612-101530123-3f9a1c0b7e2d", true)]
    [InlineData("v20250612-101530123-3F9A1C0B7E2D", false)]
    [InlineData("v20251312-101530123-3f9a1c0b7e2d", false)]
    [InlineData("v20250612-101530123-3f9a1c0b7e2", false)]
    [InlineData("v", false)]
    [InlineData("42", false)]
    [InlineData("../v000001", false)]
    [InlineData("", false)]
    public void WellFormedIdsAreRecognised(string id, bool expected) => Assert.Equal(expected, VersionIds.IsWellFormed(id));
}

public sealed class CachedSegmentReadTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-cached-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    [Fact]
    public async Task ConcurrentQueriesReadEachSegmentOnceAndTheCacheIsChargedItsBytes()
    {
        var rng = new Random(3);
        var data = Enumerable.Range(0, 400 * 6).Select(_ => (float)rng.NextDouble()).ToArray();
        var store = new IndexStore(new FolderBlobStore(_root), "idx");
        var m = await IndexPublisher.BuildAndPublishAsync(store, data, 400, 6, new IndexBuildOptions { Partitions = 4 });
        var counting = new IndexStore(new FaultInjectingBlobStore(store.Blobs), "idx");
        var cache = new SegmentCache(new SegmentCacheOptions { CapacityBytes = 1 << 30 });
        long before = counting.BytesRead;
        await Task.WhenAll(Enumerable.Range(0, 32).Select(i => Task.Run(async () =>
        {
            var p = m.Partitions[i % 4];
            var codes = await counting.ReadCodesAsync(m, p, cache);
            var vectors = await counting.ReadVectorsAsync(m, p, cache);
            Assert.Equal(p.Count, codes.Count);
            await counting.ReadRoutingAsync(m, cache);
        })));
        long expected = m.Partitions.Sum(p => p.Codes.Bytes + p.Vectors.Bytes) + m.Routing.Bytes;
        Assert.Equal(expected, counting.BytesRead - before);
        Assert.Equal(9, cache.Stats.Misses);
        Assert.Equal(expected, cache.Stats.CurrentBytes);
        Assert.Equal(96, cache.Stats.Requests);
    }
}
