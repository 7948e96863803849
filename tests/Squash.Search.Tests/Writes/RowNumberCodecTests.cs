using Squash.Search.Writes;

namespace Squash.Search.Tests.Writes;

/// <summary>The excluded rows' wire text: every ascending set comes back as itself, and malformed text is refused with a message naming the fault.</summary>
public class RowNumberCodecTests
{
    public static TheoryData<long[]> Sets => new()
    {
        Array.Empty<long>(),
        new long[] { 0 },
        new long[] { 0, 1, 2, 3 },
        new long[] { 127, 128, 16_383, 16_384 },
        new long[] { 5, 2_147_483_646, long.MaxValue - 1, long.MaxValue },
    };

    [Theory]
    [MemberData(nameof(Sets))]
    public void EdgeSetsRoundTrip(long[] rows)
    {
        var back = RowNumberCodec.TryDecode(RowNumberCodec.Encode(rows), out var problem);
        Assert.Null(problem);
        Assert.Equal(rows, back);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void RandomSetsRoundTripAndStaySmall(int seed)
    {
        var rng = new Random(seed);
        // A tail's mask: 10,000 of 100,000 rows, spread uniformly.
        var rows = Enumerable.Range(0, 100_000).Where(_ => rng.Next(10) == 0).Select(r => (long)r).ToArray();
        var text = RowNumberCodec.Encode(rows);
        Assert.True(RowNumberCodec.TryDecode(text, out var problem) is { } back && back.SequenceEqual(rows), $"seed {seed}: {problem}");
        // Gaps of ~10 fit one byte each: ~4/3 characters a row after base64, against ~6 for JSON numbers.
        Assert.True(text.Length <= rows.Length * 4 / 3 + 8, $"seed {seed}: {text.Length} characters for {rows.Length} rows");
    }

    [Theory]
    [InlineData("###", "is not base64url text")]
    [InlineData("a+b/", "is not base64url text")]
    [InlineData("gA", "ends inside the varint that starts at byte 0")]
    [InlineData("AYA", "ends inside the varint that starts at byte 1")]
    [InlineData("gICAgICAgICAgAE", "holds a varint past 64 bits at byte 0")]
    [InlineData("gICAgICAgICAAg", "holds a varint past 64 bits at byte 0")]
    [InlineData("__________9_AA", "holds a row number past 9223372036854775807 (row 1)")]
    public void MalformedTextIsRefusedWithItsFault(string text, string expected)
    {
        Assert.Null(RowNumberCodec.TryDecode(text, out var problem));
        Assert.Equal(expected, problem);
    }

    [Theory]
    [InlineData(new long[] { 3, 3 })]
    [InlineData(new long[] { 4, 2 })]
    [InlineData(new long[] { -1 })]
    public void OnlyStrictlyAscendingRowsAreEncoded(long[] rows) =>
        Assert.Throws<ArgumentException>(() => RowNumberCodec.Encode(rows));

    [Fact]
    public void TheCacheDecodesATextOnceAndRefusesWhatDoesNotDecode()
    {
        var cache = new RowSetCache(capacity: 2);
        var text = RowNumberCodec.Encode([1, 5, 9]);
        var first = cache.Get(text, out _);
        Assert.Equal(new long[] { 1, 5, 9 }, first!.Order());
        // An equal string that is another instance still finds the decoded set.
        Assert.Same(first, cache.Get(new string(text.AsSpan()), out _));
        Assert.Null(cache.Get("###", out var problem));
        Assert.Equal("is not base64url text", problem);
        // Past its capacity the least recently used set goes, and is decoded again when asked for.
        cache.Get(RowNumberCodec.Encode([2]), out _);
        cache.Get(RowNumberCodec.Encode([3]), out _);
        var again = cache.Get(text, out _);
        Assert.NotSame(first, again);
        Assert.Equal(first!.Order(), again!.Order());
    }

    [Fact]
    public void DecodingStopsPastTheReceiversBound()
    {
        var text = RowNumberCodec.Encode([1, 5, 9]);
        Assert.Equal(new long[] { 1, 5, 9 }, RowNumberCodec.TryDecode(text, out _, maxRows: 3));
        Assert.Null(RowNumberCodec.TryDecode(text, out var problem, maxRows: 2));
        Assert.Equal("holds more than 2 rows", problem);
        var cache = new RowSetCache();
        Assert.Null(cache.Get(text, out problem, maxRows: 2));
        Assert.Equal("holds more than 2 rows", problem);
        // A set the cache holds is refused by the same bound.
        Assert.NotNull(cache.Get(text, out _));
        Assert.Null(cache.Get(text, out problem, maxRows: 2));
        Assert.Equal("holds more than 2 rows", problem);
    }

    /// <summary>
    /// A /scan body has room for MaxTextLength(bound) characters of masked rows: a set of that many rows below 2³¹ fits it,
    /// spread evenly (the longest gaps such a set can have all at once) or at random, from 2¹⁷ rows to the default bound.
    /// </summary>
    [Theory]
    [InlineData(1 << 17, false)]
    [InlineData(1 << 17, true)]
    [InlineData(RowSetCache.DefaultMaxRows, false)]
    [InlineData(RowSetCache.DefaultMaxRows, true)]
    public void TheLargestSetFitsTheTextBudget(int count, bool random)
    {
        var rng = new Random(count);
        var rows = random
            ? Enumerable.Range(0, count).Select(_ => rng.NextInt64(int.MaxValue)).Distinct().Order().ToArray()
            : Enumerable.Range(0, count).Select(i => (long)i * (int.MaxValue / count)).ToArray();
        var text = RowNumberCodec.Encode(rows);
        Assert.True(text.Length <= RowNumberCodec.MaxTextLength(count), $"{rows.Length:N0} rows: {text.Length:N0} characters");
    }

    /// <summary>The sets kept hold at most the bound's rows together: a tail of millions kept eight times would fill a node.</summary>
    [Fact]
    public void TheCacheKeepsAtMostItsBoundOfRowsTogether()
    {
        var cache = new RowSetCache(capacity: 8, maxRows: 10);
        var six = RowNumberCodec.Encode([0, 1, 2, 3, 4, 5]);
        var first = cache.Get(six, out _);
        Assert.Equal(6, cache.RowsKept);
        // Five more would make 11: the older set goes, the newer is kept.
        cache.Get(RowNumberCodec.Encode([10, 11, 12, 13, 14]), out _);
        Assert.Equal(5, cache.RowsKept);
        Assert.NotSame(first, cache.Get(six, out _));
        Assert.Equal(6, cache.RowsKept);
        // A set larger than the bound is answered but never kept.
        var eleven = RowNumberCodec.Encode([.. Enumerable.Range(100, 11).Select(i => (long)i)]);
        var big = cache.Get(eleven, out _);
        Assert.Equal(11, big!.Count);
        Assert.Equal(6, cache.RowsKept);
        Assert.NotSame(big, cache.Get(eleven, out _));
    }
}
