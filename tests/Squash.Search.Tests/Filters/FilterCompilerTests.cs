using System.Text.Json;
using Squash.Index.Attributes;
using Squash.Index.Model;
using Squash.Search.Filters;

namespace Squash.Search.Tests.Filters;

/// <summary>Invariant 2 at the filter level: the code pass never drops a match; the exact pass equals the reference semantics.</summary>
public class FilterCompilerTests
{
    private const int N = 4000;
    private static readonly AttributeTable Table = FilterTestData.Table(N, 17, out _);
    private static readonly IndexAttributes Info = AttributeEncoding.Fit(Table);
    private static readonly PartitionAttributes All = PartitionAttributes.Encode(Table, Info, Enumerable.Range(0, N).ToArray());
    private static readonly FilterCompiler Compiler = new(Info);

    /// <param name="seed">The seed that generated <paramref name="json"/>, named in every failure so the case can be replayed.</param>
    private static void Check(string json, int? seed = null)
    {
        var filter = Compiler.Compile(json);
        string where = seed is null ? json : $"seed {seed}, {json}";
        using var doc = JsonDocument.Parse(json);
        var codes = new byte[N];
        filter.EvaluateCodes(All, codes);
        int matches = 0;
        for (int r = 0; r < N; r++)
        {
            bool expected = FilterTestData.Reference(doc.RootElement, Table, r);
            matches += expected ? 1 : 0;
            if (expected) Assert.True(codes[r] != 0, $"{where}: row {r} matches but the code-level filter rejects it");
            if (codes[r] == 2) Assert.True(expected, $"{where}: row {r} is coded as a sure match but does not match");
            Assert.True(expected == filter.Matches(All, r), $"{where}: row {r} exact result {filter.Matches(All, r)}, reference {expected}");
        }
        // The value index: a superset of the matches, ascending, no repeats.
        if (filter.Indexable)
        {
            int[] rows = [];
            Assert.True(filter.TryCandidates(All, ref rows, out int count), where);
            var candidates = rows[..count];
            for (int i = 1; i < count; i++) Assert.True(candidates[i - 1] < candidates[i], $"{where}: candidates not ascending and unique");
            var set = candidates.ToHashSet();
            for (int r = 0; r < N; r++)
                if (FilterTestData.Reference(doc.RootElement, Table, r)) Assert.True(set.Contains(r), $"{where}: row {r} matches but the value index misses it");
            if (filter.IndexedExactly)
                for (int r = 0; r < N; r++)
                    Assert.True(set.Contains(r) == FilterTestData.Reference(doc.RootElement, Table, r), $"{where}: the value index claims exactness but row {r} disagrees");
            if (count > 0) Assert.False(filter.TryCandidates(All, ref rows, out _, limit: count - 1), $"{where}: the limit was ignored");
            // In any order: the same rows, still each once.
            int[] anyOrder = [];
            Assert.True(filter.TryCandidates(All, ref anyOrder, out int anyCount, ascending: false), where);
            var unordered = anyOrder[..anyCount];
            Assert.True(unordered.Length == unordered.Distinct().Count(), $"{where}: candidates in any order repeat a row");
            Assert.True(set.SetEquals(unordered), $"{where}: candidates in any order are not the ascending ones");
        }
        // The statistics' upper bound is a bound on code-level matches, so a bound on true matches too.
        var entry = new PartitionEntry { Id = 0, Count = N, CodedDimensions = 0, BitsPerVector = 0, Codes = new("c", 0), Vectors = new("v", 0), AttributeStats = All.Statistics() };
        var (_, upper) = filter.Estimate(entry);
        Assert.True(upper >= codes.Count(c => c != 0), $"{where}: upper bound {upper} below the code-level count");
    }

    /// <summary>Each case has its own fixed seed (string hashes are randomised per process, so they cannot be seeds).</summary>
    public static TheoryData<string, string, int> OperatorsByType()
    {
        var data = new TheoryData<string, string, int>();
        int seed = 1;
        foreach (var a in new[] { "price", "label", "qty" })
            foreach (var op in new[] { "$eq", "$ne", "$lt", "$lte", "$gt", "$gte", "$in", "$nin", "$exists", "bare" }) data.Add(a, op, seed++);
        foreach (var a in new[] { "ok", "colour", "tags" })
            foreach (var op in new[] { "$eq", "$ne", "$in", "$nin", "$exists", "bare" }) data.Add(a, op, seed++);
        return data;
    }

    [Theory]
    [MemberData(nameof(OperatorsByType))]
    public void EveryOperatorOnEveryTypeHasNoFalseNegativesAndExactRecheck(string attribute, string op, int seed)
    {
        var rng = new Random(seed);
        for (int i = 0; i < 25; i++) Check(FilterTestData.Leaf(rng, attribute, op), seed);
    }

    [Fact]
    public void EqualityOnDataValuesAndRangeEdges()
    {
        Check("{\"price\":{\"$lte\":" + Table.Columns[0].Numbers![5].ToString("R", System.Globalization.CultureInfo.InvariantCulture) + "}}");
        Check("{\"qty\":{\"$gte\":" + Table.Columns[2].Integers![7] + "}}");
        Check("{\"qty\":{\"$lt\":2.5}}");
        Check("{\"label\":{\"$eq\":2.5}}");
        Check("{\"label\":{\"$eq\":3.0}}");
        Check("{\"label\":3.0}");
        Check("{\"qty\":{\"$gt\":-20.0,\"$lte\":1e1}}");
        Check("{\"label\":{\"$in\":[]}}");
        Check("{\"tags\":{\"$nin\":[]}}");
    }

    /// <summary>
    /// A whole number written with a decimal point or an exponent (what a client's float serialises to) is that integer in a
    /// list too, as it is in $eq: before, $in missed the rows holding it and $nin/$ne kept them.
    /// </summary>
    [Fact]
    public void ListsOnIntegersTakeWholeNumbersWrittenAsDecimals()
    {
        Check("{\"label\":{\"$in\":[3.0]}}");
        Check("{\"label\":{\"$in\":[3e0, 4.00]}}");
        Check("{\"label\":{\"$nin\":[3.0]}}");
        Check("{\"label\":{\"$ne\":3.0}}");
        Check("{\"qty\":{\"$in\":[" + Table.Columns[2].Integers![7] + ".0]}}");
        Check("{\"label\":{\"$in\":[3.5, 1e20]}}");
    }

    [Fact]
    public void RandomNestedFilters()
    {
        const int seed = 12345;
        var rng = new Random(seed);
        for (int i = 0; i < 300; i++) Check(FilterTestData.Nested(rng, 4), seed);
    }

    [Fact]
    public void EstimatesForAllPartitionsAtOnceEqualThePerPartitionOnesAndBoundTheMatches()
    {
        // Seven partitions of uneven size, rows dealt at random.
        var rng = new Random(5);
        var groups = Enumerable.Range(0, 7).Select(_ => new List<int>()).ToArray();
        for (int r = 0; r < N; r++) groups[rng.Next(r % 3 == 0 ? 2 : 7)].Add(r);
        var parts = groups.Select(g => PartitionAttributes.Encode(Table, Info, g.ToArray())).ToArray();
        var entries = parts.Select((pa, i) => new PartitionEntry { Id = i, Count = pa.Count, CodedDimensions = 0, BitsPerVector = 0, Codes = new("c", 0), Vectors = new("v", 0), AttributeStats = pa.Statistics() }).ToArray();
        var filters = Enumerable.Range(0, 200).Select(_ => FilterTestData.Nested(rng, 4))
            .Concat(["{\"qty\":{\"$gte\":-20,\"$lt\":35}}", "{\"price\":{\"$gt\":100.5,\"$lte\":101}}", "{\"$and\":[{\"qty\":{\"$lt\":500}},{\"qty\":{\"$gt\":499}}]}"]);
        foreach (var json in filters)
        {
            var filter = Compiler.Compile(json);
            var est = new double[entries.Length];
            var upper = new long[entries.Length];
            filter.EstimateAll(entries, est, upper);
            using var doc = JsonDocument.Parse(json);
            for (int p = 0; p < entries.Length; p++)
            {
                var (e, u) = filter.Estimate(entries[p]);
                Assert.True(Math.Abs(e - est[p]) <= 1e-9 * Math.Max(1, e), $"{json} partition {p}: estimate {est[p]} vs {e}");
                Assert.Equal(u, upper[p]);
                int matches = groups[p].Count(r => FilterTestData.Reference(doc.RootElement, Table, r));
                Assert.True(upper[p] >= matches, $"{json} partition {p}: upper bound {upper[p]} below {matches} matches");
            }
        }
    }

    /// <summary>Integers past 2^53 (lossy cells) and at the ends of long: ranges, the value index and the recheck stay exact.</summary>
    [Fact]
    public void RangesOnHugeIntegersAreExact()
    {
        var rng = new Random(3);
        long[] anchors = [long.MinValue, long.MinValue + 1, -(1L << 53) - 1, -5, 0, 7, (1L << 53) - 1, 1L << 53, (1L << 53) + 1, (1L << 62) + 3, long.MaxValue - 1, long.MaxValue];
        int n = 600;
        var values = Enumerable.Range(0, n).Select(i => i % 3 == 0 ? anchors[rng.Next(anchors.Length)] + rng.Next(-2, 3) : (long)(rng.NextDouble() * 2e18) * (rng.Next(2) * 2 - 1)).ToArray();
        var jsonl = string.Join('\n', values.Select((v, i) => i % 17 == 0 ? "{\"attributes\":{}}" : $"{{\"attributes\":{{\"big\":{v}}}}}"));
        var table = AttributeReader.ReadJsonLines(new StringReader(jsonl), "big.jsonl");
        var info = AttributeEncoding.Fit(table);
        var pa = PartitionAttributes.Encode(table, info, Enumerable.Range(0, n).ToArray());
        var compiler = new FilterCompiler(info);
        var ops = new[] { "$lt", "$lte", "$gt", "$gte", "$eq" };
        for (int t = 0; t < 300; t++)
        {
            long a = values[rng.Next(n)] + rng.Next(-1, 2), b = values[rng.Next(n)];
            string op1 = ops[rng.Next(ops.Length)], op2 = ops[rng.Next(4)];
            string operand = rng.Next(5) == 0 ? $"{a}.5" : $"{a}";
            var json = rng.Next(2) == 0 ? $"{{\"big\":{{\"{op1}\":{operand}}}}}" : $"{{\"big\":{{\"{op1}\":{operand},\"{op2}\":{b}}}}}";
            var filter = compiler.Compile(json);
            using var doc = JsonDocument.Parse(json);
            int[] rows = [];
            Assert.True(filter.TryCandidates(pa, ref rows, out int count), json);
            var candidates = rows[..count].ToHashSet();
            var codes = new byte[n];
            filter.EvaluateCodes(pa, codes);
            for (int r = 0; r < n; r++)
            {
                // Exact decimal arithmetic (FilterTestData.Reference reads operands as doubles, which round past 2^53).
                bool expected = r % 17 != 0 && doc.RootElement.GetProperty("big").EnumerateObject().All(o =>
                {
                    decimal v = values[r], x = o.Value.GetDecimal();
                    return o.Name switch { "$lt" => v < x, "$lte" => v <= x, "$gt" => v > x, "$gte" => v >= x, _ => v == x };
                });
                Assert.True(expected == filter.Matches(pa, r), $"{json}: row {r} ({(r % 17 == 0 ? "missing" : values[r].ToString())}) exact {filter.Matches(pa, r)}, reference {expected}");
                if (expected) Assert.True(candidates.Contains(r) && codes[r] != 0, $"{json}: row {r} ({values[r]}) matches but the index or the codes miss it");
            }
        }
    }

    /// <summary>A range given as two operators on one attribute is one interval: estimated as a range, not as the product of its ends.</summary>
    [Fact]
    public void TwoEndsOfARangeAreEstimatedTogether()
    {
        var entry = new PartitionEntry { Id = 0, Count = N, CodedDimensions = 0, BitsPerVector = 0, Codes = new("c", 0), Vectors = new("v", 0), AttributeStats = All.Statistics() };
        foreach (var (lo, hi) in new[] { (-1000, 1000), (-400, -300), (0, 40), (250, 270), (998, 999) })
        {
            var json = $"{{\"qty\":{{\"$gte\":{lo},\"$lt\":{hi}}}}}";
            int matches = Enumerable.Range(0, N).Count(r => Table.Columns[2].IsPresent(r) && Table.Columns[2].Integers![r] >= lo && Table.Columns[2].Integers![r] < hi);
            var (e, _) = Compiler.Compile(json).Estimate(entry);
            Assert.True(e <= 2 * matches + 10 && e >= matches / 2.0 - 10, $"{json}: estimated {e:F1}, {matches} match");
        }
    }

    /// <summary>
    /// $in/$nin lists of 100,000 values compile and evaluate to exactly what set membership says, row by row (the
    /// reference evaluator scans a list per row, too slow at this size; a hash set is the brute force here).
    /// </summary>
    [Fact]
    public void InAndNinWithAHundredThousandValuesMatchSetMembership()
    {
        var words = Enumerable.Range(0, 100_000).Select(i => $"c{i}").Append("red").ToArray();
        // Every other integer over and far beyond the data's range: about half the present rows are in the list.
        var numbers = Enumerable.Range(0, 100_000).Select(i => 2L * i - 1000).ToArray();
        var colourIn = Compiler.Compile($"{{\"colour\":{{\"$in\":[{string.Join(',', words.Select(w => $"\"{w}\""))}]}}}}");
        var qtyNin = Compiler.Compile($"{{\"qty\":{{\"$nin\":[{string.Join(',', numbers)}]}}}}");
        var wordSet = words.ToHashSet();
        var numberSet = numbers.ToHashSet();
        var colour = Table.Columns[Table.Schema.IndexOf("colour")];
        var qty = Table.Columns[Table.Schema.IndexOf("qty")];
        int inMatches = 0, ninMatches = 0;
        foreach (var (filter, expected, name) in new (CompiledFilter, Func<int, bool>, string)[]
        {
            (colourIn, r => colour.IsPresent(r) && wordSet.Contains(colour.Dictionary![colour.Ids![r]]), "colour $in"),
            // Missing counts as "not in the list", as for $ne.
            (qtyNin, r => !qty.IsPresent(r) || !numberSet.Contains(qty.Integers![r]), "qty $nin"),
        })
        {
            var codes = new byte[N];
            filter.EvaluateCodes(All, codes);
            for (int r = 0; r < N; r++)
            {
                bool want = expected(r);
                if (want) Assert.True(codes[r] != 0, $"{name}: row {r} matches but the code-level filter rejects it");
                if (codes[r] == 2) Assert.True(want, $"{name}: row {r} is coded as a sure match but does not match");
                Assert.True(want == filter.Matches(All, r), $"{name}: row {r} exact result {filter.Matches(All, r)}, expected {want}");
                if (want && filter == colourIn) inMatches++;
                if (want && filter == qtyNin) ninMatches++;
            }
        }
        // Neither list is trivially all or nothing on this data.
        Assert.InRange(inMatches, 1, N - 1);
        Assert.InRange(ninMatches, 1, N - 1);
    }

    [Fact]
    public void EmptyFilterMatchesAll() => Assert.True(Compiler.Compile("{}").MatchesAll);

    [Theory]
    [InlineData("{\"colour\":{\"$lt\":3}}", "$.colour.$lt", "$lt is not defined for category attribute 'colour'")]
    [InlineData("{\"price\":{\"$lt\":\"cheap\"}}", "$.price.$lt", "expected a number for number attribute 'price', got a string")]
    [InlineData("{\"size\":1}", "$.size", "unknown attribute 'size'")]
    [InlineData("{\"price\":{\"$foo\":1}}", "$.price.$foo", "unknown operator '$foo' (expected $eq, $ne, $lt, $lte, $gt, $gte, $in, $nin, $exists or $not)")]
    [InlineData("{\"$xor\":[]}", "$.$xor", "unknown operator '$xor' (expected $and, $or, $not or an attribute name)")]
    [InlineData("{\"$or\":[{\"label\":1},{\"price\":{\"$in\":5}}]}", "$.$or[1].price.$in", "$in expects an array, got a number")]
    [InlineData("{\"$and\":[{\"label\":1},3]}", "$.$and[1]", "expected a filter object, got a number")]
    [InlineData("{\"$or\":[]}", "$.$or", "$or expects a non-empty array of filters")]
    [InlineData("{\"ok\":{\"$in\":[true,1]}}", "$.ok.$in[1]", "expected true or false for bool attribute 'ok', got a number")]
    [InlineData("{\"tags\":[\"a\"]}", "$.tags", "an array needs $in or $nin")]
    [InlineData("{\"label\":{\"$exists\":1}}", "$.label.$exists", "$exists expects true or false, got a number")]
    [InlineData("{\"label\":{\"$not\":[3]}}", "$.label.$not", "$not expects an operator object or a single value, got an array")]
    [InlineData("[1]", "$", "a filter must be a JSON object, got an array")]
    [InlineData("{\"colour\":{\"$in\":[\"red\",2]}}", "$.colour.$in[1]", "expected a string for category attribute 'colour', got a number")]
    public void BadFiltersNameTheJsonPath(string json, string path, string detail)
    {
        var e = Assert.Throws<FilterException>(() => Compiler.Compile(json));
        Assert.Equal(path, e.Path);
        Assert.Equal($"filter {path}: {detail}", e.Message);
    }

    [Fact]
    public void NestingDeeperThan32IsRejected()
    {
        string ok = "{\"label\":1}", deep = ok;
        for (int i = 0; i < 31; i++) ok = "{\"$not\":" + ok + "}";
        Compiler.Compile(ok);
        for (int i = 0; i < 40; i++) deep = "{\"$not\":" + deep + "}";
        var e = Assert.Throws<FilterException>(() => Compiler.Compile(deep));
        Assert.Equal("filter is nested deeper than 32 levels", e.Detail);
        Assert.StartsWith("$.$not.$not.", e.Path);
    }

    [Fact]
    public void AnIndexWithoutAttributesRejectsFilters()
    {
        var e = Assert.Throws<FilterException>(() => new FilterCompiler(null).Compile("{\"label\":1}"));
        Assert.Equal("filter $.label: unknown attribute 'label': the index has no attributes", e.Message);
    }
}
