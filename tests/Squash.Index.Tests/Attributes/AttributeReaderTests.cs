using Squash.Index.Attributes;

namespace Squash.Index.Tests.Attributes;

public class AttributeReaderTests
{
    private static AttributeTable Json(string text, AttributeSchema? schema = null) => AttributeReader.ReadJsonLines(new StringReader(text), "a.jsonl", schema);
    private static AttributeTable Csv(string text, AttributeSchema? schema = null) => AttributeReader.ReadCsv(new StringReader(text), "a.csv", schema);

    [Fact]
    public void JsonLinesInferEveryTypeAndKeepMissingValues()
    {
        var t = Json("""
            {"id":"a","attributes":{"price":1,"w":1.5,"ok":true,"cat":"shoes","tags":["x","y","x"]}}
            {"attributes":{"price":2,"w":2,"cat":"bags"}}
            {"id":"c","attributes":{"price":null,"ok":false,"tags":[]}}
            """);
        Assert.Equal(3, t.Count);
        Assert.Equal(new string?[] { "a", null, "c" }, t.Ids!.AsEnumerable());
        var types = t.Schema.Attributes.ToDictionary(a => a.Name, a => a.Type);
        Assert.Equal(AttributeType.Integer, types["price"]);
        Assert.Equal(AttributeType.Number, types["w"]);
        Assert.Equal(AttributeType.Bool, types["ok"]);
        Assert.Equal(AttributeType.Category, types["cat"]);
        Assert.Equal(AttributeType.Tags, types["tags"]);
        var price = t.Columns[t.Schema.IndexOf("price")];
        Assert.Equal([1, 1, 0], price.Present);
        Assert.Equal(2L, price.Integers![1]);
        var tags = t.Columns[t.Schema.IndexOf("tags")];
        Assert.Equal([0, 1], tags.Tags(0).ToArray());
        Assert.Equal(0, tags.Tags(2).Length);
        Assert.Equal(1, tags.Present[2]);
        Assert.Equal(0, tags.Present[1]);
        var cat = t.Columns[t.Schema.IndexOf("cat")];
        Assert.Equal(["shoes", "bags"], cat.Dictionary!);
        Assert.Equal([0, 1, -1], cat.Ids!);
    }

    [Fact]
    public void NoIdsAnywhereMeansNoIdColumn() => Assert.Null(Json("{\"attributes\":{\"a\":1}}\n").Ids);

    [Fact]
    public void TypeConflictNamesTheLineAndAttribute()
    {
        var e = Assert.Throws<AttributeFormatException>(() => Json("{\"attributes\":{\"a\":1}}\n{\"attributes\":{\"a\":2}}\n{\"attributes\":{\"a\":\"x\"}}\n"));
        Assert.Equal("a.jsonl line 3, attribute 'a': a string where line 1 has a number", e.Message);
    }

    [Fact]
    public void DeclaredSchemaIsEnforced()
    {
        var schema = AttributeSchema.Parse("a:integer");
        var e = Assert.Throws<AttributeFormatException>(() => Json("{\"attributes\":{\"a\":1}}\n{\"attributes\":{\"a\":2.5}}\n", schema));
        Assert.Equal("a.jsonl line 2, attribute 'a': a number (not an integer) where the schema says integer", e.Message);
        var e2 = Assert.Throws<AttributeFormatException>(() => Json("{\"attributes\":{\"b\":1}}\n", schema));
        Assert.Contains("attribute 'b': not in the declared schema", e2.Message);
    }

    /// <summary>A key the format does not have, or a key given twice, is refused rather than dropped or overwritten.</summary>
    [Theory]
    [InlineData("{\"id\":\"a\",\"attrs\":{\"a\":1}}", "a.jsonl line 2: unknown key \"attrs\" (a row holds \"id\" and \"attributes\"; attributes go inside \"attributes\")")]
    [InlineData("{\"attributes\":{\"a\":1},\"price\":3}", "a.jsonl line 2: unknown key \"price\" (a row holds \"id\" and \"attributes\"; attributes go inside \"attributes\")")]
    [InlineData("{\"id\":\"a\",\"attributes\":{\"a\":1},\"id\":\"b\"}", "a.jsonl line 2: key \"id\" appears twice")]
    [InlineData("{\"id\":null,\"attributes\":{\"a\":1},\"id\":\"b\"}", "a.jsonl line 2: key \"id\" appears twice")]
    [InlineData("{\"attributes\":{\"a\":1},\"attributes\":{\"a\":2}}", "a.jsonl line 2: key \"attributes\" appears twice")]
    [InlineData("{\"attributes\":{\"a\":1,\"b\":true,\"a\":2}}", "a.jsonl line 2, attribute 'a': appears twice")]
    public void UnknownAndRepeatedKeysNameTheFileLineAndKey(string line, string expected)
    {
        var e = Assert.Throws<AttributeFormatException>(() => Json("{\"id\":\"x\",\"attributes\":{\"a\":0}}\n" + line + "\n"));
        Assert.Equal(expected, e.Message);
    }

    /// <summary>
    /// A declared integer takes a whole number however it is written (5.0, 5e0: 5, as filters and the write API read it), in
    /// JSON lines and CSV; inference still calls such a column a number.
    /// </summary>
    [Fact]
    public void ADeclaredIntegerTakesAWholeNumberWrittenWithAPointOrAnExponent()
    {
        var schema = AttributeSchema.Parse("a:integer");
        var json = Json("{\"attributes\":{\"a\":5.0}}\n{\"attributes\":{\"a\":-7e0}}\n{\"attributes\":{\"a\":9007199254740993.0}}\n", schema);
        Assert.Equal([5L, -7L, 9007199254740993L], json.Columns[0].Integers!);
        var csv = Csv("a\n5.0\n-7e0\n9007199254740993.0\n", schema);
        Assert.Equal([5L, -7L, 9007199254740993L], csv.Columns[0].Integers!);
        var e = Assert.Throws<AttributeFormatException>(() => Csv("a\n5.0\n5.5\n", schema));
        Assert.Equal("a.csv line 3, attribute 'a': a number (not an integer) where the schema says integer", e.Message);
        Assert.Equal(AttributeType.Number, Json("{\"attributes\":{\"a\":5.0}}\n").Schema.Attributes[0].Type);
    }

    [Fact]
    public void CsvInfersTypesWithOptionalIdColumn()
    {
        var t = Csv("id,price,label,ok,colour\nx1,1.5,3,true,red\nx2,,4,FALSE,\"blue, dark\"\n");
        Assert.Equal(new string?[] { "x1", "x2" }, t.Ids!.AsEnumerable());
        var types = t.Schema.Attributes.Select(a => a.Type).ToArray();
        Assert.Equal([AttributeType.Number, AttributeType.Integer, AttributeType.Bool, AttributeType.Category], types);
        Assert.Equal(0, t.Columns[0].Present[1]);
        Assert.Equal(["red", "blue, dark"], t.Columns[3].Dictionary!);
    }

    [Fact]
    public void CsvDeclaredTypeErrorsNameTheLine()
    {
        var e = Assert.Throws<AttributeFormatException>(() => Csv("n\n1\nabc\n", AttributeSchema.Parse("n:number")));
        Assert.Equal("a.csv line 3, attribute 'n': 'abc' is not a valid number", e.Message);
        var tags = Csv("t\na|b\n\n", AttributeSchema.Parse("t:tags"));
        Assert.Equal(2, tags.Columns[0].Tags(0).Length);
    }
}
