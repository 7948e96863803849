using System.Globalization;
using System.Text.Json;
using Squash.Core.Collections;
using Squash.Index.Attributes;
using Squash.Index.Model;
using Squash.Search.Filters;

namespace Squash.Search;

/// <summary>
/// The filtered half of the build-time calibration: filters drawn from the index's own attributes, in families that
/// stand for the kinds of filter users send, replayed through the filtered planner (<see cref="SearchEngine.PlanFiltered"/>
/// and its later passes) against exact filtered neighbours, for every plan of the unfiltered grid. Families:
/// <list type="bullet">
/// <item>"range s%": a range over the numeric attribute with the most distinct values, placed at random, selecting
/// about s % of the vectors (10, 1, 0.1): matches spread independently of the vectors.</item>
/// <item>"other value": equality on a low-cardinality attribute (a category, or an integer with few values) with
/// a value other than the query's own, drawn uniformly (a user names a value, not a row): when the attribute follows
/// the vectors (a class label) the matches sit away from the query, the hardest case for a partition plan.</item>
/// <item>"own value": the same attribute equal to the query's own value (base-sample queries, which have one): the
/// matches sit around the query.</item>
/// </list>
/// Each replayed query counts in the band of the selectivity the planner estimates for it (which it sees at query time
/// too); a band's recall for a plan is the lowest among its families, so a target holds for each kind measured.
/// </summary>
public static partial class FilteredRecallCalibrator
{
    /// <summary>
    /// Filter margins measured besides the default 2, each at CF 1 (the cheapest CF): where a partition or two already hold
    /// 2·K estimated matches (a 1 % filter at 10⁶), every CF gives the same plan, and only a smaller margin is cheaper.
    /// Below 1 nothing changes (a second pass tops a short answer up to K).
    /// </summary>
    public static readonly double[] ExtraFilterMargins = [1, 1.5];
    /// <summary>The filtered grid's columns: every CF of <see cref="RecallCalibrator.CentroidFactors"/> at the default margin, then CF 1 at each <see cref="ExtraFilterMargins"/>.</summary>
    public static int Columns => RecallCalibrator.CentroidFactors.Length + ExtraFilterMargins.Length;
    /// <summary>Column <paramref name="g"/>'s CF and margin (null: the default).</summary>
    public static (double CentroidFactor, double? FilterMargin) Column(int g)
    {
        int grid = RecallCalibrator.CentroidFactors.Length;
        return g < grid ? (RecallCalibrator.CentroidFactors[g], null) : (1, ExtraFilterMargins[g - grid]);
    }
    public static readonly double[] RangeSelectivities = [0.1, 0.01, 0.001];
    /// <summary>
    /// Range families at or below this selectivity filter every calibration query, the others only the ones measured
    /// exactly (<c>denseQueries</c>, <see cref="RecallCalibrator.ExactQueries"/>: every row of a sample below 100,000
    /// vectors, 300 from 400,000 on). A filtered query's exact neighbours cost its matches, about its selectivity times a
    /// brute force, so the budget that bounds the brute force bounds the dense families too; at 1 % and below a family's
    /// whole sample (1,200 at 10⁶) costs about as much as 120 queries of a 10 % family.
    /// </summary>
    public const double SparseSelectivity = 0.01;
    /// <summary>Band edges in selectivity: [0, 0.005), [0.005, 0.05), [0.05, 1].</summary>
    public static readonly double[] BandEdges = [0, 0.005, 0.05, 1];

    /// <summary>
    /// Exact filtered neighbours found per query: the deepest K measured (<see cref="RecallCalibrator.OtherKsFor(int, long)"/>,
    /// the unfiltered frontiers' K; their first K are the recall@K truth for every K).
    /// </summary>
    public static int TruthDepth(int k, long rows) => RecallCalibrator.OtherKsFor(k, rows).Append(k).Max();

    /// <summary>An equality family needs an attribute with at most this many distinct values.</summary>
    private const int MaxEqualityValues = 256;

    /// <summary>
    /// A family's filters, and where each sits among the filters that can share matches: <paramref name="Kind"/> names
    /// the attribute, the operator and a range's width (the two value families share one), <paramref name="Places"/>
    /// holds each query's value or range start. Sorted by both, equal filters and overlapping ranges come together (<see cref="ByPartition.Truth"/>).
    /// </summary>
    internal sealed record Family(string Name, CompiledFilter?[] Filters, string Kind, double[] Places);

    /// <summary>
    /// One family's replay, per query (rows of <see cref="Recall"/> and <see cref="Cost"/>; grid plans R-major, as the
    /// unfiltered grid) with each query's estimated selectivity (NaN where no filter could be drawn for it).
    /// </summary>
    public sealed record FamilyMeasurement(string Name, CompiledFilter?[] Filters, double[] Selectivity, double[,] Recall, double[,] Cost)
    {
        /// <summary>The same queries replayed at the other K (<see cref="RecallCalibrator.OtherKsFor(int, long)"/>), ascending; null: none.</summary>
        public IReadOnlyList<KMeasurement>? ByK { get; init; }

        /// <summary>This family as measured at <paramref name="atK"/> (one of <see cref="ByK"/>): its first <see cref="KMeasurement.Queries"/> queries.</summary>
        public FamilyMeasurement At(KMeasurement atK) => this with
        {
            Recall = atK.Recall, Cost = atK.Cost, ByK = null,
            Selectivity = Selectivity.Select((s, q) => q < atK.Queries ? s : double.NaN).ToArray(),
        };

        /// <summary>Each query's <see cref="SearchEngine.FilteredAnchors.AnchorRatio"/> (null: 1 for all).</summary>
        public double[]? AnchorRatio { get; init; }

        public double RatioOf(int q) => AnchorRatio?[q] ?? 1;

        /// <summary>Mean recall, its standard error and mean cost of plan <paramref name="j"/> over the queries <paramref name="include"/> accepts.</summary>
        public (double Recall, double StdError, double Cost, int Queries) Mean(int j, Func<int, bool>? include = null) => MeanOfEvery(include)[j];

        /// <summary>
        /// <see cref="Mean"/> of every plan, in one pass along each query's row (a pass down each plan's column took a
        /// cache miss per query and plan).
        /// </summary>
        public (double Recall, double StdError, double Cost, int Queries)[] MeanOfEvery(Func<int, bool>? include = null) =>
            RecallCalibrator.PlanMeans(Recall, Cost, q => !double.IsNaN(Selectivity[q]) && (include is null || include(q)));
    }

    /// <summary>
    /// A family's replay at recall@<paramref name="K"/> of its first <paramref name="Queries"/> queries (the rest are not
    /// replayed there): plan columns as at the calibration's K, R column r being <paramref name="RerankGrid"/>[r].
    /// </summary>
    public sealed record KMeasurement(int K, int[] RerankGrid, double[,] Recall, double[,] Cost, int Queries);

    /// <summary>The bands at the calibration's K, and the same bands measured at other K (null: none).</summary>
    public sealed record Calibrated(IReadOnlyList<FilteredCalibration> Bands, IReadOnlyList<FilteredKCalibration>? ByK);

    /// <summary>
    /// One filtered query's exact search: its filter, its own row (left out of its matches), its vector in the index's
    /// internal space; its match count per partition and its exact top-K so far.
    /// </summary>
    internal class TruthQuery
    {
        public required int Family, Query;
        public required CompiledFilter Filter;
        public required long Self;
        /// <summary>Rows left out with the query besides its own (a live-sample query's near-copies), or null.</summary>
        public long[]? LeftOut;
        public required float[] Internal;
        public required int[] Matches;
        public required TopK Truth;
        /// <summary>Whether row <paramref name="id"/> is left out of this query's answers: its own row, or one of its near-copies.</summary>
        public bool Excludes(long id) => id == Self || (LeftOut is { } group && Array.IndexOf(group, id) >= 0);
        /// <summary>The partition of every row the exact top-K took in; null while there are no partitions (the pass over a build's input).</summary>
        public Dictionary<long, int>? TruthPartition { get; set; }
    }

    /// <summary>The queries by filter kind and place: equal filters and overlapping ranges next to each other (what <see cref="ByPartition.Blocks"/> groups).</summary>
    private static T[] ByPlace<T>(IEnumerable<T> queries, List<Family> families) where T : TruthQuery =>
        queries.OrderBy(fq => families[fq.Family].Kind, StringComparer.Ordinal).ThenBy(fq => families[fq.Family].Places[fq.Query])
            .ThenBy(fq => fq.Filter.Key).ThenBy(fq => fq.Family).ThenBy(fq => fq.Query).ToArray();

    /// <summary>A family takes part in a band's frontier with at least this many of its queries in the band.</summary>
    public const int MinQueriesInBand = 30;

    /// <summary>
    /// Where a selectivity band splits in two by anchor ratio (the dense anchor's value key over the nearest centroid
    /// distance): above it the filter's matches lie away from the query (another class), and such queries get a frontier
    /// measured on them alone (bench/recall.md). Below it the band keeps the frontier of all its queries, as unsplit: a
    /// family with too few queries on that side to take part (a small class's own label) must still be covered by it.
    /// Split only when the side above has a family with <see cref="MinQueriesInBand"/> queries, and the band has others.
    /// </summary>
    public const double SplitAnchorRatio = 1.25;

    /// <summary>The bands, or null when the index has no attribute a family can be drawn from.</summary>
    /// <param name="denseQueries">How many of the first queries the families above <see cref="SparseSelectivity"/> filter; null: all.</param>
    /// <param name="drawn">The families and their exact neighbours found during the build (<see cref="NeighboursDuringBuild"/>); null: found here.</param>
    public static Calibrated? Calibrate(OpenedIndex index, CalibrationQueries queries, int k, CancellationToken cancellationToken = default,
        int? denseQueries = null, DrawnNeighbours? drawn = null) =>
        Summarise(Measure(index, queries, k, cancellationToken, denseQueries, drawn));

    /// <summary>
    /// The bands (<see cref="Bands"/>) at the calibration's K and at each other K measured; null when there are none. Every K
    /// replays the same queries, whose selectivity and anchor ratio do not depend on K, so every K has the same bands.
    /// </summary>
    public static Calibrated? Summarise(IReadOnlyList<FamilyMeasurement> measured)
    {
        if (measured.Count == 0 || Bands(measured) is not { } bands) return null;
        // Each K's bands on its own thread: a split band's frontier sweeps targets for the both-sides aim.
        var atKs = measured[0].ByK ?? [];
        var byK = new FilteredKCalibration?[atKs.Count];
        Parallel.For(0, atKs.Count, x =>
        {
            if (Bands(measured.Select(f => f.At(f.ByK![x])).ToArray(), atKs[x].RerankGrid) is { } other) byK[x] = new FilteredKCalibration(atKs[x].K, other);
        });
        var found = byK.OfType<FilteredKCalibration>().ToArray();
        return new Calibrated(bands, found.Length > 0 ? found : null);
    }

    /// <summary>
    /// Every family drawn from the index's attributes, replayed over <paramref name="queries"/>: ranges at
    /// <see cref="SparseSelectivity"/> and below over all of them, the other families over the first
    /// <paramref name="denseQueries"/> (a build passes the ones it measures exactly): the partition-by-partition replay
    /// (<see cref="ByPartition"/>) over partitions this index holds, so that the in-process build and a queue build's
    /// publish task run one replay.
    /// </summary>
    /// <param name="denseQueries">How many of the first queries the families above <see cref="SparseSelectivity"/> filter; null: all.</param>
    /// <param name="drawn">The families and their exact neighbours found during the build, used when drawn for this index and these queries (else found here).</param>
    public static IReadOnlyList<FamilyMeasurement> Measure(OpenedIndex index, CalibrationQueries queries, int k, CancellationToken cancellationToken = default,
        int? denseQueries = null, DrawnNeighbours? drawn = null)
    {
        ArgumentNullException.ThrowIfNull(index);
        ArgumentNullException.ThrowIfNull(queries);
        if (index.Manifest.Attributes is null || queries.Count == 0) return [];
        // Where every row lies (-1: in no partition), for the base-sample queries, which leave their own row out of its
        // centroid (where it lies and how it is stored), and for the neighbours found during the build.
        // (RowPlaces: by row number in arrays while the numbers are dense, else by a dictionary, since on an index without ids
        // an upsert may name a row number up to 2,147,483,646 whatever the row count.)
        var idsOf = new int[index.PartitionCount][];
        Parallel.For(0, index.PartitionCount, new ParallelOptions { CancellationToken = cancellationToken }, p => idsOf[p] = index.Codes(p).Ids);
        var places = new RowPlaces(idsOf);
        var partitionOf = new Dictionary<long, int>();
        float[]? selfStored = null;
        if (queries.SelfIds is { } self)
        {
            int d = index.Manifest.InternalDimensions;
            selfStored = new float[(long)queries.Count * d];
            for (int q = 0; q < queries.Count; q++)
                if (places.TryGet(self[q], out int p, out int position))
                {
                    partitionOf[self[q]] = p;
                    index.Vectors(p).Row(position).CopyTo(selfStored.AsSpan(q * d, d));
                }
        }
        // Every read below is of a partition the index holds (or loads on demand), so each task is complete when returned.
        PartitionAttributes AttributesOf(int p) => index.Attributes(p) ?? throw new InvalidOperationException($"partition {p} has no attributes");
        // The neighbours found during a build are of its rows 0 … N − 1, always dense.
        if (drawn is not null && places.DensePartitions is { } partitionOfRow && drawn.DrawnFor(index, queries, Math.Min(queries.Count, denseQueries ?? queries.Count), k))
        {
            var found = ByPartition.StartFrom(index, queries, partitionOf, selfStored, partitionOfRow, drawn, k, cancellationToken);
            return found is null ? []
                : found.MeasureAsync((p, _) => Task.FromResult((index.Codes(p), index.Vectors(p), AttributesOf(p))), cancellationToken, holdsVectors: true).GetAwaiter().GetResult();
        }
        var replay = ByPartition.StartAsync(index, queries, partitionOf, selfStored, (p, _) => Task.FromResult((index.Codes(p), AttributesOf(p))), k,
            cancellationToken, denseQueries).GetAwaiter().GetResult();
        if (replay is null) return [];
        for (int p = 0; p < index.PartitionCount; p++)
            if (replay.Wants(p)) replay.Truth(p, index.Codes(p), index.Vectors(p), AttributesOf(p), cancellationToken);
        return replay.MeasureAsync((p, _) => Task.FromResult((index.Codes(p), index.Vectors(p), AttributesOf(p))), cancellationToken, holdsVectors: true).GetAwaiter().GetResult();
    }

    /// <summary>
    /// The frontier of each selectivity band: each query counts in the band of its own estimated selectivity (the planner
    /// picks the band the same way), and per plan the band takes the lowest recall among the families with at least
    /// <see cref="MinQueriesInBand"/> queries in it.
    /// </summary>
    /// <param name="rerankGrid">The R of the plan columns (<see cref="RecallCalibrator.RerankGridAt"/> of the K measured); null: <see cref="RecallCalibrator.RerankFactors"/>.</param>
    public static IReadOnlyList<FilteredCalibration>? Bands(IReadOnlyList<FamilyMeasurement> measured, int[]? rerankGrid = null)
    {
        var rerank = rerankGrid ?? RecallCalibrator.RerankFactors;
        var bands = new List<FilteredCalibration>();
        for (int b = 0; b + 1 < BandEdges.Length; b++)
        {
            double lo = BandEdges[b], hi = BandEdges[b + 1];
            bool Sided(double rlo, double rhi) => measured.Any(f => Enumerable.Range(0, f.Selectivity.Length).Count(q =>
                f.Selectivity[q] >= lo && (f.Selectivity[q] < hi || hi >= 1) && f.RatioOf(q) >= rlo && f.RatioOf(q) < rhi) >= MinQueriesInBand);
            if (Sided(0, SplitAnchorRatio) && Sided(SplitAnchorRatio, double.PositiveInfinity))
            {
                var below = AddBand(bands, measured, rerank, lo, hi, null, (0, SplitAnchorRatio));
                AddBand(bands, measured, rerank, lo, hi, SplitAnchorRatio, (SplitAnchorRatio, null), below);
            }
            else AddBand(bands, measured, rerank, lo, hi, null, (null, null));
        }
        return bands.Count > 0 ? bands : null;
    }

    /// <summary>
    /// One band's frontier over the queries in [<paramref name="lo"/>, <paramref name="hi"/>) of selectivity and, when
    /// given, an anchor ratio of at least <paramref name="ratioLo"/>; the band answers for the <paramref name="holds"/> ratios.
    /// Given the band <paramref name="below"/> the split, a plan's recall here is what a family's mean over both sides
    /// reaches (<see cref="BothSides"/>), not its mean above the split alone. Returns the band added, or null.
    /// </summary>
    private static FilteredCalibration? AddBand(List<FilteredCalibration> bands, IReadOnlyList<FamilyMeasurement> measured, int[] rerank, double lo, double hi,
        double? ratioLo, (double? Min, double? Max) holds, FilteredCalibration? below = null)
    {
        int grid = Columns;
        int plans = grid * rerank.Length;
        {
            var inBand = new List<(FamilyMeasurement Family, Func<int, bool> Include, int Queries, double Median)>();
            foreach (var f in measured)
            {
                Func<int, bool> include = q => f.Selectivity[q] >= lo && (f.Selectivity[q] < hi || hi >= 1)
                    && (ratioLo is not { } rl || f.RatioOf(q) >= rl);
                var selected = Enumerable.Range(0, f.Selectivity.Length).Where(q => !double.IsNaN(f.Selectivity[q]) && include(q)).Select(q => f.Selectivity[q]).Order().ToArray();
                if (selected.Length >= MinQueriesInBand) inBand.Add((f, include, selected.Length, selected[selected.Length / 2]));
            }
            if (inBand.Count == 0) return null;
            var points = new List<CalibratedPlan>();
            var every = inBand.Select(f => f.Family.MeanOfEvery(f.Include)).ToArray();
            var bothSides = below is null || ratioLo is not { } split ? null
                : inBand.Select(f => BothSides.Of(f.Family, q => f.Family.Selectivity[q] >= lo && (f.Family.Selectivity[q] < hi || hi >= 1) && f.Family.RatioOf(q) < split,
                    f.Queries, below, grid, rerank)).ToArray();
            for (int j = 0; j < plans; j++)
            {
                var means = every.Select(f => f[j]).ToArray();
                var recalls = bothSides is null ? means.Select(x => x.Recall).ToArray() : means.Select((x, f) => bothSides[f].Recall(x.Recall)).ToArray();
                int worst = Array.IndexOf(recalls, recalls.Min());
                var (cf, margin) = Column(j % grid);
                points.Add(new CalibratedPlan(cf, rerank[j / grid],
                    Math.Round(recalls[worst], 5), Math.Round(means[worst].StdError, 5), Math.Round(means.Max(x => x.Cost)), margin));
            }
            var band = new FilteredCalibration
            {
                MinSelectivity = lo,
                MaxSelectivity = hi,
                Queries = inBand.Sum(f => f.Queries),
                Families = inBand.Select(f => string.Create(CultureInfo.InvariantCulture, $"{f.Family.Name}: {f.Queries} queries, median selectivity {f.Median:0.####}")).ToArray(),
                Plans = RecallCalibrator.Frontier(points),
                MinAnchorRatio = holds.Min,
                MaxAnchorRatio = holds.Max,
            };
            bands.Add(band);
            return band;
        }
    }

    /// <summary>
    /// A family whose queries fall on both sides of the anchor-ratio split, seen from the band above it: its queries below
    /// run the lower band's plans, whose frontier was set by every query of the selectivity band (mostly another family's,
    /// such as the query's own label), so its recall there can lie well under what that band promises. A plan above the
    /// split then gets, as its recall, the highest aim it lets the family's mean over both sides reach when the band below
    /// plans for the same aim (<see cref="Recall"/>): the family's mean is what a target promises, and the plan above makes
    /// up for the side below (or, where that side is easy, asks less).
    /// </summary>
    private sealed class BothSides
    {
        /// <summary>The targets the lower band is planned for, ascending, and the family's mean recall below the split under each plan.</summary>
        private readonly double[] _targets, _belowRecall;
        /// <summary>The share of the family's queries in the selectivity band that lie below the split.</summary>
        private readonly double _shareBelow;

        private BothSides(double[] targets, double[] belowRecall, double shareBelow) => (_targets, _belowRecall, _shareBelow) = (targets, belowRecall, shareBelow);

        /// <summary>Targets from 0.05 to 0.9995 by 0.0005: finer than the frontier's steps near the targets users ask for.</summary>
        private static readonly double[] Targets = Enumerable.Range(0, 1900).Select(i => Math.Round(0.05 + 0.0005 * i, 4)).ToArray();

        public static BothSides Of(FamilyMeasurement family, Func<int, bool> belowSplit, int queriesAbove, FilteredCalibration below, int grid, int[] rerank)
        {
            var means = family.MeanOfEvery(belowSplit);
            int n = means.Length == 0 ? 0 : means[0].Queries;
            if (n == 0) return new BothSides([], [], 0);
            var plan = new Dictionary<CalibratedPlan, int>();
            for (int j = 0; j < means.Length; j++)
            {
                var (cf, margin) = Column(j % grid);
                foreach (var p in below.Plans)
                    if (p.CentroidFactor == cf && p.RerankFactor == rerank[j / grid] && p.FilterMargin == margin) plan[p] = j;
            }
            var frontier = below.Plans.ToArray();
            var recall = Targets.Select(t => RecallPlanner.Mix(frontier, t) is { } mix
                ? mix.HighShare * means[plan[mix.High]].Recall + (1 - mix.HighShare) * means[plan[mix.Low]].Recall
                : 1).ToArray();
            return new BothSides(Targets, recall, n / (double)(n + queriesAbove));
        }

        /// <summary>
        /// What a plan whose mean above the split is <paramref name="above"/> is worth: the aim of the highest target t for which
        /// the family's mean over both sides reaches <see cref="RecallPlanner.Aim"/>(t); the mean at the lowest target when none.
        /// </summary>
        public double Recall(double above)
        {
            if (_shareBelow == 0) return above;
            for (int i = _targets.Length - 1; i >= 0; i--)
                if (_shareBelow * _belowRecall[i] + (1 - _shareBelow) * above >= RecallPlanner.Aim(_targets[i]))
                    return Math.Min(1, RecallPlanner.Aim(_targets[i]));
            return _shareBelow * _belowRecall[0] + (1 - _shareBelow) * above;
        }
    }

    /// <summary>
    /// What the families are drawn from, in memory bounded whatever the index's size: per number, integer and category
    /// attribute, the values of at most <see cref="NumericCellFit.MaxSample"/> evenly spaced rows (every row up to that many;
    /// the rule the build's number cells are fitted by, <see cref="NumericCellFit.SampleSlot"/>, so that any process that
    /// reads the partitions draws the same sample), NaN where missing; and each base-sample query's own value. Rows are
    /// spaced by row number while the numbers are exactly 0 … N − 1 (a build's), else by rank among the live row numbers
    /// (<c>liveRows</c>): after writes the numbers have gaps (deleted rows; on an index without ids, any number up to
    /// 2,147,483,646), and evenly spaced numbers would mostly name no row, leaving every column "mostly missing".
    /// </summary>
    private sealed class ColumnSample
    {
        private readonly long _rows;
        private readonly int[]? _liveRows;
        private readonly Dictionary<long, List<int>> _queriesOfRow = [];

        /// <summary>Per attribute (null for types no family is drawn from): the sampled rows' values, by sample slot.</summary>
        public double[]?[] Columns { get; }
        /// <summary>Per attribute: each of the first <c>count</c> queries' own row's value (NaN without one).</summary>
        public double[]?[] Own { get; }
        public int Slots { get; }

        /// <param name="liveRows">Every live row number, ascending, when they are not 0 … <paramref name="rows"/> − 1 (then <paramref name="rows"/> is their count).</param>
        public ColumnSample(IndexAttributes attributes, long rows, CalibrationQueries queries, int count, int[]? liveRows = null)
        {
            if (liveRows is not null && liveRows.Length != rows) throw new ArgumentException($"{liveRows.Length} live rows for {rows}", nameof(liveRows));
            _rows = rows;
            _liveRows = liveRows;
            Slots = (int)Math.Min(rows, NumericCellFit.MaxSample);
            Columns = new double[]?[attributes.Attributes.Count];
            Own = new double[]?[Columns.Length];
            for (int a = 0; a < Columns.Length; a++)
                if (attributes.Attributes[a].Type is AttributeType.Number or AttributeType.Integer or AttributeType.Category)
                {
                    Array.Fill(Columns[a] = new double[Slots], double.NaN);
                    Array.Fill(Own[a] = new double[count], double.NaN);
                }
            if (queries.SelfIds is { } self)
                for (int q = 0; q < count; q++)
                {
                    if (!_queriesOfRow.TryGetValue(self[q], out var list)) _queriesOfRow[self[q]] = list = [];
                    list.Add(q);
                }
        }

        /// <summary>One partition's share: its sampled rows' values and its base-sample queries' own values.</summary>
        public void Add(int[] ids, PartitionAttributes part)
        {
            for (int a = 0; a < Columns.Length; a++)
            {
                if (Columns[a] is not { } values) continue;
                var col = part.Columns[a];
                for (int row = 0; row < part.Count; row++)
                {
                    if (!col.IsPresent(row)) continue;
                    long slot = _liveRows is null ? NumericCellFit.SampleSlot(ids[row], _rows)
                        : Array.BinarySearch(_liveRows, ids[row]) is var rank and >= 0 ? NumericCellFit.SampleSlot(rank, _rows) : -1;
                    bool own = _queriesOfRow.TryGetValue(ids[row], out var queries);
                    if (slot < 0 && !own) continue;
                    double value = col.Type switch
                    {
                        AttributeType.Number => col.Numbers![row],
                        AttributeType.Integer => col.Integers![row],
                        _ => col.Ids![row],
                    };
                    if (slot >= 0) values[slot] = value;
                    if (own) foreach (int q in queries!) Own[a]![q] = value;
                }
            }
        }
    }

    /// <param name="dense">Queries the families above <see cref="SparseSelectivity"/> filter (the first ones).</param>
    /// <param name="parallel">False on a lowered thread: it must not hand work to the pool (a pool thread it started would inherit its priority).</param>
    private static List<Family> DrawFamilies(IndexAttributes attributes, ColumnSample sample, CalibrationQueries queries, int count, int dense, int k, bool parallel = true)
    {
        var compiler = new FilterCompiler(attributes);
        // Drawn in order (one seeded sequence), compiled in parallel off a lowered thread (the compiler only reads). One
        // text, in any family, compiles once: queries holding the same filter instance share their matches (ByPartition.Truth).
        var compiled = new Dictionary<string, CompiledFilter>(StringComparer.Ordinal);
        CompiledFilter?[] Compile(string?[] texts)
        {
            var fresh = texts.OfType<string>().Distinct(StringComparer.Ordinal).Where(t => !compiled.ContainsKey(t)).ToArray();
            var made = new CompiledFilter[fresh.Length];
            if (parallel) Parallel.For(0, fresh.Length, i => made[i] = compiler.Compile(fresh[i]));
            else for (int i = 0; i < fresh.Length; i++) made[i] = compiler.Compile(fresh[i]);
            for (int i = 0; i < fresh.Length; i++) compiled[fresh[i]] = made[i];
            return texts.Select(t => t is null ? null : compiled[t]).ToArray();
        }
        var families = new List<Family>();
        if (queries.Filters is { } given)
        {
            // The user's own kinds of filter, each a family as given; a text's place is its rank among the family's
            // distinct texts, so equal filters sit together for the exact neighbours' blocks.
            for (int f = 0; f < given.Count; f++)
            {
                var texts = new string?[count];
                for (int q = 0; q < Math.Min(dense, given[f].Texts.Length); q++) texts[q] = given[f].Texts[q];
                var rank = texts.OfType<string>().Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal)
                    .Select((t, i) => (t, i)).ToDictionary(x => x.t, x => (double)x.i, StringComparer.Ordinal);
                families.Add(new Family(given[f].Name, Compile(texts), $"given {f}", texts.Select(t => t is null ? 0 : rank[t]).ToArray()));
            }
            return families;
        }
        var columns = sample.Columns;
        int rangeColumn = -1, equalityColumn = -1, mostDistinct = 0;
        var sortedValues = new double[]?[columns.Length];
        for (int a = 0; a < columns.Length; a++)
        {
            if (columns[a] is not { } values) continue;
            var sorted = values.Where(v => !double.IsNaN(v)).ToArray();
            Array.Sort(sorted);
            if (sorted.Length < sample.Slots / 2) continue; // mostly missing: filters on it say little about the others
            sortedValues[a] = sorted;
            int distinct = 1;
            for (int i = 1; i < sorted.Length; i++) if (sorted[i] != sorted[i - 1]) distinct++;
            var type = attributes.Attributes[a].Type;
            if (distinct is >= 2 and <= MaxEqualityValues && type is AttributeType.Category or AttributeType.Integer
                && (equalityColumn < 0 || (type == AttributeType.Category && attributes.Attributes[equalityColumn].Type != AttributeType.Category)))
                equalityColumn = a;
            if (type is AttributeType.Number or AttributeType.Integer && distinct > MaxEqualityValues && distinct > mostDistinct)
            {
                mostDistinct = distinct;
                rangeColumn = a;
            }
        }

        if (rangeColumn >= 0)
        {
            var sorted = sortedValues[rangeColumn]!;
            string name = JsonEncodedText.Encode(attributes.Attributes[rangeColumn].Name).ToString();
            foreach (double s in RangeSelectivities)
            {
                int width = (int)Math.Round(s * sorted.Length);
                if (width < 3 * k) continue; // too few matches to measure recall@k on
                var rng = new Random(unchecked(0x5eed + (int)(s * 1e6)));
                var texts = new string?[count];
                var starts = new double[count];
                for (int q = 0; q < (s <= SparseSelectivity ? count : dense); q++)
                {
                    int start = rng.Next(sorted.Length - width);
                    double lo = sorted[start], hi = sorted[start + width];
                    starts[q] = lo;
                    if (lo < hi) texts[q] = string.Create(CultureInfo.InvariantCulture, $"{{\"{name}\":{{\"$gte\":{lo:R},\"$lt\":{hi:R}}}}}");
                }
                families.Add(new Family(string.Create(CultureInfo.InvariantCulture, $"range {s * 100:0.###}%"), Compile(texts), string.Create(CultureInfo.InvariantCulture, $"range {rangeColumn} {s}"), starts));
            }
        }

        if (equalityColumn >= 0)
        {
            var info = attributes.Attributes[equalityColumn];
            var ownValues = sample.Own[equalityColumn]!;
            var distinct = sortedValues[equalityColumn]!.Distinct().ToArray();
            string name = JsonEncodedText.Encode(info.Name).ToString();
            string Filter(double v) => $"{{\"{name}\":{{\"$eq\":{(info.Type == AttributeType.Category
                ? $"\"{JsonEncodedText.Encode(info.Values![(int)v])}\""
                : ((long)v).ToString(CultureInfo.InvariantCulture))}}}}}";
            // A user names a value, not a row: other values are drawn uniformly, so rare ones are measured too.
            var rng = new Random(0x07e5);
            var other = new string?[count];
            var own = new string?[count];
            var otherValues = new double[count];
            for (int q = 0; q < dense; q++)
            {
                double mine = ownValues[q];
                var choices = distinct.Where(v => v != mine).ToArray();
                if (choices.Length > 0) other[q] = Filter(otherValues[q] = choices[rng.Next(choices.Length)]);
                if (!double.IsNaN(mine)) own[q] = Filter(mine);
            }
            string kind = $"value {equalityColumn}";
            families.Add(new Family("other value", Compile(other), kind, otherValues));
            if (queries.SelfIds is not null) families.Add(new Family("own value", Compile(own), kind, ownValues));
        }
        return families;
    }
}
