using System.Text.Json;
using Squash.Index.Model;
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

    /// <summary>
    /// True when <paramref name="other"/> encodes every value as this does: the same schema and encoders, as a manifest
    /// writes them (the records hold arrays, so their own equality compares references).
    /// </summary>
    public bool EncodesAs(IndexAttributes other) =>
        ReferenceEquals(this, other) || JsonSerializer.SerializeToUtf8Bytes(this, ManifestJson.Default.IndexAttributes).AsSpan()
            .SequenceEqual(JsonSerializer.SerializeToUtf8Bytes(other, ManifestJson.Default.IndexAttributes));
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
    internal const double ExactIntegerLimit = 9007199254740992d; // 2^53

    public static IndexAttributes Fit(AttributeTable table)
    {
        var encoders = FitEncoders(table.Columns.Select(c => c.Definition).ToArray(), table.Columns.Select(c => c.Dictionary).ToArray(),
            table.Ids is not null, table.Count, (a, fit) =>
            {
                var col = table.Columns[a];
                for (int r = 0; r < col.Count; r++)
                    if (col.IsPresent(r)) fit.Add(r, col.Numbers is not null ? col.Numbers[r] : col.Integers![r]);
            });
        var infos = encoders.Attributes.ToArray();
        for (int a = 0; a < infos.Length; a++)
        {
            var col = table.Columns[a];
            if (infos[a].Boundaries is not { } b) continue;
            var cells = new CellRanges(b.Length - 1);
            for (int r = 0; r < col.Count; r++)
                if (col.IsPresent(r))
                {
                    double v = col.Numbers is not null ? col.Numbers[r] : col.Integers![r];
                    cells.Add(Encode(b, v), v);
                }
            infos[a] = cells.Complete(infos[a]);
        }
        return encoders with { Attributes = infos };
    }

    /// <summary>
    /// The encoders without the per-cell figures (<see cref="AttributeInfo.CellMin"/>, <see cref="AttributeInfo.CellMax"/>,
    /// <see cref="AttributeInfo.CellCounts"/>, which <see cref="CellRanges"/> adds): boundaries and dictionaries. What a
    /// distributed build fits in one streaming pass; <paramref name="feed"/> hands column a's present values in row order.
    /// </summary>
    public static IndexAttributes FitEncoders(IReadOnlyList<AttributeDefinition> definitions, IReadOnlyList<string[]?> dictionaries, bool hasIds,
        long rows, Action<int, NumericCellFit> feed)
    {
        var infos = new AttributeInfo[definitions.Count];
        for (int a = 0; a < infos.Length; a++)
        {
            var def = definitions[a];
            if (def.Type is AttributeType.Number or AttributeType.Integer)
            {
                var fit = new NumericCellFit(rows, def.Type == AttributeType.Integer);
                feed(a, fit);
                infos[a] = new AttributeInfo { Name = def.Name, Type = def.Type, Boundaries = fit.Boundaries(), Lossy = fit.Lossy };
            }
            else
            {
                infos[a] = new AttributeInfo { Name = def.Name, Type = def.Type, Values = dictionaries[a] };
            }
        }
        return new IndexAttributes { Attributes = infos, HasIds = hasIds };
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
        return distinct.Count <= MaxCells ? ExactBoundaries(distinct) : LloydCells(sorted);
    }

    /// <summary>One cell per value (ascending, distinct, at most <see cref="MaxCells"/>): the code is then exact.</summary>
    internal static double[] ExactBoundaries(List<double> distinct)
    {
        // The top boundary only closes the last cell; keep it finite so the manifest stays valid JSON.
        double top = Math.BitIncrement(distinct[^1]);
        distinct.Add(double.IsFinite(top) ? top : distinct[^1]);
        return distinct.ToArray();
    }

    /// <summary>Lloyd cells (or equal-frequency ones beyond float range) for more distinct values than cells.</summary>
    internal static double[] LloydCells(ReadOnlySpan<double> sorted)
    {
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

/// <summary>
/// One number or integer column's cell boundaries, fitted from its values streamed in row order with bounded memory:
/// whether there are at most <see cref="AttributeEncoding.MaxCells"/> distinct values (then one cell each, exact), else
/// Lloyd cells fitted on the values of at most <see cref="MaxSample"/> evenly spaced rows (all rows up to that many, so
/// smaller indexes fit on every value).
/// </summary>
public sealed class NumericCellFit(long rows, bool integer, int maxSample = NumericCellFit.MaxSample)
{
    public const int MaxSample = 1 << 20;

    private readonly HashSet<double> _distinct = [];
    private bool _many;
    private readonly List<double> _sample = [];

    /// <summary>True when some integer is beyond ±2^53 (<see cref="AttributeInfo.Lossy"/>).</summary>
    public bool Lossy { get; private set; }

    /// <summary>Row <paramref name="row"/> (of <c>rows</c>) has value <paramref name="value"/>; rows arrive in ascending order.</summary>
    public void Add(long row, double value)
    {
        Lossy |= integer && Math.Abs(value) >= AttributeEncoding.ExactIntegerLimit;
        if (!_many && _distinct.Add(value) && _distinct.Count > AttributeEncoding.MaxCells) { _many = true; _distinct.Clear(); }
        if (SampleSlot(row, rows, maxSample) >= 0) _sample.Add(value);
    }

    /// <summary>
    /// Which of the evenly spaced sample rows ⌊i·rows/maxSample⌋ (i below maxSample; every row when there are no more)
    /// <paramref name="row"/> is: its i, or -1 when it is not one of them. The same rule wherever a build samples rows by
    /// position, so that samples taken in different processes agree.
    /// </summary>
    public static long SampleSlot(long row, long rows, int maxSample = MaxSample)
    {
        if (rows <= maxSample) return row;
        long i = (row * maxSample + rows - 1) / rows;
        return i < maxSample && i * rows / maxSample == row ? i : -1;
    }

    public double[] Boundaries()
    {
        if (!_many)
        {
            if (_distinct.Count == 0) return [0, 1];
            var distinct = _distinct.ToList();
            distinct.Sort();
            return AttributeEncoding.ExactBoundaries(distinct);
        }
        var sorted = _sample.ToArray();
        Array.Sort(sorted);
        return sorted.Length == 0 ? [0, 1] : AttributeEncoding.LloydCells(sorted);
    }
}

/// <summary>
/// Per-cell figures of one number or integer column (<see cref="AttributeInfo.CellMin"/>, <see cref="AttributeInfo.CellMax"/>,
/// <see cref="AttributeInfo.CellCounts"/>): from values, or merged from parts (partitions) in any order with the same result.
/// </summary>
public sealed class CellRanges(int cells)
{
    public long[] Counts { get; } = new long[cells];
    public double[] Min { get; } = new double[cells];
    public double[] Max { get; } = new double[cells];

    public void Add(int cell, double value) => Add(cell, value, value, 1);

    public void Add(int cell, double min, double max, long count)
    {
        if (count == 0) return;
        if (Counts[cell] == 0) { Min[cell] = min; Max[cell] = max; }
        else { Min[cell] = Math.Min(Min[cell], min); Max[cell] = Math.Max(Max[cell], max); }
        Counts[cell] += count;
    }

    /// <summary>The column's info with these figures; an empty cell's min and max are its lower boundary.</summary>
    public AttributeInfo Complete(AttributeInfo info)
    {
        var b = info.Boundaries!;
        var min = (double[])Min.Clone();
        var max = (double[])Max.Clone();
        for (int c = 0; c < Counts.Length; c++) if (Counts[c] == 0) { min[c] = b[c]; max[c] = b[c]; }
        return info with { CellMin = min, CellMax = max, CellCounts = (long[])Counts.Clone() };
    }
}
