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
