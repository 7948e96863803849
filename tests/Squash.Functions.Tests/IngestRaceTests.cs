using System.Globalization;
using Squash.Index.Build;
using Squash.Index.Model;
using Squash.Search;
using Squash.Search.Writes;
using Squash.Storage;
using Squash.Storage.Writes;

namespace Squash.Functions.Tests;

/// <summary>
/// An ingest run is derived from the version it read: it must never replace a version another writer published while it
/// ran (a build from files, another run), whatever their version ids say. The other writer is started from a hook on the
/// run's pack write, so the order is fixed, not raced.
/// </summary>
public sealed class IngestRaceTests : IDisposable
{
    private const int Rows = 1_200, Dims = 8;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-ingestrace-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    private static WriteBatch Upserts(Random rng, int first, int n) => new()
    {
        CreatedUtc = DateTimeOffset.UtcNow,
        Upserts = Enumerable.Range(first, n).Select(id => new UpsertItem(id.ToString(CultureInfo.InvariantCulture),
            IngestRecalibrationTests.Clustered(rng, 1))).ToArray(),
    };

    /// <summary>A clock ahead of the machine's: the run takes its version id as a run started after the build would.</summary>
    private sealed class AheadClock(TimeSpan by) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => DateTimeOffset.UtcNow + by;
    }

    private async Task<(IndexStore Store, HookedStore Hooked, WriteLog Log)> BuiltAsync(string name, int seed)
    {
        var hooked = new HookedStore(new FolderBlobStore(Path.Combine(_root, name)));
        var store = new IndexStore(hooked, name);
        await CalibratedBuild.BuildAndPublishAsync(store, IngestRecalibrationTests.Clustered(new Random(seed), Rows), Rows, Dims,
            new IndexBuildOptions { Partitions = 8, Seed = seed }, calibrate: false);
        return (store, hooked, new WriteLog(hooked, name));
    }

    [Fact]
    public async Task ARunDoesNotReplaceABuildFromFilesPublishedWhileItRanAndTheNextRunAppliesTheLogOntoTheBuild()
    {
        var (store, hooked, log) = await BuiltAsync("build", 31);
        var rng = new Random(31);
        await log.AppendAsync(Upserts(rng, Rows, 40), null, "k1", 0);

        // A build from files of other rows publishes while the run writes its packs: its id was taken when it started,
        // before the run took its own (the clock ahead), as a build running for minutes does.
        const int rebuilt = 600;
        IndexManifest? build = null;
        hooked.Suffix = "/" + SegmentPack.IndexName;
        hooked.Hook = async () => build = await CalibratedBuild.BuildAndPublishAsync(new IndexStore(new FolderBlobStore(Path.Combine(_root, "build")), "build"),
            IngestRecalibrationTests.Clustered(new Random(32), rebuilt), rebuilt, Dims, new IndexBuildOptions { Partitions = 4, Seed = 32 }, calibrate: false);
        hooked.Arm();
        var run = await LogIngest.RunAsync(store, log, clock: new AheadClock(TimeSpan.FromHours(1))).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.NotNull(build);
        Assert.False(run.Published, "the run derived from the old version replaced the build published while it ran");
        var current = await store.OpenCurrentAsync();
        Assert.Equal(build.Version, current.Version);
        Assert.Equal(rebuilt, current.Count);
        Assert.Null(await store.Blobs.GetInfoAsync(store.VersionPrefix(run.Version!) + SegmentPack.IndexName)); // its packs were removed

        // The next run applies the log onto the build: its rows and the 40 upserts, nothing of the old version.
        var next = await LogIngest.RunAsync(store, log).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.True(next.Published);
        current = await store.OpenCurrentAsync();
        Assert.Equal(next.Version, current.Version);
        Assert.Equal(rebuilt + 40, current.Count);
        Assert.Equal(1, current.IndexedSequence);
        var opened = await OpenedIndex.OpenAsync(store);
        var ids = Enumerable.Range(0, opened.PartitionCount).SelectMany(p => opened.Codes(p).Ids).Order().ToArray();
        Assert.Equal(Enumerable.Range(0, rebuilt).Concat(Enumerable.Range(Rows, 40)), ids);
    }

    [Fact]
    public async Task TwoRunsAtOnceFromOneBaseNeverMoveTheWatermarkBack()
    {
        var (store, hooked, log) = await BuiltAsync("runs", 33);
        var rng = new Random(33);
        await log.AppendAsync(Upserts(rng, Rows, 20), null, "k1", 0);

        // The slow run read the log through batch 1; meanwhile batch 2 lands and another run publishes both.
        IngestResult? fast = null;
        hooked.Suffix = "/" + SegmentPack.IndexName;
        hooked.Hook = async () =>
        {
            await log.AppendAsync(Upserts(rng, Rows + 20, 20), null, "k2", 1);
            fast = await LogIngest.RunAsync(new IndexStore(new FolderBlobStore(Path.Combine(_root, "runs")), "runs"), new WriteLog(new FolderBlobStore(Path.Combine(_root, "runs")), "runs"));
        };
        hooked.Arm();
        var slow = await LogIngest.RunAsync(store, log, clock: new AheadClock(TimeSpan.FromHours(1))).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.True(fast!.Published);
        Assert.Equal(2, fast.ToSequence);
        Assert.Equal(1, slow.ToSequence);
        Assert.False(slow.Published, "a run holding batch 1 alone replaced the one holding batches 1-2");
        var current = await store.OpenCurrentAsync();
        Assert.Equal(fast.Version, current.Version);
        Assert.Equal(2, current.IndexedSequence);
        Assert.Equal(Rows + 40, current.Count);
    }

    [Fact]
    public async Task ABuildFromFilesReplacesTheVersionsIngestDerivedWhileItRanFromAnOlderBuildAndTheLogIsAppliedOntoIt()
    {
        var (store, _, log) = await BuiltAsync("ingested", 34);
        var rng = new Random(34);
        await log.AppendAsync(Upserts(rng, Rows, 30), null, "k1", 0);

        // The build takes its id when it starts; writes are ingested (versions with newer ids) before it writes its manifest.
        const int rebuilt = 600;
        IngestResult? during = null;
        var building = new HookedStore(new FolderBlobStore(Path.Combine(_root, "ingested")))
        {
            Suffix = "/" + IndexStore.ManifestName,
            Hook = async () => during = await LogIngest.RunAsync(store, log, clock: new AheadClock(TimeSpan.FromHours(1))),
        };
        building.Arm();
        var build = await CalibratedBuild.BuildAndPublishAsync(new IndexStore(building, "ingested"), IngestRecalibrationTests.Clustered(new Random(35), rebuilt),
            rebuilt, Dims, new IndexBuildOptions { Partitions = 4, Seed = 35 }, calibrate: false).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.True(during!.Published);
        Assert.True(VersionIds.Compare(during.Version, build.Version) > 0);
        var current = await store.OpenCurrentAsync();
        Assert.True(build.Version == current.Version, $"the build was not published: {current.Version}, which ingest derived from an older build, stayed current");

        // The writes ingested into the replaced version are still in the log: the next run applies them onto the build.
        var next = await LogIngest.RunAsync(store, log).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.True(next.Published);
        current = await store.OpenCurrentAsync();
        Assert.Equal((rebuilt + 30L, 1L, build.Version), (current.Count, current.IndexedSequence, current.Lineage));

        // A build started before that one and finishing now does not replace what descends from it.
        IndexManifest? newer = null;
        IngestResult? onNewer = null;
        var slow = new HookedStore(new FolderBlobStore(Path.Combine(_root, "ingested")))
        {
            Suffix = "/" + IndexStore.ManifestName,
            Hook = async () =>
            {
                newer = await CalibratedBuild.BuildAndPublishAsync(new IndexStore(new FolderBlobStore(Path.Combine(_root, "ingested")), "ingested"),
                    IngestRecalibrationTests.Clustered(new Random(37), rebuilt), rebuilt, Dims, new IndexBuildOptions { Partitions = 4, Seed = 37 }, calibrate: false);
                await log.AppendAsync(Upserts(rng, Rows + 30, 10), null, "k2", 1);
                onNewer = await LogIngest.RunAsync(store, log);
            },
        };
        slow.Arm();
        var older = await CalibratedBuild.BuildAndPublishAsync(new IndexStore(slow, "ingested"), IngestRecalibrationTests.Clustered(new Random(36), rebuilt),
            rebuilt, Dims, new IndexBuildOptions { Partitions = 4, Seed = 36 }, calibrate: false).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.True(VersionIds.Compare(older.Version, newer!.Version) < 0);
        Assert.Equal(newer.Version, onNewer!.Published ? (await store.ReadManifestAsync(onNewer.Version!)).Lineage : null);
        Assert.Equal(onNewer.Version, (await store.OpenCurrentAsync()).Version);
    }
}
