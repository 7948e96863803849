using System.Text.Json;
using Squash.Index.Attributes;
using Squash.Index.Model;

namespace Squash.Search.Filters;

/// <summary>
/// $eq, $lt, $lte, $gt, $gte on a number or integer attribute, and their AND on one attribute (e.g.
/// <c>{"u":{"$gte":10,"$lt":20}}</c>), as one interval. Kept as one leaf because the planner would otherwise
/// multiply the two half-lines' fractions as if independent (0.4 × 0.6 for a 0.1 % range), and because an
/// interval finds its rows in the partition's value index with two binary searches.
/// Integers use an inclusive [lo, hi] in exact integer arithmetic (operands that are not integers are rounded
/// inwards); numbers an interval with open or closed ends. Missing values never match.
/// </summary>
internal sealed class RangeLeaf : FilterNode
{
    private readonly int _attribute;
    private readonly AttributeInfo _info;
    private readonly bool _integer;
    // Numbers
    private readonly double _lo, _hi;
    private readonly bool _loClosed, _hiClosed;
    // Integers (inclusive)
    private readonly long _loL, _hiL;
    private readonly bool _empty;
    private readonly byte[] _table = new byte[256];
    /// <summary>Per cell, the share of its vectors the interval is expected to hold (values spread evenly in the cell).</summary>
    private readonly double[] _weight = new double[256];
    /// <summary>The first and last cells that can match; every cell strictly between is a sure match or empty (unless lossy).</summary>
    private readonly int _first = -1, _last = -2;
    private readonly bool _innerSure;

    private RangeLeaf(int attribute, AttributeInfo info, double lo, bool loClosed, double hi, bool hiClosed, long loL, long hiL, bool empty)
    {
        _attribute = attribute;
        _info = info;
        _integer = info.Type == AttributeType.Integer;
        (_lo, _loClosed, _hi, _hiClosed, _loL, _hiL) = (lo, loClosed, hi, hiClosed, loL, hiL);
        _empty = empty || (_integer ? loL > hiL : lo > hi || (lo == hi && !(loClosed && hiClosed)));
        _table[AttributeEncoding.MissingCode] = False;
        if (_empty) return;
        _innerSure = !info.Lossy;
        for (int c = 0; c < info.Cells; c++)
        {
            if (info.CellCounts![c] == 0) continue;
            double min = info.CellMin![c], max = info.CellMax![c];
            // Past ±2^53 doubles merge integers (the cell ranges are rounded), so only the exact recheck may decide.
            byte t = info.Lossy ? Maybe : Disjoint(min, max) ? False : Inside(min, max) ? True : Maybe;
            _table[c] = t;
            if (t == False) continue;
            _weight[c] = t == True ? 1 : Math.Max(Overlap(min, max), 1.0 / info.CellCounts[c]);
            if (_first < 0) _first = c;
            _last = c;
        }
        for (int c = _first + 1; c < _last; c++) if (_table[c] == Maybe) _innerSure = false;
    }

    /// <summary>One comparison: op is $eq, $lt, $lte, $gt or $gte.</summary>
    public static RangeLeaf Create(int attribute, AttributeInfo info, string op, NumericOperand operand)
    {
        if (info.Type == AttributeType.Number)
        {
            double x = operand.Double;
            return op switch
            {
                "$lt" => new RangeLeaf(attribute, info, double.NegativeInfinity, true, x, false, 0, 0, false),
                "$lte" => new RangeLeaf(attribute, info, double.NegativeInfinity, true, x, true, 0, 0, false),
                "$gt" => new RangeLeaf(attribute, info, x, false, double.PositiveInfinity, true, 0, 0, false),
                "$gte" => new RangeLeaf(attribute, info, x, true, double.PositiveInfinity, true, 0, 0, false),
                _ => new RangeLeaf(attribute, info, x, true, x, true, 0, 0, false),
            };
        }
        var (lo, hi, empty) = IntegerInterval(op, operand);
        return new RangeLeaf(attribute, info, 0, true, 0, true, lo, hi, empty);
    }

    /// <summary>
    /// The integers v for which <c>v op operand</c> holds (op: $eq, $lt, $lte, $gt or $gte), as an inclusive [Lo, Hi], or
    /// Empty. The one rule for integer attributes, on indexed rows and on a strong read's log tail (<see cref="Writes.TailFilter"/>),
    /// so that a row matches the same bounds before and after ingest: the operand is read as written, as a long, else as a
    /// decimal (which keeps 2.9999999999999999999 apart from 3 where a double would not), else as a double.
    /// </summary>
    internal static (long Lo, long Hi, bool Empty) IntegerInterval(string op, NumericOperand operand)
    {
        long lo = long.MinValue, hi = long.MaxValue;
        bool empty = false;
        if (operand.Long is { } l)
        {
            switch (op)
            {
                case "$lt": if (l == long.MinValue) empty = true; else hi = l - 1; break;
                case "$lte": hi = l; break;
                case "$gt": if (l == long.MaxValue) empty = true; else lo = l + 1; break;
                case "$gte": lo = l; break;
                default: lo = hi = l; break;
            }
        }
        else if (operand.Decimal is { } m)
        {
            // Not an integer: v < x ⇔ v ≤ ⌈x⌉ − 1, v ≤ x ⇔ v ≤ ⌊x⌋, v > x ⇔ v ≥ ⌊x⌋ + 1, v ≥ x ⇔ v ≥ ⌈x⌉ — in decimal,
            // which holds the operand exactly where a double would round it (past 2^53); ends beyond long clamp.
            decimal end = op switch { "$lt" => Math.Ceiling(m) - 1, "$lte" => Math.Floor(m), "$gt" => Math.Floor(m) + 1, _ => Math.Ceiling(m) };
            bool upperEnd = op is "$lt" or "$lte";
            if (op == "$eq")
            {
                // 3.0 equals 3; an integer never equals a non-integer.
                if (WholeNumber.TryFrom(m, out long whole)) lo = hi = whole;
                else empty = true;
            }
            else if (end < long.MinValue) { if (upperEnd) empty = true; }
            else if (end > long.MaxValue) { if (!upperEnd) empty = true; }
            else if (upperEnd) hi = (long)end;
            else lo = (long)end;
        }
        else
        {
            // Beyond long (or beyond decimal): the same in doubles, clamped to long.
            double x = operand.Double;
            switch (op)
            {
                case "$lt": (hi, empty) = Below(Math.Ceiling(x), -1); break;
                case "$lte": (hi, empty) = Below(Math.Floor(x), 0); break;
                case "$gt": (lo, empty) = Above(Math.Floor(x), 1); break;
                case "$gte": (lo, empty) = Above(Math.Ceiling(x), 0); break;
                default: empty = true; break; // an integer never equals a non-integer
            }
        }
        return (lo, hi, empty || lo > hi);
    }

    /// <summary>Whether the integer <paramref name="v"/> satisfies <c>v op operand</c> (<see cref="IntegerInterval"/>).</summary>
    internal static bool IntegerMatches(string op, NumericOperand operand, long v)
    {
        var (lo, hi, empty) = IntegerInterval(op, operand);
        return !empty && v >= lo && v <= hi;
    }

    /// <summary>An upper end ⌊y⌋ + shift as a long, clamped; empty when it lies below every long.</summary>
    private static (long, bool) Below(double y, int shift)
    {
        if (y >= 9.2233720368547758E18) return (long.MaxValue, false);
        if (y < -9.2233720368547758E18) return (long.MinValue, true);
        long v = (long)y;
        if (shift < 0 && v == long.MinValue) return (long.MinValue, true);
        return (v + shift, false);
    }

    /// <summary>A lower end ⌈y⌉ + shift as a long, clamped; empty when it lies above every long.</summary>
    private static (long, bool) Above(double y, int shift)
    {
        if (y < -9.2233720368547758E18) return (long.MinValue, false);
        if (y >= 9.2233720368547758E18) return (long.MaxValue, true);
        long v = (long)y;
        if (shift > 0 && v == long.MaxValue) return (long.MaxValue, true);
        return (v + shift, false);
    }

    public int Attribute => _attribute;

    /// <summary>The intersection with another interval on the same attribute.</summary>
    public RangeLeaf Intersect(RangeLeaf o)
    {
        if (o._attribute != _attribute) throw new ArgumentException("intervals on different attributes");
        if (_integer)
            return new RangeLeaf(_attribute, _info, 0, true, 0, true, Math.Max(_loL, o._loL), Math.Min(_hiL, o._hiL), _empty || o._empty);
        var (lo, loClosed) = _lo > o._lo ? (_lo, _loClosed) : o._lo > _lo ? (o._lo, o._loClosed) : (_lo, _loClosed && o._loClosed);
        var (hi, hiClosed) = _hi < o._hi ? (_hi, _hiClosed) : o._hi < _hi ? (o._hi, o._hiClosed) : (_hi, _hiClosed && o._hiClosed);
        return new RangeLeaf(_attribute, _info, lo, loClosed, hi, hiClosed, 0, 0, _empty || o._empty);
    }

    private bool ContainsNumber(double v) => (v > _lo || (_loClosed && v == _lo)) && (v < _hi || (_hiClosed && v == _hi));
    private bool ContainsInteger(long v) => v >= _loL && v <= _hiL;

    private bool Disjoint(double min, double max) => _integer
        ? max < _loL || min > _hiL
        : max < _lo || (max == _lo && !_loClosed) || min > _hi || (min == _hi && !_hiClosed);

    private bool Inside(double min, double max) => _integer
        ? min >= _loL && max <= _hiL
        : ContainsNumber(min) && ContainsNumber(max);

    private double Overlap(double min, double max)
    {
        if (_integer)
        {
            double a = Math.Max(min, _loL), b = Math.Min(max, _hiL);
            return Math.Clamp((b - a + 1) / (max - min + 1), 0, 1);
        }
        if (max <= min) return 1;
        return Math.Clamp((Math.Min(max, _hi) - Math.Max(min, _lo)) / (max - min), 0, 1);
    }

    /// <summary>
    /// The cells a match can lie in, when the code decides every cell (one value per cell, as on an attribute with value
    /// centroids): an $eq, or a range over a few values.
    /// </summary>
    public override (int Attribute, int[] Ids)? ValueTerm(Func<int, bool> usable)
    {
        if (_empty || !usable(_attribute)) return null;
        var cells = new List<int>();
        for (int c = 0; c < _info.Cells; c++)
        {
            if (_table[c] == Maybe) return null;
            if (_table[c] == True) cells.Add(c);
        }
        return cells.Count > 0 ? (_attribute, cells.ToArray()) : null;
    }

    public override void EvaluateCodes(PartitionAttributes pa, Span<byte> result)
    {
        var codes = pa.Columns[_attribute].Codes!;
        var table = _table;
        for (int i = 0; i < result.Length; i++) result[i] = table[codes[i]];
    }

    public override bool Matches(PartitionAttributes pa, int row)
    {
        var col = pa.Columns[_attribute];
        byte t = _table[col.Codes![row]];
        if (t != Maybe) return t == True;
        return _integer ? ContainsInteger(col.Integers![row]) : ContainsNumber(col.Numbers![row]);
    }

    public override (double, long, long) Estimate(IReadOnlyList<AttributeStats> stats, int n)
    {
        if (_first < 0 || n == 0) return (0, 0, 0);
        var s = stats[_attribute];
        if (!_innerSure)
        {
            double est = 0;
            long lo = 0, hi = 0;
            for (int j = 0; j < s.Codes.Length; j++)
            {
                int c = s.Codes[j];
                if (c > 254 || _table[c] == False) continue;
                est += s.Counts[j] * _weight[c];
                hi += s.Counts[j];
                if (_table[c] == True) lo += s.Counts[j];
            }
            return (est / n, lo, hi);
        }
        // Cells strictly inside hold sure matches: counted with the cumulative counts; only the two ends are weighted.
        long inner = s.CountInRange(_first + 1, _last - 1);
        long first = s.CountOf(_first), last = _last != _first ? s.CountOf(_last) : 0;
        double estimate = inner + first * _weight[_first] + last * _weight[_last];
        long sure = inner + (_table[_first] == True ? first : 0) + (_last != _first && _table[_last] == True ? last : 0);
        return (estimate / n, sure, inner + first + last);
    }

    public override void EstimateAll(IReadOnlyList<PartitionEntry> partitions, PlannerCounts counts, Span<double> fraction, Span<long> lower, Span<long> upper)
    {
        int n = partitions.Count;
        if (_first < 0) { fraction[..n].Clear(); lower[..n].Clear(); upper[..n].Clear(); return; }
        if (!_innerSure) { base.EstimateAll(partitions, counts, fraction, lower, upper); return; }
        // Cumulative rows at the first cell, past it, at the last cell and past it: the ends are weighted, the inside is sure.
        var atFirst = counts.Row(_attribute, _first);
        var pastFirst = counts.Row(_attribute, _first + 1);
        var atLast = counts.Row(_attribute, _last);
        var pastLast = counts.Row(_attribute, _last + 1);
        var sizes = counts.Sizes;
        double wFirst = _weight[_first], wLast = _weight[_last];
        bool firstSure = _table[_first] == True, lastSure = _table[_last] == True;
        for (int p = 0; p < n; p++)
        {
            long first = pastFirst[p] - atFirst[p];
            long last = _last != _first ? pastLast[p] - atLast[p] : 0;
            long inner = _last > _first ? atLast[p] - pastFirst[p] : 0;
            fraction[p] = sizes[p] == 0 ? 0 : (inner + first * wFirst + last * wLast) / sizes[p];
            lower[p] = inner + (firstSure ? first : 0) + (lastSure && _last != _first ? last : 0);
            upper[p] = inner + first + last;
        }
    }

    public override bool Indexable => true;

    /// <summary>The value index holds raw values: the interval's positions are exactly its matches.</summary>
    public override bool IndexedExactly => true;

    /// <summary>One interval of the value index: each row once.</summary>
    public override bool IndexedDistinct => true;

    public override int IndexedCount(PartitionAttributes pa)
    {
        if (_first < 0) return 0;
        var (start, end) = Positions(pa.Columns[_attribute].ValueIndex);
        return end - start;
    }

    public override bool AddIndexed(PartitionAttributes pa, ref int[] rows, ref int count, int limit)
    {
        if (_first < 0) return true;
        var index = pa.Columns[_attribute].ValueIndex;
        var (start, end) = Positions(index);
        if (end - start > limit) return false;
        Append(index.Rows.AsSpan(start, end - start), ref rows, ref count);
        return true;
    }

    /// <summary>
    /// Positions of the interval's rows in the value index: exactly the matches. Only rows of the cells that can
    /// match qualify, so each end is searched for inside its end cell (sure cells need no search at all).
    /// </summary>
    private (int Start, int End) Positions(AttributeValueIndex index)
    {
        var cells = index.CellStarts!;
        int firstFrom = cells[_first], firstTo = cells[_first + 1], lastFrom = cells[_last], lastTo = cells[_last + 1];
        // Lossy integers: the cells decide nothing, so search every row of the cells that hold any value.
        if (!_innerSure) (firstTo, lastFrom) = (lastTo, firstFrom);
        int start, end;
        if (_table[_first] == True) start = firstFrom;
        else start = _integer ? index.FirstAtLeast(_loL, firstFrom, firstTo) : index.FirstNotBelow(_lo, _loClosed, firstFrom, firstTo);
        if (_table[_last] == True) end = lastTo;
        else end = _integer
            ? (_hiL == long.MaxValue ? lastTo : index.FirstAtLeast(_hiL + 1, lastFrom, lastTo))
            : index.FirstNotBelow(_hi, !_hiClosed, lastFrom, lastTo);
        return (start, Math.Max(start, end));
    }
}

/// <summary>
/// A number in a filter as written: its double, and where they hold it exactly, its long and decimal values. Read once,
/// by the compiler and by the log tail's filter alike (<see cref="Writes.TailFilter"/>).
/// </summary>
internal readonly record struct NumericOperand(double Double, long? Long, decimal? Decimal)
{
    public static NumericOperand Read(JsonElement e) =>
        new(e.GetDouble(), e.TryGetInt64(out long l) ? l : null, e.TryGetDecimal(out decimal m) ? m : null);
}
