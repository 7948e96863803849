using System.Globalization;
using Squash.Core;
using Squash.Core.Vectors;
using Squash.Functions.Writes;
using Squash.Index.Build;
using Squash.Index.Model;
using Squash.Search;
using Squash.Search.Writes;
using Squash.Storage;
using Squash.Storage.Writes;

namespace Squash.Functions.Tests;

/// <summary>
/// The recall calibration measured off the ingest's lease (the calibrate function's job): what it publishes equals measuring
/// that version in process; a measurement of an old version lands on the version current by then without touching its rows
/// or losing the changes counted after it; an ingest run whose base got a calibration meanwhile is published on top of it;
/// one job at a time; a failing job backs off; the pruned exact search equals brute force.
/// </summary>
public sealed class CalibrationJobTests : IDisposable
{
    private const int Rows = 1_200, Dims = 8;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-caljob-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    private static float[] Clustered(Random rng, int n) => IngestRecalibrationTests.Clustered(rng, n);

    private static WriteBatch Upserts(float[] vectors, IEnumerable<int> ids) => new()
    {
        CreatedUtc = DateTimeOffset.UtcNow,
        Upserts = ids.Select((id, j) => new UpsertItem(id.ToString(CultureInfo.InvariantCulture), vectors.AsSpan(j * Dims, Dims).ToArray())).ToArray(),
    };

    /// <summary>A built index and a log; <paramref name="blobs"/> wraps the folder store when given.</summary>
    private async Task<(IndexStore Store, WriteLog Log, RecallCalibration Built)> BuildAsync(string name, int seed, Func<IBlobStore, IBlobStore>? blobs = null)
    {
        var store = new IndexStore((blobs ?? (b => b))(new FolderBlobStore(Path.Combine(_root, name))), name);
        var built = await CalibratedBuild.BuildAndPublishAsync(store, Clustered(new Random(seed), Rows), Rows, Dims, new IndexBuildOptions { Partitions = 8, Seed = seed });
        return (store, new WriteLog(store.Blobs, name), built.Calibration ?? throw new Xunit.Sdk.XunitException($"seed {seed}: no calibration built"));
    }

    private static int _sequence;

    /// <summary>Appends <paramref name="n"/> new rows from <paramref name="first"/> and ingests them as the queue host does (asking the job, not measuring).</summary>
    private static async Task<(IngestResult Run, int Asked)> IngestAsync(IndexStore store, WriteLog log, Random rng, int first, int n)
    {
        await log.AppendAsync(Upserts(Clustered(rng, n), Enumerable.Range(first, n)), null, "k" + Interlocked.Increment(ref _sequence), 0);
        int asked = 0;
        var run = await LogIngest.RunAsync(store, log, requestCalibration: _ => { asked++; return Task.CompletedTask; });
        return (run, asked);
    }

    private static void AssertSameRows(IndexManifest expected, IndexManifest actual)
    {
        Assert.Equal(expected.IndexedSequence, actual.IndexedSequence);
        Assert.Equal(expected.Count, actual.Count);
        Assert.Equal(expected.Routing with { Version = expected.Routing.Version ?? expected.Version }, actual.Routing);
        Assert.Equal(expected.Partitions.Count, actual.Partitions.Count);
    }

    [Fact]
    public async Task TheJobPublishesWhatMeasuringThatVersionInProcessGivesAndIngestOnlyAsksForIt()
    {
        var (store, log, built) = await BuildAsync("same", 21);
        var rng = new Random(21);
        var (run, asked) = await IngestAsync(store, log, rng, Rows, 150); // past a tenth
        Assert.Equal(1, asked);
        Assert.True(run.CalibrationRequested);
        Assert.Null(run.CalibrationVersion);
        Assert.DoesNotContain(run.Seconds!, s => s.Phase == "calibrate");
        var rows = await store.OpenCurrentAsync();
        Assert.Equal(run.Version, rows.Version); // the run published its rows and measured nothing
        Assert.Equal(150L, rows.Calibration!.RowsChangedSince);
        Assert.Equal(built.Plans, rows.Calibration.Plans);

        var clock = new ManualClock(DateTimeOffset.UtcNow);
        var job = await LogIngest.RunCalibrationLeasedAsync(store, clock);
        Assert.Equal(CalibrationStatus.Published, job.Status);
        Assert.Equal(rows.Version, job.MeasuredVersion);
        var published = await store.OpenCurrentAsync();
        Assert.Equal(job.PublishedVersion, published.Version);
        AssertSameRows(rows, published);
        var inProcess = await IngestRecalibration.MeasureAsync(store, rows, unchecked((int)rows.IndexedSequence), CancellationToken.None);
        Assert.NotNull(inProcess);
        Assert.Equal(inProcess.Calibration.Plans, published.Calibration!.Plans);
        Assert.Equal((inProcess.Calibration.Queries, "live-sample", 0L), (published.Calibration.Queries, published.Calibration.Source, published.Calibration.RowsChangedSince));
        Assert.NotEqual(built.Plans, published.Calibration.Plans);

        // Measured: the next job, once the rest has passed, has nothing to do.
        clock.Advance(job.RetryAfter!.Value + TimeSpan.FromSeconds(1));
        Assert.Equal(CalibrationStatus.NotDue, (await LogIngest.RunCalibrationLeasedAsync(store, clock)).Status);
    }

    [Fact]
    public async Task AMeasurementOfAnOldVersionLandsOnTheNewerOneKeepingItsRowsAndItsLaterChangesCounted()
    {
        var (store, log, _) = await BuildAsync("old", 22);
        var rng = new Random(22);
        await IngestAsync(store, log, rng, Rows, 150);
        var measuredAt = await store.OpenCurrentAsync();
        var measured = (await IngestRecalibration.MeasureAsync(store, measuredAt, 5, CancellationToken.None))!.Calibration;

        // Writes go on while it measures: a newer version with 60 more changes.
        await IngestAsync(store, log, rng, Rows + 150, 60);
        var newer = await store.OpenCurrentAsync();
        Assert.Equal(210, newer.Calibration!.RowsChangedSince);

        var landed = await LogIngest.PublishCalibrationOntoCurrentAsync(store, measuredAt, measured, null, CancellationToken.None);
        Assert.Equal(CalibrationStatus.Published, landed.Status);
        Assert.Equal(newer.Version, landed.OntoVersion);
        var current = await store.OpenCurrentAsync();
        AssertSameRows(newer, current);
        Assert.Equal(measured.Plans, current.Calibration!.Plans);
        Assert.Equal(60, current.Calibration.RowsChangedSince); // only what the measured version had counted is taken away

        // The same old measurement again: current carries a newer one now, so nothing moves.
        var again = await LogIngest.PublishCalibrationOntoCurrentAsync(store, measuredAt, measured, null, CancellationToken.None);
        Assert.Equal(CalibrationStatus.Superseded, again.Status);
        Assert.Equal(current.Version, (await store.OpenCurrentAsync()).Version);

        // A measurement of a version that counted more than current does (current cannot descend from it): refused.
        var fake = measuredAt with { Calibration = current.Calibration with { RowsChangedSince = 1_000 } };
        Assert.Equal(CalibrationStatus.Superseded, (await LogIngest.PublishCalibrationOntoCurrentAsync(store, fake, measured, null, CancellationToken.None)).Status);

        // Later changes keep counting on the published calibration.
        await IngestAsync(store, log, rng, Rows + 210, 30);
        Assert.Equal(90, (await store.OpenCurrentAsync()).Calibration!.RowsChangedSince);
    }

    [Fact]
    public async Task AnIngestRunWhoseBaseGotACalibrationMeanwhileIsPublishedOnTopOfIt()
    {
        HookedStore? hooked = null;
        var (store, log, _) = await BuildAsync("rebase", 23, b => hooked = new HookedStore(b));
        var rng = new Random(23);
        await IngestAsync(store, log, rng, Rows, 150);
        var based = await store.OpenCurrentAsync();
        var measured = (await IngestRecalibration.MeasureAsync(store, based, 5, CancellationToken.None))!.Calibration;
        // The job publishes while the next run writes its packs (the run's version id was taken before, so it is older).
        CalibrationRun? landed = null;
        hooked!.Suffix = "/" + SegmentPack.IndexName;
        hooked.Hook = async () => landed = await LogIngest.PublishCalibrationOntoCurrentAsync(store, based, measured, null, CancellationToken.None);
        hooked.Arm();
        var (run, _) = await IngestAsync(store, log, rng, Rows + 150, 40);
        Assert.Equal(CalibrationStatus.Published, landed!.Status);
        Assert.True(run.Published, "the run's rows were refused by the calibration published during the run");
        var current = await store.OpenCurrentAsync();
        Assert.Equal(run.Version, current.Version);
        Assert.Equal(based.IndexedSequence + 1, current.IndexedSequence);
        Assert.Equal(Rows + 190, current.Count);
        Assert.Equal(measured.Plans, current.Calibration!.Plans);
        Assert.Equal(40, current.Calibration.RowsChangedSince);
        // Exact answers over the rebased version equal brute force over its rows.
        var opened = await OpenedIndex.OpenAsync(store);
        Assert.Equal(Rows + 190, Enumerable.Range(0, opened.PartitionCount).Sum(p => opened.Codes(p).Ids.Length));
    }

    [Fact]
    public async Task TwoCalibrationJobsAtOnceOneHoldsTheLease()
    {
        var (store, log, _) = await BuildAsync("lease", 24);
        await IngestAsync(store, log, new Random(24), Rows, 150);
        var rows = await store.OpenCurrentAsync();

        // A job holding the lease turns another away, and nothing is published.
        var held = await IngestLease.TryAcquireNamedAsync(store.Blobs, IngestLease.CalibrationNameFor("lease"), TimeSpan.FromMinutes(1));
        Assert.NotNull(held);
        Assert.Equal(CalibrationStatus.Busy, (await LogIngest.RunCalibrationLeasedAsync(store)).Status);
        Assert.Equal(rows.Version, (await store.OpenCurrentAsync()).Version);
        // The ingest lease is another: a calibration never holds back an ingest run.
        Assert.NotNull(await IngestLease.TryAcquireAsync(store.Blobs, "lease", TimeSpan.FromSeconds(1)));
        await held.ReleaseAsync();

        var runs = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(() => LogIngest.RunCalibrationLeasedAsync(store))));
        Assert.Single(runs, r => r.Status == CalibrationStatus.Published);
        Assert.All(runs, r => Assert.Contains(r.Status, new[] { CalibrationStatus.Published, CalibrationStatus.Busy, CalibrationStatus.NotDue }));
        var versions = new List<string>();
        await foreach (var b in store.Blobs.ListAsync("lease/")) if (b.Name.EndsWith("/" + IndexStore.ManifestName, StringComparison.Ordinal)) versions.Add(b.Name);
        Assert.Equal(3, versions.Count); // built, ingested, one calibration
    }

    private sealed class ManualClock(DateTimeOffset now) : TimeProvider
    {
        private DateTimeOffset _now = now;
        public override DateTimeOffset GetUtcNow() => _now;
        public void Advance(TimeSpan by) => _now += by;
    }

    [Fact]
    public async Task AFailedCalibrationIsTriedAgainAfterABackOffThatDoublesNeverAtOnce()
    {
        ScriptedStore? scripted = null;
        var (store, log, _) = await BuildAsync("fail", 25, b => scripted = new ScriptedStore(b));
        await IngestAsync(store, log, new Random(25), Rows, 150);
        var rows = await store.OpenCurrentAsync();
        int vectorReads = 0;
        bool failing = true;
        scripted!.Fails = name =>
        {
            if (!name.Contains("vectors", StringComparison.Ordinal)) return null;
            Interlocked.Increment(ref vectorReads);
            return failing ? new IOException($"injected: {name} unreadable") : null;
        };
        var clock = new ManualClock(DateTimeOffset.UtcNow);

        var first = await LogIngest.RunCalibrationLeasedAsync(store, clock);
        Assert.Equal(CalibrationStatus.Failed, first.Status);
        Assert.Contains("injected", first.Detail);
        Assert.Equal(LogIngest.CalibrationBackOff, first.RetryAfter);
        Assert.Equal(rows.Version, (await store.OpenCurrentAsync()).Version);

        // Asked again at once (another ingest run, the queue): backing off, nothing read.
        int reads = vectorReads;
        Assert.Equal(CalibrationStatus.Busy, (await LogIngest.RunCalibrationLeasedAsync(store, clock)).Status);
        clock.Advance(LogIngest.CalibrationBackOff - TimeSpan.FromSeconds(1));
        Assert.Equal(CalibrationStatus.Busy, (await LogIngest.RunCalibrationLeasedAsync(store, clock)).Status);
        Assert.Equal(reads, vectorReads);

        // After the back-off: tried again, fails again, backs off twice as long.
        clock.Advance(TimeSpan.FromSeconds(2));
        var second = await LogIngest.RunCalibrationLeasedAsync(store, clock);
        Assert.Equal(CalibrationStatus.Failed, second.Status);
        Assert.Equal(2 * LogIngest.CalibrationBackOff, second.RetryAfter);
        Assert.True(vectorReads > reads);

        // Healed: the next try after that back-off publishes, and the failures in a row start again from one.
        failing = false;
        clock.Advance(2 * LogIngest.CalibrationBackOff + TimeSpan.FromSeconds(1));
        var third = await LogIngest.RunCalibrationLeasedAsync(store, clock);
        Assert.Equal(CalibrationStatus.Published, third.Status);
        clock.Advance(third.RetryAfter!.Value + TimeSpan.FromSeconds(1)); // its rest
        var lease = await IngestLease.TryAcquireNamedAsync(store.Blobs, IngestLease.CalibrationNameFor("fail"), TimeSpan.FromSeconds(1), clock);
        Assert.Equal(0, lease!.PriorFailures);
    }

    /// <summary>
    /// A calibration that keeps failing (its vectors unreadable for good) is tried MaxCalibrationAttempts times, each after
    /// its back-off, and then gives up: no RetryAfter (the function sends no message again), a summary naming the count
    /// and the last error. Before, every failure asked again after at most 30 minutes, for ever.
    /// </summary>
    [Fact]
    public async Task ACalibrationThatKeepsFailingGivesUpAfterTheMaximumAttempts()
    {
        ScriptedStore? scripted = null;
        var (store, log, _) = await BuildAsync("damaged", 26, b => scripted = new ScriptedStore(b));
        await IngestAsync(store, log, new Random(26), Rows, 150);
        scripted!.Fails = name => name.Contains("vectors", StringComparison.Ordinal) ? new IOException($"injected: {name} unreadable") : null;
        var clock = new ManualClock(DateTimeOffset.UtcNow);

        for (int attempt = 1; attempt < LogIngest.MaxCalibrationAttempts; attempt++)
        {
            var run = await LogIngest.RunCalibrationLeasedAsync(store, clock);
            Assert.Equal(CalibrationStatus.Failed, run.Status);
            Assert.False(run.GaveUp, $"gave up at attempt {attempt}");
            Assert.NotNull(run.RetryAfter);
            clock.Advance(run.RetryAfter!.Value + TimeSpan.FromSeconds(1));
        }
        var last = await LogIngest.RunCalibrationLeasedAsync(store, clock);
        Assert.Equal(CalibrationStatus.Failed, last.Status);
        Assert.True(last.GaveUp);
        Assert.Null(last.RetryAfter);
        Assert.StartsWith($"failed {LogIngest.MaxCalibrationAttempts} times in a row, the last: IOException: injected: ", last.Summary);
        Assert.Contains("given up, not retried", last.Summary);
    }

    [Fact]
    public async Task AJobThatMeasuredRestsThreeTimesItsMeasurementBeforeTheNextOneMeasures()
    {
        var (store, log, _) = await BuildAsync("rest", 26);
        var rng = new Random(26);
        await IngestAsync(store, log, rng, Rows, 150);
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        var first = await LogIngest.RunCalibrationLeasedAsync(store, clock);
        Assert.Equal(CalibrationStatus.Published, first.Status);
        var rest = first.RetryAfter!.Value;
        Assert.Equal(TimeSpan.FromSeconds(first.Seconds * LogIngest.CalibrationRestRatio), rest);
        Assert.EndsWith($"; the next measurement in {rest.TotalSeconds:0.#} s at the earliest", first.Summary);

        // Due again at once, but resting: turned away until the rest has passed, then measured.
        await IngestAsync(store, log, rng, Rows + 150, 150);
        var due = await store.OpenCurrentAsync();
        Assert.True(LogIngest.CalibrationDue(due));
        Assert.Equal(CalibrationStatus.Busy, (await LogIngest.RunCalibrationLeasedAsync(store, clock)).Status);
        clock.Advance(rest - TimeSpan.FromTicks(Math.Min(rest.Ticks, TimeSpan.TicksPerMillisecond)));
        Assert.Equal(CalibrationStatus.Busy, (await LogIngest.RunCalibrationLeasedAsync(store, clock)).Status);
        Assert.Equal(due.Version, (await store.OpenCurrentAsync()).Version);
        clock.Advance(TimeSpan.FromMilliseconds(2));
        var second = await LogIngest.RunCalibrationLeasedAsync(store, clock);
        Assert.Equal(CalibrationStatus.Published, second.Status);
        Assert.Equal(due.Version, second.MeasuredVersion);
    }

    [Theory]
    [InlineData("not json", "a message on squash-calibrate that is not JSON")]
    [InlineData("{\"index\":\"../etc\"}", "a message on squash-calibrate that names no valid index: {\"index\":\"../etc\"}")]
    [InlineData("{}", "a message on squash-calibrate that names no valid index: {}")]
    [InlineData("[1]", "a message on squash-calibrate that is not JSON")]
    public void ABadCalibrateMessageIsANamedDrop(string text, string problem)
    {
        var (index, why) = CalibrationEndpoints.Parse(text);
        Assert.Null(index);
        Assert.StartsWith(problem, why);
        Assert.Equal(("docs", (string?)null), CalibrationEndpoints.Parse("{\"index\":\"docs\"}"));
        // The ingest queue's messages have the same form and go through the same parser, named by their own queue.
        Assert.StartsWith(problem.Replace("squash-calibrate", IngestTrigger.QueueName), IngestMessage.Parse(text, IngestTrigger.QueueName).Problem);
    }

    [Fact]
    public async Task ThePrunedExactSearchEqualsBruteForceBeforeAndAfterIngest()
    {
        var (store, log, _) = await BuildAsync("exact", 26);
        var rng = new Random(26);
        for (int round = 0; round < 2; round++)
        {
            var opened = await OpenedIndex.OpenAsync(store);
            var bounds = new IngestRecalibration.PartitionBounds(opened);
            int d = opened.Manifest.InternalDimensions, total = Enumerable.Range(0, opened.PartitionCount).Sum(p => opened.Codes(p).Ids.Length);
            var all = new float[(long)total * d];
            var rowAt = new int[total];
            int filled = 0;
            for (int p = 0; p < opened.PartitionCount; p++)
                for (int i = 0; i < opened.Codes(p).Ids.Length; i++)
                {
                    opened.Vectors(p).Row(i).CopyTo(all.AsSpan(filled * d, d));
                    rowAt[filled++] = opened.Codes(p).Ids[i];
                }
            var queries = Clustered(rng, 40);
            var inner = new float[40 * d];
            for (int q = 0; q < 40; q++) new QueryContext(opened, queries.AsSpan(q * Dims, Dims)).Internal.CopyTo(inner, q * d);
            var truth = GroundTruth.Compute(new VectorSet(all, total, d), new VectorSet(inner, 40, d), 10, Metric.L2);
            long before = bounds.Distances;
            for (int q = 0; q < 40; q++)
                Assert.Equal(truth[q].Select(position => rowAt[position]), bounds.Nearest(inner.AsSpan(q * d, d), 10).Ids);
            Assert.True(bounds.Distances - before < 40L * total, $"round {round}: the bounds pruned nothing ({bounds.Distances - before} distances)");
            await IngestAsync(store, log, rng, Rows + 100 * round, 100);
        }
    }

    [Fact]
    public async Task RowsWithANearCopyInTheIndexAreNotCalibrationQueries()
    {
        var (store, log, _) = await BuildAsync("copies", 27);
        // Two near-copies of every row of one cluster: those rows and their copies find each other first.
        var opened = await OpenedIndex.OpenAsync(store);
        var rng = new Random(27);
        var copies = new List<float>();
        int n = 0;
        for (int p = 0; p < opened.PartitionCount; p++)
            for (int i = 0; i < opened.Codes(p).Ids.Length; i++)
                if (opened.Codes(p).Ids[i] % 6 == 0)
                    for (int c = 0; c < 2; c++, n++)
                        foreach (float v in opened.Vectors(p).Row(i)) copies.Add(v + (float)(rng.NextDouble() - 0.5) * 0.01f);
        await log.AppendAsync(Upserts([.. copies], Enumerable.Range(Rows, n)), null, "copies", 0);
        await LogIngest.RunAsync(store, log, requestCalibration: _ => Task.CompletedTask);
        var m = await store.OpenCurrentAsync();
        var measured = await IngestRecalibration.MeasureAsync(store, m, 3, CancellationToken.None);
        Assert.NotNull(measured);
        // 600 of the 1,600 rows are a copy or have one: those drawn are held out with their near-copies (two each), the others alone.
        Assert.Equal(RecallCalibrator.DefaultQueries, measured.Queries);
        Assert.InRange(measured.WithNearCopies, measured.Queries / 5, measured.Queries / 2);
    }
}
