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

    private static void Check(string json)
    {
        var filter = Compiler.Compile(json);
        using var doc = JsonDocument.Parse(json);
        var codes = new byte[N];
        filter.EvaluateCodes(All, codes);
        int matches = 0;
        for (int r = 0; r < N; r++)
        {
            bool expected = FilterTestData.Reference(doc.RootElement, Table, r);
            matches += expected ? 1 : 0;
            if (expected) Assert.True(codes[r] != 0, $"{json}: row {r} matches but the code-level filter rejects it");
            if (codes[r] == 2) Assert.True(expected, $"{json}: row {r} is coded as a sure match but does not match");
            Assert.True(expected == filter.Matches(All, r), $"{json}: row {r} exact result {filter.Matches(All, r)}, reference {expected}");
        }
        // The statistics' upper bound is a bound on code-level matches, so a bound on true matches too.
        var entry = new PartitionEntry { Id = 0, Count = N, CodedDimensions = 0, BitsPerVector = 0, Codes = new("c", 0), Vectors = new("v", 0), AttributeStats = All.Statistics() };
        var (_, upper) = filter.Estimate(entry);
        Assert.True(upper >= codes.Count(c => c != 0), $"{json}: upper bound {upper} below the code-level count");
    }

    public static TheoryData<string, string> OperatorsByType()
    {
        var data = new TheoryData<string, string>();
        foreach (var a in new[] { "price", "label", "qty" })
            foreach (var op in new[] { "$eq", "$ne", "$lt", "$lte", "$gt", "$gte", "$in", "$nin", "$exists", "bare" }) data.Add(a, op);
        foreach (var a in new[] { "ok", "colour", "tags" })
            foreach (var op in new[] { "$eq", "$ne", "$in", "$nin", "$exists", "bare" }) data.Add(a, op);
        return data;
    }

    [Theory]
    [MemberData(nameof(OperatorsByType))]
    public void EveryOperatorOnEveryTypeHasNoFalseNegativesAndExactRecheck(string attribute, string op)
    {
        var rng = new Random(attribute.GetHashCode(StringComparison.Ordinal) ^ op.Length * 7919);
        for (int i = 0; i < 25; i++) Check(FilterTestData.Leaf(rng, attribute, op));
    }

    [Fact]
    public void EqualityOnDataValuesAndRangeEdges()
    {
        Check("{\"price\":{\"$lte\":" + Table.Columns[0].Numbers![5].ToString("R", System.Globalization.CultureInfo.InvariantCulture) + "}}");
        Check("{\"qty\":{\"$gte\":" + Table.Columns[2].Integers![7] + "}}");
        Check("{\"qty\":{\"$lt\":2.5}}");
        Check("{\"label\":{\"$eq\":2.5}}");
        Check("{\"label\":{\"$in\":[]}}");
        Check("{\"tags\":{\"$nin\":[]}}");
    }

    [Fact]
    public void RandomNestedFilters()
    {
        var rng = new Random(12345);
        for (int i = 0; i < 300; i++) Check(FilterTestData.Nested(rng, 4));
    }

    [Fact]
    public void InWithAHundredThousandValuesIsFast()
    {
        var values = string.Join(',', Enumerable.Range(0, 100_000).Select(i => $"\"c{i}\""));
        var numbers = string.Join(',', Enumerable.Range(0, 100_000).Select(i => i - 1000));
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var f1 = Compiler.Compile($"{{\"colour\":{{\"$in\":[{values},\"red\"]}}}}");
        var f2 = Compiler.Compile($"{{\"qty\":{{\"$nin\":[{numbers}]}}}}");
        var codes = new byte[N];
        f1.EvaluateCodes(All, codes);
        f2.EvaluateCodes(All, codes);
        for (int r = 0; r < N; r++) { f1.Matches(All, r); f2.Matches(All, r); }
        Assert.True(clock.Elapsed.TotalSeconds < 2, $"took {clock.Elapsed.TotalSeconds:F2} s");
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
