using System.Buffers;
using Squash.Index.Attributes;
using Squash.Index.Model;

namespace Squash.Search.Filters;

/// <summary>
/// A compiled filter node. The code-level evaluation is three-valued (Kleene logic) so that it never loses a
/// match, even under $not: <see cref="False"/> = no value of the row's codes can match, <see cref="True"/> =
/// every value the codes allow matches, <see cref="Maybe"/> = the exact recheck decides. With this order
/// AND is min, OR is max and NOT is 2 − x, so a row whose code result is not False is a superset of the
/// matches (no false negatives), and a True row needs no recheck.
/// </summary>
internal abstract class FilterNode
{
    public const byte False = 0, Maybe = 1, True = 2;

    /// <summary>Code-level result for every row of the partition.</summary>
    public abstract void EvaluateCodes(PartitionAttributes pa, Span<byte> result);

    /// <summary>Exact result for one row on raw values.</summary>
    public abstract bool Matches(PartitionAttributes pa, int row);

    /// <summary>From manifest statistics alone: estimated matching fraction, and bounds on the code-level match count.</summary>
    public abstract (double Fraction, long Lower, long Upper) Estimate(IReadOnlyList<AttributeStats> stats, int n);
}

internal sealed class AndNode(FilterNode[] children) : FilterNode
{
    public FilterNode[] Children => children;

    public override void EvaluateCodes(PartitionAttributes pa, Span<byte> result)
    {
        if (children.Length == 0) { result.Fill(True); return; }
        children[0].EvaluateCodes(pa, result);
        if (children.Length == 1) return;
        var scratch = ArrayPool<byte>.Shared.Rent(result.Length);
        try
        {
            for (int c = 1; c < children.Length; c++)
            {
                var s = scratch.AsSpan(0, result.Length);
                children[c].EvaluateCodes(pa, s);
                for (int i = 0; i < result.Length; i++) result[i] = Math.Min(result[i], s[i]);
            }
        }
        finally { ArrayPool<byte>.Shared.Return(scratch); }
    }

    public override bool Matches(PartitionAttributes pa, int row)
    {
        foreach (var c in children) if (!c.Matches(pa, row)) return false;
        return true;
    }

    public override (double, long, long) Estimate(IReadOnlyList<AttributeStats> stats, int n)
    {
        double f = 1;
        long lo = n, hi = n, sumLo = 0;
        foreach (var c in children)
        {
            var (cf, cl, ch) = c.Estimate(stats, n);
            f *= cf;
            hi = Math.Min(hi, ch);
            sumLo += cl;
        }
        // Bonferroni: |∩ A_i| ≥ Σ|A_i| − (k − 1)·n.
        lo = Math.Max(0, sumLo - (long)(children.Length - 1) * n);
        return (f, Math.Min(lo, hi), hi);
    }
}

internal sealed class OrNode(FilterNode[] children) : FilterNode
{
    public override void EvaluateCodes(PartitionAttributes pa, Span<byte> result)
    {
        children[0].EvaluateCodes(pa, result);
        var scratch = ArrayPool<byte>.Shared.Rent(result.Length);
        try
        {
            for (int c = 1; c < children.Length; c++)
            {
                var s = scratch.AsSpan(0, result.Length);
                children[c].EvaluateCodes(pa, s);
                for (int i = 0; i < result.Length; i++) result[i] = Math.Max(result[i], s[i]);
            }
        }
        finally { ArrayPool<byte>.Shared.Return(scratch); }
    }

    public override bool Matches(PartitionAttributes pa, int row)
    {
        foreach (var c in children) if (c.Matches(pa, row)) return true;
        return false;
    }

    public override (double, long, long) Estimate(IReadOnlyList<AttributeStats> stats, int n)
    {
        double miss = 1;
        long lo = 0, hi = 0;
        foreach (var c in children)
        {
            var (cf, cl, ch) = c.Estimate(stats, n);
            miss *= 1 - cf;
            lo = Math.Max(lo, cl);
            hi += ch;
        }
        return (1 - miss, lo, Math.Min(hi, n));
    }
}

internal sealed class NotNode(FilterNode child) : FilterNode
{
    public override void EvaluateCodes(PartitionAttributes pa, Span<byte> result)
    {
        child.EvaluateCodes(pa, result);
        for (int i = 0; i < result.Length; i++) result[i] = (byte)(True - result[i]);
    }

    public override bool Matches(PartitionAttributes pa, int row) => !child.Matches(pa, row);

    public override (double, long, long) Estimate(IReadOnlyList<AttributeStats> stats, int n)
    {
        var (f, lo, hi) = child.Estimate(stats, n);
        return (1 - f, n - hi, n - lo);
    }
}

/// <summary>
/// A leaf on a one-byte code (number/integer cells, bool 0/1; 255 = missing): a 256-entry table gives the
/// three-valued result per code, so the code pass is one lookup per row. Numbers whose cell is Maybe are
/// rechecked with <see cref="_exact"/> on the raw value.
/// </summary>
internal sealed class ByteTableLeaf(int attribute, byte[] table, Func<PartitionAttributeColumn, int, bool>? exact) : FilterNode
{
    private readonly Func<PartitionAttributeColumn, int, bool>? _exact = exact;

    public override void EvaluateCodes(PartitionAttributes pa, Span<byte> result)
    {
        var codes = pa.Columns[attribute].Codes!;
        for (int i = 0; i < result.Length; i++) result[i] = table[codes[i]];
    }

    public override bool Matches(PartitionAttributes pa, int row)
    {
        var col = pa.Columns[attribute];
        byte t = table[col.Codes![row]];
        return t == True || (t == Maybe && _exact!(col, row));
    }

    public override (double, long, long) Estimate(IReadOnlyList<AttributeStats> stats, int n)
    {
        var s = stats[attribute];
        double est = 0;
        long lo = 0, hi = 0;
        void Add(int code, int count)
        {
            byte t = table[code];
            if (t == True) { lo += count; hi += count; est += count; }
            else if (t == Maybe) { hi += count; est += count * 0.5; }
        }
        for (int j = 0; j < s.Codes.Length; j++) Add(s.Codes[j], s.Counts[j]);
        Add(Index.Attributes.AttributeEncoding.MissingCode, s.Missing);
        return (n == 0 ? 0 : est / n, lo, hi);
    }
}

/// <summary>Category membership (exact at the code level): ids in a byte table, or a hash set for huge dictionaries.</summary>
internal sealed class CategoryLeaf(int attribute, IdSet set, bool negate) : FilterNode
{
    public override void EvaluateCodes(PartitionAttributes pa, Span<byte> result)
    {
        var ids = pa.Columns[attribute].Ids!;
        for (int i = 0; i < result.Length; i++) result[i] = Matches(ids[i]) ? True : False;
    }

    private bool Matches(int id) => id < 0 ? negate : set.Contains(id) != negate;

    public override bool Matches(PartitionAttributes pa, int row) => Matches(pa.Columns[attribute].Ids![row]);

    public override (double, long, long) Estimate(IReadOnlyList<AttributeStats> stats, int n)
    {
        var s = stats[attribute];
        long inSet = 0;
        for (int j = 0; j < s.Codes.Length; j++) if (set.Contains(s.Codes[j])) inSet += s.Counts[j];
        long count = negate ? n - inSet : inSet;
        return (n == 0 ? 0 : count / (double)n, count, count);
    }
}

/// <summary>Tags: matches when the row holds any of the ids ($eq/$in), or none of them ($ne/$nin; also when missing).</summary>
internal sealed class TagsLeaf(int attribute, IdSet set, bool negate) : FilterNode
{
    public override void EvaluateCodes(PartitionAttributes pa, Span<byte> result)
    {
        for (int i = 0; i < result.Length; i++) result[i] = Matches(pa, i) ? True : False;
    }

    public override bool Matches(PartitionAttributes pa, int row)
    {
        var col = pa.Columns[attribute];
        if (col.Present![row] == 0) return negate;
        foreach (int t in col.Tags(row)) if (set.Contains(t)) return !negate;
        return negate;
    }

    public override (double, long, long) Estimate(IReadOnlyList<AttributeStats> stats, int n)
    {
        var s = stats[attribute];
        long sum = 0, max = 0;
        for (int j = 0; j < s.Codes.Length; j++)
            if (set.Contains(s.Codes[j])) { sum += s.Counts[j]; max = Math.Max(max, s.Counts[j]); }
        sum = Math.Min(sum, n);
        // A row can hold several of the tags: between the largest single count and the sum.
        return negate ? ((n - sum) / (double)Math.Max(1, n), n - sum, n - max) : (sum / (double)Math.Max(1, n), max, sum);
    }
}

internal sealed class ExistsLeaf(int attribute, bool exists) : FilterNode
{
    public override void EvaluateCodes(PartitionAttributes pa, Span<byte> result)
    {
        var col = pa.Columns[attribute];
        for (int i = 0; i < result.Length; i++) result[i] = col.IsPresent(i) == exists ? True : False;
    }

    public override bool Matches(PartitionAttributes pa, int row) => pa.Columns[attribute].IsPresent(row) == exists;

    public override (double, long, long) Estimate(IReadOnlyList<AttributeStats> stats, int n)
    {
        long count = exists ? n - stats[attribute].Missing : stats[attribute].Missing;
        return (n == 0 ? 0 : count / (double)n, count, count);
    }
}

/// <summary>A set of dictionary ids: a bitmap when the dictionary is small enough, else a hash set.</summary>
internal sealed class IdSet
{
    private const int BitmapLimit = 1 << 22;
    private readonly ulong[]? _bits;
    private readonly HashSet<int>? _hash;

    public IdSet(IEnumerable<int> ids, int dictionarySize)
    {
        if (dictionarySize <= BitmapLimit)
        {
            _bits = new ulong[(dictionarySize + 63) / 64];
            foreach (int id in ids) _bits[id >> 6] |= 1UL << (id & 63);
        }
        else
        {
            _hash = [.. ids];
        }
    }

    public bool Contains(int id) => _bits is not null ? (uint)(id >> 6) < (uint)_bits.Length && (_bits[id >> 6] >> (id & 63) & 1) != 0 : _hash!.Contains(id);
}
