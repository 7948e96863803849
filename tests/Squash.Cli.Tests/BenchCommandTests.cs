using System.Globalization;
using System.Text.RegularExpressions;

namespace Squash.Cli.Tests;

/// <summary>The in-process sweep: its summary lines and files, with and without the brute-force baseline.</summary>
public partial class BenchCommandTests
{
    [Fact]
    public async Task TheSweepReportsRecallAgainstTheBaselineAndSaysWhenTheBaselineIsSkipped()
    {
        using var dir = new TempDir();
        await GenerateAndBuild(dir, seed: 5);
        string[] sweep = ["bench", "--index", dir.File("idx"), "--queries", dir.File("data/query.fvecs"), "--ground-truth", dir.File("data/groundtruth.ivecs"),
            "--cf", "100", "--h", "100", "--r", "8", "--runs", "1"];

        // CF 100 visits every partition and R 8 re-ranks generously: recall against the exact ground truth is ~1, and
        // the brute-force baseline, exact by construction, must report recall 1.
        var (exit, output, err) = await CliRunner.RunAsync([.. sweep, "--brute-force-queries", "30", "--out", dir.File("with")]);
        Assert.True(exit == 0, err);
        var baseline = Baseline().Match(output);
        Assert.True(baseline.Success, output);
        Assert.True(double.Parse(baseline.Groups[1].Value, CultureInfo.InvariantCulture) > 0, output);
        Assert.Equal("1.0000", baseline.Groups[2].Value);
        Assert.Matches(@"recall@10 ≥ 0\.95: best \d+ QPS .* = [\d.]+× brute force", output);
        Assert.True(File.Exists(dir.File("with/bench.csv")) && File.Exists(dir.File("with/recall-qps.png")));

        var (sexit, skipped, serr) = await CliRunner.RunAsync([.. sweep, "--brute-force-queries", "0", "--out", dir.File("without")]);
        Assert.True(sexit == 0, serr);
        Assert.Contains("brute force: skipped (--brute-force-queries 0)", skipped);
        Assert.Matches(@"recall@10 ≥ 0\.95: best \d+ QPS", skipped);
        Assert.DoesNotContain("× brute force", skipped);
    }

    [Fact]
    public async Task TheSweepReportsTheCertifiedShareAndCertifiedAnswersAreExact()
    {
        using var dir = new TempDir();
        await GenerateAndBuild(dir, seed: 6);
        // Every partition planned and every candidate re-ranked: the bounds prove every answer, so all are certified,
        // and a certified answer equals the exact one (recall 1 against the exact ground truth).
        var (exit, _, err) = await CliRunner.RunAsync("bench", "--index", dir.File("idx"), "--queries", dir.File("data/query.fvecs"),
            "--ground-truth", dir.File("data/groundtruth.ivecs"), "--cf", "1000", "--h", "100", "--r", "1000", "--runs", "1",
            "--brute-force-queries", "0", "--out", dir.File("out"));
        Assert.True(exit == 0, err);
        var csv = File.ReadAllLines(dir.File("out/bench.csv"));
        var header = csv[0].Split(',');
        var row = csv[1].Split(',');
        double Column(string name) => double.Parse(row[Array.IndexOf(header, name)], CultureInfo.InvariantCulture);
        Assert.Equal(1.0, Column("certified_share"));
        Assert.Equal(1.0, Column("recall"));
    }

    /// <summary>2,000 generated vectors (16 dims, 30 queries with ground truth) in data/, built into idx/ with 4 partitions.</summary>
    private static async Task GenerateAndBuild(TempDir dir, int seed)
    {
        var (gexit, _, gerr) = await CliRunner.RunAsync("dataset", "generate", "--n", "2000", "--dim", "16", "--seed", seed.ToString(CultureInfo.InvariantCulture), "--queries", "30", "--out", dir.File("data"));
        Assert.True(gexit == 0, gerr);
        var (bexit, _, berr) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", dir.File("data/base.fvecs"), "--partitions", "4");
        Assert.True(bexit == 0, berr);
    }

    [GeneratedRegex(@"brute force \(TensorPrimitives, one thread\): ([\d.]+) QPS, recall@10 ([\d.]+)")]
    private static partial Regex Baseline();
}
