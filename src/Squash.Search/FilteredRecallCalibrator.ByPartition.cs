using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Squash.Core.Collections;
using Squash.Core.Kernels;
using Squash.Index.Attributes;
using Squash.Index.Model;
using Squash.Search.Filters;

namespace Squash.Search;

public static partial class FilteredRecallCalibrator
{
    /// <summary>
    /// The filtered replay, run over the partitions in passes, one partition's data at a time: a queue build's publish task
    /// reads each from the store, <see cref="Measure"/> (the in-process build) hands over the partitions it holds, so that the
    /// two builds run the same code and get the same bands.
    /// <list type="number">
    /// <item><see cref="StartAsync"/>: every partition's attributes and ids, for the values the families are drawn from
    /// (<see cref="ColumnSample"/>: at most <see cref="NumericCellFit.MaxSample"/> rows' values per number, integer and
    /// category attribute, whatever the index's size).</item>
    /// <item><see cref="Wants"/>/<see cref="Truth"/>: each partition a filtered query can match, for its exact filtered
    /// neighbours and match counts (the caller reads them in ascending order, alongside the unfiltered calibration's own pass).</item>
    /// <item><see cref="FinishAsync"/>: plans every query from the counts, reads each partition some replay scans once,
    /// keeping each such query's re-rank candidates there (at most K·R_max, or every match when the scan is exhaustive), and
    /// replays every plan from those lists.</item>
    /// </list>
    /// </summary>
    public sealed class ByPartition
    {
        private readonly OpenedIndex _index;
        private readonly int _k;
        /// <summary>Every K replayed, the calibration's first (<see cref="RecallCalibrator.OtherKsFor(int, long)"/> after it), and the R measured at each.</summary>
        private readonly int[] _ks;
        private readonly int[][] _rerankGrids;
        /// <summary>Exact neighbours per query (<see cref="TruthDepth"/>).</summary>
        private readonly int _depth;
        /// <summary>
        /// Candidates a K's plans re-rank in a partition at most (K·R; 400 past K = 10, 160 at it and below). A plan's K·R
        /// smallest bounds are the prefix of a longer list, so one list per query and partition serves every K scanning it.
        /// </summary>
        private readonly int[] _listLengths;
        private readonly List<Family> _families;
        private readonly FilteredQuery[] _queries;
        /// <summary>The queries by filter kind and place: equal filters and overlapping ranges next to each other.</summary>
        private readonly FilteredQuery[] _byPlace;
        private readonly bool[] _wanted;
        /// <summary>Workers' buffers, kept from partition to partition (each is as long as the largest partition it has seen).</summary>
        private readonly System.Collections.Concurrent.ConcurrentBag<TruthScratch> _scratch = [];

        /// <summary>One family's query: its filter, planning state, exact neighbours so far and, later, its candidate lists.</summary>
        private sealed class FilteredQuery : TruthQuery
        {
            public required QueryContext Context;
            public required int[] Order;
            public required float[] Dist;
            /// <summary>What the plan ranks by: the value key (<see cref="SearchEngine.ValueOrder"/>, own row left out), else <see cref="Dist"/>.</summary>
            public required float[] Keys;
            public double AnchorRatio = 1;
            public required FilterEstimates Estimates;
            public required double Selectivity;
            /// <summary>The plans at each K (<see cref="_ks"/>); null at a K this query is not replayed at (<see cref="ReplayedAt"/>).</summary>
            public KPlans?[] AtK = [];
            /// <summary>Per scanned partition: whether every match was listed, and the candidates (bound, id, exact distance).</summary>
            /// <remarks>A distance is NaN until a replay first re-ranks it where the partition's <c>Vectors</c> and the candidates' <c>Rows</c> are kept.</remarks>
            public Dictionary<int, (bool Every, (float Bound, long Id, float Distance)[] List, int[]? Rows, PartitionVectors? Vectors)> Candidates { get; } = [];
            /// <summary>Per partition the replays scan: how many candidates they re-rank there at most (the deepest K scanning it).</summary>
            public Dictionary<int, int> ListLength { get; } = [];
        }

        /// <summary>One query's plans at one K: its top-K truth, how far its replay scans, and where each plan stops (or scans directly).</summary>
        private sealed class KPlans
        {
            public HashSet<long> TruthIds = [];
            public int ScanTo;
            public int[] End = [];
            public bool[] Direct = [];
        }

        private ByPartition(OpenedIndex index, int k, List<Family> families, FilteredQuery[] queries)
        {
            _index = index;
            _k = k;
            _ks = [k, .. RecallCalibrator.OtherKsFor(k, index.Manifest.Count)];
            _rerankGrids = _ks.Select((atK, x) => x == 0 ? RecallCalibrator.RerankFactors : RecallCalibrator.RerankGridAt(atK)).ToArray();
            _depth = TruthDepth(k, index.Manifest.Count);
            _listLengths = _ks.Select((atK, x) => atK * _rerankGrids[x][^1]).ToArray();
            _families = families;
            _queries = queries;
            _byPlace = ByPlace(queries, families);
            _wanted = new bool[index.PartitionCount];
            foreach (var fq in queries)
                for (int p = 0; p < _wanted.Length; p++) _wanted[p] |= fq.Estimates.CanMatch[p];
        }

        private int QueryCount { get; init; }
        /// <summary>How many of the first queries every family filters (the exactly measured ones; the sparse ranges filter all).</summary>
        private int DenseQueries { get; init; }

        /// <summary>
        /// Whether query <paramref name="q"/> is replayed at <see cref="_ks"/>[<paramref name="x"/>]: at the calibration's K
        /// and below it, every query; past it, the exactly measured ones (<see cref="DenseQueries"/>), which every family
        /// filters: the sparse ranges' other queries are left out there, since a selective filter's plans at K = 100 walk far
        /// more partitions than at 10 (bench/recall.md), and recall@100 averages many hits per query, so fewer queries
        /// measure it as tightly.
        /// </summary>
        private bool ReplayedAt(int x, int q) => _ks[x] <= _k || q < DenseQueries;

        /// <summary>A query's map of where its top-K rows lie is pruned to them once it holds this many times K.</summary>
        private const int TruthMapPrunedAt = 4;

        /// <summary>
        /// Draws the families from the index's attributes (read partition by partition) and plans nothing yet; null when the
        /// index has no attributes or no family can be drawn (then there is no filtered calibration).
        /// </summary>
        /// <param name="partitionOf">The partition of every base-sample query's own row.</param>
        /// <param name="selfStored">Base-sample queries' own rows as stored (internal space, <c>Count × InternalDimensions</c>).</param>
        /// <param name="readAttributes">One partition's codes (for its ids) and attributes.</param>
        public static async Task<ByPartition?> StartAsync(OpenedIndex index, CalibrationQueries queries, IReadOnlyDictionary<long, int> partitionOf,
            float[]? selfStored, Func<int, CancellationToken, Task<(PartitionCodes Codes, PartitionAttributes Attributes)>> readAttributes, int k,
            CancellationToken cancellationToken = default, int? denseQueries = null)
        {
            var attributes = index.Manifest.Attributes;
            if (attributes is null || queries.Count == 0) return null;
            int count = queries.Count;
            // A build's rows are 0 … N − 1: sampled by row number, streaming the partitions. Once writes have deleted rows or
            // named new ones the numbers have gaps (on an index without ids, up to 2,147,483,646 whatever the row count), and
            // evenly spaced numbers would mostly miss the rows: the sample is spaced by rank among the live row numbers
            // instead, which takes every partition's ids first (what such an index, read whole by its calibration, holds anyway).
            var m = index.Manifest;
            bool gaps = m.RowLimit != m.Count;
            var held = gaps ? new List<(PartitionCodes Codes, PartitionAttributes Attributes)>(index.PartitionCount) : null;
            ColumnSample? sample = gaps ? null : new ColumnSample(attributes, m.RowLimit, queries, count);
            var next = index.PartitionCount > 0 ? readAttributes(0, cancellationToken) : null;
            for (int p = 0; p < index.PartitionCount; p++)
            {
                var (codes, part) = await next!.ConfigureAwait(false);
                next = p + 1 < index.PartitionCount ? readAttributes(p + 1, cancellationToken) : null;
                if (held is not null) held.Add((codes, part));
                else sample!.Add(codes.Ids, part);
            }
            if (held is not null)
            {
                var live = new int[held.Sum(h => h.Codes.Ids.Length)];
                int at = 0;
                foreach (var (codes, _) in held) { codes.Ids.CopyTo(live, at); at += codes.Ids.Length; }
                Array.Sort(live);
                sample = new ColumnSample(attributes, live.Length, queries, count, live);
                foreach (var (codes, part) in held) sample.Add(codes.Ids, part);
            }
            ArgumentNullException.ThrowIfNull(sample);
            var drawn = DrawFamilies(attributes, sample, queries, count, Math.Min(count, denseQueries ?? count), k);
            return drawn.Count == 0 ? null : Plan(index, queries, partitionOf, selfStored, drawn, sample.Own, null, k, Math.Min(count, denseQueries ?? count), cancellationToken);
        }

        /// <summary>
        /// The families drawn and their exact neighbours found during the build (<see cref="NeighboursDuringBuild"/>), planned
        /// on the built index: nothing is left for <see cref="Truth"/>. Null when no family was drawn.
        /// </summary>
        /// <param name="partitionOfRow">The partition of every row.</param>
        internal static ByPartition? StartFrom(OpenedIndex index, CalibrationQueries queries, IReadOnlyDictionary<long, int> partitionOf,
            float[]? selfStored, int[] partitionOfRow, DrawnNeighbours drawn, int k, CancellationToken cancellationToken = default)
        {
            if (drawn.Families.Count == 0) return null;
            drawn.Distribute(partitionOfRow, index.PartitionCount, cancellationToken);
            return Plan(index, queries, partitionOf, selfStored, drawn.Families, drawn.Own, drawn.Queries, k, drawn.Dense, cancellationToken);
        }

        /// <summary>
        /// Every drawn query's context, partition order and filter estimates; <paramref name="found"/>: exact neighbours already
        /// found (family-major), else none yet; <paramref name="dense"/>: how many of the first queries every family filters.
        /// </summary>
        private static ByPartition Plan(OpenedIndex index, CalibrationQueries queries, IReadOnlyDictionary<long, int> partitionOf,
            float[]? selfStored, List<Family> drawn, double[]?[] ownValues, TruthQuery?[]? found, int k, int dense, CancellationToken cancellationToken)
        {
            var attributes = index.Manifest.Attributes!;
            int count = queries.Count;
            var engine = new SearchEngine(index);
            var manifest = index.Manifest;
            int d = manifest.InternalDimensions;
            int depth = TruthDepth(k, manifest.Count);
            // Every family filters the same first queries: each query's context and partition ranking serve all of them (read only).
            var ranked = new (QueryContext Context, int[] Order, float[] Dist)?[count];
            Parallel.For(0, count, new ParallelOptions { CancellationToken = cancellationToken }, q =>
            {
                if (!drawn.Any(family => family.Filters[q] is not null)) return;
                long self = queries.SelfIds?[q] ?? -1;
                var ctx = new QueryContext(index, queries.Data.AsSpan(q * queries.Dimensions, queries.Dimensions));
                var (order, dist) = engine.RankPartitions(ctx);
                if (self >= 0)
                {
                    int own = partitionOf.TryGetValue(self, out int o) ? o : throw new ArgumentException($"no partition given for row {self}", nameof(partitionOf));
                    RecallCalibrator.LeaveOutOfCentroid(index, own, (selfStored ?? throw new ArgumentNullException(nameof(selfStored))).AsSpan(q * d, d), ctx, ref order, dist);
                }
                ranked[q] = (ctx, order, dist);
            });
            // Family-major, in query order: the replay's order, whichever thread planned which query.
            var slots = new FilteredQuery?[drawn.Count * count];
            Parallel.For(0, slots.Length, new ParallelOptions { CancellationToken = cancellationToken }, i =>
                {
                    int f = i / count, q = i % count;
                    if (drawn[f].Filters[q] is not { } filter) return;
                    var (ctx, order, dist) = ranked[q]!.Value;
                    var estimates = FilterEstimates.Of(filter, manifest);
                    // The planner's value order, with a base-sample query's own row left out of its value centroid too.
                    (int, int, float[])? leaveOut = null;
                    long self = queries.SelfIds?[q] ?? -1;
                    if (self >= 0 && filter.ValueTerm(a => index.Routing.ValueCentroidsOf(a) is not null) is { } term
                        && ownValues[term.Attribute]?[q] is { } own && !double.IsNaN(own))
                        leaveOut = (partitionOf[self], ValueCentroids.SlotOf(attributes.Attributes[term.Attribute], own), selfStored!.AsSpan(q * d, d).ToArray());
                    var keyed = engine.ValueOrder(ctx.Internal, order, dist, filter, leaveOut);
                    var truth = found?[i];
                    slots[i] = new FilteredQuery
                    {
                        Family = f, Query = q, Filter = filter, Self = self, LeftOut = queries.LeftOut?[q], Context = ctx, Internal = ctx.Internal, Order = keyed?.Order ?? order, Dist = dist, Keys = keyed?.Keys ?? dist,
                        Estimates = estimates,
                        Selectivity = estimates.Total / Math.Max(1, manifest.Count),
                        Matches = truth?.Matches ?? new int[index.PartitionCount], Truth = truth?.Truth ?? new TopK(depth),
                        TruthPartition = truth?.TruthPartition ?? new Dictionary<long, int>(2 * TruthMapPrunedAt * depth),
                    };
                });
            return new ByPartition(index, k, drawn, slots.OfType<FilteredQuery>().ToArray()) { QueryCount = count, DenseQueries = dense };
        }

        /// <summary>Whether some filtered query can match partition <paramref name="p"/> (then <see cref="Truth"/> needs it).</summary>
        public bool Wants(int p) => _wanted[p];

        /// <summary>Partition <paramref name="p"/>'s share of every filtered query's exact neighbours; call in ascending partition order.</summary>
        /// <remarks>
        /// Queries go in blocks of neighbours by filter (<see cref="_byPlace"/>, <see cref="Blocks"/>). A block scores the
        /// union of its members' matches four queries against three rows at a time, a tile of rows at a time, so each row
        /// is read from memory once per block. The value families' queries with one value share every match, so their
        /// union is each one's matches; nearly equal ranges make it hardly larger.
        /// </remarks>
        public void Truth(int p, PartitionCodes codes, PartitionVectors vectors, PartitionAttributes attributes, CancellationToken cancellationToken = default)
        {
            var wanting = _byPlace.Where(fq => fq.Estimates.CanMatch[p]).ToArray();
            var blocks = Blocks(wanting);
            int d = _index.Manifest.InternalDimensions;
            int tile = TileRows(d);
            var ids = codes.Ids;
            Parallel.For(0, blocks.Count, new ParallelOptions { CancellationToken = cancellationToken },
                () => _scratch.TryTake(out var kept) ? kept : new TruthScratch(), (b, _, s) =>
            {
                var members = wanting.AsSpan(blocks[b].Start, blocks[b].Count);
                s.Fit(attributes.Count);
                ScoreBlock(p, members, ids, vectors, attributes, tile, d, s);

                // Rows pushed out of the top-K need no partition: the map stays within the capacity it was made with.
                // (Removing while enumerating is allowed: Dictionary.Remove leaves its enumerators valid.)
                foreach (var fq in members)
                    if (fq.TruthPartition is { } map && map.Count > TruthMapPrunedAt * _depth)
                        foreach (long id in map.Keys)
                            if (!fq.Truth.Contains(id)) map.Remove(id);
                return s;
            }, _scratch.Add);
        }

        /// <summary>
        /// One block's share of partition <paramref name="p"/>: every member's matches, and their distances to the members
        /// they match. Optimized from the first call: a build runs it for a second or less, too short for tiered compilation
        /// to replace the unoptimized first version of these loops (bench/recall.md). The query path never calls it.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        internal static void ScoreBlock(int p, ReadOnlySpan<TruthQuery> members, int[] ids, PartitionVectors vectors, PartitionAttributes attributes,
            int tile, int d, TruthScratch s)
        {
            int union = 0;
            for (int i = 0, j; i < members.Length; i = j)
            {
                // Members i … j − 1 hold one filter (one instance): its matches are listed once for all of them.
                var filter = members[i].Filter;
                for (j = i + 1; j < members.Length && ReferenceEquals(members[j].Filter, filter); j++) { }
                int run = (1 << j) - (1 << i);
                // Rows the value index gives exactly need no recheck.
                var (candidates, indexed, exact) = CandidateRows(filter, attributes, ref s.Rows);
                int matched = 0;
                for (int c = 0; c < indexed; c++)
                {
                    int row = candidates[c];
                    if (!exact && !filter.Matches(attributes, row)) continue;
                    matched++;
                    // Listed once, even where the members that matched it so far have all left it out (their own row).
                    if ((s.Members[row] & TruthScratch.Listed) == 0) s.Union[union++] = row;
                    s.Members[row] |= run | TruthScratch.Listed;
                    // A base-sample query's own row is not its match, nor a live-sample query's near-copy.
                    for (int m = i; m < j; m++)
                        if (members[m].Excludes(ids[row]))
                        {
                            s.Members[row] &= ~(1 << m);
                            members[m].Matches[p]--;
                        }
                }
                for (int m = i; m < j; m++) members[m].Matches[p] += matched;
            }

            var scores = s.Scores;
            for (int t0 = 0; t0 < union; t0 += tile)
            {
                int t1 = Math.Min(union, t0 + tile);
                for (int m = 0; m < members.Length; m += 4)
                {
                    // A quad short of four scores its first member in the empty places (never read).
                    var quad = members[m..Math.Min(members.Length, m + 4)];
                    ref float q0 = ref Query(quad, 0);
                    ref float q1 = ref Query(quad, 1);
                    ref float q2 = ref Query(quad, 2);
                    ref float q3 = ref Query(quad, 3);
                    int u = t0;
                    for (; u + 3 <= t1; u += 3)
                    {
                        BlockKernels.Score4x3<BlockKernels.SquaredDifference>(ref q0, ref q1, ref q2, ref q3,
                            ref Row(vectors, s.Union[u]), ref Row(vectors, s.Union[u + 1]), ref Row(vectors, s.Union[u + 2]), d, scores);
                        for (int r = 0; r < 3; r++) Offer(p, quad, m, ids, s.Members[s.Union[u + r]], s.Union[u + r], scores.AsSpan(4 * r, 4));
                    }
                    for (; u < t1; u++)
                    {
                        BlockKernels.Score4x1<BlockKernels.SquaredDifference>(ref q0, ref q1, ref q2, ref q3, ref Row(vectors, s.Union[u]), d, scores);
                        Offer(p, quad, m, ids, s.Members[s.Union[u]], s.Union[u], scores.AsSpan(0, 4));
                    }
                }
            }
            for (int u = 0; u < union; u++) s.Members[s.Union[u]] = 0;
        }

        /// <summary>
        /// Every filtered query's exact neighbours and match count over the partitions <see cref="Truth"/> has seen (after
        /// all of them: what the replay measures against), by family and query number.
        /// </summary>
        public IEnumerable<(int Family, int Query, CompiledFilter Filter, long[] Neighbours, long Matches)> ExactNeighbours() =>
            _queries.Select(fq => (fq.Family, fq.Query, fq.Filter, fq.Truth.ToSortedArray().Select(n => n.Id).ToArray(), fq.Matches.Sum(x => (long)x)));

        /// <summary>Rows per tile of <see cref="ScoreBlock"/>: about 192 KiB, which stays in L2 while every four members of the block score it.</summary>
        internal static int TileRows(int d) => 3 * Math.Max(4, (192 << 10) / (3 * d * sizeof(float)));

        /// <summary>At most this many queries share a block of <see cref="Truth"/> (one bit each in a row's membership).</summary>
        private const int MaxBlock = 16;

        /// <summary>
        /// Consecutive runs of <paramref name="wanting"/> (in <see cref="_byPlace"/> order): queries with one filter (one
        /// compiled instance) share a block of up to <see cref="MaxBlock"/>; a block holds at least four queries where there
        /// are that many, so that a quad of distinct ranges still reads each row once for four.
        /// </summary>
        internal static List<(int Start, int Count)> Blocks(TruthQuery[] wanting)
        {
            var blocks = new List<(int, int)>();
            for (int start = 0; start < wanting.Length;)
            {
                int end = start + 1;
                while (end < wanting.Length && end - start < MaxBlock
                    && (end - start < 4 || ReferenceEquals(wanting[end].Filter, wanting[start].Filter)))
                    end++;
                blocks.Add((start, end - start));
                start = end;
            }
            return blocks;
        }

        private static ref float Row(PartitionVectors vectors, int row) => ref MemoryMarshal.GetReference(vectors.Row(row));

        private static ref float Query(ReadOnlySpan<TruthQuery> quad, int i) =>
            ref MemoryMarshal.GetArrayDataReference(quad[i < quad.Length ? i : 0].Internal);

        /// <summary>One row's distances to the quad's queries it matches (<paramref name="members"/>: its membership in the block, the quad from bit <paramref name="first"/>).</summary>
        private static void Offer(int p, ReadOnlySpan<TruthQuery> quad, int first, int[] ids, int members, int row, ReadOnlySpan<float> scores)
        {
            for (int i = 0; i < quad.Length; i++)
                if ((members & (1 << (first + i))) != 0 && quad[i].Truth.TryAdd(ids[row], scores[i]) && quad[i].TruthPartition is { } where) where[ids[row]] = p;
        }

        /// <summary>One worker's buffers for <see cref="Truth"/>.</summary>
        internal sealed class TruthScratch
        {
            public int[] Rows = [];
            public int[] Union = [];
            /// <summary>Per row of the partition: which of the block's members it matches (bit i: member i) and whether it is in the union (<see cref="Listed"/>); zero between blocks.</summary>
            public int[] Members = [];
            /// <summary>The bit of <see cref="Members"/> that says the row is in the union (above every member's: <see cref="MaxBlock"/>).</summary>
            public const int Listed = 1 << 30;
            public readonly float[] Scores = new float[12];

            public void Fit(int rows)
            {
                if (Members.Length >= rows) return;
                Members = new int[rows];
                Union = new int[rows];
            }
        }

        /// <summary>The rows a filter's exact check looks at, in any order: its index candidates, or every row; and whether they are exactly its matches.</summary>
        internal static (int[] Rows, int Count, bool Exact) CandidateRows(CompiledFilter filter, PartitionAttributes attributes, ref int[] rows)
        {
            if (filter.TryCandidates(attributes, ref rows, out int indexed, ascending: false)) return (rows, indexed, filter.IndexedExactly);
            if (rows.Length < attributes.Count) rows = new int[attributes.Count];
            for (int row = 0; row < attributes.Count; row++) rows[row] = row;
            return (rows, attributes.Count, false);
        }

        /// <summary><see cref="MeasureAsync"/> summed up into the bands at every K (<see cref="Summarise"/>), as <see cref="Calibrate"/> gives them.</summary>
        public async Task<Calibrated?> FinishAsync(
            Func<int, CancellationToken, Task<(PartitionCodes Codes, PartitionVectors Vectors, PartitionAttributes Attributes)>> readPartition,
            CancellationToken cancellationToken = default) =>
            Summarise(await MeasureAsync(readPartition, cancellationToken).ConfigureAwait(false));

        /// <summary>
        /// Plans every query from its match counts, reads each partition some replay scans (ascending, one at a time, the
        /// next read ahead), and replays every plan: each family's measurement.
        /// </summary>
        /// <param name="holdsVectors">
        /// True when every partition <paramref name="readPartition"/> returns stays in memory anyway (an opened index): a
        /// candidate's exact distance is then taken when a replay first re-ranks it (many lie past every plan's threshold).
        /// Else at the read, since the partition is let go after it.
        /// </param>
        public async Task<IReadOnlyList<FamilyMeasurement>> MeasureAsync(
            Func<int, CancellationToken, Task<(PartitionCodes Codes, PartitionVectors Vectors, PartitionAttributes Attributes)>> readPartition,
            CancellationToken cancellationToken = default, bool holdsVectors = false)
        {
            int partitions = _index.PartitionCount;
            int grid = Columns;
            var manifest = _index.Manifest;
            var rerankCandidatesAt = _ks.Select((k, x) => _rerankGrids[x].Select(r => new SearchOptions { K = k, RerankFactor = r }.RerankCandidates).ToArray()).ToArray();
            // 1. Each query's plans at every K from its counts (the engine's planner and passes), and how far its replay scans.
            Parallel.ForEach(_queries, new ParallelOptions { CancellationToken = cancellationToken }, fq =>
            {
                var truth = fq.Truth.ToSortedArray();
                fq.AtK = new KPlans?[_ks.Length];
                if (truth.Length == 0)
                {
                    for (int x = 0; x < _ks.Length; x++) fq.AtK[x] = ReplayedAt(x, fq.Query) ? new KPlans() : null;
                    return;
                }
                var rank = new int[partitions];
                for (int i = 0; i < partitions; i++) rank[fq.Order[i]] = i;
                var matchesBefore = new int[partitions + 1];
                for (int i = 0; i < partitions; i++) matchesBefore[i + 1] = matchesBefore[i] + fq.Matches[fq.Order[i]];
                var est = fq.Estimates.PerPartition;
                var canMatch = fq.Estimates.CanMatch;
                for (int x = 0; x < _ks.Length; x++)
                {
                    if (!ReplayedAt(x, fq.Query)) continue;
                    int k = _ks[x], rs = _rerankGrids[x].Length, target = SearchEngine.TargetOf(manifest, k);
                    var rerankCandidates = rerankCandidatesAt[x];
                    // The top-K truth is the first K of the deepest one's.
                    var at = fq.AtK[x] = new KPlans { TruthIds = truth.Take(k).Select(n => n.Id).ToHashSet(), End = new int[grid * rs], Direct = new bool[grid * rs] };
                    int needed = 0;
                    foreach (long id in at.TruthIds) needed = Math.Max(needed, rank[fq.TruthPartition![id]] + 1);
                    int scanTo = 0;
                    // The anchors are found once per query and K, and the whole grid is planned in one walk down the partitions
                    // per margin: where each plan stops does not depend on R, only whether the direct scan is cheaper does.
                    var anchors = SearchEngine.FilteredAnchors.Of(manifest, fq.Order, fq.Dist, fq.Estimates, k, fq.Keys);
                    if (x == 0) fq.AnchorRatio = anchors.AnchorRatio;
                    if (anchors.FirstMatching < 0) Array.Fill(at.Direct, true);
                    else
                    {
                        // Later passes as the engine hands them out (NextPass), each told how many matches the scans so far hold.
                        int AfterPasses(int cursor, double margin, double cf)
                        {
                            for (int passes = 1; ; passes++)
                            {
                                int results = Math.Min(target, matchesBefore[cursor]);
                                if (results >= target) return cursor;
                                cursor = SearchEngine.WalkPass(fq.Order, fq.Keys, canMatch, est, null, cursor, SearchEngine.PassNeed(margin, target, results, passes),
                                    cf, null, out int handedOut);
                                if (handedOut == 0) return cursor;
                            }
                        }
                        void Walk(IReadOnlyList<double> cfs, double margin, int firstColumn)
                        {
                            int g = firstColumn;
                            SearchEngine.WalkFiltered(manifest, anchors, cfs, margin, k, exact: false, rerankCandidates, null, (cursor, planCost) =>
                            {
                                int end = -1;
                                for (int r = 0; r < rs; r++)
                                {
                                    int j = r * grid + g;
                                    if (anchors.DirectCost <= planCost[r]) { at.Direct[j] = true; continue; }
                                    if (end < 0) end = AfterPasses(cursor, margin, cfs[g - firstColumn]);
                                    at.End[j] = end;
                                    scanTo = Math.Max(scanTo, end);
                                }
                                g++;
                            });
                        }
                        Walk(RecallCalibrator.CentroidFactors, SearchOptions.DefaultFilterMargin, 0);
                        for (int e = 0; e < ExtraFilterMargins.Length; e++) Walk([Column(RecallCalibrator.CentroidFactors.Length + e).CentroidFactor],
                            ExtraFilterMargins[e], RecallCalibrator.CentroidFactors.Length + e);
                    }
                    at.ScanTo = Math.Min(scanTo, Math.Max(needed, 1));
                }
            });

            // 2. Each partition some replay scans, read once: every such query's candidates there.
            var visitors = new List<FilteredQuery>?[partitions];
            foreach (var fq in _queries)
            {
                // As far down the order as the deepest K's replay scans.
                int scanTo = fq.AtK.Max(at => at?.ScanTo ?? 0);
                for (int c = 0; c < scanTo; c++)
                {
                    int p = fq.Order[c];
                    if (!fq.Estimates.CanMatch[p]) continue;
                    (visitors[p] ??= []).Add(fq);
                    int length = 0;
                    for (int x = 0; x < _ks.Length; x++)
                        if (fq.AtK[x] is { } at && c < at.ScanTo) length = Math.Max(length, _listLengths[x]);
                    fq.ListLength[p] = length;
                }
            }
            var wanted = Enumerable.Range(0, partitions).Where(p => visitors[p] is not null).ToArray();
            int collectK = _ks.Max(), collectR = (_listLengths.Max() + collectK - 1) / collectK;
            var next = wanted.Length > 0 ? readPartition(wanted[0], cancellationToken) : null;
            for (int w = 0; w < wanted.Length; w++)
            {
                var (codes, vectors, attributes) = await next!.ConfigureAwait(false);
                next = w + 1 < wanted.Length ? readPartition(wanted[w + 1], cancellationToken) : null;
                int p = wanted[w];
                Parallel.ForEach(visitors[p]!, new ParallelOptions { CancellationToken = cancellationToken },
                    () => (new PartitionScanner(), new List<(float Bound, int Row)>(), Array.Empty<int>(), Array.Empty<bool>()), (fq, _, local) =>
                    {
                        var (scanner, candidates, rows, examined) = local;
                        // A row counts only if the exact check looked at it, matched, and is not the query itself (nor its near-copy).
                        var (checkedRows, indexed, _) = CandidateRows(fq.Filter, attributes, ref rows);
                        if (examined.Length < attributes.Count) examined = new bool[attributes.Count];
                        Array.Clear(examined, 0, attributes.Count);
                        for (int c = 0; c < indexed; c++) examined[checkedRows[c]] = true;
                        candidates.Clear();
                        // Collected as the deepest K would (K·R a little past the longest list: the query's own row and near-copies take
                        // places and are dropped, as are rows the exact check rejects), and kept as deep as this partition's K need.
                        int length = fq.ListLength[p];
                        bool every = scanner.CollectFilteredCandidates(fq.Context, codes, attributes,
                            new SearchOptions { K = collectK + 1 + (fq.LeftOut?.Length ?? 0), RerankFactor = collectR, CentroidFactor = 1, Filter = fq.Filter }, candidates);
                        var kept = new List<(float, long, float)>();
                        var keptRows = holdsVectors ? new List<int>() : null;
                        foreach (var (bound, row) in candidates)
                        {
                            if (!examined[row] || fq.Excludes(codes.Ids[row]) || !fq.Filter.Matches(attributes, row)) continue;
                            kept.Add((bound, codes.Ids[row], holdsVectors ? float.NaN : SquaredL2.Distance(fq.Context.Internal, vectors.Row(row))));
                            keptRows?.Add(row);
                            if (!every && kept.Count == length) break;
                        }
                        lock (fq.Candidates) fq.Candidates[p] = (every, kept.ToArray(), keptRows?.ToArray(), holdsVectors ? vectors : null);
                        return (scanner, candidates, rows, examined);
                    }, _ => { });
            }

            // 3. Every query's plans replayed from its lists.
            var measured = new List<FamilyMeasurement>();
            int m = _index.Manifest.GlobalDimensions, d = _index.Manifest.InternalDimensions;
            for (int f = 0; f < _families.Count; f++)
            {
                var recall = _rerankGrids.Select(rerank => new double[QueryCount, grid * rerank.Length]).ToArray();
                var cost = _rerankGrids.Select(rerank => new double[QueryCount, grid * rerank.Length]).ToArray();
                var selectivity = new double[QueryCount];
                var ratio = new double[QueryCount];
                Array.Fill(selectivity, double.NaN);
                Parallel.ForEach(_queries.Where(fq => fq.Family == f), new ParallelOptions { CancellationToken = cancellationToken }, fq =>
                {
                    selectivity[fq.Query] = fq.Selectivity;
                    ratio[fq.Query] = fq.AnchorRatio;
                    for (int x = 0; x < _ks.Length; x++)
                        if (fq.AtK[x] is not null) Replay(fq, x, recall[x], cost[x], m, d);
                    fq.Candidates.Clear();
                });
                measured.Add(new FamilyMeasurement(_families[f].Name, _families[f].Filters, selectivity, recall[0], cost[0])
                {
                    AnchorRatio = ratio,
                    ByK = _ks.Length == 1 ? null : Enumerable.Range(1, _ks.Length - 1)
                        .Select(x => new KMeasurement(_ks[x], _rerankGrids[x], recall[x], cost[x], _ks[x] <= _k ? QueryCount : DenseQueries)).ToArray(),
                });
            }
            return measured;
        }

        /// <summary>One query's scan in centroid order over its candidate lists, and every plan's recall@K and cost read off it, at K = <see cref="_ks"/>[<paramref name="x"/>].</summary>
        private void Replay(FilteredQuery fq, int x, double[,] recall, double[,] cost, int m, int d)
        {
            int q = fq.Query, k = _ks[x];
            var rerank = _rerankGrids[x];
            int grid = Columns, rs = rerank.Length;
            var manifest = _index.Manifest;
            var plans = fq.AtK[x]!;
            if (plans.TruthIds.Count == 0)
            {
                for (int j = 0; j < grid * rs; j++) recall[q, j] = 1;
                return;
            }
            // As in the unfiltered replay, recall and re-rank cost are tracked over the scanned prefix only: they stay put past it.
            int scanned = plans.ScanTo, deepest = scanned;
            for (int j = 0; j < grid * rs; j++) if (!plans.Direct[j]) deepest = Math.Max(deepest, plans.End[j]);
            var tops = new TopK[rs];
            for (int r = 0; r < rs; r++) tops[r] = new TopK(k);
            var hits = new int[rs];
            var recallAt = new double[rs * (scanned + 1)];
            var rerankCostAt = new double[rs * (scanned + 1)];
            var visitCostAt = new double[deepest + 1];
            for (int c = 0; c < deepest; c++)
                visitCostAt[c + 1] = visitCostAt[c] + (fq.Estimates.CanMatch[fq.Order[c]] ? RecallCalibrator.VisitBytes(manifest.Partitions[fq.Order[c]], m) : 0);
            for (int c = 0; c < scanned; c++)
            {
                int part = fq.Order[c];
                for (int r = 0; r < rs; r++)
                {
                    int at = r * (scanned + 1) + c + 1;
                    if (!fq.Estimates.CanMatch[part])
                    {
                        recallAt[at] = recallAt[at - 1];
                        rerankCostAt[at] = rerankCostAt[at - 1];
                        continue;
                    }
                    var (every, list, rows, vectors) = fq.Candidates[part];
                    var top = tops[r];
                    int take = every ? list.Length : Math.Min(list.Length, k * rerank[r]);
                    long reranked = 0;
                    for (int i = 0; i < take; i++)
                    {
                        var (bound, id, distance) = list[i];
                        if (!every && bound > top.Threshold * (1 + PartitionScanner.Slack)) break;
                        if (float.IsNaN(distance)) list[i] = (bound, id, distance = SquaredL2.Distance(fq.Context.Internal, vectors!.Row(rows![i])));
                        reranked++;
                        hits[r] += RecallCalibrator.HitsChange(top, plans.TruthIds, id, distance);
                    }
                    rerankCostAt[at] = rerankCostAt[at - 1] + reranked * RecallCalibrator.RerankBytes(d);
                    recallAt[at] = hits[r] / (double)plans.TruthIds.Count;
                }
            }
            double directCost = fq.Estimates.Total * 4.0 * d;
            for (int r = 0; r < rs; r++)
                for (int g = 0; g < grid; g++)
                {
                    int j = r * grid + g;
                    if (plans.Direct[j])
                    {
                        recall[q, j] = 1;
                        cost[q, j] = directCost;
                        continue;
                    }
                    int at = r * (scanned + 1) + Math.Min(plans.End[j], scanned);
                    recall[q, j] = recallAt[at];
                    cost[q, j] = visitCostAt[plans.End[j]] + rerankCostAt[at];
                }
        }
    }
}
