using System.Globalization;
using Squash.Index.Build;
using Squash.Search;
using Squash.Search.Writes;
using Squash.Storage;
using Squash.Storage.Writes;

namespace Squash.Functions.Tests;

/// <summary>
/// Ingest keeps the build's recall calibration while the rows changed since it stay under a tenth of the index (counting
/// them in the manifest), then measures it again on the new version with live rows as the queries — also when
/// deletes and new rows have moved row numbers past the row count. These runs have no queue to ask the calibration job, so
/// they measure it themselves after their publish (as <c>squash ingest</c> does).
/// </summary>
public sealed class IngestRecalibrationTests : IDisposable
{
    private const int Rows = 1_200, Dims = 8;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-recal-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    /// <summary>Six clusters of <see cref="Dims"/>-dimensional rows (shared with the calibration job's tests).</summary>
    internal static float[] Clustered(Random rng, int n)
    {
        var data = new float[n * Dims];
        for (int i = 0; i < n; i++)
            for (int t = 0; t < Dims; t++) data[i * Dims + t] = 10 * (i % 6 == t % 6 ? 1 : 0) + (float)(rng.NextDouble() - 0.5) * 4;
        return data;
    }

    private static WriteBatch Upserts(float[] vectors, IEnumerable<int> ids, IEnumerable<string>? deletes = null) => new()
    {
        CreatedUtc = DateTimeOffset.UtcNow,
        Upserts = ids.Select((id, j) => new UpsertItem(id.ToString(CultureInfo.InvariantCulture), vectors.AsSpan(j * Dims, Dims).ToArray())).ToArray(),
        Deletes = deletes?.ToArray(),
    };

    [Theory]
    [InlineData(1_250, 300)]
    [InlineData(60_000, 750)]
    [InlineData(100_000, 1_200)]
    [InlineData(160_000, 750)]
    [InlineData(1_000_000, 300)]
    public void AMeasurementDrawsAsManyRowsAsABuildOfThatSizeMeasuresExactly(long count, int expected)
    {
        Assert.Equal(expected, IngestRecalibration.Queries(count));
        var sample = RecallCalibrator.BuildQueries(count);
        Assert.Equal(RecallCalibrator.ExactQueries(count, sample), IngestRecalibration.Queries(count));
    }

    [Fact]
    public async Task TheCalibrationIsKeptBelowATenthChangedAndMeasuredAgainOnIngestedRowsPastIt()
    {
        const int seed = 15;
        var rng = new Random(seed);
        var store = new IndexStore(new FolderBlobStore(_root), "recal");
        var built = await CalibratedBuild.BuildAndPublishAsync(store, Clustered(rng, Rows), Rows, Dims, new IndexBuildOptions { Partitions = 8, Seed = seed });
        var before = built.Calibration ?? throw new Xunit.Sdk.XunitException($"seed {seed}: the build published no calibration");
        var log = new WriteLog(store.Blobs, "recal");

        // 5 %: counted, not measured.
        await log.AppendAsync(Upserts(Clustered(rng, 60), Enumerable.Range(0, 60)), null, "a", 0);
        await LogIngest.RunAsync(store, log);
        var counted = (await store.OpenCurrentAsync()).Calibration!;
        Assert.Equal(60, counted.RowsChangedSince);
        Assert.Equal(before.Source, counted.Source);
        Assert.Equal(before.Plans, counted.Plans);

        // Past a tenth: 100 deletes at the end and 150 new rows past the row count (row numbers reach 1,350 with 1,250 rows).
        var fresh = Enumerable.Range(Rows, 150).ToArray();
        await log.AppendAsync(Upserts(Clustered(rng, fresh.Length), fresh, Enumerable.Range(Rows - 100, 100).Select(i => i.ToString(CultureInfo.InvariantCulture))), null, "b", 1);
        var run = await LogIngest.RunAsync(store, log);
        Assert.Contains(run.Seconds!, s => s.Phase == "calibrate");
        Assert.Null(run.CalibrationFailure);
        // Published first with the changes counted (the rows visible before the measurement), then a manifest-only
        // successor with the measured calibration that names exactly the rows' version's segments.
        var rows = await store.ReadManifestAsync(run.Version!);
        Assert.Equal(60 + 150, rows.Calibration!.RowsChangedSince);
        Assert.Equal(before.Plans, rows.Calibration.Plans);
        var m = await store.OpenCurrentAsync();
        Assert.Equal(run.CalibrationVersion, m.Version);
        Assert.True(VersionIds.Compare(m.Version, rows.Version) > 0);
        Assert.Equal([rows.Version], IndexStore.ReferencedVersions(m).Where(v => v == rows.Version));
        Assert.All(IndexStore.BlobsNamedBy(m), s => Assert.NotNull(s.Version));
        Assert.Equal(rows.IndexedSequence, m.IndexedSequence);
        Assert.Equal(rows.Count, m.Count);
        var folder = new List<string>();
        await foreach (var b in store.Blobs.ListAsync(store.VersionPrefix(m.Version))) folder.Add(b.Name);
        Assert.Equal([store.VersionPrefix(m.Version) + IndexStore.ManifestName], folder);
        Assert.Equal(Rows - 100 + 150, m.Count);
        Assert.True(m.RowLimit > m.Count, $"seed {seed}: row numbers should pass the row count (limit {m.RowLimit}, count {m.Count})");
        var measured = m.Calibration!;
        Assert.Equal(0, measured.RowsChangedSince);
        // Live rows drawn uniformly (base and ingested alike), near-copies left out: as many as a build of this size measures exactly.
        Assert.Equal("live-sample", measured.Source);
        Assert.Equal(IngestRecalibration.Queries(m.Count), measured.Queries);
        Assert.NotEmpty(measured.Plans);

        // The re-measured calibration plans queries on the published version like any other.
        var opened = await OpenedIndex.OpenAsync(store);
        var answer = new SearchEngine(opened).Search(Clustered(rng, 1), new SearchOptions { K = 10, Recall = 0.95 });
        Assert.Equal(10, answer.Ids.Length);
    }

    /// <summary>
    /// An index calibrated on the user's queries keeps them (an .fvecs blob in the build's folder), and the measurement after
    /// writes measures those queries again, against their exact neighbours among the live rows (here a brute force over
    /// every live row), writing them into its own version's folder.
    /// </summary>
    [Fact]
    public async Task AnIndexCalibratedOnTheUsersQueriesMeasuresThemAgainAfterWrites()
    {
        const int seed = 17, queries = 200, k = 10;
        var rng = new Random(seed);
        var store = new IndexStore(new FolderBlobStore(_root), "users");
        var user = Clustered(rng, queries);
        var built = await CalibratedBuild.BuildAndPublishAsync(store, Clustered(rng, Rows), Rows, Dims, new IndexBuildOptions { Partitions = 8, Seed = seed },
            calibration: new CalibrationQueries(user, queries, Dims, null, "queries"));
        Assert.Equal(("queries", queries), (built.Calibration!.Source, built.Calibration.Queries));
        Assert.Equal(built.Version, built.Calibration.QueriesBlob!.Version);
        Assert.Equal(user, (await KeptCalibrationQueries.ReadAsync(store, built, default))!.Data);

        var log = new WriteLog(store.Blobs, "users");
        var fresh = Enumerable.Range(Rows, 200).ToArray();
        await log.AppendAsync(Upserts(Clustered(rng, fresh.Length), fresh, Enumerable.Range(0, 50).Select(i => i.ToString(CultureInfo.InvariantCulture))), null, "u", 0);
        var run = await LogIngest.RunAsync(store, log);
        Assert.Null(run.CalibrationFailure);
        var m = await store.OpenCurrentAsync();
        Assert.Equal(run.CalibrationVersion, m.Version);
        var measured = m.Calibration!;
        Assert.Equal(("queries", queries, 0L), (measured.Source, measured.Queries, measured.RowsChangedSince));
        Assert.Equal(m.Version, measured.QueriesBlob!.Version);
        Assert.Equal(user, (await KeptCalibrationQueries.ReadAsync(store, m, default))!.Data);

        // The same plans from exact neighbours found by brute force over the version's live rows.
        var opened = await OpenedIndex.OpenAsync(store);
        var rows = new List<(int Id, float[] Vector)>();
        for (int p = 0; p < opened.PartitionCount; p++)
            for (int i = 0; i < opened.Codes(p).Ids.Length; i++)
                rows.Add((opened.Codes(p).Ids[i], opened.Vectors(p).Row(i)[..Dims].ToArray()));
        Assert.Equal(m.Count, rows.Count);
        var exact = new int[queries][];
        for (int q = 0; q < queries; q++)
        {
            var query = user.AsSpan(q * Dims, Dims).ToArray();
            exact[q] = rows.OrderBy(r => System.Numerics.Tensors.TensorPrimitives.Distance(query, r.Vector)).ThenBy(r => r.Id).Take(k).Select(r => r.Id).ToArray();
        }
        var reference = RecallCalibrator.Calibrate(opened, exact, new CalibrationQueries(user, queries, Dims, null, "queries"), k, filtered: false)!;
        Assert.Equal(reference.Plans, measured.Plans);
    }

    /// <summary>
    /// After writes the filtered bands are measured again too, with families drawn from the live rows' attributes: what is
    /// published is the measurement of the version written (its live-sample queries, their near-copies left out), not the
    /// build's bands, which the writes below make wrong (a third of the rows get the label of the next cluster).
    /// </summary>
    [Fact]
    public async Task TheFilteredBandsAreMeasuredAgainOnTheLiveRowsAfterWrites()
    {
        const int seed = 19, replaced = 400;
        var rng = new Random(seed);
        var store = new IndexStore(new FolderBlobStore(_root), "bands");
        var table = Squash.Index.Attributes.AttributeReader.ReadJsonLines(new StringReader(string.Join('\n',
            Enumerable.Range(0, Rows).Select(i => $"{{\"attributes\":{{\"c\":{i % 6},\"u\":{rng.Next(100_000)}}}}}"))), "c.jsonl");
        var built = await CalibratedBuild.BuildAndPublishAsync(store, Clustered(rng, Rows), Rows, Dims, new IndexBuildOptions { Partitions = 8, Seed = seed, Attributes = table });
        var before = built.Calibration?.Filtered ?? throw new Xunit.Sdk.XunitException($"seed {seed}: the build measured no filtered band");

        // Row j is in cluster j % 6 (Clustered), as before; its label now names cluster j + 1. Rows 0–199 are replaced, rows
        // 1,200–1,399 new (row numbers past the count: 200 rows deleted at the end).
        var ids = Enumerable.Range(0, replaced / 2).Concat(Enumerable.Range(Rows, replaced / 2)).ToArray();
        var vectors = Clustered(rng, replaced);
        var log = new WriteLog(store.Blobs, "bands");
        await log.AppendAsync(new WriteBatch
        {
            CreatedUtc = DateTimeOffset.UtcNow,
            Upserts = ids.Select((id, j) => new UpsertItem(id.ToString(CultureInfo.InvariantCulture), vectors.AsSpan(j * Dims, Dims).ToArray(),
                System.Text.Json.JsonDocument.Parse($"{{\"c\":{(j + 1) % 6},\"u\":{rng.Next(100_000)}}}").RootElement.Clone())).ToArray(),
            Deletes = Enumerable.Range(Rows - replaced / 2, replaced / 2).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToArray(),
        }, null, "b", 0);
        var run = await LogIngest.RunAsync(store, log);
        Assert.Null(run.CalibrationFailure);
        Assert.True(run.CalibrationVersion is not null, $"seed {seed}: the calibration was not measured again");
        var m = await store.OpenCurrentAsync();
        Assert.Equal(run.CalibrationVersion, m.Version);
        Assert.Equal("live-sample", m.Calibration!.Source);
        var after = m.Calibration.Filtered ?? throw new Xunit.Sdk.XunitException($"seed {seed}: the measurement after writes published no filtered band");

        // The reference: the same live-sample queries of the version written, measured directly.
        var rows = await store.ReadManifestAsync(run.Version!);
        Assert.True(rows.RowLimit > rows.Count, $"seed {seed}: row numbers should pass the row count (limit {rows.RowLimit}, count {rows.Count})");
        var opened = await OpenedIndex.OpenUnpublishedAsync(store, rows, default);
        var (queries, exact) = IngestRecalibration.LiveSample(opened, rows.Count, unchecked((int)rows.IndexedSequence), default);
        var reference = RecallCalibrator.Calibrate(opened, exact, queries, RecallCalibrator.DefaultK)!.Filtered!;
        Assert.Equal(reference.Select(Describe), after.Select(Describe));
        Assert.Contains(after, b => b.Families.Any(f => f.StartsWith("own value:", StringComparison.Ordinal)));
        Assert.NotEqual(before.Select(Describe), after.Select(Describe));
    }

    /// <summary>
    /// On an index without ids an upsert may name any row number up to 2,147,483,646. Rows written far past the row count
    /// (as <c>squash upsert --first-id 2147483600</c> does) are ingested, a later write on top of them is ingested too, and
    /// the calibration is measured again on them, filtered bands included — none of it sizing an array by the largest row
    /// number (which asked for 2³¹ ints: every later ingest and calibration failed with an OutOfMemoryException). The
    /// filtered sample is spaced over the live rows, not over row numbers that mostly name no row.
    /// </summary>
    [Fact]
    public async Task RowNumbersFarPastTheRowCountAreIngestedAndCalibratedWithoutArraysSizedByThem()
    {
        // 40 rows from 2,147,483,600 on (the last, 2,147,483,639, is past the largest array .NET allocates) and 100 rows
        // replaced: 140 changed, past a tenth of the rows.
        const int seed = 23, far = 2_147_483_600, written = 40, replaced = 100;
        var rng = new Random(seed);
        var store = new IndexStore(new FolderBlobStore(_root), "far");
        var table = Squash.Index.Attributes.AttributeReader.ReadJsonLines(new StringReader(string.Join('\n',
            Enumerable.Range(0, Rows).Select(i => $"{{\"attributes\":{{\"c\":{i % 6},\"u\":{rng.Next(100_000)}}}}}"))), "c.jsonl");
        await CalibratedBuild.BuildAndPublishAsync(store, Clustered(rng, Rows), Rows, Dims, new IndexBuildOptions { Partitions = 8, Seed = seed, Attributes = table });
        var log = new WriteLog(store.Blobs, "far");
        var rows = Enumerable.Range(0, replaced).Concat(Enumerable.Range(far, written)).ToArray();
        var vectors = Clustered(rng, rows.Length);
        await log.AppendAsync(new WriteBatch
        {
            CreatedUtc = DateTimeOffset.UtcNow,
            Upserts = rows.Select((row, j) => new UpsertItem(row.ToString(CultureInfo.InvariantCulture), vectors.AsSpan(j * Dims, Dims).ToArray(),
                System.Text.Json.JsonDocument.Parse($"{{\"c\":{row % 6},\"u\":{rng.Next(100_000)}}}").RootElement.Clone())).ToArray(),
        }, null, "a", 0);
        // Past a tenth of the rows changed: the run measures the calibration again after its publish.
        var run = await LogIngest.RunAsync(store, log);
        Assert.True(run.Published);
        Assert.Null(run.CalibrationFailure);
        Assert.NotNull(run.CalibrationVersion);
        var m = await store.OpenCurrentAsync();
        Assert.Equal(Rows + written, m.Count);
        Assert.Equal(far + written, m.RowLimit);
        Assert.Equal("live-sample", m.Calibration!.Source);
        Assert.Contains(m.Calibration.Filtered ?? [], b => b.Families.Any(f => f.StartsWith("own value:", StringComparison.Ordinal)));

        // A later write — a replacement, a delete of one far row and a delete by filter — is ingested on top of them.
        await log.AppendAsync(new WriteBatch
        {
            CreatedUtc = DateTimeOffset.UtcNow,
            Upserts = [new UpsertItem("5", Clustered(rng, 1), System.Text.Json.JsonDocument.Parse("{\"c\":5,\"u\":1}").RootElement.Clone())],
            Deletes = [(far + 1).ToString(CultureInfo.InvariantCulture)],
            DeleteWhere = System.Text.Json.JsonDocument.Parse("{\"u\":{\"$lt\":0}}").RootElement.Clone(),
        }, null, "b", 1);
        var second = await LogIngest.RunAsync(store, log);
        Assert.True(second.Published);
        m = await store.OpenCurrentAsync();
        Assert.Equal(2, m.IndexedSequence);
        Assert.Equal(Rows + written - 1, m.Count);
        var opened = await OpenedIndex.OpenUnpublishedAsync(store, m, default);
        var ids = Enumerable.Range(0, opened.PartitionCount).SelectMany(p => opened.Codes(p).Ids).Order().ToArray();
        Assert.Equal(Enumerable.Range(0, Rows).Concat(Enumerable.Range(far, written).Where(r => r != far + 1)), ids);

        // `squash calibrate` and the calibration job measure this version directly.
        var (queries, exact) = IngestRecalibration.LiveSample(opened, m.Count, 2, default);
        var measured = RecallCalibrator.Calibrate(opened, exact, queries, RecallCalibrator.DefaultK);
        Assert.NotNull(measured);
        Assert.NotEmpty(measured.Plans);
        Assert.Contains(measured.Filtered ?? [], b => b.Families.Any(f => f.StartsWith("own value:", StringComparison.Ordinal)));
    }

    private static string Describe(Squash.Index.Model.FilteredCalibration band) =>
        $"{band.MinSelectivity}–{band.MaxSelectivity}, ratio {band.MinAnchorRatio}–{band.MaxAnchorRatio}, {band.Queries} queries [{string.Join(", ", band.Families)}]: "
        + string.Join("; ", band.Plans);

    /// <summary>
    /// The user's filter families are kept beside the queries (one line per kept query, named as the file was); the
    /// recalibration after writes writes both again into its own folder, and a full rebuild calibrates on both again.
    /// </summary>
    [Fact]
    public async Task ARebuildOfAnIndexCalibratedOnTheUsersQueriesAndFiltersCalibratesOnThem()
    {
        const int seed = 18, queries = 150;
        var rng = new Random(seed);
        var store = new IndexStore(new FolderBlobStore(_root), "rebuilt");
        var user = Clustered(rng, queries);
        var own = Enumerable.Range(0, queries).Select(q => q % 5 == 0 ? null : $"{{\"c\":{q % 6}}}").ToArray();
        var table = Squash.Index.Attributes.AttributeReader.ReadJsonLines(
            new StringReader(string.Join('\n', Enumerable.Range(0, Rows).Select(i => $"{{\"attributes\":{{\"c\":{i % 6}}}}}"))), "c.jsonl");
        var built = await CalibratedBuild.BuildAndPublishAsync(store, Clustered(rng, Rows), Rows, Dims, new IndexBuildOptions { Partitions = 8, Seed = seed, Attributes = table },
            calibration: new CalibrationQueries(user, queries, Dims, null, "queries", Filters: [new CalibrationFilters("own.jsonl", own)]));
        var kept = Assert.Single(built.Calibration!.FilterBlobs!);
        Assert.Equal(("calibration-filters/0/own.jsonl", built.Version), (kept.Name, kept.Version));
        Assert.Equal(string.Concat(own.Select(t => (t ?? "null") + "\n")), System.Text.Encoding.UTF8.GetString(await store.Blobs.ReadAllAsync(store.BlobName(built, kept))));
        static string[] Families(Squash.Index.Model.IndexManifest m) =>
            m.Calibration!.Filtered!.SelectMany(b => b.Families).Select(f => f[..f.IndexOf(':')]).Distinct().ToArray();
        Assert.Equal(["own.jsonl"], Families(built));
        var read = Assert.Single((await KeptCalibrationQueries.ReadAsync(store, built, default))!.Filters!);
        Assert.Equal("own.jsonl", read.Name);
        Assert.Equal(own, read.Texts);

        // A kept family of the right size but one line short (a blank in its place) is damage, named as such.
        var blobName = store.BlobName(built, kept);
        var original = await store.Blobs.ReadAllAsync(blobName);
        await store.Blobs.WriteAsync(blobName, System.Text.Encoding.UTF8.GetBytes("    \n" + System.Text.Encoding.UTF8.GetString(original)[5..]), WriteCondition.Overwrite);
        var damaged = await Assert.ThrowsAsync<Squash.Index.Format.CorruptIndexException>(() => KeptCalibrationQueries.ReadAsync(store, built, default));
        Assert.Equal($"'{blobName}' holds {queries} lines (blank ones among them: 1); the manifest keeps {queries} queries", damaged.Message);
        await store.Blobs.WriteAsync(blobName, original, WriteCondition.Overwrite);

        var log = new WriteLog(store.Blobs, "rebuilt");
        // Over half the rows replaced (row numbers kept): the calibration is due, and so is a rebuild.
        await log.AppendAsync(Upserts(Clustered(rng, 700), Enumerable.Range(0, 700)), null, "r", 0);
        var jobs = new Squash.Storage.Builds.BuildJobStore(store.Blobs);
        var queue = new InOrderBuildQueue();
        var run = await LogIngest.RunLeasedAsync(store, log, rebuild: new RebuildSettings(0.5, jobs, queue));
        var buildId = run.Rebuild?.Queued ?? throw new Xunit.Sdk.XunitException($"seed {seed}: no rebuild was queued ({run.Rebuild?.Message})");
        var measured = await store.OpenCurrentAsync();
        Assert.Equal("queries", measured.Calibration!.Source);
        Assert.Equal([measured.Version, measured.Version], new[] { measured.Calibration.QueriesBlob!, Assert.Single(measured.Calibration.FilterBlobs!) }.Select(b => b.Version));
        Assert.Equal(kept.Bytes, (await store.Blobs.ReadAllAsync(store.BlobName(measured, measured.Calibration.FilterBlobs![0]))).LongLength);
        // Its filtered bands were measured again on the kept family, not drawn from the attributes.
        Assert.Equal(["own.jsonl"], Families(measured));
        Assert.NotEqual(built.Calibration.Filtered!.Select(Describe), measured.Calibration.Filtered!.Select(Describe));

        var runner = new Squash.Storage.Builds.BuildTaskRunner(jobs, queue, new Squash.Search.Builds.QueueStageWork());
        while (queue.Pending.TryDequeue(out var message))
        {
            var outcome = await runner.RunAsync(message, 1, 5, CancellationToken.None);
            Assert.True(outcome.Success, outcome.Log);
        }
        var job = (await jobs.GetAsync("rebuilt", buildId))!.Value.Job;
        Assert.Equal(Squash.Storage.Builds.BuildStatus.Succeeded, job.Status);
        var rebuilt = await store.ReadManifestAsync(job.Version);
        Assert.Equal(("queries", queries), (rebuilt.Calibration!.Source, rebuilt.Calibration.Queries));
        Assert.Equal(job.Version, rebuilt.Calibration.QueriesBlob!.Version);
        Assert.Equal(user, (await KeptCalibrationQueries.ReadAsync(store, rebuilt, default))!.Data);
        Assert.Equal(("calibration-filters/0/own.jsonl", job.Version), (rebuilt.Calibration.FilterBlobs!.Single().Name, rebuilt.Calibration.FilterBlobs!.Single().Version));
        Assert.Equal(["own.jsonl"], Families(rebuilt));
    }

    [Fact]
    public async Task ADueCalibrationWaitsWhileMoreLogWaitsButNotPastAFifthChanged()
    {
        const int seed = 16;
        var rng = new Random(seed);
        var store = new IndexStore(new FolderBlobStore(_root), "defer");
        var built = await CalibratedBuild.BuildAndPublishAsync(store, Clustered(rng, Rows), Rows, Dims, new IndexBuildOptions { Partitions = 8, Seed = seed });
        var source = built.Calibration?.Source ?? throw new Xunit.Sdk.XunitException($"seed {seed}: the build published no calibration");
        var log = new WriteLog(store.Blobs, "defer");
        // Three batches of 160 new rows (over a tenth of the index each), applied one per run.
        for (int b = 0; b < 3; b++)
            await log.AppendAsync(Upserts(Clustered(rng, 160), Enumerable.Range(Rows + 160 * b, 160)), null, $"h{b}", b);

        // Due after the first, but two batches wait: published with the count, not measured.
        var first = await LogIngest.RunAsync(store, log, maxBatches: 1);
        Assert.True(first.CalibrationDeferred);
        Assert.Null(first.CalibrationVersion);
        Assert.DoesNotContain(first.Seconds!, s => s.Phase == "calibrate");
        var m = await store.OpenCurrentAsync();
        Assert.Equal(first.Version, m.Version);
        Assert.Equal((160, source), (m.Calibration!.RowsChangedSince, m.Calibration.Source));

        // Past a fifth changed: measured although a batch still waits.
        var second = await LogIngest.RunAsync(store, log, maxBatches: 1);
        Assert.False(second.CalibrationDeferred);
        Assert.NotNull(second.CalibrationVersion);
        m = await store.OpenCurrentAsync();
        Assert.Equal(second.CalibrationVersion, m.Version);
        Assert.Equal((0, "live-sample"), (m.Calibration!.RowsChangedSince, m.Calibration.Source));

        // The last batch: due again only at a tenth since, which 160 rows of 1,680 are not.
        var third = await LogIngest.RunAsync(store, log, maxBatches: 1);
        Assert.False(third.CalibrationDeferred);
        Assert.Null(third.CalibrationVersion);
        Assert.Equal(160, (await store.OpenCurrentAsync()).Calibration!.RowsChangedSince);
    }
}
