namespace Squash.Cli.Tests;

public class FilterCommandTests
{
    private static async Task<(TempDir Dir, string Queries)> BuildWithAttributes(string attributesName, Func<int, string> line, string? header = null)
    {
        var dir = new TempDir();
        var rows = TempDir.Random(400, 8, 3).ToArray();
        var vectors = dir.Fvecs("base.fvecs", rows);
        var queries = dir.Fvecs("q.fvecs", rows.Take(4));
        var text = (header is null ? "" : header + "\n") + string.Join("", Enumerable.Range(0, 400).Select(i => line(i) + "\n"));
        File.WriteAllText(dir.File(attributesName), text);
        var (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--partitions", "4", "--attributes", dir.File(attributesName));
        Assert.True(exit == 0, err);
        return (dir, queries);
    }

    [Fact]
    public async Task QueryWithAFilterPrintsOnlyMatchingStringIds()
    {
        var (dir, queries) = await BuildWithAttributes("a.jsonl", i => $"{{\"id\":\"item-{i}\",\"attributes\":{{\"label\":{i % 4},\"colour\":\"{(i % 3 == 0 ? "red" : "blue")}\"}}}}");
        using (dir)
        {
            var (exit, output, err) = await CliRunner.RunAsync("query", "--index", dir.File("idx"), "--vectors", queries, "--k", "5",
                "--filter", "{\"label\":{\"$in\":[1,2]},\"colour\":\"blue\"}");
            Assert.True(exit == 0, err);
            var lines = output.Trim().Split('\n');
            Assert.Equal(4, lines.Length);
            foreach (var l in lines)
            {
                var hits = l.Split(' ').Skip(1).ToArray();
                Assert.Equal(5, hits.Length);
                foreach (var h in hits)
                {
                    Assert.StartsWith("item-", h);
                    int row = int.Parse(h[5..h.IndexOf(':')], System.Globalization.CultureInfo.InvariantCulture);
                    Assert.True(row % 4 is 1 or 2 && row % 3 != 0, $"{h} violates the filter");
                }
            }
        }
    }

    [Fact]
    public async Task BadFilterIsOneErrorLineWithTheJsonPath()
    {
        var (dir, queries) = await BuildWithAttributes("a.csv", i => $"{i % 4},{i * 0.5}", header: "label,price");
        using (dir)
        {
            var (exit, _, err) = await CliRunner.RunAsync("query", "--index", dir.File("idx"), "--vectors", queries, "--filter", "{\"$or\":[{\"label\":1},{\"price\":{\"$lt\":\"cheap\"}}]}");
            Assert.Equal(1, exit);
            Assert.Equal("error: filter $.$or[1].price.$lt: expected a number for number attribute 'price', got a string", err.Trim());
        }
    }

    /// <summary>A build given the user's queries and their filters calibrates its filtered bands on those filters, named by their file, instead of drawing filters of its own.</summary>
    [Fact]
    public async Task CalibrationFiltersAreTheFamiliesTheBuildMeasures()
    {
        using var dir = new TempDir();
        var rows = TempDir.Random(1000, 8, 3).ToArray();
        var vectors = dir.Fvecs("base.fvecs", rows);
        var queries = dir.Fvecs("q.fvecs", TempDir.Random(100, 8, 4));
        File.WriteAllText(dir.File("a.jsonl"), string.Concat(Enumerable.Range(0, rows.Length).Select(i => $"{{\"attributes\":{{\"label\":{i % 3},\"price\":{i}}}}}\n")));
        File.WriteAllText(dir.File("labels.jsonl"), string.Concat(Enumerable.Range(0, 100).Select(i => i % 10 == 0 ? "null\n" : $"{{\"label\":{i % 3}}}\n")));
        var (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--attributes", dir.File("a.jsonl"),
            "--calibration-queries", queries, "--calibration-filters", dir.File("labels.jsonl"));
        Assert.True(exit == 0, err);
        Assert.Contains("calibrated recall@10 on 100 of your queries", err);
        var bands = err.Split('\n').Where(l => l.TrimStart().StartsWith("filtered,", StringComparison.Ordinal)).ToArray();
        Assert.NotEmpty(bands);
        // Only the given family: no drawn range over "price" and no drawn label value; nine queries in ten carry a filter.
        Assert.All(bands, b => Assert.Contains("(labels.jsonl: 90 queries", b));
        Assert.DoesNotContain(bands, b => b.Contains("range", StringComparison.Ordinal) || b.Contains("other value", StringComparison.Ordinal));
        // inspect shows the same calibration, read back from the index: the line on the queries and every band's line.
        var (iexit, shown, ierr) = await CliRunner.RunAsync("inspect", "--index", dir.File("idx"));
        Assert.True(iexit == 0, ierr);
        var calibrated = err.Split('\n').Single(l => l.StartsWith("calibrated recall@10", StringComparison.Ordinal));
        int seconds = calibrated.IndexOf(" in ", StringComparison.Ordinal), plans = calibrated.IndexOf(" s: ", StringComparison.Ordinal);
        Assert.Contains(calibrated[..seconds], shown); // the seconds aside
        Assert.Contains(calibrated[plans..], shown);
        Assert.All(bands, b => Assert.Contains(b, shown));
        // Every band again at each other K measured (k 1, 2, 3–5, 11–20, 21–50, 51 and more), in build and inspect alike.
        var atOtherK = err.Split('\n').Where(l => l.StartsWith("  filtered k ", StringComparison.Ordinal)).ToArray();
        Assert.Equal(6 * bands.Length, atOtherK.Length);
        Assert.Equal(bands.Length, atOtherK.Count(l => l.StartsWith("  filtered k 51 and more, selectivity ", StringComparison.Ordinal) && l.Contains(": recall@100: 0.9 → ", StringComparison.Ordinal)));
        Assert.All(atOtherK, b => Assert.Contains(b, shown));
        // An index built without calibration says so.
        (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("plain"), "--vectors", vectors, "--no-calibration");
        Assert.True(exit == 0, err);
        (iexit, shown, ierr) = await CliRunner.RunAsync("inspect", "--index", dir.File("plain"));
        Assert.True(iexit == 0, ierr);
        Assert.Contains("calibration: none (built with --no-calibration, or too small to calibrate): recall targets plan with the default CF and R", shown);
    }

    [Fact]
    public async Task AttributeRowsMustMatchTheVectors()
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(50, 4, 1));
        File.WriteAllText(dir.File("a.csv"), "label\n1\n2\n");
        var (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--attributes", dir.File("a.csv"));
        Assert.Equal(1, exit);
        Assert.Contains("has 2 rows but there are 50 vectors", err);
        File.WriteAllText(dir.File("b.jsonl"), string.Join("", Enumerable.Range(0, 50).Select(i => i == 7 ? "{\"attributes\":{\"x\":\"seven\"}}\n" : $"{{\"attributes\":{{\"x\":{i}}}}}\n")));
        (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--attributes", dir.File("b.jsonl"));
        Assert.Equal(1, exit);
        Assert.Equal("error: b.jsonl line 8, attribute 'x': a string where line 1 has a number", err.Trim());
    }
}
