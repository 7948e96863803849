using System.Runtime.InteropServices;
using System.Text;
using Squash.Index.Attributes;
using Squash.Index.Format;
using System.Diagnostics;

namespace Squash.Index.Model;

/// <summary>
/// One attribute of one partition, in scan form:
/// number/integer: <see cref="Codes"/> (cell, 255 = missing) and the raw values for the exact recheck;
/// bool: <see cref="Codes"/> (0/1, 255 = missing); category: <see cref="Ids"/> (dictionary id, −1 = missing);
/// tags: <see cref="Present"/> plus a sorted id list per row (<see cref="TagOffsets"/>, <see cref="TagIds"/>).
/// </summary>
public sealed class PartitionAttributeColumn
{
    public required AttributeType Type { get; init; }
    public byte[]? Codes { get; init; }
    public double[]? Numbers { get; init; }
    public long[]? Integers { get; init; }
    public int[]? Ids { get; init; }
    public byte[]? Present { get; init; }
    public int[]? TagOffsets { get; init; }
    public int[]? TagIds { get; init; }

    public bool IsPresent(int row) => Type switch
    {
        AttributeType.Category => Ids![row] >= 0,
        AttributeType.Tags => Present![row] != 0,
        _ => Codes![row] != AttributeEncoding.MissingCode,
    };

    public ReadOnlySpan<int> Tags(int row) => TagIds.AsSpan(TagOffsets![row], TagOffsets[row + 1] - TagOffsets[row]);

    private AttributeValueIndex? _index;

    /// <summary>
    /// The column's rows sorted by value (built on first use, in memory only: it is derived from the segment), so
    /// that a range or a set of values finds its rows by binary search instead of evaluating every row.
    /// </summary>
    public AttributeValueIndex ValueIndex => _index ??= AttributeValueIndex.Build(this);
}

/// <summary>
/// One column's rows ordered by value: for number and integer columns the rows that have a value, ascending by
/// value (<see cref="Numbers"/> or <see cref="Integers"/> hold the sorted values); for category and bool columns
/// ascending by dictionary id or code (<see cref="Keys"/>); for tags one entry per (tag, row) pair, ascending by tag
/// (a row holding several tags appears once under each). Ties keep storage order. Rows with no value are absent.
/// </summary>
public sealed class AttributeValueIndex
{
    public required int[] Rows { get; init; }
    /// <summary>
    /// Number and integer columns: where each cell's rows start (cell c holds positions [CellStarts[c],
    /// CellStarts[c + 1]); 256 + 1 entries). Values sorted ⇒ cells sorted, so a range search only has to look
    /// inside its two end cells: a couple of cache lines instead of ten scattered probes per partition.
    /// </summary>
    public int[]? CellStarts { get; init; }
    public double[]? Numbers { get; init; }
    public long[]? Integers { get; init; }
    public int[]? Keys { get; init; }

    /// <summary>Built once per column a filter looks at (a build's calibration builds thousands): sized arrays, no lists.</summary>
    public static AttributeValueIndex Build(PartitionAttributeColumn c)
    {
        switch (c.Type)
        {
            case AttributeType.Number:
            case AttributeType.Integer:
            {
                // Cells are ranges of values in ascending order, so rows bucketed by cell (rows ascending within each)
                // and then ordered by value inside their cell are sorted by (value, row): a few values per cell to sort
                // instead of the whole column.
                var codes = c.Codes!;
                var starts = new int[257];
                foreach (byte code in codes) if (code != AttributeEncoding.MissingCode) starts[code + 1]++;
                for (int cell = 0; cell < 256; cell++) starts[cell + 1] += starts[cell];
                var r = new int[starts[256]];
                Span<int> next = stackalloc int[256];
                starts.AsSpan(0, 256).CopyTo(next);
                for (int i = 0; i < codes.Length; i++) if (codes[i] != AttributeEncoding.MissingCode) r[next[codes[i]]++] = i;
                if (c.Type == AttributeType.Number)
                {
                    var numbers = new double[r.Length];
                    for (int i = 0; i < r.Length; i++) numbers[i] = c.Numbers![r[i]];
                    SortCells(numbers, r, starts);
                    return new AttributeValueIndex { Rows = r, Numbers = numbers, CellStarts = starts };
                }
                var integers = new long[r.Length];
                for (int i = 0; i < r.Length; i++) integers[i] = c.Integers![r[i]];
                SortCells(integers, r, starts);
                return new AttributeValueIndex { Rows = r, Integers = integers, CellStarts = starts };
            }
            case AttributeType.Bool:
            case AttributeType.Category:
            {
                int n = c.Codes?.Length ?? c.Ids!.Length, present = 0;
                for (int i = 0; i < n; i++) if (c.IsPresent(i)) present++;
                var r = new int[present];
                var k = new int[present];
                for (int i = 0, at = 0; i < n; i++)
                {
                    if (!c.IsPresent(i)) continue;
                    r[at] = i;
                    k[at++] = c.Type == AttributeType.Bool ? c.Codes![i] : c.Ids![i];
                }
                SortKeys(k, r);
                return new AttributeValueIndex { Rows = r, Keys = k };
            }
            default:
            {
                int pairs = 0;
                for (int i = 0; i < c.Present!.Length; i++) if (c.Present[i] != 0) pairs += c.Tags(i).Length;
                var r = new int[pairs];
                var k = new int[pairs];
                for (int i = 0, at = 0; i < c.Present.Length; i++)
                    if (c.Present[i] != 0)
                        foreach (int t in c.Tags(i)) { r[at] = i; k[at++] = t; }
                SortKeys(k, r);
                return new AttributeValueIndex { Rows = r, Keys = k };
            }
        }
    }

    /// <summary>
    /// Sorts (key, row) pairs given in ascending row order by key, ties keeping their rows ascending: a counting sort when
    /// the keys (dictionary ids, bool codes) span not much more than there are pairs, else a comparison sort.
    /// </summary>
    private static void SortKeys(int[] keys, int[] rows)
    {
        int max = keys.Length == 0 ? -1 : keys.Max();
        if (max > 4 * keys.Length + 1024 || (keys.Length > 0 && keys.Min() < 0))
        {
            Array.Sort(keys, rows);
            SortTiesByRow(keys, rows);
            return;
        }
        var starts = new int[max + 2];
        foreach (int key in keys) starts[key + 1]++;
        for (int key = 0; key <= max; key++) starts[key + 1] += starts[key];
        var sortedRows = new int[rows.Length];
        for (int i = 0; i < keys.Length; i++) sortedRows[starts[keys[i]]++] = rows[i];
        sortedRows.CopyTo(rows, 0);
        for (int key = 0, at = 0; key <= max; key++)
            while (at < starts[key]) keys[at++] = key;
    }

    /// <summary>
    /// Orders each cell's entries by value, ties keeping their ascending rows; then checks the whole column is sorted and,
    /// should a value lie outside its cell's range (a bug upstream), sorts the whole column instead.
    /// </summary>
    private static void SortCells<T>(T[] values, int[] rows, int[] cellStarts) where T : struct, IComparable<T>, IEquatable<T>
    {
        for (int cell = 0; cell < 256; cell++)
        {
            int start = cellStarts[cell], end = cellStarts[cell + 1];
            if (end - start <= 16)
            {
                // Insertion sort: stable, so equal values keep their rows ascending.
                for (int i = start + 1; i < end; i++)
                {
                    T value = values[i];
                    int row = rows[i], j = i - 1;
                    for (; j >= start && values[j].CompareTo(value) > 0; j--) { values[j + 1] = values[j]; rows[j + 1] = rows[j]; }
                    values[j + 1] = value;
                    rows[j + 1] = row;
                }
            }
            else
            {
                Array.Sort(values, rows, start, end - start); // introsort is unstable: equal values re-sorted by row below
                SortTiesByRow(values, rows, start, end);
            }
        }
        for (int i = 1; i < values.Length; i++)
            if (values[i - 1].CompareTo(values[i]) > 0)
            {
                Array.Sort(values, rows);
                SortTiesByRow(values, rows, 0, values.Length);
                return;
            }
    }

    /// <summary>Within each run of equal keys, rows ascending (so the order is fully determined by the data).</summary>
    private static void SortTiesByRow<T>(T[] keys, int[] rows, int from = 0, int to = -1) where T : IEquatable<T>
    {
        if (to < 0) to = keys.Length;
        for (int start = from; start < to;)
        {
            int end = start + 1;
            while (end < to && keys[end].Equals(keys[start])) end++;
            if (end - start > 1) Array.Sort(rows, start, end - start);
            start = end;
        }
    }

    /// <summary>Positions [start, end) of the entries whose key equals <paramref name="key"/> (category, bool, tags).</summary>
    public (int Start, int End) KeyRange(int key) => (LowerBound(Keys!, key), LowerBound(Keys!, key + 1));

    /// <summary>First position in [lo, hi) whose integer value is ≥ <paramref name="value"/> (hi when none).</summary>
    public int FirstAtLeast(long value, int lo, int hi)
    {
        var a = Integers!;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (a[mid] < value) lo = mid + 1; else hi = mid;
        }
        return lo;
    }

    /// <summary>First position in [lo, hi) whose number is not below the bound: ≥ it (inclusive) or &gt; it (exclusive).</summary>
    public int FirstNotBelow(double bound, bool inclusive, int lo, int hi)
    {
        var a = Numbers!;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (a[mid] < bound || (!inclusive && a[mid] == bound)) lo = mid + 1; else hi = mid;
        }
        return lo;
    }

    private static int LowerBound(int[] a, int value)
    {
        int lo = 0, hi = a.Length;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (a[mid] < value) lo = mid + 1; else hi = mid;
        }
        return lo;
    }
}

/// <summary>
/// One partition's attributes (rows in the partition's storage order) and optional string ids; stored as its
/// own segment so that a query without a filter never reads it.
/// Sections: 1 id offsets (int, n + 1), 2 id UTF-8 bytes, 3 id present (byte); attribute a uses 16 + 8a + k:
/// k = 0 codes / category ids / tag presence, 1 raw numbers, 2 tag offsets, 3 tag ids.
/// </summary>
public sealed class PartitionAttributes
{
    private const uint KeyOffsetSection = 1, KeyBytesSection = 2, KeyPresentSection = 3;
    private static uint Section(int a, int k) => (uint)(16 + 8 * a + k);

    public required int Count { get; init; }
    public required PartitionAttributeColumn[] Columns { get; init; }
    /// <summary>User ids (null: none given for that vector); null when the index has no ids.</summary>
    public string?[]? Keys { get; init; }
    public long StoredBytes { get; init; }

    /// <summary>Encodes the given rows (ascending row numbers) of the table with the index-wide encoders.</summary>
    public static PartitionAttributes Encode(AttributeTable table, IndexAttributes info, int[] rows) => Encode(info, new TableRows(table, rows));

    /// <summary>
    /// Rows copied from encoded partitions, as they are (codes, raw values, dictionary ids and ids stay valid: dictionaries
    /// only grow and number cells never move): row i is row <c>rows[i].Row</c> of <c>parts[rows[i].Part]</c>.
    /// </summary>
    public static PartitionAttributes Gather(IndexAttributes info, IReadOnlyList<PartitionAttributes> parts, IReadOnlyList<(int Part, int Row)> rows, long storedBytes = 0)
    {
        var gathered = Encode(info, new StoredRows(parts, rows));
        return storedBytes == 0 ? gathered : new PartitionAttributes { Count = gathered.Count, Columns = gathered.Columns, Keys = gathered.Keys, StoredBytes = storedBytes };
    }

    /// <summary>
    /// The one attribute encoder: each row's values from <paramref name="rows"/> — copied as they are from an encoded row,
    /// or encoded here (numbers into their cells, categories and tags as dictionary ids the source gives).
    /// </summary>
    public static PartitionAttributes Encode(IndexAttributes info, AttributeRowSource rows)
    {
        int n = rows.Count;
        var stored = new (PartitionAttributes Part, int Row)?[n];
        for (int i = 0; i < n; i++) stored[i] = rows.Stored(i);
        var columns = new PartitionAttributeColumn[info.Attributes.Count];
        var tagBuffer = new List<int>();
        for (int a = 0; a < columns.Length; a++)
        {
            var def = info.Attributes[a];
            switch (def.Type)
            {
                case AttributeType.Number:
                case AttributeType.Integer:
                {
                    var codes = new byte[n];
                    double[]? numbers = def.Type == AttributeType.Number ? new double[n] : null;
                    long[]? integers = def.Type == AttributeType.Integer ? new long[n] : null;
                    for (int i = 0; i < n; i++)
                    {
                        if (stored[i] is var (part, row))
                        {
                            var was = part.Columns[a];
                            codes[i] = was.Codes![row];
                            if (numbers is not null) numbers[i] = was.Numbers![row]; else integers![i] = was.Integers![row];
                        }
                        else if (numbers is not null && rows.TryNumber(i, a, out double x)) codes[i] = rows.NumberCode(a, def, numbers[i] = x);
                        else if (integers is not null && rows.TryInteger(i, a, out long z)) codes[i] = rows.NumberCode(a, def, integers[i] = z);
                        else codes[i] = AttributeEncoding.MissingCode;
                    }
                    columns[a] = new PartitionAttributeColumn { Type = def.Type, Codes = codes, Numbers = numbers, Integers = integers };
                    break;
                }
                case AttributeType.Bool:
                {
                    var codes = new byte[n];
                    for (int i = 0; i < n; i++)
                        codes[i] = stored[i] is var (part, row) ? part.Columns[a].Codes![row]
                            : rows.TryBool(i, a, out bool b) ? (byte)(b ? 1 : 0) : AttributeEncoding.MissingCode;
                    columns[a] = new PartitionAttributeColumn { Type = def.Type, Codes = codes };
                    break;
                }
                case AttributeType.Category:
                {
                    var ids = new int[n];
                    for (int i = 0; i < n; i++) ids[i] = stored[i] is var (part, row) ? part.Columns[a].Ids![row] : rows.Category(i, a);
                    columns[a] = new PartitionAttributeColumn { Type = def.Type, Ids = ids };
                    break;
                }
                default:
                {
                    var present = new byte[n];
                    var offsets = new int[n + 1];
                    var tags = new List<int>();
                    for (int i = 0; i < n; i++)
                    {
                        offsets[i] = tags.Count;
                        if (stored[i] is var (part, row))
                        {
                            var was = part.Columns[a];
                            present[i] = was.Present![row];
                            if (present[i] != 0) foreach (int t in was.Tags(row)) tags.Add(t);
                        }
                        else
                        {
                            tagBuffer.Clear();
                            if (rows.Tags(i, a, tagBuffer)) { present[i] = 1; tags.AddRange(tagBuffer); }
                        }
                    }
                    offsets[n] = tags.Count;
                    columns[a] = new PartitionAttributeColumn { Type = def.Type, Present = present, TagOffsets = offsets, TagIds = tags.ToArray() };
                    break;
                }
            }
        }
        string?[]? keys = null;
        if (info.HasIds)
        {
            keys = new string?[n];
            for (int i = 0; i < n; i++) keys[i] = stored[i] is var (part, row) ? part.Keys![row] : rows.Key(i);
        }
        return new PartitionAttributes { Count = n, Columns = columns, Keys = keys };
    }

    /// <summary>The rows of several parts one after the other (a distributed build's chunks of one partition, in row order).</summary>
    public static PartitionAttributes Concat(IReadOnlyList<PartitionAttributes> parts, IndexAttributes info) =>
        Gather(info, parts, parts.SelectMany((p, k) => Enumerable.Range(0, p.Count).Select(row => (k, row))).ToArray());

    /// <summary>
    /// For each number or integer attribute (null for the others): the smallest and largest value in each cell this
    /// partition uses, in the order of <see cref="Statistics"/>' codes: what the index-wide <see cref="AttributeInfo.CellMin"/>
    /// and <see cref="AttributeInfo.CellMax"/> are merged from.
    /// </summary>
    public (double[]?[] Min, double[]?[] Max) CellRanges(IndexAttributes info, IReadOnlyList<AttributeStats> stats)
    {
        var min = new double[]?[Columns.Length];
        var max = new double[]?[Columns.Length];
        for (int a = 0; a < Columns.Length; a++)
        {
            var c = Columns[a];
            if (c.Type is not (AttributeType.Number or AttributeType.Integer)) continue;
            var ranges = new CellRanges(info.Attributes[a].Cells);
            for (int i = 0; i < Count; i++)
                if (c.Codes![i] != AttributeEncoding.MissingCode) ranges.Add(c.Codes[i], c.Numbers is not null ? c.Numbers[i] : c.Integers![i]);
            min[a] = stats[a].Codes.Select(code => ranges.Min[code]).ToArray();
            max[a] = stats[a].Codes.Select(code => ranges.Max[code]).ToArray();
        }
        return (min, max);
    }

    /// <summary>Rows of an attribute table (a build's input): values already parsed, categories and tags already dictionary ids.</summary>
    private sealed class TableRows(AttributeTable table, int[] rows) : AttributeRowSource
    {
        public override int Count => rows.Length;
        public override string? Key(int i) => table.Ids?[rows[i]];
        private AttributeColumn? Present(int i, int a) => table.Columns[a] is var c && c.IsPresent(rows[i]) ? c : null;
        public override bool TryNumber(int i, int a, out double value) { value = Present(i, a)?.Numbers![rows[i]] ?? 0; return Present(i, a) is not null; }
        public override bool TryInteger(int i, int a, out long value) { value = Present(i, a)?.Integers![rows[i]] ?? 0; return Present(i, a) is not null; }
        public override bool TryBool(int i, int a, out bool value) { value = Present(i, a)?.Ids![rows[i]] == 1; return Present(i, a) is not null; }
        public override int Category(int i, int a) => Present(i, a)?.Ids![rows[i]] ?? -1;
        public override bool Tags(int i, int a, List<int> into)
        {
            if (Present(i, a) is not { } c) return false;
            foreach (int t in c.Tags(rows[i])) into.Add(t);
            return true;
        }
    }

    /// <summary>Rows of encoded partitions, every one copied as it is.</summary>
    private sealed class StoredRows(IReadOnlyList<PartitionAttributes> parts, IReadOnlyList<(int Part, int Row)> rows) : AttributeRowSource
    {
        public override int Count => rows.Count;
        public override (PartitionAttributes Part, int Row)? Stored(int i) => (parts[rows[i].Part], rows[i].Row);
        public override string? Key(int i) => throw new UnreachableException();
        public override bool TryNumber(int i, int a, out double value) => throw new UnreachableException();
        public override bool TryInteger(int i, int a, out long value) => throw new UnreachableException();
        public override bool TryBool(int i, int a, out bool value) => throw new UnreachableException();
        public override int Category(int i, int a) => throw new UnreachableException();
        public override bool Tags(int i, int a, List<int> into) => throw new UnreachableException();
    }

    /// <summary>Per-attribute code counts for the manifest (the planner's view of this partition).</summary>
    public AttributeStats[] Statistics()
    {
        var stats = new AttributeStats[Columns.Length];
        for (int a = 0; a < Columns.Length; a++)
        {
            var c = Columns[a];
            var counts = new SortedDictionary<int, int>();
            int missing = 0;
            for (int i = 0; i < Count; i++)
            {
                if (!c.IsPresent(i)) { missing++; continue; }
                switch (c.Type)
                {
                    case AttributeType.Category: Bump(counts, c.Ids![i]); break;
                    case AttributeType.Tags: foreach (int t in c.Tags(i)) Bump(counts, t); break;
                    default: Bump(counts, c.Codes![i]); break;
                }
            }
            stats[a] = new AttributeStats { Missing = missing, Codes = counts.Keys.ToArray(), Counts = counts.Values.ToArray() };
        }
        return stats;
    }

    private static void Bump(SortedDictionary<int, int> d, int key) => d[key] = d.TryGetValue(key, out int v) ? v + 1 : 1;

    public byte[] ToSegment()
    {
        var sections = new List<(uint, ReadOnlyMemory<byte>)>();
        if (Keys is not null)
        {
            var offsets = new int[Count + 1];
            var present = new byte[Count];
            var bytes = new MemoryStream();
            for (int i = 0; i < Count; i++)
            {
                offsets[i] = (int)bytes.Length;
                if (Keys[i] is { } k) { present[i] = 1; bytes.Write(Encoding.UTF8.GetBytes(k)); }
            }
            offsets[Count] = (int)bytes.Length;
            sections.Add((KeyOffsetSection, SegmentFile.Bytes(offsets)));
            sections.Add((KeyBytesSection, bytes.ToArray()));
            sections.Add((KeyPresentSection, present));
        }
        for (int a = 0; a < Columns.Length; a++)
        {
            var c = Columns[a];
            switch (c.Type)
            {
                case AttributeType.Number: sections.Add((Section(a, 0), c.Codes!)); sections.Add((Section(a, 1), SegmentFile.Bytes(c.Numbers!))); break;
                case AttributeType.Integer: sections.Add((Section(a, 0), c.Codes!)); sections.Add((Section(a, 1), SegmentFile.Bytes(c.Integers!))); break;
                case AttributeType.Bool: sections.Add((Section(a, 0), c.Codes!)); break;
                case AttributeType.Category: sections.Add((Section(a, 0), SegmentFile.Bytes(c.Ids!))); break;
                default:
                    sections.Add((Section(a, 0), c.Present!));
                    sections.Add((Section(a, 2), SegmentFile.Bytes(c.TagOffsets!)));
                    sections.Add((Section(a, 3), SegmentFile.Bytes(c.TagIds!)));
                    break;
            }
        }
        return SegmentFile.Write(SegmentKind.Attributes, Count, Columns.Length, sections);
    }

    /// <summary>Reads and validates against the manifest (row count, attribute count, code ranges).</summary>
    public static PartitionAttributes FromSegment(byte[] file, string name, PartitionEntry entry, IndexAttributes info) =>
        FromSegment(file, name, entry.Count, info);

    /// <summary>Reads and validates a segment of <paramref name="n"/> rows against the index-wide encoders.</summary>
    public static PartitionAttributes FromSegment(byte[] file, string name, int n, IndexAttributes info)
    {
        var v = SegmentFile.Open(file, name, SegmentKind.Attributes);
        if (v.Rows != n || v.Columns != info.Attributes.Count) throw new CorruptIndexException($"segment '{name}' does not match its manifest entry (rows or attribute count)");
        string?[]? keys = null;
        if (info.HasIds)
        {
            var offsets = v.Array<int>(KeyOffsetSection, n + 1);
            var bytes = v.Section(KeyBytesSection);
            var present = v.Array<byte>(KeyPresentSection, n);
            keys = new string?[n];
            for (int i = 0; i < n; i++)
            {
                if (offsets[i] < 0 || offsets[i + 1] < offsets[i] || offsets[i + 1] > bytes.Length) throw new CorruptIndexException($"segment '{name}' has bad id offsets");
                if (present[i] != 0) keys[i] = Encoding.UTF8.GetString(bytes[offsets[i]..offsets[i + 1]]);
            }
        }
        var columns = new PartitionAttributeColumn[info.Attributes.Count];
        for (int a = 0; a < columns.Length; a++)
        {
            var def = info.Attributes[a];
            switch (def.Type)
            {
                case AttributeType.Number:
                case AttributeType.Integer:
                case AttributeType.Bool:
                {
                    var codes = v.Array<byte>(Section(a, 0), n);
                    int limit = def.Type == AttributeType.Bool ? 2 : def.Cells;
                    foreach (byte c in codes)
                        if (c != AttributeEncoding.MissingCode && c >= limit) throw new CorruptIndexException($"segment '{name}' attribute '{def.Name}' has code {c} outside its {limit} cells");
                    columns[a] = new PartitionAttributeColumn
                    {
                        Type = def.Type,
                        Codes = codes,
                        Numbers = def.Type == AttributeType.Number ? v.Array<double>(Section(a, 1), n) : null,
                        Integers = def.Type == AttributeType.Integer ? v.Array<long>(Section(a, 1), n) : null,
                    };
                    break;
                }
                case AttributeType.Category:
                {
                    var ids = v.Array<int>(Section(a, 0), n);
                    int count = def.Values?.Length ?? 0;
                    foreach (int id in ids) if (id < -1 || id >= count) throw new CorruptIndexException($"segment '{name}' attribute '{def.Name}' has value id {id} outside its dictionary");
                    columns[a] = new PartitionAttributeColumn { Type = def.Type, Ids = ids };
                    break;
                }
                default:
                {
                    var offsets = v.Array<int>(Section(a, 2), n + 1);
                    var ids = MemoryMarshal.Cast<byte, int>(v.Section(Section(a, 3))).ToArray();
                    int count = def.Values?.Length ?? 0;
                    if (offsets[0] != 0 || offsets[n] != ids.Length) throw new CorruptIndexException($"segment '{name}' attribute '{def.Name}' has bad tag offsets");
                    for (int i = 0; i < n; i++) if (offsets[i + 1] < offsets[i]) throw new CorruptIndexException($"segment '{name}' attribute '{def.Name}' has bad tag offsets");
                    foreach (int id in ids) if (id < 0 || id >= count) throw new CorruptIndexException($"segment '{name}' attribute '{def.Name}' has tag id {id} outside its dictionary");
                    columns[a] = new PartitionAttributeColumn { Type = def.Type, Present = v.Array<byte>(Section(a, 0), n), TagOffsets = offsets, TagIds = ids };
                    break;
                }
            }
        }
        return new PartitionAttributes { Count = n, Columns = columns, Keys = keys, StoredBytes = file.LongLength };
    }
}

/// <summary>
/// Where <see cref="PartitionAttributes.Encode(IndexAttributes, AttributeRowSource)"/> takes row i's values from: an encoded
/// row to copy as it is (<see cref="Stored"/>), or values to encode. The Try methods answer false for a missing value.
/// </summary>
public abstract class AttributeRowSource
{
    public abstract int Count { get; }
    /// <summary>An encoded row to copy as it is, or null when row i's values are to be encoded.</summary>
    public virtual (PartitionAttributes Part, int Row)? Stored(int i) => null;
    /// <summary>Row i's user id (asked only when the index has ids).</summary>
    public abstract string? Key(int i);
    public abstract bool TryNumber(int i, int a, out double value);
    public abstract bool TryInteger(int i, int a, out long value);
    public abstract bool TryBool(int i, int a, out bool value);
    /// <summary>Row i's category as a dictionary id, −1 when it has none.</summary>
    public abstract int Category(int i, int a);
    /// <summary>Adds row i's tags as dictionary ids, ascending and distinct; false when it has none.</summary>
    public abstract bool Tags(int i, int a, List<int> into);
    /// <summary>The cell a number is coded in: the index-wide encoder (a source that grows the schema also widens the cell's min/max).</summary>
    public virtual byte NumberCode(int a, AttributeInfo def, double value) => (byte)AttributeEncoding.Encode(def.Boundaries, value);
}
