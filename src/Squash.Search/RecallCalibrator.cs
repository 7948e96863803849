using System.Diagnostics;
using Squash.Core;
using Squash.Core.Collections;
using Squash.Core.Kernels;
using Squash.Core.Vectors;
using Squash.Index.Model;

namespace Squash.Search;

/// <summary>Queries to calibrate with: rows in the user's space, and for base-sample queries the row each one is (left out of its own answer).</summary>
/// <param name="LeftOut">Per query, further rows left out with it (its near-copies: held out as a group), or null.</param>
/// <param name="Filters">The user's filter families, each a filter (JSON text, or null: none) per query: the filtered calibration measures these instead of drawing its own.</param>
public sealed record CalibrationQueries(float[] Data, int Count, int Dimensions, long[]? SelfIds, string Source, IReadOnlyList<long[]?>? LeftOut = null,
    IReadOnlyList<CalibrationFilters>? Filters = null)
{
    /// <summary>
    /// <paramref name="size"/> base rows drawn without replacement by a seeded shuffle; each is searched leave-one-out
    /// (itself excluded from its exact neighbours and its candidates), which stands for a held-out query from the
    /// same distribution without removing anything from the index.
    /// </summary>
    public static CalibrationQueries SampleBase(float[] vectors, int count, int dims, int size, int seed) =>
        FromRows(vectors, dims, SampleRows(count, size, seed));

    /// <summary><paramref name="size"/> distinct row numbers below <paramref name="count"/>, ascending, drawn by a seeded shuffle.</summary>
    public static int[] SampleRows(int count, int size, int seed)
    {
        if (size >= count - 1)
        {
            var rows = Enumerable.Range(0, count).ToArray();
            new Random(seed).Shuffle(rows);
            var all = rows[..Math.Min(size, count)];
            Array.Sort(all);
            return all;
        }
        var picked = Draw(count, size, seed);
        Array.Sort(picked);
        return picked;
    }

    /// <summary>
    /// The first <paramref name="size"/> rows of the same draws as Random.Shuffle over 0..count−1 (a forward Fisher–Yates:
    /// step i swaps i with Next(i, count)), in the order drawn, stopped after the first `size` steps, which are all the
    /// picked prefix depends on; the swapped positions are kept in a map, so memory is O(size), not O(count) (a queue
    /// build's train task samples 10^7 rows and more).
    /// </summary>
    private static int[] Draw(int count, int size, int seed)
    {
        var rng = new Random(seed);
        var moved = new Dictionary<int, int>(2 * size);
        var picked = new int[size];
        for (int i = 0; i < size; i++)
        {
            int j = rng.Next(i, count);
            int atI = moved.TryGetValue(i, out int a) ? a : i, atJ = moved.TryGetValue(j, out int b) ? b : j;
            moved[j] = atI;
            picked[i] = atJ;
        }
        return picked;
    }

    /// <summary>
    /// An in-process build's calibration rows: <paramref name="size"/> drawn as <see cref="SampleRows"/> draws them, the
    /// first <paramref name="head"/> of the draw ascending (the very rows <c>SampleRows(count, head, seed)</c> picks: the
    /// exact queries and the filtered families' queries), the rest in the order drawn.
    /// </summary>
    public static int[] CalibrationRows(int count, int size, int head, int seed)
    {
        if (size >= count - 1 || head >= size) return SampleRows(count, size, seed);
        var picked = Draw(count, size, seed);
        Array.Sort(picked, 0, head);
        return picked;
    }

    /// <summary>The first <paramref name="count"/> queries.</summary>
    public CalibrationQueries Take(int count) => count >= Count ? this : this with
    {
        Data = Data[..(count * Dimensions)],
        Count = count,
        SelfIds = SelfIds?[..count],
        LeftOut = LeftOut?.Take(count).ToArray(),
        Filters = Filters?.Select(f => f with { Texts = f.Texts[..Math.Min(count, f.Texts.Length)] }).ToArray(),
    };

    /// <summary>The given base rows as leave-one-out queries.</summary>
    public static CalibrationQueries FromRows(float[] vectors, int dims, int[] picked)
    {
        int size = picked.Length;
        var data = new float[(long)size * dims];
        for (int i = 0; i < size; i++) Array.Copy(vectors, (long)picked[i] * dims, data, (long)i * dims, dims);
        return new CalibrationQueries(data, size, dims, picked.Select(r => (long)r).ToArray(), "base-sample");
    }
}

/// <summary>One family of the user's filters: <paramref name="Texts"/>[q] is calibration query q's filter (JSON), or null for none.</summary>
public sealed record CalibrationFilters(string Name, string?[] Texts);

/// <summary>
/// A calibration filter file as <c>squash build --calibration-filters</c> and a queue build's
/// <c>source.calibrationFilters</c> read it: one JSON filter per non-blank line, line i for calibration query i,
/// <c>null</c> for none. <see cref="Lines"/>[i] is the line filter i came from (1-based), for errors.
/// </summary>
public sealed record CalibrationFilterFile(string Name, string?[] Texts, int[] Lines)
{
    /// <summary>The file's non-blank lines, trimmed; <paramref name="name"/> names the family (a file name).</summary>
    public static CalibrationFilterFile Parse(string name, IEnumerable<string> lines)
    {
        var kept = lines.Select((text, i) => (Text: text.Trim(), Line: i + 1)).Where(l => l.Text.Length > 0).ToArray();
        return new CalibrationFilterFile(name, kept.Select(l => l.Text == "null" ? null : l.Text).ToArray(), kept.Select(l => l.Line).ToArray());
    }

    /// <summary>The family of the first <paramref name="take"/> filters (the calibration queries kept).</summary>
    public CalibrationFilters Family(int take) => new(Name, Texts[..Math.Min(take, Texts.Length)]);

    /// <summary>The first of the first <paramref name="take"/> filters that does not compile against <paramref name="attributes"/>: its line and why; null when all do.</summary>
    public (int Line, string Message)? FirstError(Squash.Index.Attributes.IndexAttributes attributes, int take)
    {
        // Encoders fitted before the rows are encoded (a queue build's train task) have no cell figures yet; what a filter may
        // name and compare does not depend on them, so empty cells stand in.
        var checkable = attributes with
        {
            Attributes = attributes.Attributes.Select(a => a.Cells == 0 || a.CellCounts is not null ? a
                : a with { CellCounts = new long[a.Cells], CellMin = new double[a.Cells], CellMax = new double[a.Cells] }).ToArray(),
        };
        var compiler = new Filters.FilterCompiler(checkable);
        for (int i = 0; i < Math.Min(take, Texts.Length); i++)
        {
            if (Texts[i] is not { } text) continue;
            try { compiler.Compile(text); }
            catch (Filters.FilterException e) { return (Lines[i], e.Message); }
        }
        return null;
    }
}

/// <summary>
/// Measures, once per build, the recall@K and the work of every plan (CF on a grid × R in <see cref="RerankFactors"/>)
/// against exact neighbours computed here, and keeps the cost–recall frontier for the planner
/// (<see cref="RecallPlanner"/>). Each query is scanned once, partition by partition in centroid order, with the
/// candidates of the largest R: a plan with a smaller R re-ranks a prefix of each partition's candidates (the K·R
/// smallest lower bounds), and a plan with a smaller CF a prefix of the partitions, so every plan is replayed from
/// one scan. Replayed answers equal what <see cref="SearchEngine.Search"/> returns for that plan: a row the real
/// scan skips for its running threshold could not have entered the answer. The same holds across K: the K·R smallest
/// bounds are a prefix of a longer list's, so the frontiers at the <see cref="OtherKs"/> replay prefixes of one list per
/// query and partition (<see cref="DeepCandidates"/> long for the queries replayed past K = 10, <see cref="ListShape"/>).
/// </summary>
public static class RecallCalibrator
{
    /// <summary>The fewest calibration rows a build measures against exact neighbours, and the sample of an ingest recalibration.</summary>
    public const int DefaultQueries = 300;
    /// <summary>Vectors per base-sample calibration row: see <see cref="BuildQueries"/>.</summary>
    public const int VectorsPerCalibrationRow = 80;
    /// <summary>The most base-sample rows a build calibrates with (measured at 10⁶ × 128: bench/recall.md).</summary>
    public const int MaxBuildQueries = 1200;
    /// <summary>Query rows × base rows the calibration's brute force may take (it takes <see cref="DefaultQueries"/> rows at least): see <see cref="ExactQueries"/>.</summary>
    public const long ExactRowPairs = 120_000_000;

    /// <summary>
    /// Base-sample queries of an in-process or queue build of <paramref name="count"/> vectors: one per
    /// <see cref="VectorsPerCalibrationRow"/>, at least <see cref="DefaultQueries"/> and at most
    /// <see cref="MaxBuildQueries"/> (and at most a tenth of the vectors, <see cref="CalibratedBuild.CalibrationRows"/>).
    /// The calibration's error falls with its rows (a plan's standard error near recall 0.9 is about 0.008 with 300, half
    /// the width of a target's band); each row costs a replay of the partitions its plans visit and, for the rows
    /// <see cref="ExactQueries"/> measures exactly, a brute force (N·d, as the build itself costs about N·d). Rows in
    /// proportion to N keep that cost's share of the build bounded (bench/recall.md).
    /// </summary>
    public static int BuildQueries(long count) =>
        (int)Math.Clamp(count / VectorsPerCalibrationRow, DefaultQueries, MaxBuildQueries);

    /// <summary>
    /// How many of a sample of <paramref name="queries"/> rows (the first ones) are measured against exact neighbours in
    /// an index of <paramref name="count"/> vectors: <see cref="ExactRowPairs"/> / N, at least <see cref="DefaultQueries"/>.
    /// The rest are measured against the reference plan's answer (<see cref="Summarise"/>). A brute force costs N·d a
    /// row and a reference replay about (rows it visits)·d, so which is cheaper depends on N, not d: on Fashion-MNIST
    /// (60,000) an exact row cost less than a replayed one, at 10⁶ × 128 a replay took under a millisecond against a
    /// brute force of 128 million multiply-adds (bench/recall.md). So below 100,000 vectors every row of a full sample is
    /// exact, and past 400,000 the first 300 are.
    /// </summary>
    public static int ExactQueries(long count, int queries) =>
        (int)Math.Min(queries, Math.Max(DefaultQueries, ExactRowPairs / Math.Max(1, count)));

    /// <summary>The reference plan: R 16 at the smallest grid CF whose recall on the exact queries reaches this.</summary>
    public const double ReferenceRecall = 0.999;
    public const int DefaultK = 10;
    /// <summary>
    /// The other K the unfiltered plans are measured at (<see cref="RecallCalibration.ByK"/>), besides <see cref="DefaultK"/>:
    /// a plan's recall@k moves with k (the K = 10 plans for 0.95 reached recall@100 0.910 and recall@1 0.930 on Fashion-MNIST,
    /// bench/recall.md), and a query plans with the smallest measured K ≥ its k, so neighbours at most 2.5 apart keep every
    /// k within that of a measured one (k = 5 and k = 50 on the plans of 10 and 100 landed in the band there).
    /// </summary>
    public static readonly int[] OtherKs = [1, 2, 5, 20, 50, 100];
    /// <summary>
    /// Neighbours per exactly measured query the builds compute: the first K of them are the recall@K truth for every
    /// measured K (the brute force costs the same N·d at any depth).
    /// </summary>
    public const int ExactDepth = 100;
    /// <summary>
    /// Candidates per partition a replay past <see cref="DefaultK"/> holds (with exact distances): K·R within it, so R up to
    /// 16 at K = 20, 8 at 50 and 4 at 100, where 0.99 needed R 2 on Fashion-MNIST; one list serves every such K.
    /// </summary>
    public const int DeepCandidates = 400;

    /// <summary>
    /// The R measured at <paramref name="k"/>, ascending (plan columns index into it as into <see cref="RerankFactors"/>):
    /// <see cref="RerankFactors"/> at K = 10; below it the same candidate counts (R × 10 / K, so K = 1 re-ranks up to 160
    /// rows per partition, where R ≤ 16 would leave its nearest row outside the candidates on loose codes); past it those
    /// whose K·R fits <see cref="DeepCandidates"/>.
    /// </summary>
    public static int[] RerankGridAt(int k) =>
        k < DefaultK ? RerankFactors.Select(r => r * DefaultK / k).Where(r => (long)k * r <= DefaultK * MaxRerank).ToArray()
        : k == DefaultK ? RerankFactors
        : RerankFactors.Where(r => (long)k * r <= DeepCandidates).DefaultIfEmpty(1).ToArray();

    /// <summary>
    /// The exactly measured queries (of <paramref name="measured"/>) replayed at <paramref name="k"/>: every one below
    /// <see cref="DefaultK"/> (their K = 10 candidate lists serve), the first <see cref="DefaultQueries"/> past it (recall@100
    /// averages a hundred hits per query, so its standard error is smaller than recall@10's over more queries).
    /// </summary>
    private static int QueriesAt(int k, int measured) => k < DefaultK ? measured : Math.Min(DefaultQueries, measured);

    /// <summary>The exactly measured queries replayed past <paramref name="k"/> (<see cref="QueriesAt"/>; 0 when no other K lies past it).</summary>
    private static int DeepCount(int[] otherKs, int k, int measured) =>
        otherKs.Any(o => o > k) ? QueriesAt(otherKs.First(o => o > k), measured) : 0;

    /// <summary>
    /// The <see cref="OtherKs"/> a calibration at <paramref name="k"/> of an index of <paramref name="count"/> rows measures
    /// (its unfiltered frontiers and its filtered bands): none unless k is <see cref="DefaultK"/>, and only those the index
    /// holds twice over.
    /// </summary>
    public static int[] OtherKsFor(int k, long count) =>
        k != DefaultK ? [] : OtherKs.Where(o => count >= Math.Max(MinimumVectors, 2L * o)).ToArray();

    /// <summary><see cref="OtherKsFor(int, long)"/> that the exact answers reach.</summary>
    private static int[] OtherKsFor(int[][] exact, int k, long count) =>
        exact.Length == 0 ? [] : OtherKsFor(k, count).Where(o => exact[0].Length >= o).ToArray();

    /// <summary>
    /// The shape of query <paramref name="qi"/>'s candidate lists, K and R (K·R per partition): the first
    /// <paramref name="deepCount"/> queries, replayed past <see cref="DefaultK"/> too, hold <see cref="DeepCandidates"/>, whose
    /// prefixes also serve K = 10 and below, so one scan of a partition serves every K; the rest hold K·<see cref="MaxRerank"/>.
    /// </summary>
    private static (int K, int Rerank) ListShape(int qi, int deepCount, int k) =>
        qi < deepCount ? (ExactDepth, DeepCandidates / ExactDepth) : (k, MaxRerank);

    /// <summary>Query <paramref name="row"/>'s first <paramref name="k"/> exact neighbours (−1 pads a short answer) as a set.</summary>
    private static HashSet<long> Truth(int[] row, int k) => row.Take(k).Where(id => id >= 0).Select(id => (long)id).ToHashSet();

    /// <summary>Indexes smaller than this are not calibrated: their queries are cheap at any plan.</summary>
    public const int MinimumVectors = 200;
    /// <summary>The largest R measured at <see cref="DefaultK"/>.</summary>
    public const int MaxRerank = 16;
    public static readonly int[] RerankFactors = [1, 2, 4, 8, MaxRerank];
    /// <summary>
    /// The most partitions a plan scans (null first: no cap), measured beside every CF and R. A query far from every
    /// centroid has many centroids within CF × the nearest and makes a plan's slowest percent; a cap trims those at little
    /// loss of recall, and the calibration keeps a capped plan only where it lies on the frontier (bench/recall.md).
    /// </summary>
    public static readonly int?[] PartitionCaps = [null, 2, 3, 4, 6, 8, 12, 16];
    /// <summary>Plans measured per query: every cap × R × CF, plan j = <see cref="PlanIndex"/> (<see cref="PlanAt"/> its inverse).</summary>
    public static int PlanCount => PartitionCaps.Length * RerankFactors.Length * CentroidFactors.Length;
    /// <summary>CF grid: fine where recall climbs fastest, coarser further out; past the last point the planner goes exact.</summary>
    public static readonly double[] CentroidFactors = Grid();
    /// <summary>A query's scan stops here at the latest (its exact neighbours are usually all found much earlier).</summary>
    private const int MaxPartitionsPerQuery = 512;

    private static double[] Grid()
    {
        var g = new List<double>();
        for (int i = 0; i <= 40; i++) g.Add(1 + i * 0.01);       // 1.00 … 1.40
        for (int i = 1; i <= 30; i++) g.Add(1.4 + i * 0.02);     // … 2.00
        for (int i = 1; i <= 40; i++) g.Add(2 + i * 0.05);       // … 4.00
        for (int i = 1; i <= 16; i++) g.Add(4 + i * 0.25);       // … 8.00
        return g.Select(x => Math.Round(x, 4)).ToArray();
    }

    /// <summary>
    /// Calibrates an opened index (every partition read); null when the index is too small to need it.
    /// <paramref name="exact"/> holds the first queries' exact neighbours (a base-sample query left out of its own): an
    /// in-process build computes them while it builds (<see cref="ExactNeighboursDuringBuild"/>), a queue build chunk by
    /// chunk, never holding every vector. The brute force costs N·d per query, the replay a few partitions, so past
    /// <see cref="ExactQueries"/> the rest are measured against the index's deep answer instead.
    /// </summary>
    /// <param name="filtered">False: the unfiltered frontier only (<see cref="RecallCalibration.Filtered"/> null), for a caller that keeps its filtered bands.</param>
    /// <param name="drawn">The filtered families' exact neighbours found during the build (<see cref="FilteredRecallCalibrator.NeighboursDuringBuild"/>); null: found here.</param>
    public static RecallCalibration? Calibrate(OpenedIndex index, int[][] exact, CalibrationQueries queries, int k = DefaultK,
        IProgress<double>? progress = null, CancellationToken cancellationToken = default, bool filtered = true,
        FilteredRecallCalibrator.DrawnNeighbours? drawn = null)
    {
        ArgumentNullException.ThrowIfNull(index);
        ArgumentNullException.ThrowIfNull(exact);
        ArgumentNullException.ThrowIfNull(queries);
        if (index.Manifest.Count < Math.Max(MinimumVectors, 2L * k) || queries.Count == 0) return null;
        if (exact.Length == 0 || exact.Length > queries.Count) throw new ArgumentException($"{exact.Length} exact answers for {queries.Count} queries");
        return CalibrateWith(index, exact, queries, k, Stopwatch.StartNew(), progress, cancellationToken, filtered, drawn);
    }

    /// <summary>
    /// Replays every plan for the first <c>exact.Length</c> queries against their exact neighbours; when there are more
    /// queries, every query is also replayed against a reference answer (<see cref="Summarise"/>).
    /// </summary>
    private static RecallCalibration CalibrateWith(OpenedIndex index, int[][] exact, CalibrationQueries queries, int k, Stopwatch clock,
        IProgress<double>? progress, CancellationToken cancellationToken, bool filtered = true, FilteredRecallCalibrator.DrawnNeighbours? drawn = null)
    {
        var self = queries.SelfIds;
        var engine = new SearchEngine(index);
        int partitions = index.PartitionCount;
        // Row numbers reach past Count once ingest has deleted rows or named new ones (on an index without ids, up to
        // 2,147,483,646 however few rows it holds): looked up by RowPlaces, not an array sized by the largest number.
        var places = new RowPlaces(Enumerable.Range(0, partitions).Select(p => index.Codes(p).Ids).ToArray());
        int PartitionOf(long id) => places.TryGet(id, out int p, out _) ? p
            : throw new ArgumentException($"row {id} is in no partition of the index");

        int plans = PlanCount;
        int measured = exact.Length;
        var recall = new double[measured, plans];
        var cost = new double[measured, plans];
        var otherKs = OtherKsFor(exact, k, index.Manifest.Count);
        int deepCount = DeepCount(otherKs, k, measured);
        int done = 0, total = (measured == queries.Count ? measured : measured + queries.Count) + otherKs.Sum(o => QueriesAt(o, measured));
        float[]? Stored(long selfId)
        {
            if (selfId < 0) return null;
            if (!places.TryGet(selfId, out int p, out int position)) throw new ArgumentException($"calibration query's own row {selfId} is in no partition of the index");
            return index.Vectors(p).Row(position).ToArray();
        }
        // The filtered families need nothing from the unfiltered replays, and both leave cores idle between their
        // parallel loops: run side by side, they fill each other's gaps. Most filtered families filter the first exactly
        // measured queries, the sparse ranges every one.
        using var failed = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var filteredBands = filtered
            ? Task.Run(() => FilteredRecallCalibrator.Calibrate(index, queries, k, failed.Token, measured, drawn), failed.Token)
            : Task.FromResult<FilteredRecallCalibrator.Calibrated?>(null);
        try
        {
            // An exact query's candidate lists, kept for its reference replay (which scans the same partitions and usually a
            // few more) and for the replays at the other K (prefixes of each list).
            var exactLists = new Dictionary<int, CandidateList>?[measured];
            // Each exact query is replayed once per K: its rotation into the index's frame is computed once.
            var exactContexts = new QueryContext?[measured];
            // The K below K are measured as K is: with more queries than exact answers, against the reference plan's answer too.
            var referenceBelow = measured < queries.Count
                ? otherKs.Where(o => o < k).Select(o => (K: o, Reference: new double[queries.Count, plans])).ToArray() : [];
            var reference = UnfilteredReplays(exactLists, exactContexts, referenceBelow);
            var byK = OtherKReplays(exactLists, exactContexts, referenceBelow);
            return Summarise(recall, cost, queries, k, clock, filteredBands.GetAwaiter().GetResult(), reference, byK);
        }
        catch
        {
            // Stopped and awaited, so that no replay outlives the calibration that failed.
            failed.Cancel();
            try { filteredBands.Wait(CancellationToken.None); } catch (AggregateException) { }
            throw;
        }

        // Every plan's recall and cost on the exact queries; every query against the reference plan's answer when some are not exact.
        double[,]? UnfilteredReplays(Dictionary<int, CandidateList>?[] kept, QueryContext?[] contexts, (int K, double[,] Reference)[] referenceBelow)
        {
            ExactReplays(measured, k, RerankFactors, recall, cost, kept, contexts);

            if (measured < queries.Count)
            {
                // The reference: R 16 at the smallest grid CF whose recall on the exact queries reaches ReferenceRecall (else
                // the largest grid CF). Every query, exact ones included, is replayed against that plan's own answer.
                int g = ReferenceGrid(recall);
                var reference = new double[queries.Count, plans];
                Parallel.For(0, queries.Count, new ParallelOptions { CancellationToken = cancellationToken }, () => new CandidateScratch(), (qi, _, local) =>
                {
                    var ctx = (qi < measured ? contexts[qi] : null) ?? new QueryContext(index, queries.Data.AsSpan(qi * queries.Dimensions, queries.Dimensions));
                    long selfId = self?[qi] ?? -1;
                    var stored = Stored(selfId);
                    var scan = PlanScan(engine, ctx, null, selfId, stored, k, PartitionOf, g);
                    var leftOut = queries.LeftOut?[qi];
                    var lists = (qi < measured ? kept[qi] : null) ?? new Dictionary<int, CandidateList>();
                    var (listK, listRerank) = ListShape(qi, deepCount, k);
                    CandidateList Of(int p) => lists.TryGetValue(p, out var l) ? l
                        : lists[p] = Candidates(local.Scanner, ctx, index.Codes(p), index.Vectors(p), selfId, listK, local.Buffer, leftOut, listRerank, lazy: true);
                    ReplayAgainstReference(index, scan, k, Of, qi, reference);
                    // The K below it against the reference plan's answer too, from prefixes of the same lists.
                    foreach (var (other, atOther) in referenceBelow)
                        ReplayAgainstReference(index, PlanScan(engine, ctx, null, selfId, stored, other, PartitionOf, g), other, Of, qi, atOther, RerankGridAt(other));
                    progress?.Report(Interlocked.Increment(ref done) / (double)total);
                    return local;
                }, _ => { });
                return reference;
            }
            return null;
        }

        // The exact queries' plans at every other K, as the exact replays above at K, from prefixes of the same lists.
        IReadOnlyList<KCalibration>? OtherKReplays(Dictionary<int, CandidateList>?[] exactLists, QueryContext?[] contexts, (int K, double[,] Reference)[] referenceBelow)
        {
            if (otherKs.Length == 0) return null;
            var measuredAt = new List<KCalibration>();
            // Each K is summed before the next is replayed, so the K with as many queries share their matrices (tens of MB each).
            var matrices = new Dictionary<int, (double[,] Recall, double[,] Cost)>();
            foreach (int other in otherKs)
            {
                int n = QueriesAt(other, measured);
                var rerankGrid = RerankGridAt(other);
                if (!matrices.TryGetValue(n, out var reused)) matrices[n] = reused = (new double[n, plans], new double[n, plans]);
                var (otherRecall, otherCost) = reused;
                ExactReplays(n, other, rerankGrid, otherRecall, otherCost, exactLists, contexts);
                var atReference = referenceBelow.FirstOrDefault(b => b.K == other).Reference;
                measuredAt.Add(new KCalibration(other, atReference?.GetLength(0) ?? n, Frontier(Points(otherRecall, otherCost, atReference, rerankGrid))));
            }
            return measuredAt;
        }

        // The first n queries' plans replayed against their first depth exact neighbours, with the R of rerankGrid, from the
        // candidate lists in lists (added there where missing, shaped by ListShape).
        void ExactReplays(int n, int depth, int[] rerankGrid, double[,] recallOf, double[,] costOf, Dictionary<int, CandidateList>?[] lists,
            QueryContext?[] contexts)
        {
            Parallel.For(0, n, new ParallelOptions { CancellationToken = cancellationToken }, () => new CandidateScratch(), (qi, _, scratch) =>
            {
                var vector = queries.Data.AsSpan(qi * queries.Dimensions, queries.Dimensions);
                var truth = Truth(exact[qi], depth);
                if (truth.Count > 0)
                {
                    long selfId = self?[qi] ?? -1;
                    var ctx = contexts[qi] ??= new QueryContext(index, vector);
                    var scan = PlanScan(engine, ctx, truth, selfId, Stored(selfId), depth, PartitionOf);
                    var leftOut = queries.LeftOut?[qi];
                    var mine = lists[qi] ??= [];
                    var (listK, listRerank) = ListShape(qi, deepCount, k);
                    CandidateList Of(int p) => mine.TryGetValue(p, out var l) ? l
                        : mine[p] = Candidates(scratch.Scanner, ctx, index.Codes(p), index.Vectors(p), selfId, listK, scratch.Buffer, leftOut, listRerank, lazy: true);
                    Replay(index, scan, truth, depth, Of, qi, recallOf, costOf, rerankGrid);
                }
                else for (int j = 0; j < plans; j++) (recallOf[qi, j], costOf[qi, j]) = (1, 0);
                progress?.Report(Interlocked.Increment(ref done) / (double)total);
                return scratch;
            }, _ => { });
        }
    }

    private static double Mean(double[,] values, int j)
    {
        double sum = 0;
        int n = values.GetLength(0);
        for (int q = 0; q < n; q++) sum += values[q, j];
        return sum / n;
    }

    /// <summary>The reference plan: R 16 at the smallest grid CF whose recall on the exact queries reaches <see cref="ReferenceRecall"/> (else the largest).</summary>
    private static int ReferenceGrid(double[,] recall)
    {
        int grid = CentroidFactors.Length, g = 0;
        while (g + 1 < grid && Mean(recall, PlanIndex(0, RerankFactors.Length - 1, g)) < ReferenceRecall) g++;
        return g;
    }

    /// <summary>
    /// Replays one query's plans against the reference plan's own answer (every plan 1 when that answer is empty); costs come
    /// from the exact queries alone. <paramref name="rerankGrid"/>: the R replayed at this <paramref name="k"/> (<see cref="RerankGridAt"/>).
    /// </summary>
    private static void ReplayAgainstReference(OpenedIndex index, QueryScan scan, int k, Func<int, CandidateList> candidatesOf, int qi,
        double[,] reference, int[]? rerankGrid = null)
    {
        var answer = ReferenceAnswer(scan, k, candidatesOf, (rerankGrid ?? RerankFactors)[^1]);
        if (answer.Count > 0) Replay(index, scan, answer, k, candidatesOf, qi, reference, cost: null, rerankGrid);
        else for (int j = 0; j < reference.GetLength(1); j++) reference[qi, j] = 1;
    }

    /// <summary>The answer of the largest R (<paramref name="rerank"/>) on the partitions <paramref name="scan"/> scans, as <see cref="Replay"/> builds it.</summary>
    private static HashSet<long> ReferenceAnswer(QueryScan scan, int k, Func<int, CandidateList> candidatesOf, int rerank)
    {
        var top = new TopK(k);
        for (int c = 0; c < scan.Scanned; c++)
        {
            var candidates = candidatesOf(scan.Order[c]);
            int take = Math.Min(candidates.Ids.Length, k * rerank);
            for (int i = 0; i < take; i++)
            {
                if (candidates.Bounds[i] > top.Threshold * (1 + PartitionScanner.Slack)) break;
                top.TryAdd(candidates.Ids[i], candidates.Distance(i));
            }
        }
        return top.ToSortedArray().Select(n => n.Id).ToHashSet();
    }

    /// <summary>
    /// <see cref="Calibrate(OpenedIndex, int[][], CalibrationQueries, int, IProgress{double}?, CancellationToken)"/> with memory
    /// bounded by one partition instead of the whole index (a queue build's publish task): the same numbers, computed
    /// partition by partition. First every query's scan is planned from the routing data alone (which partitions, in which
    /// order, where each plan's prefix ends); then each partition some query scans is read once, and every such query's
    /// re-rank candidates in it (at most K·R_max, with their exact distances) are kept; then each query's plans are replayed
    /// from those lists exactly as the in-memory calibration replays them. The lists for the <see cref="OtherKs"/> past K
    /// are collected in the same read. With more queries than exact answers (the two-phase estimate) a partition the
    /// reference plan adds to what the routing data predicted is read a second time.
    /// </summary>
    /// <param name="index">The version's manifest and routing data (no partition needs to be loaded).</param>
    /// <param name="partitionOf">The partition of every exact neighbour and of every base-sample query's own row.</param>
    /// <param name="selfStored">For a base-sample query, its own row as stored (internal space, <c>Count × InternalDimensions</c>); else null.</param>
    /// <param name="readPartition">Reads one partition's codes and raw vectors (called once per partition some query scans, one at a time).</param>
    /// <param name="readAttributes">
    /// Reads one partition's codes (for its ids) and attributes, for an index that has them: the filtered calibration then streams too
    /// (<see cref="FilteredRecallCalibrator.ByPartition"/>). Without it, the filtered part replays through <paramref name="index"/>,
    /// which loads every partition it touches.
    /// </param>
    public static async Task<RecallCalibration?> CalibrateByPartitionAsync(OpenedIndex index, int[][] exact, CalibrationQueries queries,
        IReadOnlyDictionary<long, int> partitionOf, float[]? selfStored,
        Func<int, CancellationToken, Task<(PartitionCodes Codes, PartitionVectors Vectors)>> readPartition, int k = DefaultK,
        IProgress<double>? progress = null, CancellationToken cancellationToken = default,
        Func<int, CancellationToken, Task<(PartitionCodes Codes, PartitionAttributes Attributes)>>? readAttributes = null)
    {
        ArgumentNullException.ThrowIfNull(index);
        ArgumentNullException.ThrowIfNull(exact);
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(partitionOf);
        ArgumentNullException.ThrowIfNull(readPartition);
        if (index.Manifest.Count < Math.Max(MinimumVectors, 2L * k) || queries.Count == 0) return null;
        if (exact.Length == 0 || exact.Length > queries.Count) throw new ArgumentException($"{exact.Length} exact answers for {queries.Count} queries");
        var clock = Stopwatch.StartNew();
        var self = queries.SelfIds;
        int d = index.Manifest.InternalDimensions;
        var engine = new SearchEngine(index);
        int plans = PlanCount;
        int measured = exact.Length;
        var recall = new double[measured, plans];
        var cost = new double[measured, plans];
        int Partition(long id) => partitionOf.TryGetValue(id, out int p) ? p
            : throw new ArgumentException($"no partition given for row {id}", nameof(partitionOf));
        float[]? Stored(int qi) => self?[qi] is >= 0 ? (selfStored ?? throw new ArgumentNullException(nameof(selfStored))).AsSpan(qi * d, d).ToArray() : null;

        // 1. Plan every exactly measured query's scan from the routing data.
        var contexts = new QueryContext[queries.Count];
        for (int qi = 0; qi < queries.Count; qi++) contexts[qi] = new QueryContext(index, queries.Data.AsSpan(qi * queries.Dimensions, queries.Dimensions));
        var truths = new HashSet<long>[measured];
        var scans = new QueryScan?[measured];
        Parallel.For(0, measured, new ParallelOptions { CancellationToken = cancellationToken }, qi =>
        {
            truths[qi] = Truth(exact[qi], k);
            if (truths[qi].Count == 0) { for (int j = 0; j < plans; j++) recall[qi, j] = 1; return; }
            scans[qi] = PlanScan(engine, contexts[qi], truths[qi], self?[qi] ?? -1, Stored(qi), k, Partition);
        });
        // The other K's scans: those below K replay from the K lists, so their partitions are read with them.
        var otherKs = OtherKsFor(exact, k, index.Manifest.Count);
        var below = otherKs.Where(o => o < k).Select(o => PlanAt(o, QueriesAt(o, measured))).ToArray();
        (int K, HashSet<long>[] Truths, QueryScan?[] Scans, double[,] Recall) PlanAt(int other, int n)
        {
            var otherTruths = new HashSet<long>[n];
            var otherScans = new QueryScan?[n];
            var otherRecall = new double[n, plans];
            Parallel.For(0, n, new ParallelOptions { CancellationToken = cancellationToken }, qi =>
            {
                otherTruths[qi] = Truth(exact[qi], other);
                if (otherTruths[qi].Count == 0) { for (int j = 0; j < plans; j++) otherRecall[qi, j] = 1; return; }
                otherScans[qi] = PlanScan(engine, contexts[qi], otherTruths[qi], self?[qi] ?? -1, Stored(qi), other, Partition);
            });
            return (other, otherTruths, otherScans, otherRecall);
        }
        KCalibration ReplayAt((int K, HashSet<long>[] Truths, QueryScan?[] Scans, double[,] Recall) at, Dictionary<int, CandidateList>[] lists, double[,]? atReference)
        {
            int n = at.Scans.Length;
            var rerankGrid = RerankGridAt(at.K);
            var otherCost = new double[n, plans];
            Parallel.For(0, n, new ParallelOptions { CancellationToken = cancellationToken }, qi =>
            {
                if (at.Scans[qi] is { } scan) Replay(index, scan, at.Truths[qi], at.K, p => lists[qi][p], qi, at.Recall, otherCost, rerankGrid);
            });
            return new KCalibration(at.K, atReference?.GetLength(0) ?? n, Frontier(Points(at.Recall, otherCost, atReference, rerankGrid)));
        }

        // The filtered calibration's families, drawn from the attributes read partition by partition.
        // Most of them filter the first exactly measured queries, the sparse ranges every one, as in the in-memory calibration.
        FilteredRecallCalibrator.ByPartition? filtered = null;
        if (index.Manifest.Attributes is not null && readAttributes is not null)
            filtered = await FilteredRecallCalibrator.ByPartition.StartAsync(index, queries, partitionOf, selfStored, readAttributes, k, cancellationToken, measured).ConfigureAwait(false);

        // Past the exact queries every query is also replayed against the reference plan's answer, as the in-memory
        // calibration does (CalibrateWith). That plan is known only after the exact replay, so the read below already
        // takes each query to the depth the routing data alone predicts for it: the smallest grid CF whose partitions hold
        // ReferenceRecall of the exact queries' true neighbours. The reference plan is never shallower (a plan finds no
        // neighbour outside its partitions), so a second read is needed only for the partitions it adds, usually none.
        bool twoPhase = measured < queries.Count;
        var deep = new QueryScan?[queries.Count];
        int guess = twoPhase ? CoveringGrid(scans, truths, Partition) : -1;
        if (twoPhase)
            Parallel.For(0, queries.Count, new ParallelOptions { CancellationToken = cancellationToken }, qi =>
                deep[qi] = PlanScan(engine, contexts[qi], null, self?[qi] ?? -1, Stored(qi), k, Partition, guess));

        // 2. Each partition some query scans, read once: the candidates of every query that scans it; and each partition a
        // filtered query can match, for its exact filtered neighbours.
        var found = new Dictionary<int, CandidateList>[queries.Count];
        for (int qi = 0; qi < queries.Count; qi++) found[qi] = [];
        // The scans past K too: the first deepCount queries' lists (DeepCandidates per partition) serve every K.
        int deepCount = DeepCount(otherKs, k, measured);
        var past = otherKs.Where(o => o > k).Select(o => PlanAt(o, deepCount)).ToArray();
        (int K, int Rerank) ListOf(int qi) => ListShape(qi, deepCount, k);
        var atOtherKs = below.Concat(past).ToArray();
        var both = new QueryScan?[(2 + atOtherKs.Length) * queries.Count];
        Array.Copy(scans, both, measured);
        Array.Copy(deep, 0, both, queries.Count, queries.Count);
        for (int b = 0; b < atOtherKs.Length; b++) Array.Copy(atOtherKs[b].Scans, 0, both, (2 + b) * queries.Count, atOtherKs[b].Scans.Length);
        await CandidatesByPartitionAsync(index, [new(Wanted(both, queries.Count, found), found, ListOf)], contexts, self, readPartition,
            readAttributes, filtered, progress is null ? null : new Progress<double>(f => progress.Report(0.9 * f)), cancellationToken).ConfigureAwait(false);

        // 3. Replay every query's plans from its lists.
        Parallel.For(0, measured, new ParallelOptions { CancellationToken = cancellationToken }, qi =>
        {
            if (scans[qi] is not { } scan) return;
            Replay(index, scan, truths[qi], k, p => found[qi][p], qi, recall, cost);
        });

        // 3b. The reference plan, and every query's replay against its answer.
        double[,]? reference = null;
        (int K, double[,] Reference)[] referenceBelow = [];
        if (twoPhase)
        {
            int g = ReferenceGrid(recall);
            if (g != guess)
            {
                Parallel.For(0, queries.Count, new ParallelOptions { CancellationToken = cancellationToken }, qi =>
                    deep[qi] = PlanScan(engine, contexts[qi], null, self?[qi] ?? -1, Stored(qi), k, Partition, g));
                await CandidatesByPartitionAsync(index, [new(Wanted(deep, queries.Count, found), found, ListOf)], contexts, self, readPartition,
                    null, null, null, cancellationToken).ConfigureAwait(false);
            }
            reference = new double[queries.Count, plans];
            Parallel.For(0, queries.Count, new ParallelOptions { CancellationToken = cancellationToken }, qi =>
            {
                ReplayAgainstReference(index, deep[qi]!, k, p => found[qi][p], qi, reference);
            });
            // The K below K against the reference plan's answer too, as the in-memory calibration measures them. Their scans
            // hold no more partitions than K's (fewer rows to hold), so the lists are read already; any missing is read here.
            var deepBelow = new QueryScan?[below.Length * queries.Count];
            Parallel.For(0, deepBelow.Length, new ParallelOptions { CancellationToken = cancellationToken }, i =>
                deepBelow[i] = PlanScan(engine, contexts[i % queries.Count], null, self?[i % queries.Count] ?? -1, Stored(i % queries.Count),
                    below[i / queries.Count].K, Partition, g));
            await CandidatesByPartitionAsync(index, [new(Wanted(deepBelow, queries.Count, found), found, ListOf)], contexts, self, readPartition,
                null, null, null, cancellationToken).ConfigureAwait(false);
            referenceBelow = below.Select(b => (b.K, new double[queries.Count, plans])).ToArray();
            for (int x = 0; x < below.Length; x++)
            {
                var (other, atOther) = referenceBelow[x];
                Parallel.For(0, queries.Count, new ParallelOptions { CancellationToken = cancellationToken }, qi =>
                    ReplayAgainstReference(index, deepBelow[x * queries.Count + qi]!, other, p => found[qi][p], qi, atOther, RerankGridAt(other)));
            }
        }
        // 3c. The other K, from prefixes of the same lists.
        var byK = atOtherKs.Select(at => ReplayAt(at, found, referenceBelow.FirstOrDefault(b => b.K == at.K).Reference)).ToList();
        progress?.Report(1);
        // 4. The filtered part: streamed when the partitions' attributes can be read one at a time, else through the opened index.
        var bands = filtered is not null
            ? await filtered.FinishAsync(async (p, ct) =>
            {
                var both = readPartition(p, ct);
                var attributes = readAttributes!(p, ct);
                var (codes, vectors) = await both.ConfigureAwait(false);
                return (codes, vectors, (await attributes.ConfigureAwait(false)).Attributes);
            }, cancellationToken).ConfigureAwait(false)
            : readAttributes is not null ? null : FilteredRecallCalibrator.Calibrate(index, queries, k, cancellationToken, measured);
        return Summarise(recall, cost, queries, k, clock, bands, reference, byK.Count > 0 ? byK : null);
    }

    /// <summary>
    /// The grid index of the smallest CF whose partition prefix holds <see cref="ReferenceRecall"/> of the exact queries'
    /// true neighbours (a query without any counts as fully held), from the routing data alone; the last when none does.
    /// </summary>
    private static int CoveringGrid(QueryScan?[] scans, HashSet<long>[] truths, Func<long, int> partitionOf)
    {
        int grid = CentroidFactors.Length;
        var held = new double[grid];
        for (int qi = 0; qi < scans.Length; qi++)
        {
            if (scans[qi] is not { } scan) { for (int g = 0; g < grid; g++) held[g] += 1; continue; }
            var rank = new int[scan.Order.Length];
            for (int i = 0; i < scan.Order.Length; i++) rank[scan.Order[i]] = i;
            var ranks = truths[qi].Select(id => rank[partitionOf(id)]).ToArray();
            for (int g = 0; g < grid; g++) held[g] += ranks.Count(r => r < scan.Prefix[g]) / (double)ranks.Length;
        }
        for (int g = 0; g < grid; g++)
            if (held[g] / scans.Length >= ReferenceRecall) return g;
        return grid - 1;
    }

    /// <summary>Per query, the partitions its scans visit that <paramref name="found"/> does not hold yet (scans i and count + i are query i's).</summary>
    private static HashSet<int>[] Wanted(QueryScan?[] scans, int count, Dictionary<int, CandidateList>[] found)
    {
        var wanted = new HashSet<int>[count];
        for (int qi = 0; qi < count; qi++) wanted[qi] = [];
        for (int i = 0; i < scans.Length; i++)
            if (scans[i] is { } scan)
            {
                int qi = i % count;
                for (int c = 0; c < scan.Scanned; c++)
                    if (!found[qi].ContainsKey(scan.Order[c])) wanted[qi].Add(scan.Order[c]);
            }
        return wanted;
    }

    /// <summary>
    /// Candidate lists to collect while the partitions are read: per query, the partitions it wants (<see cref="Wanted"/>),
    /// where its lists go, and their shape (K and R: K·R candidates, <see cref="ListShape"/>).
    /// </summary>
    private sealed record ListRequest(HashSet<int>[] WantedBy, Dictionary<int, CandidateList>[] Found, Func<int, (int K, int Rerank)> Shape);

    /// <summary>
    /// Reads each partition some request's query wants (or <paramref name="filtered"/> wants) once, one read ahead while the
    /// one before is scanned, and adds every wanting query's re-rank candidates in it to its request's lists.
    /// </summary>
    private static async Task CandidatesByPartitionAsync(OpenedIndex index, IReadOnlyList<ListRequest> requests,
        QueryContext[] contexts, long[]? self,
        Func<int, CancellationToken, Task<(PartitionCodes Codes, PartitionVectors Vectors)>> readPartition,
        Func<int, CancellationToken, Task<(PartitionCodes Codes, PartitionAttributes Attributes)>>? readAttributes,
        FilteredRecallCalibrator.ByPartition? filtered, IProgress<double>? progress, CancellationToken cancellationToken)
    {
        var visitors = new List<(ListRequest Request, int Query)>?[index.PartitionCount];
        foreach (var request in requests)
            for (int qi = 0; qi < request.WantedBy.Length; qi++)
                foreach (int p in request.WantedBy[qi]) (visitors[p] ??= []).Add((request, qi));
        var wanted = Enumerable.Range(0, index.PartitionCount).Where(p => visitors[p] is not null || filtered?.Wants(p) == true).ToArray();
        async Task<(PartitionCodes Codes, PartitionVectors Vectors, PartitionAttributes? Attributes)> ReadAsync(int p, CancellationToken ct)
        {
            var both = readPartition(p, ct);
            var attributes = filtered?.Wants(p) == true ? readAttributes!(p, ct) : null;
            var (codes, vectors) = await both.ConfigureAwait(false);
            return (codes, vectors, attributes is null ? null : (await attributes.ConfigureAwait(false)).Attributes);
        }
        var next = wanted.Length > 0 ? ReadAsync(wanted[0], cancellationToken) : null;
        for (int w = 0; w < wanted.Length; w++)
        {
            var (codes, vectors, partAttributes) = await next!.ConfigureAwait(false);
            next = w + 1 < wanted.Length ? ReadAsync(wanted[w + 1], cancellationToken) : null;
            int p = wanted[w];
            if (partAttributes is not null) filtered!.Truth(p, codes, vectors, partAttributes, cancellationToken);
            if (visitors[p] is not null)
                Parallel.ForEach(visitors[p]!, new ParallelOptions { CancellationToken = cancellationToken }, () => (new PartitionScanner(), new List<(float Bound, int Row)>()), (visit, _, local) =>
                {
                    var (request, qi) = visit;
                    var (listK, listRerank) = request.Shape(qi);
                    var list = Candidates(local.Item1, contexts[qi], codes, vectors, self?[qi] ?? -1, listK, local.Item2, maxRerank: listRerank);
                    lock (request.Found[qi]) request.Found[qi][p] = list;
                    return local;
                }, _ => { });
            progress?.Report((w + 1) / (double)wanted.Length);
        }
    }

    /// <summary>
    /// Each plan's mean recall, standard error and mean cost. With <paramref name="reference"/> (recall against the
    /// reference plan's answer, every query; <paramref name="recall"/> against the exact neighbours, the first n₁ of n₂)
    /// the mean is the two-phase estimate mean₂(ref) + mean₁(exact − ref): unbiased whatever the reference, and where the
    /// reference is nearly exact the difference is nearly zero, so the error is about that of n₂ exact queries. Its
    /// variance is s²(ref)/n₂ + s²(diff)/n₁ + 2·cov(ref, diff)/n₂, each term estimated from the queries it covers.
    /// </summary>
    private static RecallCalibration Summarise(double[,] recall, double[,] cost, CalibrationQueries queries, int k, Stopwatch clock,
        FilteredRecallCalibrator.Calibrated? filtered, double[,]? reference = null, IReadOnlyList<KCalibration>? byK = null) =>
        new()
        {
            K = k,
            Queries = reference?.GetLength(0) ?? recall.GetLength(0),
            Source = queries.Source,
            Seconds = Math.Round(clock.Elapsed.TotalSeconds, 3),
            Plans = Frontier(Points(recall, cost, reference, RerankFactors)),
            Filtered = filtered?.Bands,
            ByK = byK,
            FilteredByK = filtered?.ByK,
        };

    /// <summary>Every measured plan (R column r is <paramref name="rerankGrid"/>[r]) with its mean recall, standard error and mean cost.</summary>
    private static List<CalibratedPlan> Points(double[,] recall, double[,] cost, double[,]? reference, int[] rerankGrid)
    {
        var means = PlanMeans(recall, cost);
        var estimates = reference is null ? null : TwoPhase(recall, reference);
        var points = new List<CalibratedPlan>();
        for (int j = 0; j < PlanCount; j++)
        {
            var (cf, column, cap) = PlanColumns(j);
            if (column >= rerankGrid.Length) continue;
            var (mean, se) = estimates?[j] ?? (means[j].Recall, means[j].StdError);
            points.Add(new CalibratedPlan(cf, rerankGrid[column], Math.Round(mean, 5), Math.Round(se, 5), Math.Round(means[j].Cost), MaxPartitions: cap));
        }
        return points;
    }

    // The sums below run along the rows (a query's plans lie side by side): a pass down each plan's column took a cache
    // miss per query and plan. Each column is still summed in query order, so the figures are the same.

    /// <summary>
    /// Every plan's mean recall, its standard error and mean cost over the queries <paramref name="include"/> accepts (all
    /// when null), and how many those are (NaN figures when none): the unfiltered frontiers' and each filtered family's.
    /// </summary>
    internal static (double Recall, double StdError, double Cost, int Queries)[] PlanMeans(double[,] recall, double[,] cost, Func<int, bool>? include = null)
    {
        int plans = recall.GetLength(1);
        var sum = new double[plans];
        var sq = new double[plans];
        var costs = new double[plans];
        int m = 0;
        for (int q = 0; q < recall.GetLength(0); q++)
        {
            if (include is not null && !include(q)) continue;
            for (int j = 0; j < plans; j++)
            {
                double r = recall[q, j];
                sum[j] += r;
                sq[j] += r * r;
                costs[j] += cost[q, j];
            }
            m++;
        }
        var means = new (double, double, double, int)[plans];
        for (int j = 0; j < plans; j++)
        {
            if (m == 0) { means[j] = (double.NaN, double.NaN, double.NaN, 0); continue; }
            double mean = sum[j] / m;
            double se = m > 1 ? Math.Sqrt(Math.Max(0, (sq[j] - m * mean * mean) / (m - 1)) / m) : 0;
            means[j] = (mean, se, costs[j] / m, m);
        }
        return means;
    }

    /// <summary>Each column's sum over the rows.</summary>
    private static double[] ColumnSums(double[,] values)
    {
        int n = values.GetLength(0), columns = values.GetLength(1);
        var sum = new double[columns];
        for (int q = 0; q < n; q++)
            for (int j = 0; j < columns; j++) sum[j] += values[q, j];
        return sum;
    }

    /// <summary>The column of the plan with cap <paramref name="cap"/>, R <paramref name="r"/> and CF <paramref name="g"/> (indexes into <see cref="PartitionCaps"/>, <see cref="RerankFactors"/>, <see cref="CentroidFactors"/>).</summary>
    private static int PlanIndex(int cap, int r, int g) => (cap * RerankFactors.Length + r) * CentroidFactors.Length + g;

    /// <summary>Plan <paramref name="j"/>'s CF, R and partition cap (null: none) at K = 10: the inverse of <see cref="PlanIndex"/>.</summary>
    public static (double CentroidFactor, int RerankFactor, int? MaxPartitions) PlanAt(int j)
    {
        var (cf, column, cap) = PlanColumns(j);
        return (cf, RerankFactors[column], cap);
    }

    /// <summary>Plan <paramref name="j"/>'s CF, R column (into <see cref="RerankGridAt"/>) and partition cap.</summary>
    private static (double CentroidFactor, int RerankColumn, int? MaxPartitions) PlanColumns(int j)
    {
        int grid = CentroidFactors.Length, rs = RerankFactors.Length;
        return (CentroidFactors[j % grid], j / grid % rs, PartitionCaps[j / (grid * rs)]);
    }

    /// <summary>The two-phase estimate of <see cref="Summarise"/> for every plan, each clamped to [0, 1].</summary>
    public static (double Mean, double StdError)[] TwoPhase(double[,] exact, double[,] reference)
    {
        ArgumentNullException.ThrowIfNull(exact);
        ArgumentNullException.ThrowIfNull(reference);
        int n1 = exact.GetLength(0), n2 = reference.GetLength(0), plans = exact.GetLength(1);
        if (reference.GetLength(1) != plans) throw new ArgumentException($"{reference.GetLength(1)} reference plans for {plans}", nameof(reference));
        var refMean = ColumnSums(reference);
        for (int j = 0; j < plans; j++) refMean[j] /= n2;
        var refVar = new double[plans];
        for (int q = 0; q < n2; q++)
            for (int j = 0; j < plans; j++) refVar[j] += (reference[q, j] - refMean[j]) * (reference[q, j] - refMean[j]);
        var diffMean = new double[plans];
        var subMean = new double[plans];
        for (int q = 0; q < n1; q++)
            for (int j = 0; j < plans; j++) { diffMean[j] += exact[q, j] - reference[q, j]; subMean[j] += reference[q, j]; }
        for (int j = 0; j < plans; j++) { diffMean[j] /= n1; subMean[j] /= n1; }
        var diffVar = new double[plans];
        var cov = new double[plans];
        for (int q = 0; q < n1; q++)
            for (int j = 0; j < plans; j++)
            {
                double d = exact[q, j] - reference[q, j] - diffMean[j];
                diffVar[j] += d * d;
                cov[j] += (reference[q, j] - subMean[j]) * d;
            }
        var estimates = new (double, double)[plans];
        for (int j = 0; j < plans; j++)
        {
            double rv = n2 > 1 ? refVar[j] / (n2 - 1) : 0, dv = n1 > 1 ? diffVar[j] / (n1 - 1) : 0, c = n1 > 1 ? cov[j] / (n1 - 1) : 0;
            double variance = rv / n2 + dv / n1 + 2 * c / n2;
            estimates[j] = (Math.Clamp(refMean[j] + diffMean[j], 0, 1), Math.Sqrt(Math.Max(0, variance)));
        }
        return estimates;
    }

    /// <summary>
    /// A base-sample query is held in the index, and its own partition's centroid was pulled towards it by 1/n of the
    /// way: measured from the centroid of the other n − 1 rows instead, its partition ranks where a held-out query's
    /// would (without this, small partitions make leave-one-out recall optimistic).
    /// </summary>
    internal static void LeaveOutOfCentroid(OpenedIndex index, int p, ReadOnlySpan<float> stored, QueryContext ctx, ref int[] order, float[] dist)
    {
        int n = index.Routing.PartitionSizes[p];
        if (n < 2) return;
        int d = index.Routing.InternalDimensions;
        var centroid = index.Routing.Centroids.AsSpan(p * d, d);
        double sum = 0;
        for (int j = 0; j < d; j++)
        {
            double others = (n * (double)centroid[j] - stored[j]) / (n - 1);
            double v = ctx.Internal[j] - others;
            sum += v * v;
        }
        dist[p] = (float)Math.Sqrt(sum);
        var resorted = (int[])order.Clone();
        Array.Sort(resorted, (a, b) => dist[a] != dist[b] ? dist[a].CompareTo(dist[b]) : a.CompareTo(b));
        order = resorted;
    }

    /// <summary>
    /// The cost model, in bytes a query reads (its loops are bound by memory traffic): visiting a partition reads the
    /// partition's rotation (m_p × m floats) and every row's codes.
    /// </summary>
    public static double VisitBytes(PartitionEntry entry, int globalDimensions) =>
        4.0 * entry.CodedDimensions * globalDimensions + entry.Count * (entry.BitsPerVector / 8.0);

    /// <summary>
    /// A re-ranked row reads its raw vector; counted twice, for the lower bounds completed to choose it (a larger R
    /// loosens the scan's bar, so both grow together).
    /// </summary>
    public static double RerankBytes(int internalDimensions) => 2 * 4.0 * internalDimensions;

    /// <summary>The plans no cheaper plan matches in recall, by ascending cost.</summary>
    public static IReadOnlyList<CalibratedPlan> Frontier(IEnumerable<CalibratedPlan> points)
    {
        var frontier = new List<CalibratedPlan>();
        foreach (var p in points.OrderBy(p => p.Cost).ThenByDescending(p => p.Recall))
            if (frontier.Count == 0 || p.Recall > frontier[^1].Recall) frontier.Add(p);
        return frontier;
    }

    /// <summary>One query's scan: partitions in the order it visits them, where each grid CF's prefix ends, and how many it scans.</summary>
    /// <param name="Holding">The shortest prefix that holds K rows: a capped plan scans at least this many (<see cref="SearchEngine.CapCount"/>).</param>
    private sealed record QueryScan(int[] Order, int[] Prefix, int Scanned, int Holding);

    /// <summary>One worker's scanner and candidate buffer, reused from query to query.</summary>
    private sealed class CandidateScratch
    {
        public readonly PartitionScanner Scanner = new();
        public readonly List<(float Bound, int Row)> Buffer = [];
    }

    /// <summary>A query's re-rank candidates in one partition, in the scanner's order (at most K·R_max, itself left out), with exact distances.</summary>
    /// <remarks>
    /// With vectors given (an opened index, whose partitions stay in memory) a distance is computed when a replay first
    /// re-ranks the row: most candidates lie past every plan's running threshold and are never needed. Without (a
    /// partition read for the moment, <see cref="CalibrateByPartitionAsync"/>) every distance is computed up front.
    /// </remarks>
    private sealed class CandidateList(float[] bounds, int[] ids, float[] distances, int[]? rows = null, PartitionVectors? vectors = null, QueryContext? query = null)
    {
        public float[] Bounds { get; } = bounds;
        public int[] Ids { get; } = ids;

        /// <summary>Candidate <paramref name="i"/>'s exact squared distance (NaN marks one not computed yet).</summary>
        public float Distance(int i)
        {
            float d = distances[i];
            if (float.IsNaN(d)) distances[i] = d = SquaredL2.Distance(query!.Internal, vectors!.Row(rows![i]));
            return d;
        }
    }

    /// <summary>
    /// Plans one query's scan from the routing data: partition order (a base-sample query's own partition measured without
    /// it, from <paramref name="stored"/>), each grid CF's prefix, and how far the scan must go for every true neighbour's partition.
    /// </summary>
    /// <param name="truth">The exact neighbours (the scan stops at their last partition), or null to scan <paramref name="through"/>'s prefix.</param>
    private static QueryScan PlanScan(SearchEngine engine, QueryContext ctx, HashSet<long>? truth, long self, float[]? stored, int k, Func<long, int> partitionOf,
        int through = -1)
    {
        var index = engine.Index;
        var (order, dist) = engine.RankPartitions(ctx);
        var sizes = index.Routing.PartitionSizes;
        if (self >= 0) LeaveOutOfCentroid(index, partitionOf(self), stored!, ctx, ref order, dist);
        // Where each plan's partition prefix ends: SelectCount per grid CF.
        int grid = CentroidFactors.Length;
        var prefix = new int[grid];
        SearchEngine.SelectCounts(order, dist, sizes, k, CentroidFactors, prefix);
        // Scanning stops once every true neighbour's partition is in (more partitions cannot raise recall further).
        int needed = 0;
        if (truth is null) needed = prefix[through];
        else
        {
            var rank = new int[order.Length];
            for (int i = 0; i < order.Length; i++) rank[order[i]] = i;
            foreach (long id in truth) needed = Math.Max(needed, rank[partitionOf(id)] + 1);
        }
        int scanned = Math.Min(Math.Max(needed, 1), Math.Min(prefix[^1], MaxPartitionsPerQuery));
        return new QueryScan(order, prefix, scanned, SearchEngine.HoldingCount(order, sizes, k));
    }

    /// <summary>The candidates a scan with the largest R would re-rank in one partition: a plan with R re-ranks a prefix of them.</summary>
    private static CandidateList Candidates(PartitionScanner scanner, QueryContext ctx, PartitionCodes codes, PartitionVectors vectors, long self, int k,
        List<(float Bound, int Row)> buffer, long[]? leftOut = null, int maxRerank = MaxRerank, bool lazy = false)
    {
        buffer.Clear();
        int extra = leftOut?.Length ?? 0;
        scanner.CollectRerankCandidates(ctx, codes, new SearchOptions { K = k + 1 + extra, RerankFactor = maxRerank, CentroidFactor = 1 }, buffer);
        if (self >= 0) buffer.RemoveAll(x => codes.Ids[x.Row] == self);
        if (extra > 0) buffer.RemoveAll(x => Array.IndexOf(leftOut!, (long)codes.Ids[x.Row]) >= 0);
        int n = Math.Min(buffer.Count, k * maxRerank);
        var bounds = new float[n];
        var ids = new int[n];
        var distances = new float[n];
        var rows = lazy ? new int[n] : null;
        for (int i = 0; i < n; i++)
        {
            var (bound, row) = buffer[i];
            bounds[i] = bound;
            ids[i] = codes.Ids[row];
            if (rows is not null) { rows[i] = row; distances[i] = float.NaN; }
            else distances[i] = SquaredL2.Distance(ctx.Internal, vectors.Row(row));
        }
        return rows is null ? new CandidateList(bounds, ids, distances) : new CandidateList(bounds, ids, distances, rows, vectors, ctx);
    }

    /// <summary>
    /// Offers a candidate to <paramref name="top"/> and returns how the count of true neighbours in it changed (−1, 0 or +1):
    /// counted as they enter and leave, instead of over every item after each partition (K lookups each at K = 100).
    /// Candidates are distinct rows, so the count stays the number of items in <paramref name="truth"/>.
    /// </summary>
    internal static int HitsChange(TopK top, HashSet<long> truth, long id, float distance)
    {
        bool full = top.IsFull;
        long evicted = full ? top.Worst.Id : 0;
        if (!top.TryAdd(id, distance)) return 0;
        return (truth.Contains(id) ? 1 : 0) - (full && truth.Contains(evicted) ? 1 : 0);
    }

    /// <summary>Replays one query's scan from its candidate lists and fills its recall for every (cap, R, CF) plan, and its cost unless <paramref name="cost"/> is null.</summary>
    /// <remarks>
    /// Past the scanned partitions recall and re-rank cost stay where they are, so only the scanned prefix is tracked
    /// per R: a few partitions, where arrays as long as the index's partition count made the replay allocation-bound.
    /// </remarks>
    /// <param name="rerankGrid">The R replayed, column r being rerankGrid[r] (<see cref="RerankGridAt"/>; the candidate lists hold K·its last); columns past it are left unfilled.</param>
    private static void Replay(OpenedIndex index, QueryScan scan, HashSet<long> truth, int k, Func<int, CandidateList> candidatesOf,
        int qi, double[,] recall, double[,]? cost, int[]? rerankGrid = null)
    {
        var order = scan.Order;
        var rerank = rerankGrid ?? RerankFactors;
        int m = index.Manifest.GlobalDimensions, d = index.Manifest.InternalDimensions;
        int grid = CentroidFactors.Length, rs = rerank.Length;
        int scanned = scan.Scanned, deepest = Math.Max(scanned, scan.Prefix.Max());
        var tops = new TopK[rs];
        for (int r = 0; r < rs; r++) tops[r] = new TopK(k);
        var hits = new int[rs];
        // Per R: recall and re-rank cost after the first c partitions, c = 0 … scanned.
        var recallAt = new double[rs * (scanned + 1)];
        var rerankCostAt = new double[rs * (scanned + 1)];
        var visitCostAt = new double[deepest + 1];
        for (int c = 0; c < deepest; c++) visitCostAt[c + 1] = visitCostAt[c] + VisitBytes(index.Manifest.Partitions[order[c]], m);
        for (int c = 0; c < scanned; c++)
        {
            var candidates = candidatesOf(order[c]);
            for (int r = 0; r < rs; r++)
            {
                var top = tops[r];
                int take = Math.Min(candidates.Ids.Length, k * rerank[r]);
                long reranked = 0;
                for (int i = 0; i < take; i++)
                {
                    if (candidates.Bounds[i] > top.Threshold * (1 + PartitionScanner.Slack)) break;
                    reranked++;
                    hits[r] += HitsChange(top, truth, candidates.Ids[i], candidates.Distance(i));
                }
                int at = r * (scanned + 1) + c + 1;
                rerankCostAt[at] = rerankCostAt[at - 1] + reranked * RerankBytes(d);
                recallAt[at] = hits[r] / (double)truth.Count;
            }
        }
        for (int cap = 0; cap < PartitionCaps.Length; cap++)
            for (int r = 0; r < rs; r++)
                for (int g = 0; g < grid; g++)
                {
                    int c = PartitionCaps[cap] is { } most ? SearchEngine.CapCount(scan.Prefix[g], most, scan.Holding) : scan.Prefix[g];
                    int at = r * (scanned + 1) + Math.Min(c, scanned), j = PlanIndex(cap, r, g);
                    recall[qi, j] = recallAt[at];
                    if (cost is not null) cost[qi, j] = visitCostAt[c] + rerankCostAt[at];
                }
    }
}
