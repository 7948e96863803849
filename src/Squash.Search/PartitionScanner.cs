using System.Numerics.Tensors;
using Squash.Core.Bounds;
using Squash.Core.Collections;
using Squash.Core.Kernels;
using Squash.Core.Quantization;
using Squash.Index.Model;

namespace Squash.Search;

/// <summary>
/// Scans one partition for one query — the unit of work that a function invocation runs:
/// sign-code Hamming prune → lower bounds with progressive pruning → exact re-rank, feeding a shared
/// top-k whose threshold tightens as partitions are scanned.
/// Not thread-safe: one scanner per thread (it owns its scratch buffers).
/// </summary>
public sealed class PartitionScanner
{
    /// <summary>Relative slack on bound comparisons so float rounding can never prune a true neighbour.</summary>
    internal const float Slack = 1e-5f;
    /// <summary>The value index replaces the code pass when it gives at most 1/this of the partition's rows.</summary>
    private const int IndexedShare = 4;

    private float[] _u = [];
    private float[] _z = [];
    private ulong[] _querySigns = [];
    private ushort[] _hamming = [];
    private int[] _order = [];
    private float[] _table = [];
    private byte[] _filterCodes = [];
    private int[] _candidates = [];
    private readonly BoundHeap _heap = new(16);
    /// <summary>Scratch for <see cref="CollectRerankRows"/> (a scanner serves one thread).</summary>
    private readonly List<(float Bound, int Row)> _collected = [];

    /// <summary>
    /// With a filter (<see cref="SearchOptions.Filter"/>), rows the code-level pass rejects never reach the Hamming
    /// or lower-bound stages, and a row whose codes only say "maybe" is rechecked on raw values before it may
    /// enter the re-rank heap, so neither the heap's K·R slots nor the answer ever hold a violator.
    /// </summary>
    public void Scan(QueryContext query, PartitionCodes codes, PartitionVectors vectors, PartitionAttributes? attributes, TopK top, SearchOptions options, QueryStats stats) =>
        ScanOrCollect(query, codes, vectors, attributes, top, options, stats, collect: null);

    /// <summary>
    /// The rows <see cref="Scan"/> could re-rank in this partition, found by running its filter, Hamming and
    /// lower-bound stages with no running threshold (a fresh top-k): at most K·R rows picked by lower bound, or
    /// the matching rows of a filtered partition scanned exactly. A later Scan with any threshold re-ranks a
    /// subset of them — the rows that survive a tighter bar are a prefix, in (bound, row) order, of those that
    /// survive no bar — so a cold reader can fetch exactly these rows before scanning.
    /// </summary>
    public void CollectRerankRows(QueryContext query, PartitionCodes codes, PartitionAttributes? attributes, SearchOptions options, List<int> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        _collected.Clear();
        ScanOrCollect(query, codes, null, attributes, new TopK(Math.Max(1, options.K)), options, new QueryStats(), _collected);
        foreach (var (_, row) in _collected) rows.Add(row);
    }

    /// <summary>
    /// <see cref="CollectRerankRows"/> with each row's lower bound (internal squared distance), in ascending
    /// (bound, row) order, unfiltered: what recall calibration replays for every re-rank factor up to options.R at once.
    /// </summary>
    public void CollectRerankCandidates(QueryContext query, PartitionCodes codes, SearchOptions options, List<(float Bound, int Row)> candidates)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        if (options.Filter is { MatchesAll: false }) throw new ArgumentException("candidates are collected without a filter", nameof(options));
        ScanOrCollect(query, codes, null, null, new TopK(Math.Max(1, options.K)), options, new QueryStats(), candidates);
    }

    /// <summary>
    /// <see cref="CollectRerankCandidates"/> for a filtered scan: the matching rows Scan could re-rank, by lower bound.
    /// True when the partition holds so few candidates that Scan takes an exact distance for each (no K·R cap): the
    /// rows are then listed with bound 0 and are not yet rechecked against the filter.
    /// </summary>
    public bool CollectFilteredCandidates(QueryContext query, PartitionCodes codes, PartitionAttributes attributes, SearchOptions options,
        List<(float Bound, int Row)> candidates)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        _collectedEveryCandidate = false;
        ScanOrCollect(query, codes, null, attributes, new TopK(Math.Max(1, options.K)), options, new QueryStats(), candidates);
        return _collectedEveryCandidate;
    }

    private bool _collectedEveryCandidate;

    /// <summary>Scan when <paramref name="collect"/> is null; otherwise stops before the re-rank and lists its candidate rows.</summary>
    private void ScanOrCollect(QueryContext query, PartitionCodes codes, PartitionVectors? vectors, PartitionAttributes? attributes, TopK top, SearchOptions options,
        QueryStats stats, List<(float Bound, int Row)>? collect)
    {
        int n = codes.Count, md = codes.CodedDimensions, m = codes.GlobalDimensions;
        stats.PartitionsScanned++;
        stats.VectorsConsidered += n;
        if (n == 0) return;
        EnsureCapacity(m, md, n, codes.SignWords);

        var filter = options.Filter is { MatchesAll: false } f ? f : null;
        var excluded = options.Excluded is { Count: > 0 } x ? x : null;
        // Candidates are restricted to a list (and filterCodes says who is in) under a filter or an exclusion.
        bool restricted = filter is not null || excluded is not null;
        int candidates = n;
        var filterCodes = _filterCodes.AsSpan(0, n);
        if (filter is null && excluded is not null)
        {
            candidates = 0;
            for (int i = 0; i < n; i++)
            {
                bool live = !excluded.Contains(codes.Ids[i]);
                filterCodes[i] = live ? Filters.FilterNode.True : (byte)0;
                if (live) _candidates[candidates++] = i;
            }
            stats.ExcludedRows += n - candidates;
            if (candidates == 0) return;
        }
        if (filter is not null)
        {
            if (attributes is null) throw new InvalidOperationException("a filtered scan needs the partition's attributes");
            // A selective filter finds its rows in the value index (binary searches); every one is then rechecked.
            bool indexed = filter.TryCandidates(attributes, ref _candidates, out candidates, n / IndexedShare);
            if (indexed)
            {
                if (candidates == 0) { stats.FilterRejected += n; return; }
                // Codes are only needed past the few-candidates shortcut below (every indexed row is rechecked).
                if ((long)candidates * query.Internal.Length > (long)md * m)
                {
                    filterCodes.Clear();
                    for (int c = 0; c < candidates; c++) filterCodes[_candidates[c]] = Filters.FilterNode.Maybe;
                }
            }
            else
            {
                filter.EvaluateCodes(attributes, filterCodes);
                candidates = 0;
                for (int i = 0; i < n; i++) if (filterCodes[i] != 0) _candidates[candidates++] = i;
            }
            stats.FilterRejected += n - candidates;
            if (excluded is not null)
            {
                bool coded = !indexed || (long)candidates * query.Internal.Length > (long)md * m;
                candidates = Exclude(codes, excluded, candidates, coded ? filterCodes : default, stats);
            }
            if (candidates == 0) return;
            // Few matches (a partition holding stragglers of a filter): exact distances on them cost less than
            // rotating the query into this partition's frame (m_p × m multiply-adds) before any bound is known.
            if ((long)candidates * query.Internal.Length <= (long)md * m)
            {
                if (collect is not null)
                {
                    _collectedEveryCandidate = true;
                    for (int c = 0; c < candidates; c++) collect.Add((0, _candidates[c]));
                    return;
                }
                ScanCandidatesExactly(query, codes, vectors!, attributes, filter, indexed ? default : filterCodes, indexed && filter.IndexedExactly, candidates, top, stats);
                return;
            }
        }

        if (_table.Length < codes.Boundaries.Length) _table = new float[codes.Boundaries.Length];
        var z = _z.AsSpan(0, md);
        float eq = ProjectQuery(query, codes, _u.AsSpan(0, m), z, out double queryMagnitude);
        // Rounding allowances of the residual term (ResidualRounding): the query's once, each row's from the partition's bound.
        double roundingUnit = ResidualRoundingUnit(query, codes);
        float eqRounding = (float)ResidualRounding(eq, roundingUnit * queryMagnitude);
        double rowSquaredError = roundingUnit * codes.MagnitudeBound;
        float rowRoundingMost = (float)Math.Sqrt(rowSquaredError), rowSquaredErrorF = (float)rowSquaredError;

        // Level 1: sign-code Hamming prune, keeping the closest H% (at least K·R), closest first.
        int keep = candidates;
        var order = _order.AsSpan(0, n);
        bool prune = !options.Exact && options.HammingKeepPercent < 100;
        if (prune)
        {
            keep = Math.Min(candidates, Math.Max((int)Math.Ceiling(options.HammingKeepPercent / 100.0 * candidates), options.RerankCandidates));
            var qs = _querySigns.AsSpan(0, codes.SignWords);
            SignCodes.Encode(z, qs);
            var ham = _hamming.AsSpan(0, n);
            int words = Math.Min(codes.SignWords, (options.HammingBits + 63) / 64);
            HammingPrefix(qs[..words], codes.Signs, codes.SignWords, n, ham);
            // Filtered-out rows get a distance past every real one, so the selection never reaches them (keep ≤ candidates).
            if (restricted)
                for (int i = 0; i < n; i++) if (filterCodes[i] == 0) ham[i] = (ushort)(words * 64 + 1);
            keep = SelectInStorageOrder(ham, keep, words * 64 + 1, order);
            stats.BytesTouched += (long)n * words * 8;
        }
        else if (restricted)
        {
            _candidates.AsSpan(0, candidates).CopyTo(order);
        }
        else
        {
            for (int i = 0; i < n; i++) order[i] = i;
        }
        stats.AfterHamming += keep;

        // Certification: the smallest lower bound of a candidate row passed over without an exact distance. A row
        // the Hamming prune drops has no bound but 0; rows the filter rejects are no candidates.
        float skipped = keep < candidates ? 0 : float.PositiveInfinity;

        // Level 2: lower bounds, abandoned as soon as they pass the current bar.
        int capacity = options.Exact ? int.MaxValue : options.RerankCandidates;
        _heap.Reset(capacity);
        var offsets = codes.BoundaryOffsets.AsSpan();
        var table = _table.AsSpan(0, codes.Boundaries.Length);
        LowerBoundTable.Build(z, codes.Boundaries, offsets, table);
        var residual = codes.ResidualNorms;
        long completed = 0;
        float codeBytes = codes.BitsPerVector / 8f;
        for (int c = 0; c < keep; c++)
        {
            int row = order[c];
            float bar = top.Threshold;
            if (_heap.IsFull) bar = Math.Min(bar, _heap.Max);
            bar *= 1 + Slack;
            float ex = residual[row];
            float r = Math.Abs(ex - eq) - Slack * (ex + eq) - eqRounding - Math.Min(rowRoundingMost, rowSquaredErrorF / ex);
            float start = r > 0 ? r * r : 0;
            if (start > bar) { skipped = Math.Min(skipped, start); continue; }
            float lb = LowerBoundTable.LowerBound(codes.Cells.AsSpan(row * md, md), table, offsets, start, bar);
            // An abandoned sum comes back as +∞; all that is known then is that the bound passed the bar.
            if (lb > bar) { skipped = Math.Min(skipped, float.IsPositiveInfinity(lb) ? bar : lb); continue; }
            if (filter is not null && filterCodes[row] != 2)
            {
                stats.FilterRechecked++;
                if (!filter.Matches(attributes!, row)) { stats.FilterRecheckRejected++; continue; }
            }
            completed++;
            // A full heap drops the larger of the newcomer and its maximum (the K·R cap).
            if (_heap.IsFull) skipped = Math.Min(skipped, Math.Max(lb, _heap.Max));
            _heap.Push(lb, row);
        }
        stats.AfterLowerBound += completed;
        stats.BytesTouched += (long)(keep * codeBytes);

        if (collect is not null)
        {
            foreach (var (bound, row) in _heap.SortAscending()) collect.Add((bound, row));
            return;
        }

        // Level 3: exact distances in lower-bound order until the bound passes the k-th best.
        var internalQuery = query.Internal.AsSpan();
        int d = vectors!.Dimensions;
        foreach (var (bound, row) in _heap.SortAscending())
        {
            float threshold = top.Threshold;
            if (bound > threshold * (1 + Slack)) { skipped = Math.Min(skipped, bound); break; }
            float dist = SquaredL2Bounded.Distance(internalQuery, vectors.Row(row), threshold);
            stats.Reranked++;
            stats.BytesTouched += d * sizeof(float);
            if (dist <= threshold) top.TryAdd(codes.Ids[row], dist);
        }
        stats.NoteSkipped(skipped);
    }

    /// <summary>
    /// The direct strategy on one partition: exact distances to every row that passes the filter (codes first, then
    /// the exact recheck where the codes only say "maybe"); no query rotation, bounds or re-rank cap, so the
    /// partition contributes exactly its nearest matches.
    /// </summary>
    public void ScanMatching(QueryContext query, PartitionCodes codes, PartitionVectors vectors, PartitionAttributes? attributes,
        Filters.CompiledFilter filter, TopK top, QueryStats stats, SearchOptions? options = null)
    {
        if (attributes is null) throw new InvalidOperationException("a filtered scan needs the partition's attributes");
        int n = attributes.Count;
        stats.PartitionsScanned++;
        stats.VectorsConsidered += n;
        var excluded = options?.Excluded is { Count: > 0 } x ? x : null;
        if (filter.TryCandidates(attributes, ref _candidates, out int candidates))
        {
            stats.FilterRejected += n - candidates;
            if (excluded is not null) candidates = Exclude(codes, excluded, candidates, default, stats);
            ExactDistances(query, codes, vectors, attributes, filter, default, filter.IndexedExactly, candidates, top, stats);
            return;
        }
        if (_filterCodes.Length < n) _filterCodes = new byte[n];
        if (_candidates.Length < n) _candidates = new int[n];
        var filterCodes = _filterCodes.AsSpan(0, n);
        filter.EvaluateCodes(attributes, filterCodes);
        candidates = 0;
        for (int row = 0; row < n; row++) if (filterCodes[row] != 0) _candidates[candidates++] = row;
        stats.FilterRejected += n - candidates;
        if (excluded is not null) candidates = Exclude(codes, excluded, candidates, filterCodes, stats);
        ExactDistances(query, codes, vectors, attributes, filter, filterCodes, false, candidates, top, stats);
    }

    /// <summary>
    /// Drops excluded rows from the first <paramref name="candidates"/> of the candidate list (and marks them out in
    /// <paramref name="filterCodes"/> when the scan reads it); returns how many remain.
    /// </summary>
    private int Exclude(PartitionCodes codes, IReadOnlySet<long> excluded, int candidates, Span<byte> filterCodes, QueryStats stats)
    {
        int kept = 0;
        for (int c = 0; c < candidates; c++)
        {
            int row = _candidates[c];
            if (excluded.Contains(codes.Ids[row]))
            {
                if (!filterCodes.IsEmpty) filterCodes[row] = 0;
                continue;
            }
            _candidates[kept++] = row;
        }
        stats.ExcludedRows += candidates - kept;
        return kept;
    }

    /// <summary>
    /// Exact distances on the candidates: those the codes call sure matches and, with <paramref name="exact"/>, all
    /// (the value index gave exactly the matches) skip the recheck; empty <paramref name="filterCodes"/>: recheck the rest.
    /// </summary>
    private void ScanCandidatesExactly(QueryContext query, PartitionCodes codes, PartitionVectors vectors, PartitionAttributes attributes,
        Filters.CompiledFilter filter, ReadOnlySpan<byte> filterCodes, bool exact, int candidates, TopK top, QueryStats stats)
    {
        stats.AfterHamming += candidates;
        ExactDistances(query, codes, vectors, attributes, filter, filterCodes, exact, candidates, top, stats);
    }

    /// <summary>Exact distance to each of the first <paramref name="candidates"/> rows of the candidate list, rechecking the filter where needed (see above).</summary>
    private void ExactDistances(QueryContext query, PartitionCodes codes, PartitionVectors vectors, PartitionAttributes attributes,
        Filters.CompiledFilter filter, ReadOnlySpan<byte> filterCodes, bool exact, int candidates, TopK top, QueryStats stats)
    {
        var q = query.Internal.AsSpan();
        int d = vectors.Dimensions;
        for (int c = 0; c < candidates; c++)
        {
            int row = _candidates[c];
            if (!exact && (filterCodes.IsEmpty || filterCodes[row] != Filters.FilterNode.True))
            {
                stats.FilterRechecked++;
                if (!filter.Matches(attributes, row)) { stats.FilterRecheckRejected++; continue; }
            }
            float threshold = top.Threshold;
            float dist = SquaredL2Bounded.Distance(q, vectors.Row(row), threshold);
            stats.Reranked++;
            stats.BytesTouched += d * sizeof(float);
            if (dist <= threshold) top.TryAdd(codes.Ids[row], dist);
        }
    }

    /// <summary>
    /// The query in the partition's KLT frame, z = V_p (q_g − μ_p), and the norm ‖e_q‖ of everything
    /// outside it (the rest of the global subspace plus the global residual).
    /// </summary>
    public static float ProjectQuery(QueryContext query, PartitionCodes codes, Span<float> u, Span<float> z) => ProjectQuery(query, codes, u, z, out _);

    /// <summary><see cref="ProjectQuery(QueryContext, PartitionCodes, Span{float}, Span{float})"/>, with the sums ‖e_q‖² was computed from by subtraction (‖q − μ_g‖² + ‖u‖²).</summary>
    public static float ProjectQuery(QueryContext query, PartitionCodes codes, Span<float> u, Span<float> z, out double magnitude)
    {
        int m = codes.GlobalDimensions, md = codes.CodedDimensions;
        double uNorm = 0;
        for (int j = 0; j < m; j++) { float v = query.Global[j] - codes.Mean[j]; u[j] = v; uNorm += (double)v * v; }
        double zNorm = 0;
        for (int i = 0; i < md; i++)
        {
            float v = TensorPrimitives.Dot(codes.Rotation.AsSpan(i * m, m), u[..m]);
            z[i] = v;
            zNorm += (double)v * v;
        }
        magnitude = query.CenteredSquaredNorm + uNorm;
        return (float)Math.Sqrt(Math.Max(0, query.OutsideGlobal + uNorm - zNorm));
    }

    /// <summary>
    /// The rounding of a squared residual norm (‖e_q‖² or ‖e_x‖²) relative to the sums it was computed from by subtraction,
    /// per dimension of the two projections (internal → global → partition) whose float dot products feed it: 4 units of
    /// float rounding, well above what is observed (~0.4 × the sums for 7 + 7 dimensions).
    /// </summary>
    internal const double ResidualRoundingPerDimension = 1.0 / (1 << 22);

    /// <summary>
    /// How far a residual norm computed as √(difference of sums) may be from the true one, given the bound
    /// <paramref name="squaredError"/> on its square's rounding: |ê − e| ≤ min(√Δ, Δ / ê). Where ‖e‖ is small beside the
    /// sums (a row or query far from the partition's mean, nearly all of it coded) this is ~√ε × their size, far past the
    /// relative <see cref="Slack"/>: without it, a near-copy's bound passed its true distance and a wrong answer was certified.
    /// </summary>
    internal static double ResidualRounding(double norm, double squaredError) =>
        Math.Min(Math.Sqrt(squaredError), norm > 0 ? squaredError / norm : double.PositiveInfinity);

    /// <summary>Δ per unit of the sums: <see cref="ResidualRoundingPerDimension"/> × (internal + global dimensions).</summary>
    private static double ResidualRoundingUnit(QueryContext query, PartitionCodes codes) =>
        ResidualRoundingPerDimension * (query.Internal.Length + codes.GlobalDimensions);

    /// <summary>Squared lower and upper distance bounds for one stored vector (diagnostics and tests).</summary>
    public static (double Lower, double Upper) Bounds(QueryContext query, PartitionCodes codes, int row)
    {
        var u = new float[codes.GlobalDimensions];
        var z = new float[codes.CodedDimensions];
        double eq = ProjectQuery(query, codes, u, z, out double queryMagnitude);
        int md = codes.CodedDimensions;
        var cells = codes.Cells.AsSpan(row * md, md);
        double ex = codes.ResidualNorms[row];
        double unit = ResidualRoundingUnit(query, codes);
        double rounding = ResidualRounding(eq, unit * queryMagnitude) + ResidualRounding(ex, unit * codes.MagnitudeBound);
        double gap = Math.Max(0, Math.Abs(ex - eq) - rounding);
        double lower = CellBounds.LowerBoundReference(z, cells, codes.Boundaries, codes.BoundaryOffsets) + gap * gap;
        double upper = CellBounds.UpperBound(z, cells, codes.Boundaries, codes.BoundaryOffsets) + (ex + eq + rounding) * (ex + eq + rounding);
        return (lower, upper);
    }

    /// <summary>
    /// The <paramref name="keep"/> rows with the smallest Hamming distances (ties: lower row first), listed in
    /// storage order: the lower-bound pass then reads the cell rows sequentially, which beats visiting them
    /// closest-first (bench/README.md), and a histogram over 0..maxDistance avoids sorting.
    /// </summary>
    private static int SelectInStorageOrder(ReadOnlySpan<ushort> distances, int keep, int maxDistance, Span<int> rows)
    {
        Span<int> histogram = stackalloc int[maxDistance + 1];
        histogram.Clear();
        foreach (ushort h in distances) histogram[h]++;
        int threshold = 0, below = 0;
        while (below + histogram[threshold] < keep) below += histogram[threshold++];
        int ties = keep - below, count = 0;
        for (int i = 0; i < distances.Length; i++)
        {
            int h = distances[i];
            if (h < threshold || (h == threshold && ties-- > 0)) rows[count++] = i;
        }
        return count;
    }

    /// <summary>Hamming distance over the first query.Length words of rows that are <paramref name="stride"/> words long.</summary>
    private static void HammingPrefix(ReadOnlySpan<ulong> query, ReadOnlySpan<ulong> codes, int stride, int count, Span<ushort> distances)
    {
        int words = query.Length;
        if (words == stride)
        {
            SignCodes.HammingMany(query, codes, count, distances);
            return;
        }
        if (words == 1)
        {
            ulong q0 = query[0];
            for (int i = 0, o = 0; i < count; i++, o += stride)
                distances[i] = (ushort)System.Numerics.BitOperations.PopCount(q0 ^ codes[o]);
            return;
        }
        if (words == 2)
        {
            ulong q0 = query[0], q1 = query[1];
            for (int i = 0, o = 0; i < count; i++, o += stride)
                distances[i] = (ushort)(System.Numerics.BitOperations.PopCount(q0 ^ codes[o]) + System.Numerics.BitOperations.PopCount(q1 ^ codes[o + 1]));
            return;
        }
        for (int i = 0, o = 0; i < count; i++, o += stride)
        {
            int h = 0;
            for (int w = 0; w < words; w++) h += System.Numerics.BitOperations.PopCount(query[w] ^ codes[o + w]);
            distances[i] = (ushort)h;
        }
    }

    private void EnsureCapacity(int m, int md, int n, int words)
    {
        if (_u.Length < m) _u = new float[m];
        if (_z.Length < md) _z = new float[md];
        if (_querySigns.Length < words) _querySigns = new ulong[words];
        if (_hamming.Length < n) _hamming = new ushort[n];
        if (_order.Length < n) _order = new int[n];
        if (_filterCodes.Length < n) _filterCodes = new byte[n];
        if (_candidates.Length < n) _candidates = new int[n];
    }
}
