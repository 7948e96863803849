using Squash.Cli.Bench;
using Squash.Cli.Commands;

namespace Squash.Cli.Tests;

/// <summary>`bench --endpoint --load`: the rates it accepts and the ones it names as wrong.</summary>
public sealed class LoadBenchTests
{
    [Fact]
    public void RatesAndSaturationParse()
    {
        var rates = LoadBench.ParseRates("0.1, 1,10,saturation,sat");
        Assert.Equal(new double?[] { 0.1, 1, 10, null, null }, rates.Select(r => r.Qps).ToArray());
        Assert.Equal("saturation", rates[3].ToString());
    }

    [Theory]
    [InlineData("abc", "'abc'")]
    [InlineData("0", "'0'")]
    [InlineData("-1", "'-1'")]
    [InlineData("NaN", "'NaN'")]
    [InlineData("1e9", "'1e9'")]
    [InlineData(",", "at least one rate")]
    public void ABadRateIsNamed(string text, string named)
    {
        var e = Assert.Throws<UsageException>(() => LoadBench.ParseRates(text));
        Assert.StartsWith("--load", e.Message);
        Assert.Contains(named, e.Message);
    }
}
