using Squash.Core.Quantization;

namespace Squash.Index.Attributes;

/// <summary>
/// Index-wide description of one attribute in the manifest: its type, and what the code-level filter needs
/// to compile a predicate without touching per-vector data.
/// <para>number/integer: code c (0..cells−1) is the cell with b_c ≤ v &lt; b_{c+1} (clamped at both ends);
/// <see cref="CellMin"/>/<see cref="CellMax"/> are the smallest and largest stored value in each cell, so a
/// cell lying wholly inside or outside a range is decided without the exact recheck.
/// category/tags: <see cref="Values"/> is the dictionary (code = position).</para>
/// </summary>
public sealed record AttributeInfo
{
    public required string Name { get; init; }
    public required AttributeType Type { get; init; }
    public double[]? Boundaries { get; init; }
    public double[]? CellMin { get; init; }
    public double[]? CellMax { get; init; }
    /// <summary>Vectors per cell over the whole index (empty cells can never match).</summary>
    public long[]? CellCounts { get; init; }
    /// <summary>
    /// True when some integer is beyond ±2^53, where doubles lose integers: the code-level filter then never
    /// decides a comparison by cell range and leaves it to the exact recheck.
    /// </summary>
    public bool Lossy { get; init; }
    public string[]? Values { get; init; }

    public int Cells => Boundaries is null ? 0 : Boundaries.Length - 1;
}

/// <summary>The attribute part of a manifest: schema, encoders and whether vectors have string ids.</summary>
public sealed record IndexAttributes
{
    public required IReadOnlyList<AttributeInfo> Attributes { get; init; }
    public bool HasIds { get; init; }

    public int IndexOf(string name)
    {
        for (int i = 0; i < Attributes.Count; i++) if (Attributes[i].Name == name) return i;
        return -1;
    }
}

/// <summary>
/// Per-partition, per-attribute counts for the planner: how many vectors carry each code (number cells,
/// bool 0/1, category and tag ids; sparse, ascending codes) and how many have no value.
/// </summary>
public sealed record AttributeStats
{
    public required int Missing { get; init; }
    public required int[] Codes { get; init; }
    public required int[] Counts { get; init; }

    private long[]? _cumulative;

    /// <summary>
    /// Vectors whose code lies in [from, to]: two binary searches over the ascending codes and cumulative counts,
    /// so a range filter's estimate costs O(log cells) per partition instead of a pass over every cell.
    /// </summary>
    public long CountInRange(int from, int to)
    {
        if (to < from) return 0;
        var cumulative = _cumulative ?? BuildCumulative();
        return cumulative[LowerBound(Codes, to + 1)] - cumulative[LowerBound(Codes, from)];
    }

    /// <summary>Vectors with this code.</summary>
    public long CountOf(int code)
    {
        int i = Array.BinarySearch(Codes, code);
        return i >= 0 ? Counts[i] : 0;
    }

    private long[] BuildCumulative()
    {
        var c = new long[Codes.Length + 1];
        for (int i = 0; i < Counts.Length; i++) c[i + 1] = c[i] + Counts[i];
        return _cumulative = c; // a race only computes the same array twice
    }

    private static int LowerBound(int[] sorted, int value)
    {
        int lo = 0, hi = sorted.Length;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (sorted[mid] < value) lo = mid + 1; else hi = mid;
        }
        return lo;
    }
}

/// <summary>Fits the index-wide encoders and encodes partitions.</summary>
public static class AttributeEncoding
{
    /// <summary>The byte code of a missing number, integer or bool (so numbers get at most 255 cells).</summary>
    public const byte MissingCode = 255;
    public const int MaxCells = 255;
    private const double ExactIntegerLimit = 9007199254740992d; // 2^53

    public static IndexAttributes Fit(AttributeTable table)
    {
        var infos = new AttributeInfo[table.Columns.Length];
        for (int a = 0; a < infos.Length; a++)
        {
            var col = table.Columns[a];
            var def = col.Definition;
            if (def.Type is AttributeType.Number or AttributeType.Integer)
            {
                var values = new List<double>();
                bool lossy = false;
                for (int r = 0; r < col.Count; r++)
                {
                    if (!col.IsPresent(r)) continue;
                    double v = col.Numbers is not null ? col.Numbers[r] : col.Integers![r];
                    lossy |= col.Integers is not null && Math.Abs(v) >= ExactIntegerLimit;
                    values.Add(v);
                }
                var sorted = values.ToArray();
                Array.Sort(sorted);
                var b = FitBoundaries(sorted);
                int cells = b.Length - 1;
                var min = new double[cells];
                var max = new double[cells];
                var counts = new long[cells];
                for (int c = 0; c < cells; c++) { min[c] = b[c]; max[c] = b[c]; }
                foreach (double v in sorted)
                {
                    int c = Encode(b, v);
                    if (counts[c]++ == 0) { min[c] = v; max[c] = v; }
                    else { min[c] = Math.Min(min[c], v); max[c] = Math.Max(max[c], v); }
                }
                infos[a] = new AttributeInfo { Name = def.Name, Type = def.Type, Boundaries = b, CellMin = min, CellMax = max, CellCounts = counts, Lossy = lossy };
            }
            else
            {
                infos[a] = new AttributeInfo { Name = def.Name, Type = def.Type, Values = col.Dictionary };
            }
        }
        return new IndexAttributes { Attributes = infos, HasIds = table.Ids is not null };
    }

    /// <summary>
    /// Cell boundaries for ascending values: one cell per distinct value when there are at most 255 (the
    /// code is then exact), else Lloyd cells (8 bits, the last two merged so that code 255 stays free for
    /// "missing"). Values beyond float range fall back to equal-frequency cells.
    /// </summary>
    public static double[] FitBoundaries(ReadOnlySpan<double> sorted)
    {
        if (sorted.IsEmpty) return [0, 1];
        var distinct = new List<double>();
        foreach (double v in sorted)
        {
            if (distinct.Count == 0 || distinct[^1] != v) distinct.Add(v);
            if (distinct.Count > MaxCells) break;
        }
        if (distinct.Count <= MaxCells)
        {
            // The top boundary only closes the last cell; keep it finite so the manifest stays valid JSON.
            double top = Math.BitIncrement(distinct[^1]);
            distinct.Add(double.IsFinite(top) ? top : distinct[^1]);
            return distinct.ToArray();
        }
        double[] b;
        if (Math.Abs(sorted[0]) < 1e37 && Math.Abs(sorted[^1]) < 1e37)
        {
            var f = new float[sorted.Length];
            for (int i = 0; i < f.Length; i++) f[i] = (float)sorted[i];
            var lloyd = LloydBoundaries.Fit(f, LloydBoundaries.MaxBits, pinZero: false);
            b = new double[MaxCells + 1];
            for (int i = 0; i < MaxCells - 1; i++) b[i] = lloyd[i];
            b[MaxCells - 1] = lloyd[MaxCells - 1];
            b[MaxCells] = lloyd[MaxCells + 1];
        }
        else
        {
            b = new double[MaxCells + 1];
            for (int i = 0; i < MaxCells; i++) b[i] = sorted[(int)((long)i * sorted.Length / MaxCells)];
            b[MaxCells] = sorted[^1];
        }
        // Collapsed Lloyd cells can leave ties; keep boundaries non-decreasing so that Encode is a binary search.
        for (int i = 1; i < b.Length; i++) b[i] = Math.Max(b[i], b[i - 1]);
        return b;
    }

    /// <summary>The cell c with b_c ≤ v &lt; b_{c+1}, clamped to [0, cells − 1].</summary>
    public static int Encode(ReadOnlySpan<double> b, double v)
    {
        int lo = 1, len = b.Length - 2;
        while (len > 0)
        {
            int half = len >> 1;
            if (b[lo + half] <= v) { lo += half + 1; len -= half + 1; }
            else len = half;
        }
        return lo - 1;
    }
}
