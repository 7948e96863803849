using System.Text.RegularExpressions;

namespace Squash.Cli.Tests;

/// <summary>query and bench on an index in a store open it lazily and report what each query read.</summary>
public partial class ColdReadCommandTests
{
    [Fact]
    public async Task QueryOnAStoreReportsBytesPerQueryAndBenchColdReportsStorageFigures()
    {
        using var dir = new TempDir();
        var (gexit, _, gerr) = await CliRunner.RunAsync("dataset", "generate", "--n", "3000", "--dim", "16", "--seed", "3", "--queries", "40", "--out", dir.File("data"));
        Assert.True(gexit == 0, gerr);
        var store = "dir:" + dir.File("store");
        var (bexit, _, berr) = await CliRunner.RunAsync("build", "--store", store, "--index", "gen", "--vectors", dir.File("data/base.fvecs"), "--partitions", "6");
        Assert.True(bexit == 0, berr);

        var (qexit, output, qerr) = await CliRunner.RunAsync("query", "--store", store, "--index", "gen", "--vectors", dir.File("data/query.fvecs"), "--limit", "3");
        Assert.True(qexit == 0, qerr);
        var read = BytesRead().Matches(output).Select(m => long.Parse(m.Groups[1].Value)).ToArray();
        Assert.Equal(3, read.Length);
        Assert.True(read[0] > 0, output); // the first query is cold: it read codes and rows

        var (cexit, cold, cerr) = await CliRunner.RunAsync("bench", "--store", store, "--index", "gen", "--queries", dir.File("data/query.fvecs"),
            "--ground-truth", dir.File("data/groundtruth.ivecs"), "--cold", "--cf", "1.3", "--h", "100", "--r", "2", "--cold-queries", "10", "--stream", "40",
            "--out", dir.File("out"));
        Assert.True(cexit == 0, cerr);
        Assert.Contains("cold (10 queries, fresh cache each): p50 ", cold);
        Assert.Matches(@"of the index \(", cold);
        Assert.Contains("partition hit ratio", cold);
        Assert.True(File.Exists(dir.File("out/cold.csv")));

        // Every partition and an unbounded re-rank: each cold answer is certified, and the share says so.
        var (fexit, full, ferr) = await CliRunner.RunAsync("bench", "--store", store, "--index", "gen", "--queries", dir.File("data/query.fvecs"),
            "--ground-truth", dir.File("data/groundtruth.ivecs"), "--cold", "--cf", "1000", "--h", "100", "--r", "1000", "--cold-queries", "5", "--stream", "4",
            "--out", dir.File("full"));
        Assert.True(fexit == 0, ferr);
        Assert.Contains("certified 100.0 % of the cold answers", full);
        var csv = File.ReadAllLines(dir.File("full/cold.csv"));
        Assert.EndsWith(",certified_share", csv[0]);
        Assert.EndsWith(",1.0000", csv[1]);

        var (nexit, _, nerr) = await CliRunner.RunAsync("bench", "--index", dir.File("nowhere"), "--queries", dir.File("data/query.fvecs"),
            "--ground-truth", dir.File("data/groundtruth.ivecs"), "--cold");
        Assert.Equal(1, nexit);
        Assert.Contains("--cold needs --store", nerr);
    }

    [GeneratedRegex(@"bytesRead=(\d+)")]
    private static partial Regex BytesRead();
}
