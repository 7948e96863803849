namespace Squash.Search.Tests;

/// <summary>The calibration's base sample is drawn without an array of every row, and is exactly the shuffle's prefix.</summary>
public sealed class SampleRowsTests
{
    [Theory]
    [InlineData(10, 3, 1)]
    [InlineData(10, 9, 2)]
    [InlineData(10, 10, 3)]
    [InlineData(1_000, 100, 42)]
    [InlineData(60_000, 300, 42)]
    [InlineData(1_000_000, 300, 7)]
    public void TheSampleIsThePrefixOfTheSeededShuffle(int count, int size, int seed)
    {
        var rows = Enumerable.Range(0, count).ToArray();
        new Random(seed).Shuffle(rows);
        var expected = rows[..Math.Min(size, count)];
        Array.Sort(expected);
        Assert.Equal(expected, CalibrationQueries.SampleRows(count, size, seed));
    }
}
