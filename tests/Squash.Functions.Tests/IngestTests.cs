using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.Search;
using Squash.Search.Writes;
using Squash.Storage;
using Squash.Storage.Writes;
using Squash.Testing;
using static Squash.Functions.Tests.WriteModel;

namespace Squash.Functions.Tests;

/// <summary>
/// Ingest against a plain in-memory model: random writes through the HTTP API (upserts that add or replace, with category
/// values and numbers the build never saw; deletes; deletes by filter) interleaved with ingest runs. After every step an
/// exact strong query equals brute force over the model; after every ingest an exact eventual query does too, its answer
/// reports the ingested watermark, and the version holds exactly the model's rows (nothing lost, nothing applied twice).
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class IngestTests(IndexFixture fx)
{
    private const int Dims = WriteModel.Dims, Rows = WriteModel.Rows;

    private sealed class Harness(string index, IndexStore store, HttpClient client, bool withIds)
    {
        public string Index { get; } = index;
        public IndexStore Store { get; } = store;
        public HttpClient Client { get; } = client;
        public bool WithIds { get; } = withIds;
        public WriteLog Log => new(Store.Blobs, Index);
    }

    private Task<(Dictionary<string, Item> Model, IndexStore Store)> BuildAsync(string index, int seed, bool withIds, int partitions = 4) =>
        WriteModel.BuildAsync(fx.Root, index, seed, withIds, partitions);

    private static Task WriteAsync(Harness h, Random rng, Dictionary<string, Item> model, Func<string> newId, string context) =>
        WriteModel.WriteAsync(h.Client, h.Index, rng, model, newId, context);

    private static Task AssertAnswer(Harness h, float[] query, Filter? filter, string consistency, Dictionary<string, Item> model, long watermark, string context) =>
        WriteModel.AssertAnswer(h.Client, h.Index, h.WithIds, query, filter, consistency, model, watermark, context);

    [Theory]
    [InlineData(1, 1, true)]
    [InlineData(2, 0, true)]
    [InlineData(3, 2, false)]
    [InlineData(4, 0, false)]
    public async Task StrongAndEventualQueriesEqualBruteForceAcrossIngests(int seed, int depth, bool withIds)
    {
        var rng = new Random(seed * 7919);
        var index = "ingest-" + Guid.NewGuid().ToString("N")[..12];
        var (model, store) = await BuildAsync(index, seed, withIds);
        var published = model.ToDictionary(e => e.Key, e => e.Value);
        using var app = fx.App(2, depth, settings: new Dictionary<string, string> { ["Squash:CurrentRecheck"] = "00:00:00" });
        var h = new Harness(index, store, app.CreateClient(), withIds);
        int fresh = 0;
        string NewId() => withIds ? $"new-{fresh++}" : (Rows + fresh++).ToString(CultureInfo.InvariantCulture);
        long sequence = 0, watermark = 0;
        int ingests = 0, extended = 0, masked = 0, rewritten = 0;
        static int OwnSegments(Squash.Index.Model.PartitionEntry p) =>
            new[] { p.Codes, p.Vectors, p.Attributes, p.Deleted }.Concat(p.Appended?.Select(a => a.Codes) ?? []).Count(x => x is { Version: null });

        for (int step = 0; step < 40; step++)
        {
            var context = $"seed {seed} step {step}";
            await WriteAsync(h, rng, model, NewId, context);
            sequence++;
            if (rng.Next(4) == 0 || step == 39)
            {
                var run = await LogIngest.RunAsync(store, h.Log);
                Assert.True(run.Published, $"{context}: ingest did not publish");
                Assert.Equal(watermark, run.FromSequence);
                Assert.Equal(sequence, run.ToSequence);
                watermark = sequence;
                published = model.ToDictionary(e => e.Key, e => e.Value);
                ingests++;
                var m = await store.OpenCurrentAsync();
                Assert.Equal(sequence, m.IndexedSequence);
                Assert.True(model.Count == m.Count, $"{context}: the version holds {m.Count} rows, the model {model.Count}");
                // A touched partition is rewritten (new base segments) or extended (an appended segment and/or a new mask,
                // its base referenced); an untouched one references everything.
                // A split rewrites one partition into two.
                Assert.True(m.Partitions.Count(p => p.Codes.Version is null) == run.RewrittenPartitions + run.NewPartitions, $"{context}: rewritten partitions");
                Assert.True(m.Partitions.Count(p => OwnSegments(p) > 0) == run.TouchedPartitions + run.NewPartitions, $"{context}: only touched partitions have new segments");
                foreach (var p in m.Partitions.Where(p => p.IsComposite))
                {
                    Assert.True(p.Codes.Version is not null, $"{context}: partition {p.Id} is extended, its base is an earlier version's");
                    Assert.True(p.StoredRows - p.Count == (await store.ReadDeletionMaskAsync(m, p) ?? []).Count(x => x), $"{context}: partition {p.Id}'s mask");
                    Assert.True((p.Appended?.Count ?? 0) <= LogIngest.MaxAppendedSegments, $"{context}: partition {p.Id} has {p.Appended?.Count} appended segments");
                }
                // One run, two blobs: every segment it wrote (routing included) is a range of its index pack or its vector pack.
                // Appended codes carry no quantizer of their own (format 4): the base segment's holds for them.
                Assert.Equal(m.Partitions.Any(p => p.Appended is not null) ? Squash.Index.Model.IndexManifest.LeanAppendedFormatVersion
                    : Squash.Index.Model.IndexManifest.PackedFormatVersion, m.FormatVersion);
                Assert.All(IndexStore.BlobsNamedBy(m).Where(s => s.Version is null), s => Assert.True(s.Offset is not null && s.Name is SegmentPack.IndexName or SegmentPack.VectorsName,
                    $"{context}: segment '{s.Name}' of the run is not in a pack"));
                var written = new List<string>();
                await foreach (var b in store.Blobs.ListAsync(store.VersionPrefix(m.Version))) written.Add(b.Name[store.VersionPrefix(m.Version).Length..]);
                Assert.True(written.Contains(SegmentPack.IndexName) && written.Contains(IndexStore.ManifestName)
                    && written.All(n => n is SegmentPack.IndexName or SegmentPack.VectorsName or IndexStore.ManifestName), $"{context}: the run wrote {string.Join(", ", written)}");
                extended += m.Partitions.Count(p => p.IsComposite && OwnSegments(p) > 0);
                masked += m.Partitions.Count(p => p.Deleted is { Version: null });
                rewritten += run.RewrittenPartitions;
            }
            var query = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
            var filter = rng.Next(2) == 0 ? RandomFilter(rng) : null;
            await AssertAnswer(h, query, filter, "strong", model, watermark, $"{context} strong {filter?.Json}");
            await AssertAnswer(h, query, filter, "eventual", published, watermark, $"{context} eventual {filter?.Json}");
        }
        Assert.True(ingests >= 2, $"seed {seed}: only {ingests} ingests ran");
        // Both ways of applying the log ran: partitions extended (appended rows, masks) and partitions rewritten whole.
        Assert.True(extended > 0 && masked > 0 && rewritten > 0, $"seed {seed}: {extended} partitions extended, {masked} masks written, {rewritten} rewritten");
        // Nothing left to apply: a further run writes no version.
        Assert.Null((await LogIngest.RunAsync(store, h.Log)).Version);
    }

    /// <summary>A store that fails the first write of a blob whose name ends with <paramref name="suffix"/>, as a worker killed at that moment would.</summary>
    private sealed class FailOnce(IBlobStore inner, string suffix) : PassThroughStore(inner)
    {
        private int _failed;
        public override Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken ct = default) =>
            name.EndsWith(suffix, StringComparison.Ordinal) && Interlocked.Exchange(ref _failed, 1) == 0
                ? Task.FromException<BlobInfo>(new IOException($"worker killed while writing {name}"))
                : Inner.WriteAsync(name, data, condition, ct);
    }

    [Theory]
    [InlineData("/" + SegmentPack.IndexName, false)]
    [InlineData("/" + SegmentPack.VectorsName, false)]
    [InlineData("/" + SegmentPack.IndexName, true)]
    [InlineData("/" + SegmentPack.VectorsName, true)]
    [InlineData("/manifest.json", false)]
    [InlineData("/current", false)]
    public async Task IngestKilledMidPublishIsFinishedByTheNextRunWithNothingLostOrAppliedTwice(string killedAt, bool extending)
    {
        var index = "ingest-kill-" + Guid.NewGuid().ToString("N")[..8];
        var (model, store) = await BuildAsync(index, 11, withIds: true);
        using var app = fx.App(2, 1, settings: new Dictionary<string, string> { ["Squash:CurrentRecheck"] = "00:00:00" });
        var h = new Harness(index, store, app.CreateClient(), true);
        var rng = new Random(11);
        int fresh = 0;
        for (int i = 0; i < 12; i++) await WriteAsync(h, rng, model, () => $"new-{fresh++}", $"write {i}");
        long last = 12;
        if (extending)
        {
            // A run that extends a partition: the log applied once, then one row replaced (an appended row and a mask).
            await LogIngest.RunAsync(store, h.Log);
            var id = model.Keys.Order(StringComparer.Ordinal).First();
            var replaced = await h.Client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json($$"""{"upserts":[{"id":"{{id}}","vector":[0.5,0.5,0.5,0.5]}]}"""));
            Assert.Equal(HttpStatusCode.OK, replaced.StatusCode);
            model[id] = new Item([0.5f, 0.5f, 0.5f, 0.5f], null, null, null);
            last = 13;
        }
        var before = await store.GetCurrentAsync();

        var killed = new IndexStore(new FailOnce(store.Blobs, killedAt), index);
        await Assert.ThrowsAsync<IOException>(() => LogIngest.RunAsync(killed, new WriteLog(killed.Blobs, index)));
        Assert.Equal(before!.Value.Version, (await store.GetCurrentAsync())!.Value.Version);

        var run = await LogIngest.RunAsync(store, h.Log);
        Assert.True(run.Published);
        Assert.Equal(last, run.ToSequence);
        var m = await store.OpenCurrentAsync();
        Assert.Equal(model.Count, m.Count);
        Assert.Equal(last, m.IndexedSequence);
        if (last == 13) Assert.Contains(m.Partitions, p => p.Appended is { Count: > 0 } && p.Deleted is not null);
        // Every id once: the id of each stored row, read back from the version, is the model's key set exactly.
        var keys = new List<string>();
        foreach (var p in m.Partitions) keys.AddRange((await store.ReadAttributesAsync(m, p)).Keys!.Select(k => k!));
        Assert.Equal(model.Keys.Order(StringComparer.Ordinal), keys.Order(StringComparer.Ordinal));
        for (int q = 0; q < 5; q++)
        {
            var query = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
            await AssertAnswer(h, query, null, "eventual", model, last, $"killed at {killedAt}, query {q}");
        }
    }

    [Fact]
    public async Task ASecondTriggerFindsTheLeaseHeldAndAnExpiredLeaseIsTakenOver()
    {
        var index = "ingest-lease-" + Guid.NewGuid().ToString("N")[..8];
        var (model, store) = await BuildAsync(index, 5, withIds: true);
        using var app = fx.App(2, 0);
        var h = new Harness(index, store, app.CreateClient(), true);
        var rng = new Random(5);
        int fresh = 0;
        for (int i = 0; i < 4; i++) await WriteAsync(h, rng, model, () => $"new-{fresh++}", $"write {i}");

        var clock = new ManualClock(DateTimeOffset.Parse("2026-12-03T12:00:00Z", CultureInfo.InvariantCulture));
        var first = await IngestLease.TryAcquireAsync(store.Blobs, index, TimeSpan.FromMinutes(1), clock);
        Assert.NotNull(first);
        var busy = await LogIngest.RunLeasedAsync(store, h.Log, TimeSpan.FromMinutes(1), clock: clock);
        Assert.True(busy.Busy);
        Assert.Equal(0, (await store.OpenCurrentAsync()).IndexedSequence);

        // Two triggers at once: exactly one gets the lease.
        var both = await Task.WhenAll(Enumerable.Range(0, 2).Select(_ => IngestLease.TryAcquireAsync(store.Blobs, index, TimeSpan.FromMinutes(1), clock)));
        Assert.All(both, Assert.Null);

        clock.Advance(TimeSpan.FromMinutes(2)); // the holder died: its lease expires
        var racing = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => IngestLease.TryAcquireAsync(store.Blobs, index, TimeSpan.FromMinutes(1), clock)));
        Assert.Single(racing, l => l is not null);
        Assert.False(await first!.RenewAsync());
        await racing.Single(l => l is not null)!.ReleaseAsync();

        // A run that stops short of the log's end (here its cap: one round of one batch) says so after releasing the
        // lease: the ingest function then triggers the next run, since busy triggers no longer come back soon.
        var capped = await LogIngest.RunLeasedAsync(store, h.Log, TimeSpan.FromMinutes(1), maxRounds: 1, maxBatches: 1, clock: clock);
        Assert.Equal(1, capped.Rounds.Single().ToSequence);
        Assert.True(capped.MorePastWatermark);

        var ran = await LogIngest.RunLeasedAsync(store, h.Log, TimeSpan.FromMinutes(1), clock: clock);
        Assert.False(ran.Busy);
        Assert.False(ran.MorePastWatermark);
        Assert.Equal(4, ran.Rounds.Single().ToSequence);
        Assert.Equal(model.Count, (await store.OpenCurrentAsync()).Count);
        // Released: the next trigger gets the lease and finds nothing to do.
        var idle = await LogIngest.RunLeasedAsync(store, h.Log, TimeSpan.FromMinutes(1), clock: clock);
        Assert.False(idle.Busy);
        Assert.Empty(idle.Rounds);
        Assert.False(idle.MorePastWatermark);
    }

    [Theory]
    [InlineData(5, true)]
    [InlineData(6, false)]
    public async Task APartitionGrownPastTwiceItsTargetIsSplitAndAnswersStayExact(int seed, bool withIds)
    {
        var index = "ingest-split-" + Guid.NewGuid().ToString("N")[..8];
        var (model, store) = await BuildAsync(index, seed, withIds, partitions: 3);
        var built = await store.OpenCurrentAsync();
        int target = built.Build.PartitionTarget;
        Assert.Equal(20, target); // 60 rows, 3 partitions
        using var app = fx.App(2, 1, settings: new Dictionary<string, string> { ["Squash:CurrentRecheck"] = "00:00:00" });
        var h = new Harness(index, store, app.CreateClient(), withIds);
        var rng = new Random(seed);
        int fresh = 0;
        string NewId() => withIds ? $"new-{fresh++}" : (Rows + fresh++).ToString(CultureInfo.InvariantCulture);

        // 60 new rows in a small ball around one built row: they all land in that row's partition, which passes 2 × 20.
        var centre = model.First().Value.Vector;
        for (int request = 0; request < 3; request++)
        {
            var items = new List<string>();
            for (int i = 0; i < 20; i++)
            {
                var v = centre.Select(x => x + (float)((rng.NextDouble() - 0.5) * 0.1)).ToArray();
                var item = new Item(v, i % 3 == 0 ? "green" : "red", Math.Round(rng.NextDouble() * 100, 2), i);
                var id = NewId();
                model[id] = item;
                items.Add($"{{\"id\":\"{id}\",\"vector\":{Bodies.Vector(v)},\"attributes\":{{\"colour\":\"{item.Colour}\",\"price\":{F(item.Price!.Value)},\"n\":{item.N}}}}}");
            }
            var written = await h.Client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json("{\"upserts\":[" + string.Join(',', items) + "]}"));
            Assert.Equal(HttpStatusCode.OK, written.StatusCode);
        }
        var builtRouting = await store.ReadRoutingAsync(built);
        var run = await LogIngest.RunAsync(store, h.Log);
        Assert.True(run.SplitPartitions >= 1, $"seed {seed}: nothing was split ({run.Partitions} partitions)");
        Assert.Equal($"{run.TouchedPartitions} of 3 partitions touched, {run.RewrittenPartitions} of them rewritten ({run.SplitPartitions} split into {run.SplitPartitions + run.NewPartitions}: {3 + run.NewPartitions} partitions now)",
            run.PartitionSummary);
        var m = await store.OpenCurrentAsync();
        Assert.Equal(3 + run.NewPartitions, m.Partitions.Count);
        Assert.True(run.NewPartitions >= 2, $"seed {seed}: ~80 rows around one point make ~4 parts of the target 20, got {run.NewPartitions + 1}");
        Assert.Equal(target, m.Build.PartitionTarget);
        Assert.Equal(Enumerable.Range(0, m.Partitions.Count), m.Partitions.Select(p => p.Id));
        Assert.Equal(model.Count, m.Count);
        Assert.All(m.Partitions, p => Assert.True(p.Count <= LogIngest.SplitFactor * target, $"seed {seed}: partition {p.Id} holds {p.Count} rows"));
        await AssertValueCentroidsCarried(store, built, builtRouting, m, $"seed {seed}");
        // The split halves are encoded from scratch: each has its own quantizer.
        Assert.True(m.Partitions.Count(p => p.Codes.Version is null) >= 1 + run.NewPartitions, $"seed {seed}: the parts are not all new segments");

        // Exact answers (plain and filtered) equal brute force, through the tree; then writes into the new partitions.
        for (int round = 0; round < 2; round++)
        {
            for (int q = 0; q < 12; q++)
            {
                var query = q % 2 == 0 ? centre.Select(x => x + (float)((rng.NextDouble() - 0.5) * 0.2)).ToArray()
                    : Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
                var filter = q % 3 == 0 ? RandomFilter(rng) : null;
                await AssertAnswer(h, query, filter, "eventual", model, run.ToSequence, $"seed {seed} round {round} query {q} {filter?.Json}");
            }
            if (round == 1) break;
            for (int i = 0; i < 4; i++) await WriteAsync(h, rng, model, NewId, $"seed {seed} after split {i}");
            run = await LogIngest.RunAsync(store, h.Log);
            Assert.True(run.Published);
        }

        await AssertBoundsHold(store, centre, rng, $"seed {seed}");
    }

    /// <summary>
    /// The per-value centroids (the filtered planner's ranking) after a run that split partitions: a partition that kept its
    /// routing centroid keeps the build's value centroids, row counts and all; a split partition's parts (the first keeps
    /// the partition's id, the rest are new) have none, so their filtered ranking falls back to the partition centroid.
    /// </summary>
    private static async Task AssertValueCentroidsCarried(IndexStore store, Squash.Index.Model.IndexManifest built, Squash.Index.Model.RoutingData before,
        Squash.Index.Model.IndexManifest after, string context)
    {
        Assert.NotEmpty(before.ValueCentroids); // the colour category has a few values: the build keeps its centroids
        var routing = await store.ReadRoutingAsync(after);
        int d = after.InternalDimensions;
        Assert.Equal(before.ValueCentroids.Select(v => (v.Attribute, v.Values)), routing.ValueCentroids.Select(v => (v.Attribute, v.Values)));
        int kept = 0, dropped = 0;
        for (int p = 0; p < after.Partitions.Count; p++)
        {
            bool same = p < built.Partitions.Count && routing.Centroids.AsSpan(p * d, d).SequenceEqual(before.Centroids.AsSpan(p * d, d));
            foreach (var (old, now) in before.ValueCentroids.Zip(routing.ValueCentroids))
                for (int value = 0; value < old.Values; value++)
                {
                    if (same)
                    {
                        Assert.Equal(old.CountOf(p, value), now.CountOf(p, value));
                        Assert.True(old.CentroidOf(p, value, d).SequenceEqual(now.CentroidOf(p, value, d)), $"{context}: partition {p} value {value} moved");
                    }
                    else Assert.True(now.CountOf(p, value) == 0, $"{context}: split part {p} has a centroid for value {value}");
                }
            if (same) kept++; else dropped++;
        }
        Assert.True(kept > 0 && dropped > 0, $"{context}: {kept} partitions kept their value centroids, {dropped} had none");
    }

    /// <summary>
    /// Every live row lies within its partition's routing radius (split and re-fitted partitions included), and every
    /// answer the bounds certify (plans from one partition to all, not exact) equals the exact one.
    /// </summary>
    private static async Task AssertBoundsHold(IndexStore store, float[] centre, Random rng, string context)
    {
        var m = await store.OpenCurrentAsync();
        var routing = await store.ReadRoutingAsync(m);
        int d = m.InternalDimensions;
        foreach (var p in m.Partitions)
        {
            var vectors = await store.ReadVectorsAsync(m, p);
            var mask = await store.ReadDeletionMaskAsync(m, p);
            for (int i = 0; i < vectors.Count; i++)
                if (mask is null || !mask[i])
                    Assert.True(System.Numerics.Tensors.TensorPrimitives.Distance(routing.Centroids.AsSpan(p.Id * d, d), vectors.Row(i)) <= routing.Radii[p.Id],
                        $"{context}: row {i} of partition {p.Id} lies outside its radius");
        }
        var engine = new SearchEngine(await OpenedIndex.OpenAsync(store));
        int certified = 0;
        for (int q = 0; q < 60; q++)
        {
            var query = centre.Select(x => x + (float)((rng.NextDouble() - 0.5) * 0.3)).ToArray();
            var answer = engine.Search(query, new SearchOptions { K = 5, CentroidFactor = new[] { 1, 1.5, 3, 1000 }[q % 4], RerankFactor = new[] { 1, 2, 10 }[q % 3] });
            if (!answer.Stats.Certified) continue;
            certified++;
            Assert.Equal(engine.Search(query, new SearchOptions { K = 5, Exact = true }).Ids, answer.Ids);
        }
        Assert.True(certified > 0, $"{context}: no answer was certified");
    }

    [Theory]
    [InlineData(11, true)]
    [InlineData(12, false)]
    public async Task RowsThatDriftFromAPartitionsQuantizerSplitItAndAnswersStayExact(int seed, bool withIds)
    {
        var index = "ingest-refit-" + Guid.NewGuid().ToString("N")[..8];
        var (model, store) = await BuildAsync(index, seed, withIds, partitions: 3);
        using var app = fx.App(2, 1, settings: new Dictionary<string, string> { ["Squash:CurrentRecheck"] = "00:00:00" });
        var h = new Harness(index, store, app.CreateClient(), withIds);
        var rng = new Random(seed);
        int fresh = 0;
        string NewId() => withIds ? $"new-{fresh++}" : (Rows + fresh++).ToString(CultureInfo.InvariantCulture);

        // Seventeen rows in a small ball well outside the unit cube the index was built from: they all land in one partition
        // (~20 rows), which they make rewrite (more than three quarters of its base appended: past its threshold, whatever
        // the hash made it, LogIngest.RewriteThreshold) but not large enough to split by size (under twice the target of
        // 20); its quantizer, fitted inside the cube, holds them only in outer cells widened far out, so the drift check splits it: the ball and the partition's old rows get centroids and quantizers of their own.
        var centre = model.First().Value.Vector.Select(x => x + 3).ToArray();
        var items = new List<string>();
        for (int i = 0; i < 17; i++)
        {
            var v = centre.Select(x => x + (float)((rng.NextDouble() - 0.5) * 0.05)).ToArray();
            var item = new Item(v, "red", 10 + i, i);
            var id = NewId();
            model[id] = item;
            items.Add($"{{\"id\":\"{id}\",\"vector\":{Bodies.Vector(v)},\"attributes\":{{\"colour\":\"red\",\"price\":{F(item.Price!.Value)},\"n\":{i}}}}}");
        }
        var built = await store.OpenCurrentAsync();
        Assert.Equal(HttpStatusCode.OK, (await h.Client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json("{\"upserts\":[" + string.Join(',', items) + "]}"))).StatusCode);
        var run = await LogIngest.RunAsync(store, h.Log);
        Assert.True(run.TouchedPartitions == 1, $"seed {seed}: the ball's rows landed in more than one partition ({run.PartitionSummary})");
        Assert.True(run.DriftSplits >= 1, $"seed {seed}: nothing was split for drift ({run.PartitionSummary})");
        Assert.Equal(run.SplitPartitions, run.DriftSplits); // none of them was large enough to split by size
        Assert.Contains($"({run.DriftSplits} of them for drift: carried quantizer's error up to ", run.PartitionSummary);
        Assert.True(run.LargestErrorRatio > LogIngest.DriftRatio, $"seed {seed}: largest ratio {run.LargestErrorRatio}");

        // After the run no partition it wrote carries a quantizer beyond the bound: each one's expected error is within
        // DriftRatio of a fresh fit to the rows it holds (computed here, as a build would fit them).
        var m = await store.OpenCurrentAsync();
        var routing = await store.ReadRoutingAsync(m);
        Assert.Equal(built.Partitions.Count + run.NewPartitions, m.Partitions.Count);
        Assert.All(built.Partitions, p => Assert.True(p.FitError > 0, $"seed {seed}: the build recorded no fit error for partition {p.Id}"));
        foreach (var p in m.Partitions.Where(p => p.Codes.Version is null))
        {
            var codes = await store.ReadCodesAsync(m, p);
            var vectors = await store.ReadVectorsAsync(m, p);
            var (refit, _, _) = PartitionEncoder.EncodeRows(p.Id, codes.Ids, vectors.Data[..(codes.Count * m.InternalDimensions)], m.InternalDimensions,
                routing.GlobalTransform, m.Build.BudgetBits, m.Build.MaxBitsPerDimension);
            double carried = codes.ExpectedError(), fitted = refit.Codes.ExpectedError();
            Assert.True(carried <= LogIngest.DriftRatio * fitted * (1 + 1e-9), $"seed {seed}: partition {p.Id} carries error {carried}, a fresh fit {fitted}");
            Assert.Equal(fitted, p.FitError!.Value, 9); // the split recorded the error of the fit it wrote
        }

        for (int q = 0; q < 12; q++)
        {
            var query = q % 2 == 0 ? centre.Select(x => x + (float)((rng.NextDouble() - 0.5) * 0.6)).ToArray()
                : Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
            var filter = q % 3 == 0 ? RandomFilter(rng) : null;
            await AssertAnswer(h, query, filter, "eventual", model, run.ToSequence, $"seed {seed} query {q} {filter?.Json}");
        }
        await AssertBoundsHold(store, centre, rng, $"seed {seed}");
    }

    /// <summary>Counts the reads of one store: which blobs were read whole and which by range.</summary>
    private sealed class CountingStore(IBlobStore inner) : IBlobStore
    {
        public System.Collections.Concurrent.ConcurrentQueue<string> Whole { get; } = new();
        public System.Collections.Concurrent.ConcurrentQueue<string> Ranges { get; } = new();
        // Its own description: the ingest's segment cache (keyed by the store's description) has never seen this store.
        public string Description { get; } = "counting " + Guid.NewGuid().ToString("N");
        public Task<byte[]> ReadAllAsync(string name, CancellationToken ct = default) { Whole.Enqueue(name); return inner.ReadAllAsync(name, ct); }
        public Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken ct = default) { Ranges.Enqueue(name); return inner.ReadRangeAsync(name, offset, length, ct); }
        public Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken ct = default) => inner.WriteAsync(name, data, condition, ct);
        public Task<BlobInfo?> GetInfoAsync(string name, CancellationToken ct = default) => inner.GetInfoAsync(name, ct);
        public IAsyncEnumerable<BlobInfo> ListAsync(string prefix, CancellationToken ct = default) => inner.ListAsync(prefix, ct);
        public Task<bool> DeleteAsync(string name, CancellationToken ct = default) => inner.DeleteAsync(name, ct);
    }

    /// <summary>
    /// A run on an instance that has not read the index (a cold cache) reads the index pack an earlier run wrote whole, once,
    /// instead of one ranged read per segment the version names in it, and answers stay exact. The appended codes in it
    /// carry no quantizer of their own (format 4) and compose with their base segments'.
    /// </summary>
    [Fact]
    public async Task AColdRunReadsAnEarlierRunsIndexPackWholeOnceAndAnswersStayExact()
    {
        var index = "ingest-cold-" + Guid.NewGuid().ToString("N")[..8];
        var (model, store) = await BuildAsync(index, 21, withIds: false, partitions: 8);
        using var app = fx.App(2, 0, settings: new Dictionary<string, string> { ["Squash:CurrentRecheck"] = "00:00:00" });
        var h = new Harness(index, store, app.CreateClient(), false);
        // One row of each partition moved a little: the partition gets a masked row and an appended one (codes, mask and
        // attributes of every partition in the run's index pack).
        var built = await store.OpenCurrentAsync();
        var items = new List<string>();
        foreach (var p in built.Partitions)
        {
            var id = (await store.ReadCodesAsync(built, p)).Ids[0].ToString(CultureInfo.InvariantCulture);
            var item = model[id];
            var v = item.Vector.Select(x => x + 1e-4f).ToArray();
            model[id] = item with { Vector = v };
            items.Add($"{{\"id\":\"{id}\",\"vector\":{Bodies.Vector(v)},\"attributes\":{{\"colour\":\"{item.Colour}\",\"price\":{F(item.Price!.Value)},\"n\":{item.N}}}}}");
        }
        Assert.Equal(HttpStatusCode.OK, (await h.Client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json("{\"upserts\":[" + string.Join(',', items) + "]}"))).StatusCode);
        var first = await LogIngest.RunAsync(store, h.Log);
        Assert.Equal(8, first.TouchedPartitions);
        var m1 = await store.OpenCurrentAsync();
        Assert.Equal(Squash.Index.Model.IndexManifest.LeanAppendedFormatVersion, m1.FormatVersion);
        var pack = store.BlobName(m1, m1.Partitions.First(p => p.Appended is not null).Appended![0].Codes);
        Assert.True(IndexStore.BlobsNamedBy(m1).Count(s => s.Offset is not null && store.BlobName(m1, s) == pack) >= 16);

        var rng = new Random(21);
        await WriteAsync(h, rng, model, () => (Rows + 1000).ToString(CultureInfo.InvariantCulture), "after the first run");
        var counting = new CountingStore(store.Blobs);
        var second = await LogIngest.RunAsync(new IndexStore(counting, index), new WriteLog(counting, index));
        Assert.True(second.Published);
        Assert.Equal(1, counting.Whole.Count(n => n == pack));
        Assert.DoesNotContain(pack, counting.Ranges);
        var query = new float[] { 0.5f, 0.5f, 0.5f, 0.5f };
        await AssertAnswer(h, query, null, "eventual", model, second.ToSequence, "after the cold run");
        await AssertAnswer(h, query, RandomFilter(rng), "eventual", model, second.ToSequence, "after the cold run, filtered");
    }

    [Fact]
    public async Task DeletingEveryRowThenRefillingKeepsAnswersExact()
    {
        var index = "ingest-empty-" + Guid.NewGuid().ToString("N")[..8];
        var (model, store) = await BuildAsync(index, 9, withIds: true);
        using var app = fx.App(2, 1, settings: new Dictionary<string, string> { ["Squash:CurrentRecheck"] = "00:00:00" });
        var h = new Harness(index, store, app.CreateClient(), true);
        Assert.Equal(HttpStatusCode.OK, (await h.Client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json("""{"deleteWhere":{}}"""))).StatusCode);
        model.Clear();
        await LogIngest.RunAsync(store, h.Log);
        Assert.Equal(0, (await store.OpenCurrentAsync()).Count);
        var query = new float[] { 0.5f, 0.5f, 0.5f, 0.5f };
        await AssertAnswer(h, query, null, "eventual", model, 1, "emptied");

        var rng = new Random(9);
        int fresh = 0;
        for (int i = 0; i < 3; i++) await WriteAsync(h, rng, model, () => $"new-{fresh++}", $"refill {i}");
        await AssertAnswer(h, query, null, "strong", model, 1, "refilled, strong");
        await LogIngest.RunAsync(store, h.Log);
        await AssertAnswer(h, query, null, "eventual", model, 4, "refilled, eventual");
    }

    [Fact]
    public async Task GcKeepsTheVersionsWhoseSegmentsAKeptVersionReferences()
    {
        var index = "ingest-gc-" + Guid.NewGuid().ToString("N")[..8];
        var (model, store) = await BuildAsync(index, 13, withIds: true, partitions: 6);
        var built = (await store.GetCurrentAsync())!.Value.Version;
        using var app = fx.App(2, 1, settings: new Dictionary<string, string> { ["Squash:CurrentRecheck"] = "00:00:00" });
        var h = new Harness(index, store, app.CreateClient(), true);
        // One upsert touches one partition: the others stay in the built version's folder.
        Assert.Equal(HttpStatusCode.OK, (await h.Client.PostAsync($"/api/indexes/{index}/vectors",
            Bodies.Json("""{"upserts":[{"id":"doc-3","vector":[0.1,0.2,0.3,0.4],"attributes":{"colour":"green","price":7,"n":1}}]}"""))).StatusCode);
        model["doc-3"] = new Item([0.1f, 0.2f, 0.3f, 0.4f], "green", 7, 1);
        var first = await LogIngest.RunAsync(store, h.Log);
        Assert.Equal(1, first.TouchedPartitions);
        Assert.Equal(HttpStatusCode.OK, (await h.Client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json("""{"deletes":["doc-4"]}"""))).StatusCode);
        model.Remove("doc-4");
        var second = await LogIngest.RunAsync(store, h.Log);

        var current = await store.OpenCurrentAsync();
        // The built version holds the untouched partitions' segments; the first ingest's folder holds what it appended or
        // rewrote, which the second still names unless the second rewrote it or masked nothing there.
        var referenced = IndexStore.ReferencedVersions(current).ToHashSet();
        Assert.Contains(built, referenced);
        var gc = await store.CollectGarbageAsync(keep: 0, grace: TimeSpan.Zero);
        Assert.Equal(referenced.Contains(first.Version!) ? [] : [first.Version!], gc.Deleted.ToArray());
        // The first run's pack stays exactly while the current version names a segment in it.
        var firstPack = store.VersionPrefix(first.Version!) + SegmentPack.IndexName;
        Assert.Equal(referenced.Contains(first.Version!), await store.Blobs.GetInfoAsync(firstPack) is not null);
        Assert.Contains(gc.Kept, k => k.Version == built && k.Reason == IndexStore.KeptReason.Referenced);
        Assert.Contains(gc.Kept, k => k.Version == second.Version && k.Reason == IndexStore.KeptReason.Current);
        var m = await store.OpenCurrentAsync();
        await store.VerifyCompleteAsync(m);
        Assert.Contains(m.Partitions, p => p.Codes.Version == built);
        var rng = new Random(13);
        for (int q = 0; q < 5; q++)
            await AssertAnswer(h, Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray(), null, "eventual", model, 2, $"after gc, query {q}");

        // The log: every kept version has indexed through 2; batch 1 goes, the newest (2) stays; writing and ingesting go on.
        Assert.Equal(2, gc.LogIndexedByAllKept);
        Assert.Equal(1, await h.Log.DeleteBatchesThroughAsync(gc.LogIndexedByAllKept!.Value));
        Assert.Null(await h.Log.TryReadBatchAsync(1));
        var next = await h.Client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json("""{"deletes":["doc-5"]}"""));
        Assert.Contains("\"sequence\":3", await next.Content.ReadAsStringAsync());
        model.Remove("doc-5");
        var query = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
        await AssertAnswer(h, query, null, "strong", model, 2, "after log gc, strong");
        Assert.Equal(3, (await LogIngest.RunAsync(store, h.Log)).ToSequence);
        await AssertAnswer(h, query, null, "eventual", model, 3, "after log gc, ingested");
    }

    private sealed class ManualClock(DateTimeOffset now) : TimeProvider
    {
        private DateTimeOffset _now = now;
        public override DateTimeOffset GetUtcNow() => _now;
        public void Advance(TimeSpan by) => _now += by;
    }
}
