using System.Text;
using System.Text.Json;
using Squash.Index.Attributes;
using Squash.Index.Build.Stages;
using Squash.Index.Model;

namespace Squash.Index.Tests.Attributes;

/// <summary>
/// The streaming scan of an attributes file (a queue build's train task) and its chunk reads (assign), against the
/// in-memory reader and <see cref="AttributeEncoding.Fit"/> on the whole file: the same encoders, the same encoded rows,
/// the same manifest attributes once partitions' cell figures are merged, and the same error messages.
/// </summary>
public class AttributeScanTests
{
    private static readonly string[] Colours = ["red", "green", "blue", "cyan"];

    private static string JsonLines(int n, int seed, string newline = "\n")
    {
        var rng = new Random(seed);
        var sb = new StringBuilder();
        for (int i = 0; i < n; i++)
        {
            var parts = new List<string>();
            if (rng.Next(10) > 0) parts.Add($"\"price\":{Math.Round(rng.NextDouble() * 1000, 3):R}");
            if (rng.Next(10) > 0) parts.Add($"\"label\":{rng.Next(10)}");
            if (rng.Next(10) > 0) parts.Add($"\"big\":{rng.Next(1000)}");
            if (rng.Next(10) > 0) parts.Add($"\"ok\":{(rng.Next(2) == 0 ? "true" : "false")}");
            if (rng.Next(10) > 0) parts.Add($"\"colour\":\"{Colours[rng.Next(Colours.Length)]}\"");
            if (rng.Next(10) > 0) parts.Add($"\"tags\":[\"{Colours[rng.Next(Colours.Length)]}\",\"t{rng.Next(50)}\"]");
            string id = rng.Next(5) > 0 ? $"\"id\":\"k{i}\"," : "";
            sb.Append($"{{{id}\"attributes\":{{{string.Join(',', parts)}}}}}{newline}");
        }
        return sb.ToString();
    }

    private static string Csv(int n, int seed)
    {
        var rng = new Random(seed);
        var sb = new StringBuilder("id,price,label,colour,ok\r\n");
        for (int i = 0; i < n; i++)
            sb.Append($"k{i},{(rng.Next(8) > 0 ? (rng.NextDouble() * 100).ToString("R", System.Globalization.CultureInfo.InvariantCulture) : "")},{rng.Next(7)},\"{Colours[rng.Next(Colours.Length)]}\",{(rng.Next(2) == 0 ? "true" : "false")}\r\n");
        return sb.ToString();
    }

    private static Task<AttributeLayout> ScanAsync(byte[] file, string name, long chunkRows, AttributeSchema? declared = null, int blockBytes = 97,
        int idHashesPerPass = AttributeReader.IdHashesPerPass) =>
        AttributeReader.ScanAsync(name, file.Length, (offset, length, _) => Task.FromResult(file.AsSpan((int)offset, length).ToArray()),
            declared, chunkRows, default, blockBytes, idHashesPerPass);

    private static string Json(IndexAttributes info) => JsonSerializer.Serialize(info);

    [Theory]
    [InlineData("a.jsonl", 1000, 37, 3)]
    [InlineData("a.jsonl", 500, 1000, 4)]
    [InlineData("b.csv", 800, 64, 5)]
    public async Task TheScanAndItsChunksGiveWhatTheWholeFileGives(string name, int n, int chunkRows, int seed)
    {
        var text = name.EndsWith(".csv") ? Csv(n, seed) : JsonLines(n, seed, seed % 2 == 0 ? "\n" : "\r\n");
        var file = Encoding.UTF8.GetBytes(text);
        var table = name.EndsWith(".csv") ? AttributeReader.ReadCsv(new StringReader(text), name) : AttributeReader.ReadJsonLines(new StringReader(text), name);
        var info = AttributeEncoding.Fit(table);

        var layout = AttributeLayout.FromJson((await ScanAsync(file, name, chunkRows)).ToJson(), "layout");
        Assert.Equal(n, layout.Rows);
        Assert.Equal((n + chunkRows - 1) / chunkRows, layout.Chunks);
        // The encoders are the whole-file fit without the per-cell figures.
        var withoutCells = info with { Attributes = info.Attributes.Select(a => a with { CellMin = null, CellMax = null, CellCounts = null }).ToArray() };
        Assert.Equal(Json(withoutCells), Json(layout.Encoders));

        // Partitions of rows spread over the chunks (every 3rd row, the rest), joined from each chunk's encoded rows.
        int[][] partitions = [Enumerable.Range(0, n).Where(r => r % 3 == 0).ToArray(), Enumerable.Range(0, n).Where(r => r % 3 != 0).ToArray()];
        var summaries = new List<PartitionSummary>();
        for (int p = 0; p < partitions.Length; p++)
        {
            var pieces = new List<PartitionAttributes>();
            for (int k = 0; k < layout.Chunks; k++)
            {
                long first = (long)k * chunkRows;
                int count = (int)Math.Min(chunkRows, n - first);
                var (offset, length) = layout.ChunkRange(k);
                var chunk = AttributeReader.ReadChunk(file.AsSpan((int)offset, (int)length).ToArray(), name, layout, first, count);
                var local = partitions[p].Where(r => r >= first && r < first + count).Select(r => (int)(r - first)).ToArray();
                // Each piece goes through its segment, as a run carries it.
                var bytes = PartitionAttributes.Encode(chunk, layout.Encoders, local).ToSegment();
                pieces.Add(PartitionAttributes.FromSegment(bytes, "piece", local.Length, layout.Encoders));
            }
            var joined = PartitionAttributes.Concat(pieces, layout.Encoders);
            var whole = PartitionAttributes.Encode(table, info, partitions[p]);
            Assert.True(whole.ToSegment().AsSpan().SequenceEqual(joined.ToSegment()), $"partition {p} differs (seed {seed})");
            var stats = joined.Statistics();
            var (min, max) = joined.CellRanges(layout.Encoders, stats);
            summaries.Add(new PartitionSummary(new PartitionEntry
            {
                Id = p, Count = joined.Count, CodedDimensions = 0, BitsPerVector = 0,
                Codes = new SegmentRef("c", 0), Vectors = new SegmentRef("v", 0), AttributeStats = stats,
            }, [], 0, min, max));
        }
        Assert.Equal(Json(info), Json(IndexBuildStages.MergeCells(layout.Encoders, summaries)));
    }

    [Fact]
    public void BeyondTheSampleCapTheBoundariesComeFromEvenlySpacedRowsAndSmallerColumnsFromEveryValue()
    {
        const int rows = 10_000, cap = 1000;
        var rng = new Random(5);
        var values = Enumerable.Range(0, rows).Select(_ => rng.NextDouble()).ToArray();
        var fit = new NumericCellFit(rows, integer: false, maxSample: cap);
        for (int r = 0; r < rows; r++) fit.Add(r, values[r]);
        var sample = Enumerable.Range(0, cap).Select(i => values[(long)i * rows / cap]).Order().ToArray();
        Assert.Equal(AttributeEncoding.FitBoundaries(sample), fit.Boundaries());

        // Up to the cap, every value: the same as fitting the sorted values.
        var small = new NumericCellFit(cap, integer: false, maxSample: cap);
        for (int r = 0; r < cap; r++) small.Add(r, values[r]);
        Assert.Equal(AttributeEncoding.FitBoundaries(values[..cap].Order().ToArray()), small.Boundaries());

        // Few distinct values over many rows: one exact cell each, whatever the sample saw.
        var few = new NumericCellFit(rows, integer: true, maxSample: cap);
        for (int r = 0; r < rows; r++) few.Add(r, r == rows - 1 ? 77 : r % 5);
        Assert.Equal(new double[] { 0, 1, 2, 3, 4, 77, Math.BitIncrement(77.0) }, few.Boundaries());
    }

    [Theory]
    [InlineData(10_000, 1000)]
    [InlineData(1001, 1000)]
    [InlineData(7919, 1024)]
    [InlineData(1000, 1000)]
    [InlineData(17, 1000)]
    public void TheSampleSlotOfARowIsItsPlaceAmongTheEvenlySpacedRows(long rows, int cap)
    {
        // The evenly spaced rows, listed directly: ⌊i·rows/cap⌋ for i below cap, or every row when there are no more.
        var expected = rows <= cap ? Enumerable.Range(0, (int)rows).Select(r => (long)r).ToArray()
            : Enumerable.Range(0, cap).Select(i => (long)i * rows / cap).ToArray();
        var slots = new List<(long Row, long Slot)>();
        for (long r = 0; r < rows; r++)
            if (NumericCellFit.SampleSlot(r, rows, cap) is var slot and >= 0) slots.Add((r, slot));
        Assert.Equal(expected, slots.Select(x => x.Row));
        Assert.Equal(Enumerable.Range(0, expected.Length).Select(i => (long)i), slots.Select(x => x.Slot));
    }

    [Theory]
    [InlineData("x.jsonl", "{\"attributes\":{\"a\":1}}\n{\"attributes\":{\"a\":\"s\"}}\n{\"attributes\":{\"b\":true}}\n{\"attributes\":{\"b\":2}}\n", null)]
    [InlineData("x.jsonl", "{\"attributes\":{\"a\":1}}\n\n{\"attributes\":{\"a\":2}}\n", null)]
    [InlineData("x.jsonl", "{\"attributes\":{\"a\":1}}\n{\"attributes\":{\"a\":2.5}}\n{\"attributes\":{\"b\":\"x\"}}\n", "b:bool,a:integer")]
    [InlineData("x.jsonl", "{\"attributes\":{\"zz\":1}}\n", "a:integer")]
    [InlineData("x.jsonl", "{\"attributes\":{\"a\":1}\n", null)]
    [InlineData("x.jsonl", "{\"attributes\":{\"a\":1}}\n{\"attributes\":{\"a\":2},\"b\":3}\n", null)]
    [InlineData("x.jsonl", "{\"attributes\":{\"a\":1}}\n{\"attributes\":{\"a\":2},\"attributes\":{\"a\":3}}\n", null)]
    [InlineData("x.jsonl", "{\"attributes\":{\"a\":1}}\n{\"attributes\":{\"a\":2,\"a\":3}}\n", "a:integer")]
    [InlineData("y.csv", "a,b\n1,2\n3\n", null)]
    [InlineData("y.csv", "a,b\n1,x\n2,y\n", "a:integer,b:bool")]
    [InlineData("y.csv", "", null)]
    [InlineData("y.csv", "a,a\n1,2\n", null)]
    public async Task ABadFileFailsWithTheMessageTheInMemoryReaderGives(string name, string text, string? schema)
    {
        var declared = schema is null ? null : AttributeSchema.Parse(schema);
        var expected = Assert.Throws<AttributeFormatException>(() => name.EndsWith(".csv")
            ? AttributeReader.ReadCsv(new StringReader(text), name, declared) : AttributeReader.ReadJsonLines(new StringReader(text), name, declared));
        var actual = await Assert.ThrowsAsync<AttributeFormatException>(() => ScanAsync(Encoding.UTF8.GetBytes(text), name, 2, declared));
        Assert.Equal(expected.Message, actual.Message);
    }

    [Fact]
    public async Task TrailingBlankLinesAByteOrderMarkAndAFinalLineWithoutBreakReadAsTheInMemoryReaderReadsThem()
    {
        foreach (var (name, text) in new[]
        {
            ("t.jsonl", "\uFEFF{\"attributes\":{\"a\":1}}\r{\"attributes\":{\"a\":2}}\n\n  \n"),
            ("t.jsonl", "{\"attributes\":{\"a\":1}}\n{\"attributes\":{\"a\":2}}"),
            ("t.csv", "a\n1\n\n2\n\n"),
        })
        {
            var file = Encoding.UTF8.GetBytes(text);
            using var reader = new StreamReader(new MemoryStream(file), Encoding.UTF8);
            var table = name.EndsWith(".csv") ? AttributeReader.ReadCsv(reader, name) : AttributeReader.ReadJsonLines(reader, name);
            var layout = await ScanAsync(file, name, 1, blockBytes: 3);
            Assert.Equal(table.Count, layout.Rows);
            var info = AttributeEncoding.Fit(table);
            for (int k = 0; k < layout.Chunks; k++)
            {
                var (offset, length) = layout.ChunkRange(k);
                var chunk = AttributeReader.ReadChunk(file.AsSpan((int)offset, (int)length).ToArray(), name, layout, k, 1);
                Assert.True(PartitionAttributes.Encode(table, info, [k]).ToSegment().AsSpan().SequenceEqual(PartitionAttributes.Encode(chunk, layout.Encoders, [0]).ToSegment()),
                    $"{name}: row {k} differs");
            }
        }
    }

    /// <summary>
    /// Files with ids the write API could not name (a repeat far from its first row, over-long, control characters, several
    /// at once, rows without ids): the scan names the same first problem, with the same message, as the in-memory check the
    /// in-process build runs, whether its hashes fit one pass or take several (3 ids a pass: ⌈n / 3⌉ passes).
    /// </summary>
    [Theory]
    [InlineData("i.jsonl", 1)]
    [InlineData("i.jsonl", 2)]
    [InlineData("i.csv", 3)]
    [InlineData("i.csv", 4)]
    public async Task TheScanNamesTheFirstIdTheWriteApiCouldNotNameAsTheInMemoryCheckDoes(string name, int seed)
    {
        bool csv = name.EndsWith(".csv");
        var rng = new Random(seed);
        int problems = 0;
        for (int round = 0; round < 40; round++)
        {
            int n = rng.Next(1, 60);
            var ids = Enumerable.Range(0, n).Select(i => rng.Next(6) == 0 ? null : $"k{i}").ToArray();
            // Zero to three faults, each at a random row: a repeat of an earlier row's id, an over-long id, a control character.
            for (int fault = rng.Next(4); fault > 0; fault--)
            {
                int row = rng.Next(n);
                ids[row] = rng.Next(3) switch
                {
                    0 => $"k{rng.Next(row + 1)}",
                    1 => new string('x', IdRules.MaxLength + rng.Next(1, 3)) + row,
                    _ => $"k{row}\u0007",
                };
            }
            string text = csv
                ? "id,n\n" + string.Concat(ids.Select((id, i) => $"{id},{i}\n"))
                : string.Concat(ids.Select((id, i) => (id is null ? "{" : $"{{\"id\":{JsonSerializer.Serialize(id)},") + $"\"attributes\":{{\"n\":{i}}}}}\n"));
            var table = csv ? AttributeReader.ReadCsv(new StringReader(text), name) : AttributeReader.ReadJsonLines(new StringReader(text), name);
            var expected = IdRules.FirstProblem(table.Ids);
            if (expected is not null) problems++;
            foreach (int perPass in new[] { 3, AttributeReader.IdHashesPerPass })
            {
                var layout = await ScanAsync(Encoding.UTF8.GetBytes(text), name, 7, blockBytes: 61, idHashesPerPass: perPass);
                Assert.True(expected == layout.IdProblem, $"round {round}, {perPass} a pass: expected {expected}, got {layout.IdProblem}\n{text}");
            }
        }
        Assert.InRange(problems, 10, 40);
    }
}
