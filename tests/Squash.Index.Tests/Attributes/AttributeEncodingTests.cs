using Squash.Index.Attributes;
using Squash.Index.Format;
using Squash.Index.Model;

namespace Squash.Index.Tests.Attributes;

public class AttributeEncodingTests
{
    private static AttributeTable Sample(int n, int seed)
    {
        var rng = new Random(seed);
        var sb = new System.Text.StringBuilder();
        string[] cats = ["red", "green", "blue"];
        for (int i = 0; i < n; i++)
        {
            var parts = new List<string>();
            if (rng.Next(10) > 0) parts.Add($"\"price\":{rng.NextDouble() * 1000:R}");
            if (rng.Next(10) > 0) parts.Add($"\"label\":{rng.Next(10)}");
            if (rng.Next(10) > 0) parts.Add($"\"ok\":{(rng.Next(2) == 0 ? "true" : "false")}");
            if (rng.Next(10) > 0) parts.Add($"\"colour\":\"{cats[rng.Next(3)]}\"");
            if (rng.Next(10) > 0) parts.Add($"\"tags\":[\"{cats[rng.Next(3)]}\",\"t{rng.Next(5)}\"]");
            sb.Append($"{{\"id\":\"k{i}\",\"attributes\":{{{string.Join(',', parts)}}}}}\n");
        }
        return AttributeReader.ReadJsonLines(new StringReader(sb.ToString()), "s.jsonl");
    }

    /// <summary>The value index against brute force: every row with a value once, sorted by value (ties by row), cells where the codes say.</summary>
    [Fact]
    public void ValueIndexSortsEveryRowWithAValueAndMarksCellStarts()
    {
        var table = Sample(3000, 11);
        var info = AttributeEncoding.Fit(table);
        var rows = Enumerable.Range(0, 3000).Where(i => i % 3 != 1).ToArray();
        var pa = PartitionAttributes.Encode(table, info, rows);
        for (int a = 0; a < pa.Columns.Length; a++) AssertValueIndexIsNaiveSort(pa.Columns[a], pa.Count);
    }

    /// <summary>
    /// Columns the encoder would not write: a cell holding many equal and unequal values, small cells with equal values, values outside their cells
    /// (the index must still come out sorted), and dictionary ids far above the row count (the comparison sort).
    /// </summary>
    [Fact]
    public void ValueIndexSortsColumnsWhateverTheirCellsAndIds()
    {
        var rng = new Random(5);
        int n = 400;
        var crowded = new double[n];
        var crowdedCodes = new byte[n];
        var misplaced = new long[n];
        var misplacedCodes = new byte[n];
        var ids = new int[n];
        var tied = new long[n];
        var tiedCodes = new byte[n];
        for (int i = 0; i < n; i++)
        {
            tied[i] = rng.Next(200);
            tiedCodes[i] = (byte)(tied[i] / 4);
            crowded[i] = rng.Next(3) == 0 ? 7 : rng.NextDouble();
            crowdedCodes[i] = (byte)(i % 5 == 0 ? AttributeEncoding.MissingCode : crowded[i] >= 7 ? 1 : 0);
            misplaced[i] = rng.Next(50);
            misplacedCodes[i] = (byte)rng.Next(4);
            ids[i] = rng.Next(4) == 0 ? -1 : rng.Next(3) * 1_000_000;
        }
        AssertValueIndexIsNaiveSort(new PartitionAttributeColumn { Type = AttributeType.Number, Codes = crowdedCodes, Numbers = crowded }, n);
        AssertValueIndexIsNaiveSort(new PartitionAttributeColumn { Type = AttributeType.Integer, Codes = tiedCodes, Integers = tied }, n);
        AssertValueIndexIsNaiveSort(new PartitionAttributeColumn { Type = AttributeType.Integer, Codes = misplacedCodes, Integers = misplaced }, n, valuesInTheirCells: false);
        AssertValueIndexIsNaiveSort(new PartitionAttributeColumn { Type = AttributeType.Category, Ids = ids }, n);
    }

    private static void AssertValueIndexIsNaiveSort(PartitionAttributeColumn col, int count, bool valuesInTheirCells = true)
    {
        var index = col.ValueIndex;
        // (key, row) pairs the index should hold, computed naively.
        var expected = new List<(double Key, int Row)>();
        for (int r = 0; r < count; r++)
        {
            if (!col.IsPresent(r)) continue;
            switch (col.Type)
            {
                case AttributeType.Number: expected.Add((col.Numbers![r], r)); break;
                case AttributeType.Integer: expected.Add((col.Integers![r], r)); break;
                case AttributeType.Bool: expected.Add((col.Codes![r], r)); break;
                case AttributeType.Category: expected.Add((col.Ids![r], r)); break;
                default: foreach (int t in col.Tags(r)) expected.Add((t, r)); break;
            }
        }
        expected.Sort();
        Assert.Equal(expected.Select(e => e.Row), index.Rows);
        if (col.Type is AttributeType.Number or AttributeType.Integer)
        {
            var values = index.Numbers ?? index.Integers!.Select(v => (double)v).ToArray();
            Assert.Equal(expected.Select(e => e.Key), values);
            if (valuesInTheirCells)
                for (int c = 0; c < 256; c++)
                    for (int i = index.CellStarts![c]; i < index.CellStarts[c + 1]; i++) Assert.Equal(c, col.Codes![index.Rows[i]]);
            Assert.Equal(index.Rows.Length, index.CellStarts![256]);
        }
        else
        {
            Assert.Equal(expected.Select(e => (int)e.Key), index.Keys);
            foreach (int key in expected.Select(e => (int)e.Key).Distinct().Append(999))
            {
                var (start, end) = index.KeyRange(key);
                Assert.Equal(expected.Where(e => e.Key == key).Select(e => e.Row), index.Rows[start..end]);
            }
        }
    }

    [Fact]
    public void CountInRangeEqualsTheSumOfTheCounts()
    {
        var stats = new AttributeStats { Missing = 3, Codes = [0, 2, 3, 7, 200, 254], Counts = [5, 1, 4, 9, 2, 6] };
        for (int from = -1; from < 257; from += 1)
            for (int to = from - 1; to < 257; to += 3)
            {
                long expected = stats.Codes.Select((c, j) => c >= from && c <= to ? stats.Counts[j] : 0).Sum();
                Assert.Equal(expected, stats.CountInRange(from, to));
            }
        Assert.Equal(9, stats.CountOf(7));
        Assert.Equal(0, stats.CountOf(8));
    }

    [Fact]
    public void FewDistinctValuesGetOneCellEach()
    {
        var b = AttributeEncoding.FitBoundaries([1, 1, 2, 5, 5, 9]);
        Assert.Equal(5, b.Length);
        Assert.Equal(0, AttributeEncoding.Encode(b, 1));
        Assert.Equal(1, AttributeEncoding.Encode(b, 2));
        Assert.Equal(2, AttributeEncoding.Encode(b, 5));
        Assert.Equal(3, AttributeEncoding.Encode(b, 9));
    }

    [Fact]
    public void ExtremeValuesKeepFiniteBoundaries()
    {
        var b = AttributeEncoding.FitBoundaries([-double.MaxValue, 0, double.MaxValue]);
        Assert.All(b, v => Assert.True(double.IsFinite(v)));
        Assert.Equal(2, AttributeEncoding.Encode(b, double.MaxValue));
        var many = Enumerable.Range(0, 1000).Select(i => (i - 500) * 1e300).ToArray();
        var b2 = AttributeEncoding.FitBoundaries(many);
        Assert.All(b2, v => Assert.True(double.IsFinite(v)));
        foreach (double v in many) Assert.InRange(AttributeEncoding.Encode(b2, v), 0, 254);
    }

    [Fact]
    public void ManyDistinctValuesGet255CellsSoThatCode255MeansMissing()
    {
        var values = Enumerable.Range(0, 5000).Select(i => Math.Sqrt(i) * 3.7).ToArray();
        var b = AttributeEncoding.FitBoundaries(values);
        Assert.Equal(AttributeEncoding.MaxCells + 1, b.Length);
        foreach (double v in values) Assert.InRange(AttributeEncoding.Encode(b, v), 0, 254);
        for (int i = 1; i < b.Length; i++) Assert.True(b[i] >= b[i - 1]);
    }

    [Fact]
    public void CellMinMaxHoldEveryValueOfTheirCell()
    {
        var t = Sample(3000, 1);
        var info = AttributeEncoding.Fit(t);
        var price = info.Attributes[t.Schema.IndexOf("price")];
        var col = t.Columns[t.Schema.IndexOf("price")];
        for (int r = 0; r < t.Count; r++)
        {
            if (!col.IsPresent(r)) continue;
            int c = AttributeEncoding.Encode(price.Boundaries, col.Numbers![r]);
            Assert.InRange(col.Numbers[r], price.CellMin![c], price.CellMax![c]);
        }
    }

    [Fact]
    public void PartitionSegmentRoundTripsAndStatisticsCount()
    {
        var t = Sample(500, 2);
        var info = AttributeEncoding.Fit(t);
        var rows = Enumerable.Range(0, 500).Where(i => i % 3 != 0).ToArray();
        var pa = PartitionAttributes.Encode(t, info, rows);
        var entry = new PartitionEntry { Id = 0, Count = rows.Length, CodedDimensions = 0, BitsPerVector = 0, Codes = new("c", 0), Vectors = new("v", 0) };
        var back = PartitionAttributes.FromSegment(pa.ToSegment(), "p.seg", entry, info);
        Assert.Equal(pa.Keys, back.Keys);
        for (int a = 0; a < pa.Columns.Length; a++)
        {
            Assert.Equal(pa.Columns[a].Codes, back.Columns[a].Codes);
            Assert.Equal(pa.Columns[a].Numbers, back.Columns[a].Numbers);
            Assert.Equal(pa.Columns[a].Integers, back.Columns[a].Integers);
            Assert.Equal(pa.Columns[a].Ids, back.Columns[a].Ids);
            Assert.Equal(pa.Columns[a].TagIds, back.Columns[a].TagIds);
            Assert.Equal(pa.Columns[a].Present, back.Columns[a].Present);
        }
        var stats = pa.Statistics();
        int colour = t.Schema.IndexOf("colour");
        var col = t.Columns[colour];
        Assert.Equal(rows.Count(r => !col.IsPresent(r)), stats[colour].Missing);
        for (int j = 0; j < stats[colour].Codes.Length; j++)
            Assert.Equal(rows.Count(r => col.Ids![r] == stats[colour].Codes[j]), stats[colour].Counts[j]);
        Assert.Equal(rows.Length, stats[colour].Missing + stats[colour].Counts.Sum());
        Assert.Throws<CorruptIndexException>(() => PartitionAttributes.FromSegment(pa.ToSegment(), "p.seg", entry with { Count = 3 }, info));
    }
}
