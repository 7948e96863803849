using System.Globalization;
using System.Text.Json;
using Squash.Core.Collections;
using Squash.Core.Kernels;
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
/// a value other than the query's own, drawn by frequency: when the attribute follows the vectors (a class label)
/// the matches sit away from the query, the hardest case for a partition plan.</item>
/// </list>
/// Each replayed query counts in the band of the selectivity the planner estimates for it (which it sees at query time
/// too); a band's recall for a plan is the lowest among its families, so a target holds for each kind measured.
/// </summary>
public static partial class FilteredRecallCalibrator
{
    /// <summary>Queries per family: the first calibration queries.</summary>
    public const int QueriesPerFamily = 300;
    public static readonly double[] RangeSelectivities = [0.1, 0.01, 0.001];
    /// <summary>Band edges in selectivity: [0, 0.005), [0.005, 0.05), [0.05, 1].</summary>
    public static readonly double[] BandEdges = [0, 0.005, 0.05, 1];

    /// <summary>An equality family needs an attribute with at most this many distinct values.</summary>
    private const int MaxEqualityValues = 256;

    private sealed record Family(string Name, CompiledFilter?[] Filters);

    /// <summary>
    /// One family's replay, per query (rows of <see cref="Recall"/> and <see cref="Cost"/>; grid plans R-major, as the
    /// unfiltered grid) with each query's estimated selectivity (NaN where no filter could be drawn for it).
    /// </summary>
    public sealed record FamilyMeasurement(string Name, CompiledFilter?[] Filters, double[] Selectivity, double[,] Recall, double[,] Cost)
    {
        /// <summary>Mean recall, its standard error and mean cost of plan <paramref name="j"/> over the queries <paramref name="include"/> accepts.</summary>
        public (double Recall, double StdError, double Cost, int Queries) Mean(int j, Func<int, bool>? include = null)
        {
            double sum = 0, sq = 0, cost = 0;
            int m = 0;
            for (int q = 0; q < Selectivity.Length; q++)
            {
                if (double.IsNaN(Selectivity[q]) || (include is not null && !include(q))) continue;
                sum += Recall[q, j];
                sq += Recall[q, j] * Recall[q, j];
                cost += Cost[q, j];
                m++;
            }
            if (m == 0) return (double.NaN, double.NaN, double.NaN, 0);
            double mean = sum / m;
            double se = m > 1 ? Math.Sqrt(Math.Max(0, (sq - m * mean * mean) / (m - 1)) / m) : 0;
            return (mean, se, cost / m, m);
        }
    }

    /// <summary>A family takes part in a band's frontier with at least this many of its queries in the band.</summary>
    public const int MinQueriesInBand = 30;

    /// <summary>The bands, or null when the index has no attribute a family can be drawn from.</summary>
    public static IReadOnlyList<FilteredCalibration>? Calibrate(OpenedIndex index, CalibrationQueries queries, int k, CancellationToken cancellationToken = default)
    {
        var measured = Measure(index, queries, k, cancellationToken);
        return measured.Count == 0 ? null : Bands(measured);
    }

    /// <summary>Every family drawn from the index's attributes, replayed over the first <see cref="QueriesPerFamily"/> queries.</summary>
    public static IReadOnlyList<FamilyMeasurement> Measure(OpenedIndex index, CalibrationQueries queries, int k, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(index);
        ArgumentNullException.ThrowIfNull(queries);
        var attributes = index.Manifest.Attributes;
        if (attributes is null || queries.Count == 0) return [];
        int n = (int)index.Manifest.Count;
        int count = Math.Min(QueriesPerFamily, queries.Count);
        var columns = ReadColumns(index, attributes);
        var families = DrawFamilies(attributes, columns, queries, count, n, k);
        if (families.Count == 0) return [];

        var engine = new SearchEngine(index);
        var partitionOf = new int[n];
        for (int p = 0; p < index.PartitionCount; p++)
            foreach (long id in index.Codes(p).Ids) partitionOf[id] = p;
        int plans = RecallCalibrator.CentroidFactors.Length * RecallCalibrator.RerankFactors.Length;

        var measured = new List<FamilyMeasurement>();
        foreach (var family in families)
        {
            var recall = new double[count, plans];
            var cost = new double[count, plans];
            var selectivity = new double[count];
            var used = new bool[count];
            Parallel.For(0, count, new ParallelOptions { CancellationToken = cancellationToken }, () => new PartitionScanner(), (q, _, scanner) =>
            {
                if (family.Filters[q] is { } filter)
                {
                    used[q] = true;
                    selectivity[q] = Replay(engine, scanner, queries, q, filter, k, partitionOf, recall, cost);
                }
                return scanner;
            }, _ => { });
            for (int q = 0; q < count; q++) if (!used[q]) selectivity[q] = double.NaN;
            measured.Add(new FamilyMeasurement(family.Name, family.Filters, selectivity, recall, cost));
        }
        return measured;
    }

    /// <summary>
    /// The frontier of each selectivity band: each query counts in the band of its own estimated selectivity (the planner
    /// picks the band the same way), and per plan the band takes the lowest recall among the families with at least
    /// <see cref="MinQueriesInBand"/> queries in it.
    /// </summary>
    public static IReadOnlyList<FilteredCalibration>? Bands(IReadOnlyList<FamilyMeasurement> measured)
    {
        int grid = RecallCalibrator.CentroidFactors.Length;
        int plans = grid * RecallCalibrator.RerankFactors.Length;
        var bands = new List<FilteredCalibration>();
        for (int b = 0; b + 1 < BandEdges.Length; b++)
        {
            double lo = BandEdges[b], hi = BandEdges[b + 1];
            var inBand = new List<(FamilyMeasurement Family, Func<int, bool> Include, int Queries, double Median)>();
            foreach (var f in measured)
            {
                Func<int, bool> include = q => f.Selectivity[q] >= lo && (f.Selectivity[q] < hi || hi >= 1);
                var selected = Enumerable.Range(0, f.Selectivity.Length).Where(q => !double.IsNaN(f.Selectivity[q]) && include(q)).Select(q => f.Selectivity[q]).Order().ToArray();
                if (selected.Length >= MinQueriesInBand) inBand.Add((f, include, selected.Length, selected[selected.Length / 2]));
            }
            if (inBand.Count == 0) continue;
            var points = new List<CalibratedPlan>();
            for (int j = 0; j < plans; j++)
            {
                var means = inBand.Select(f => f.Family.Mean(j, f.Include)).ToArray();
                var worst = means.MinBy(x => x.Recall);
                points.Add(new CalibratedPlan(RecallCalibrator.CentroidFactors[j % grid], RecallCalibrator.RerankFactors[j / grid],
                    Math.Round(worst.Recall, 5), Math.Round(worst.StdError, 5), Math.Round(means.Max(x => x.Cost))));
            }
            bands.Add(new FilteredCalibration
            {
                MinSelectivity = lo,
                MaxSelectivity = hi,
                Queries = inBand.Sum(f => f.Queries),
                Families = inBand.Select(f => string.Create(CultureInfo.InvariantCulture, $"{f.Family.Name}: {f.Queries} queries, median selectivity {f.Median:0.####}")).ToArray(),
                Plans = RecallCalibrator.Frontier(points),
            });
        }
        return bands.Count > 0 ? bands : null;
    }

    /// <summary>Each attribute as one value per vector (by id): numbers, integers, category ids; NaN where missing. Null for other types.</summary>
    private static double[]?[] ReadColumns(OpenedIndex index, IndexAttributes attributes)
    {
        int n = (int)index.Manifest.Count;
        var columns = new double[]?[attributes.Attributes.Count];
        for (int a = 0; a < columns.Length; a++)
            if (attributes.Attributes[a].Type is AttributeType.Number or AttributeType.Integer or AttributeType.Category)
                Array.Fill(columns[a] = new double[n], double.NaN);
        for (int p = 0; p < index.PartitionCount; p++)
            if (index.Attributes(p) is { } part) FillColumns(columns, index.Codes(p).Ids, part);
        return columns;
    }

    /// <summary>One partition's share of <see cref="ReadColumns"/>: its rows' values, placed by id.</summary>
    private static void FillColumns(double[]?[] columns, int[] ids, PartitionAttributes part)
    {
        for (int a = 0; a < columns.Length; a++)
        {
            if (columns[a] is not { } values) continue;
            var col = part.Columns[a];
            for (int row = 0; row < part.Count; row++)
            {
                if (!col.IsPresent(row)) continue;
                values[ids[row]] = col.Type switch
                {
                    AttributeType.Number => col.Numbers![row],
                    AttributeType.Integer => col.Integers![row],
                    _ => col.Ids![row],
                };
            }
        }
    }

    private static List<Family> DrawFamilies(IndexAttributes attributes, double[]?[] columns, CalibrationQueries queries, int count, int n, int k)
    {
        var compiler = new FilterCompiler(attributes);
        var families = new List<Family>();
        int rangeColumn = -1, equalityColumn = -1, mostDistinct = 0;
        var sortedValues = new double[]?[columns.Length];
        for (int a = 0; a < columns.Length; a++)
        {
            if (columns[a] is not { } values) continue;
            var sorted = values.Where(v => !double.IsNaN(v)).Order().ToArray();
            if (sorted.Length < n / 2) continue; // mostly missing: filters on it say little about the others
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
                var filters = new CompiledFilter?[count];
                for (int q = 0; q < count; q++)
                {
                    int start = rng.Next(sorted.Length - width);
                    double lo = sorted[start], hi = sorted[start + width];
                    if (lo < hi) filters[q] = compiler.Compile(string.Create(CultureInfo.InvariantCulture, $"{{\"{name}\":{{\"$gte\":{lo:R},\"$lt\":{hi:R}}}}}"));
                }
                families.Add(new Family(string.Create(CultureInfo.InvariantCulture, $"range {s * 100:0.###}%"), filters));
            }
        }

        if (equalityColumn >= 0)
        {
            var info = attributes.Attributes[equalityColumn];
            var values = columns[equalityColumn]!;
            var distinct = sortedValues[equalityColumn]!.Distinct().ToArray();
            string name = JsonEncodedText.Encode(info.Name).ToString();
            string Filter(double v) => $"{{\"{name}\":{{\"$eq\":{(info.Type == AttributeType.Category
                ? $"\"{JsonEncodedText.Encode(info.Values![(int)v])}\""
                : ((long)v).ToString(CultureInfo.InvariantCulture))}}}}}";
            // A user names a value, not a row: other values are drawn uniformly, so rare ones are measured too.
            var rng = new Random(0x07e5);
            var other = new CompiledFilter?[count];
            var own = new CompiledFilter?[count];
            for (int q = 0; q < count; q++)
            {
                double mine = queries.SelfIds is { } self ? values[self[q]] : double.NaN;
                var choices = distinct.Where(v => v != mine).ToArray();
                if (choices.Length > 0) other[q] = compiler.Compile(Filter(choices[rng.Next(choices.Length)]));
                if (!double.IsNaN(mine)) own[q] = compiler.Compile(Filter(mine));
            }
            families.Add(new Family("other value", other));
            if (queries.SelfIds is not null) families.Add(new Family("own value", own));
        }
        return families;
    }

    /// <summary>
    /// Replays every plan of the grid for one filtered query into <paramref name="recall"/> and <paramref name="cost"/>
    /// (row <paramref name="q"/>); returns the filter's estimated selectivity, as the planner sees it.
    /// </summary>
    private static double Replay(SearchEngine engine, PartitionScanner scanner, CalibrationQueries queries, int q, CompiledFilter filter, int k,
        int[] partitionOf, double[,] recall, double[,] cost)
    {
        var index = engine.Index;
        var manifest = index.Manifest;
        long self = queries.SelfIds?[q] ?? -1;
        var ctx = new QueryContext(index, queries.Data.AsSpan(q * queries.Dimensions, queries.Dimensions));
        var (order, dist) = engine.RankPartitions(ctx);
        if (self >= 0)
        {
            int own = partitionOf[self];
            RecallCalibrator.LeaveOutOfCentroid(index, own, index.Vectors(own).Row(Array.IndexOf(index.Codes(own).Ids, (int)self)), ctx, ref order, dist);
        }
        var estimates = FilterEstimates.Of(filter, manifest);
        double selectivity = estimates.Total / Math.Max(1, manifest.Count);

        // Exact filtered neighbours, the matches each partition holds (what later passes are decided on) and every
        // match's exact distance (NaN for rows that do not match), which the replay's re-rank reuses.
        int p = order.Length;
        var matches = new int[p];
        var rowDistance = new float[p][];
        var truthTop = new TopK(k);
        int[] rows = [];
        for (int part = 0; part < p; part++)
        {
            if (!estimates.CanMatch[part] || index.Attributes(part) is not { } attrs) continue;
            var ids = index.Codes(part).Ids;
            var vectors = index.Vectors(part);
            var distances = rowDistance[part] = new float[attrs.Count];
            Array.Fill(distances, float.NaN);
            if (!filter.TryCandidates(attrs, ref rows, out int indexed))
            {
                if (rows.Length < attrs.Count) rows = new int[attrs.Count];
                for (int row = 0; row < attrs.Count; row++) rows[row] = row;
                indexed = attrs.Count;
            }
            for (int c = 0; c < indexed; c++)
            {
                int row = rows[c];
                if (ids[row] == self || !filter.Matches(attrs, row)) continue;
                matches[part]++;
                truthTop.TryAdd(ids[row], distances[row] = SquaredL2.Distance(ctx.Internal, vectors.Row(row)));
            }
        }
        var truth = truthTop.ToSortedArray().Select(x => x.Id).ToHashSet();
        int grid = RecallCalibrator.CentroidFactors.Length, rs = RecallCalibrator.RerankFactors.Length;
        if (truth.Count == 0)
        {
            for (int j = 0; j < grid * rs; j++) recall[q, j] = 1;
            return selectivity;
        }

        var rank = new int[p];
        for (int i = 0; i < p; i++) rank[order[i]] = i;
        int needed = 0;
        foreach (long id in truth) needed = Math.Max(needed, rank[partitionOf[id]] + 1);
        var matchesBefore = new int[p + 1];
        for (int i = 0; i < p; i++) matchesBefore[i + 1] = matchesBefore[i] + matches[order[i]];

        // Each plan's strategy and where its passes end (the engine's own planner and pass logic).
        var end = new int[grid * rs];
        var direct = new bool[grid * rs];
        int scanTo = 0;
        for (int r = 0; r < rs; r++)
            for (int g = 0; g < grid; g++)
            {
                int j = r * grid + g;
                var plan = engine.PlanFiltered(order, dist, estimates, new SearchOptions
                {
                    K = k, CentroidFactor = RecallCalibrator.CentroidFactors[g], RerankFactor = RecallCalibrator.RerankFactors[r], Filter = filter,
                });
                if (plan.Strategy != "partitions") { direct[j] = true; continue; }
                while (engine.NextPass(plan, Math.Min(plan.Target, matchesBefore[plan.Cursor])).Length > 0) { }
                end[j] = plan.Cursor;
                scanTo = Math.Max(scanTo, end[j]);
            }
        scanTo = Math.Min(scanTo, Math.Max(needed, 1));

        // One scan in centroid order over the partitions that can match, replaying every R.
        int m = manifest.GlobalDimensions, d = manifest.InternalDimensions;
        var tops = new TopK[rs];
        for (int r = 0; r < rs; r++) tops[r] = new TopK(k);
        var recallAt = new double[rs, p + 1];
        var rerankCostAt = new double[rs, p + 1];
        var visitCostAt = new double[p + 1];
        var candidates = new List<(float Bound, int Row)>();
        var collect = new SearchOptions { K = k + 1, RerankFactor = RecallCalibrator.RerankFactors[^1], CentroidFactor = 1, Filter = filter };
        for (int c = 0; c < p; c++)
        {
            int part = order[c];
            bool visit = estimates.CanMatch[part];
            visitCostAt[c + 1] = visitCostAt[c] + (visit ? RecallCalibrator.VisitBytes(manifest.Partitions[part], m) : 0);
            if (!visit || c >= scanTo || index.Attributes(part) is not { } attrs)
            {
                for (int r = 0; r < rs; r++) { recallAt[r, c + 1] = recallAt[r, c]; rerankCostAt[r, c + 1] = rerankCostAt[r, c]; }
                continue;
            }
            var codes = index.Codes(part);
            var distances = rowDistance[part];
            candidates.Clear();
            bool every = scanner.CollectFilteredCandidates(ctx, codes, attrs, collect, candidates);
            // NaN marks a row that is no match (or the query itself): the exhaustive path lists rows before their recheck.
            candidates.RemoveAll(x => float.IsNaN(distances[x.Row]));
            for (int r = 0; r < rs; r++)
            {
                var top = tops[r];
                int take = every ? candidates.Count : Math.Min(candidates.Count, k * RecallCalibrator.RerankFactors[r]);
                long reranked = 0;
                for (int i = 0; i < take; i++)
                {
                    var (bound, row) = candidates[i];
                    if (!every && bound > top.Threshold * (1 + PartitionScanner.Slack)) break;
                    reranked++;
                    top.TryAdd(codes.Ids[row], distances[row]);
                }
                rerankCostAt[r, c + 1] = rerankCostAt[r, c] + reranked * RecallCalibrator.RerankBytes(d);
                int hits = 0;
                foreach (var nb in top.ToSortedArray()) if (truth.Contains(nb.Id)) hits++;
                recallAt[r, c + 1] = hits / (double)truth.Count;
            }
        }

        double directCost = estimates.Total * 4.0 * d;
        for (int r = 0; r < rs; r++)
            for (int g = 0; g < grid; g++)
            {
                int j = r * grid + g;
                if (direct[j])
                {
                    recall[q, j] = 1;
                    cost[q, j] = directCost;
                    continue;
                }
                recall[q, j] = recallAt[r, end[j]];
                cost[q, j] = visitCostAt[end[j]] + rerankCostAt[r, end[j]];
            }
        return selectivity;
    }
}
