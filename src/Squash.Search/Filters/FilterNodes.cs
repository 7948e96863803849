using System.Buffers;
using System.Numerics.Tensors;
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

    /// <summary>$in lists longer than this evaluate codes instead of one binary search per value.</summary>
    public const int MaxIndexedValues = 64;

    /// <summary>Code-level result for every row of the partition.</summary>
    public abstract void EvaluateCodes(PartitionAttributes pa, Span<byte> result);

    /// <summary>Evaluates every child (at least one) into <paramref name="result"/>, folded by AND (min) or OR (max).</summary>
    protected static void EvaluateAll(FilterNode[] children, PartitionAttributes pa, Span<byte> result, bool and)
    {
        children[0].EvaluateCodes(pa, result);
        if (children.Length == 1) return;
        var scratch = ArrayPool<byte>.Shared.Rent(result.Length);
        try
        {
            var s = scratch.AsSpan(0, result.Length);
            for (int c = 1; c < children.Length; c++)
            {
                children[c].EvaluateCodes(pa, s);
                if (and) TensorPrimitives.Min(result, s, result);
                else TensorPrimitives.Max(result, s, result);
            }
        }
        finally { ArrayPool<byte>.Shared.Return(scratch); }
    }

    /// <summary>Exact result for one row on raw values.</summary>
    public abstract bool Matches(PartitionAttributes pa, int row);

    /// <summary>From manifest statistics alone: estimated matching fraction, and bounds on the code-level match count.</summary>
    public abstract (double Fraction, long Lower, long Upper) Estimate(IReadOnlyList<AttributeStats> stats, int n);

    /// <summary>
    /// <see cref="Estimate"/> for every partition at once (fraction, lower and upper bound per partition); nodes
    /// that can use the cell-major <see cref="PlannerCounts"/> override it, the rest go partition by partition.
    /// </summary>
    public virtual void EstimateAll(IReadOnlyList<PartitionEntry> partitions, PlannerCounts counts, Span<double> fraction, Span<long> lower, Span<long> upper)
    {
        for (int p = 0; p < partitions.Count; p++)
            (fraction[p], lower[p], upper[p]) = Estimate(partitions[p].AttributeStats!, partitions[p].Count);
    }

    /// <summary>
    /// A category equality or membership every match must satisfy, on an attribute <paramref name="usable"/> accepts: the
    /// node itself, or one part of an AND (the AND's matches are among its rows). Null when there is none.
    /// </summary>
    public virtual (int Attribute, int[] Ids)? ValueTerm(Func<int, bool> usable) => null;

    /// <summary>Whether <see cref="IndexedCount"/>/<see cref="AddIndexed"/> work for this node (a property of the filter, not of the data).</summary>
    public virtual bool Indexable => false;

    /// <summary>Whether the indexed rows are exactly the matches (then they need no recheck).</summary>
    public virtual bool IndexedExactly => false;

    /// <summary>Whether <see cref="AddIndexed"/> never gives a row twice (then a caller that needs no order needs no sort either).</summary>
    public virtual bool IndexedDistinct => false;

    /// <summary>
    /// How many rows (with repeats) the partition's value indexes give this node: a superset of its matches,
    /// found by binary search. Only when <see cref="Indexable"/>.
    /// </summary>
    public virtual int IndexedCount(PartitionAttributes pa) => throw new NotSupportedException();

    /// <summary>
    /// Appends those rows (possibly repeated, any order) to <paramref name="rows"/> from <paramref name="count"/> on;
    /// false, with the buffer's tail undefined, when there would be more than <paramref name="limit"/>.
    /// </summary>
    public virtual bool AddIndexed(PartitionAttributes pa, ref int[] rows, ref int count, int limit) => throw new NotSupportedException();

    protected static void Append(ReadOnlySpan<int> source, ref int[] rows, ref int count)
    {
        if (rows.Length < count + source.Length) Array.Resize(ref rows, Math.Max(count + source.Length, rows.Length * 2));
        source.CopyTo(rows.AsSpan(count));
        count += source.Length;
    }
}

internal sealed class AndNode(FilterNode[] children) : FilterNode
{
    public FilterNode[] Children => children;

    public override (int Attribute, int[] Ids)? ValueTerm(Func<int, bool> usable)
    {
        foreach (var c in children)
            if (c.ValueTerm(usable) is { } term) return term;
        return null;
    }

    public override void EvaluateCodes(PartitionAttributes pa, Span<byte> result)
    {
        if (children.Length == 0) { result.Fill(True); return; }
        EvaluateAll(children, pa, result, and: true);
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

    public override void EstimateAll(IReadOnlyList<PartitionEntry> partitions, PlannerCounts counts, Span<double> fraction, Span<long> lower, Span<long> upper)
    {
        int p = partitions.Count;
        var sizes = counts.Sizes;
        for (int i = 0; i < p; i++) { fraction[i] = 1; lower[i] = 0; upper[i] = sizes[i]; }
        if (children.Length == 0) { for (int i = 0; i < p; i++) lower[i] = sizes[i]; return; }
        var f = new double[p];
        var lo = new long[p];
        var hi = new long[p];
        foreach (var c in children)
        {
            c.EstimateAll(partitions, counts, f, lo, hi);
            for (int i = 0; i < p; i++) { fraction[i] *= f[i]; lower[i] += lo[i]; upper[i] = Math.Min(upper[i], hi[i]); }
        }
        // Bonferroni, as in Estimate.
        for (int i = 0; i < p; i++) lower[i] = Math.Min(Math.Max(0, lower[i] - (long)(children.Length - 1) * sizes[i]), upper[i]);
    }

    /// <summary>An AND is indexed through its most selective indexable child; the exact recheck applies the others.</summary>
    public override bool Indexable => children.Any(c => c.Indexable);

    /// <summary>Only with one part: the others are left to the recheck.</summary>
    public override bool IndexedExactly => children.Length == 1 && children[0].IndexedExactly;

    /// <summary>The rows come from one child, whichever is narrowest in the partition.</summary>
    public override bool IndexedDistinct => children.Where(c => c.Indexable).All(c => c.IndexedDistinct);

    public override int IndexedCount(PartitionAttributes pa) => Narrowest(pa).Count;

    public override bool AddIndexed(PartitionAttributes pa, ref int[] rows, ref int count, int limit)
    {
        var (child, n) = Narrowest(pa);
        return n <= limit && child!.AddIndexed(pa, ref rows, ref count, limit);
    }

    private (FilterNode? Child, int Count) Narrowest(PartitionAttributes pa)
    {
        FilterNode? best = null;
        int bestCount = int.MaxValue;
        foreach (var c in children)
        {
            if (!c.Indexable) continue;
            int k = c.IndexedCount(pa);
            if (k < bestCount) { best = c; bestCount = k; }
        }
        return (best, bestCount);
    }
}

internal sealed class OrNode(FilterNode[] children) : FilterNode
{
    public override void EvaluateCodes(PartitionAttributes pa, Span<byte> result)
    {
        EvaluateAll(children, pa, result, and: false);
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

    public override void EstimateAll(IReadOnlyList<PartitionEntry> partitions, PlannerCounts counts, Span<double> fraction, Span<long> lower, Span<long> upper)
    {
        int p = partitions.Count;
        var sizes = counts.Sizes;
        for (int i = 0; i < p; i++) { fraction[i] = 1; lower[i] = 0; upper[i] = 0; } // fraction holds the miss probability until the end
        var f = new double[p];
        var lo = new long[p];
        var hi = new long[p];
        foreach (var c in children)
        {
            c.EstimateAll(partitions, counts, f, lo, hi);
            for (int i = 0; i < p; i++) { fraction[i] *= 1 - f[i]; lower[i] = Math.Max(lower[i], lo[i]); upper[i] += hi[i]; }
        }
        for (int i = 0; i < p; i++) { fraction[i] = 1 - fraction[i]; upper[i] = Math.Min(upper[i], sizes[i]); }
    }

    public override bool Indexable => children.All(c => c.Indexable);

    public override bool IndexedExactly => children.All(c => c.IndexedExactly);

    public override int IndexedCount(PartitionAttributes pa)
    {
        int sum = 0;
        foreach (var c in children) sum += c.IndexedCount(pa);
        return sum;
    }

    public override bool AddIndexed(PartitionAttributes pa, ref int[] rows, ref int count, int limit)
    {
        int start = count;
        foreach (var c in children)
            if (!c.AddIndexed(pa, ref rows, ref count, limit - (count - start))) return false;
        return true;
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

    public override void EstimateAll(IReadOnlyList<PartitionEntry> partitions, PlannerCounts counts, Span<double> fraction, Span<long> lower, Span<long> upper)
    {
        child.EstimateAll(partitions, counts, fraction, lower, upper);
        var sizes = counts.Sizes;
        for (int i = 0; i < partitions.Count; i++)
        {
            fraction[i] = 1 - fraction[i];
            (lower[i], upper[i]) = (sizes[i] - upper[i], sizes[i] - lower[i]);
        }
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
internal sealed class CategoryLeaf(int attribute, IdSet set, int[] ids, bool negate) : FilterNode
{
    /// <summary>Membership in a handful of values: one binary search per value in the partition's value index.</summary>
    public override bool Indexable => !negate && ids.Length <= MaxIndexedValues;

    public override bool IndexedExactly => Indexable;

    public override (int Attribute, int[] Ids)? ValueTerm(Func<int, bool> usable) => !negate && ids.Length > 0 && usable(attribute) ? (attribute, ids) : null;

    /// <summary>A row holds one value, so distinct values give distinct rows.</summary>
    public override bool IndexedDistinct => ids.Distinct().Count() == ids.Length;

    public override int IndexedCount(PartitionAttributes pa) => IndexedValues.Count(pa.Columns[attribute].ValueIndex, ids);

    public override bool AddIndexed(PartitionAttributes pa, ref int[] rows, ref int count, int limit) => IndexedValues.Add(pa.Columns[attribute].ValueIndex, ids, ref rows, ref count, limit);

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
internal sealed class TagsLeaf(int attribute, IdSet set, int[] ids, bool negate) : FilterNode
{
    /// <summary>Holding any of a handful of tags: the union of their postings (a row may come once per tag it holds).</summary>
    public override bool Indexable => !negate && ids.Length <= MaxIndexedValues;

    public override bool IndexedExactly => Indexable;

    public override int IndexedCount(PartitionAttributes pa) => IndexedValues.Count(pa.Columns[attribute].ValueIndex, ids);

    public override bool AddIndexed(PartitionAttributes pa, ref int[] rows, ref int count, int limit) => IndexedValues.Add(pa.Columns[attribute].ValueIndex, ids, ref rows, ref count, limit);

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

/// <summary>Rows holding any of a few keys (category ids, tag ids) in a value index.</summary>
internal static class IndexedValues
{
    public static int Count(AttributeValueIndex index, int[] keys)
    {
        int sum = 0;
        foreach (int k in keys)
        {
            var (start, end) = index.KeyRange(k);
            sum += end - start;
        }
        return sum;
    }

    public static bool Add(AttributeValueIndex index, int[] keys, ref int[] rows, ref int count, int limit)
    {
        if (Count(index, keys) > limit) return false;
        foreach (int k in keys)
        {
            var (start, end) = index.KeyRange(k);
            var source = index.Rows.AsSpan(start, end - start);
            if (rows.Length < count + source.Length) Array.Resize(ref rows, Math.Max(count + source.Length, rows.Length * 2));
            source.CopyTo(rows.AsSpan(count));
            count += source.Length;
        }
        return true;
    }
}
