namespace Squash.Cli.Tests;

public class BuildQueryCommandTests
{
    [Fact]
    public async Task BuildThenQueryAnswersWithTheNearestVectorFirst()
    {
        using var dir = new TempDir();
        var rows = TempDir.Random(500, 12, 1).ToArray();
        var vectors = dir.Fvecs("base.fvecs", rows);
        var queries = dir.Fvecs("q.fvecs", rows.Take(3));
        var (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--partitions", "3");
        Assert.True(exit == 0, err);
        var (qexit, output, qerr) = await CliRunner.RunAsync("query", "--index", dir.File("idx"), "--vectors", queries, "--k", "5");
        Assert.True(qexit == 0, qerr);
        var lines = output.Trim().Split('\n');
        Assert.Equal(3, lines.Length);
        for (int i = 0; i < 3; i++)
        {
            // A stored vector is its own nearest neighbour at distance 0.
            Assert.StartsWith($"{i}: {i}:0 ", lines[i]);
            Assert.Equal(5, lines[i].Split(' ').Length - 1);
        }
    }

    [Fact]
    public async Task ABuildCalibratesAndAQueryReportsItsTargetAndPlan()
    {
        using var dir = new TempDir();
        var rows = TempDir.Random(1200, 8, 4).ToArray();
        var vectors = dir.Fvecs("base.fvecs", rows);
        var queries = dir.Fvecs("q.fvecs", rows.Take(2));
        var (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--partitions", "12");
        Assert.True(exit == 0, err);
        // At most a tenth of the vectors are held out to calibrate with.
        Assert.Contains("calibrated recall@10 on 120 base vectors (leave-one-out)", err);
        // Queries for other k have their own frontiers, measured on the same (exactly measured) rows.
        Assert.Contains("  unfiltered k 1: recall@1 on the same: 0.9 → ", err);
        Assert.Contains("  unfiltered k 3–5: recall@5 on the same: 0.9 → ", err);
        Assert.Contains("  unfiltered k 11–20: recall@20 on the same: 0.9 → ", err);
        Assert.Contains("  unfiltered k 51 and more: recall@100 on the same: 0.9 → ", err);
        var (qexit, output, qerr) = await CliRunner.RunAsync("query", "--index", dir.File("idx"), "--vectors", queries, "--json", "--recall", "0.9");
        Assert.True(qexit == 0, qerr);
        using var doc = System.Text.Json.JsonDocument.Parse(output.Trim().Split('\n')[0]);
        var stats = doc.RootElement.GetProperty("stats");
        Assert.Equal(0.9, stats.GetProperty("recallTarget").GetDouble());
        Assert.InRange(stats.GetProperty("predictedRecall").GetDouble(), 0.9, 1);
        // Without --recall the default target; with --cf the plan as given and no target.
        (_, output, _) = await CliRunner.RunAsync("query", "--index", dir.File("idx"), "--vectors", queries, "--json");
        using var byDefault = System.Text.Json.JsonDocument.Parse(output.Trim().Split('\n')[0]);
        Assert.Equal(0.95, byDefault.RootElement.GetProperty("stats").GetProperty("recallTarget").GetDouble());
        (_, output, _) = await CliRunner.RunAsync("query", "--index", dir.File("idx"), "--vectors", queries, "--json", "--cf", "1.7");
        using var byHand = System.Text.Json.JsonDocument.Parse(output.Trim().Split('\n')[0]);
        Assert.False(byHand.RootElement.GetProperty("stats").TryGetProperty("recallTarget", out var target) && target.ValueKind != System.Text.Json.JsonValueKind.Null,
            "a plan set by hand has no target");
        Assert.Equal(1.7, byHand.RootElement.GetProperty("stats").GetProperty("centroidFactor").GetDouble());
        // --exact ignores the target and any CF and R: its stats name none of them, and the answer is certified.
        (_, output, _) = await CliRunner.RunAsync("query", "--index", dir.File("idx"), "--vectors", queries, "--json", "--exact");
        using var exact = System.Text.Json.JsonDocument.Parse(output.Trim().Split('\n')[0]);
        var exactStats = exact.RootElement.GetProperty("stats");
        foreach (var name in new[] { "recallTarget", "centroidFactor", "rerankFactor" })
            Assert.False(exactStats.TryGetProperty(name, out _), $"an exact query reports no {name}: {exactStats}");
        Assert.True(exactStats.GetProperty("certified").GetBoolean(), exactStats.ToString());
    }

    public static TheoryData<string, string> BadVectorFiles => new()
    {
        { "mixed", "dimension" },
        { "nan", "NaN" },
        { "empty", "empty" },
        { "truncated", "truncated" },
    };

    [Theory]
    [MemberData(nameof(BadVectorFiles))]
    public async Task BadVectorFilesFailClearlyAndLeaveNoIndexBehind(string kind, string expected)
    {
        using var dir = new TempDir();
        string path = kind switch
        {
            "mixed" => dir.Fvecs("v.fvecs", [new float[4], new float[4], new float[5]]),
            "nan" => dir.Fvecs("v.fvecs", [new float[4], [1, float.NaN, 2, 3]]),
            "empty" => dir.Fvecs("v.fvecs", []),
            _ => Truncated(dir),
        };
        var (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", path);
        Assert.Equal(1, exit);
        Assert.StartsWith("error: ", err);
        Assert.Contains(expected, err, StringComparison.OrdinalIgnoreCase);
        Assert.False(File.Exists(Path.Combine(dir.File("idx"), "current")));
        Assert.False(Directory.Exists(Path.Combine(dir.File("idx"), "versions")) && Directory.EnumerateFiles(Path.Combine(dir.File("idx"), "versions"), "*", SearchOption.AllDirectories).Any());
    }

    /// <summary>
    /// Rows an index cannot hold are refused before the build starts, naming the file and the row (they used to surface
    /// from deep inside the build as "rows contains a non-finite value" or a cosine error naming only a parameter).
    /// </summary>
    [Theory]
    [InlineData("l2", "huge", "row 2 has norm 3E+38, larger than the largest a vector may have (10^15): its float32 distances would overflow")]
    [InlineData("cosine", "huge", "row 2 has norm 3E+38, larger than the largest a vector may have (10^15): its float32 distances would overflow")]
    [InlineData("ip", "past-limit", "row 2 has norm 2E+15, larger than the largest a vector may have (10^15): its float32 distances would overflow")]
    [InlineData("cosine", "zero", "row 2 is all zeros: a zero vector has no direction, so it has no cosine distance")]
    public async Task UnindexableRowsNameTheFileAndTheRow(string metric, string kind, string expected)
    {
        using var dir = new TempDir();
        var rows = TempDir.Random(5, 4, 3).ToArray();
        rows[2] = kind switch
        {
            "huge" => [3e38f, 0, 0, 0],
            "past-limit" => [2e15f, 0, 0, 0],
            _ => new float[4],
        };
        var path = dir.Fvecs("v.fvecs", rows);
        var (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", path, "--metric", metric, "--no-calibration");
        CliRunner.AssertOneErrorLine(exit, err, $"{path}: {expected}");
        Assert.False(File.Exists(Path.Combine(dir.File("idx"), "current")));

        // The same rows as calibration queries are refused the same way, naming that file.
        var good = dir.Fvecs("good.fvecs", TempDir.Random(5, 4, 4));
        (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("idx2"), "--vectors", good, "--metric", metric, "--calibration-queries", path);
        CliRunner.AssertOneErrorLine(exit, err, $"{path}: {expected}");
    }

    [Fact]
    public async Task ZeroRowsAreFineOutsideCosine()
    {
        using var dir = new TempDir();
        var rows = TempDir.Random(5, 4, 3).ToArray();
        rows[2] = new float[4];
        var (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", dir.Fvecs("v.fvecs", rows), "--no-calibration");
        Assert.True(exit == 0, err);
    }

    private static string Truncated(TempDir dir)
    {
        var p = dir.Fvecs("v.fvecs", TempDir.Random(3, 4, 2));
        var bytes = File.ReadAllBytes(p);
        File.WriteAllBytes(p, bytes[..^3]);
        return p;
    }

    [Theory]
    [InlineData("0", "--k must be between 1 and 10,000, got 0")]
    [InlineData("10001", "--k must be between 1 and 10,000, got 10001")]
    [InlineData("-3", "--k must be between 1 and 10,000, got -3")]
    public async Task KOutOfRangeNamesTheFlag(string k, string expected)
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(50, 4, 1));
        Assert.Equal(0, (await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--partitions", "2")).Exit);
        var (exit, _, err) = await CliRunner.RunAsync("query", "--index", dir.File("idx"), "--vectors", vectors, "--k", k);
        Assert.Equal(1, exit);
        Assert.Equal($"error: {expected}", err.Trim());
    }

    [Fact]
    public async Task QueriesOfTheWrongDimensionNameTheFlag()
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(50, 4, 1));
        var queries = dir.Fvecs("q.fvecs", TempDir.Random(2, 5, 1));
        Assert.Equal(0, (await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--partitions", "2")).Exit);
        var (exit, _, err) = await CliRunner.RunAsync("query", "--index", dir.File("idx"), "--vectors", queries);
        Assert.Equal(1, exit);
        Assert.Equal("error: --vectors: queries have 5 dimensions but the index has 4", err.Trim());
    }

    [Fact]
    public async Task ACorruptSegmentIsReportedByNameWithANonZeroExit()
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(80, 4, 1));
        Assert.Equal(0, (await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--partitions", "2")).Exit);
        var segment = Directory.EnumerateFiles(dir.File("idx"), "p00001.vectors.seg", SearchOption.AllDirectories).Single();
        var bytes = File.ReadAllBytes(segment);
        bytes[^7] ^= 1;
        File.WriteAllBytes(segment, bytes);
        var (exit, _, err) = await CliRunner.RunAsync("query", "--index", dir.File("idx"), "--vectors", vectors);
        Assert.Equal(1, exit);
        Assert.Contains("p00001.vectors.seg", err);
        Assert.Contains("checksum", err);
    }

    [Theory]
    [InlineData("--metric", "hamming", "--metric must be l2, cosine or ip, got 'hamming'")]
    [InlineData("--bits-per-dim", "0", "--bits-per-dim must be > 0 and ≤ 8, got 0")]
    [InlineData("--partitions", "-1", "--partitions must be ≥ 0 (0 picks a default), got -1")]
    [InlineData("--partitions", "51", "--partitions (51) cannot exceed the number of vectors (50)")]
    public async Task BadBuildFlagsAreNamed(string flag, string value, string expected)
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(50, 4, 1));
        var (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, flag, value);
        Assert.Equal(1, exit);
        Assert.Equal($"error: {expected}", err.Trim());
        Assert.False(File.Exists(Path.Combine(dir.File("idx"), "current")));
    }

    [Fact]
    public async Task QueryingAFolderWithNoIndexSaysSo()
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("q.fvecs", TempDir.Random(1, 4, 1));
        var (exit, _, err) = await CliRunner.RunAsync("query", "--index", dir.File("none"), "--vectors", vectors);
        Assert.Equal(1, exit);
        Assert.Contains("no index is published", err);
    }

    /// <summary>Ids the write API could never name (twice in the file, over-long, control characters) are refused at build time.</summary>
    [Theory]
    [InlineData("duplicate", "id 'r1' is given to rows 1 and 3")]
    [InlineData("long", "row 2: id is 300 characters; at most 256")]
    [InlineData("control", "row 0: id must not contain control characters")]
    public async Task BuildRefusesIdsTheWriteApiCannotName(string kind, string expected)
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("v.fvecs", TempDir.Random(5, 4, 1));
        string Id(int i) => kind switch
        {
            "duplicate" => i == 3 ? "r1" : $"r{i}",
            "long" => i == 2 ? new string('x', 300) : $"r{i}",
            _ => i == 0 ? "r\\u00010" : $"r{i}",
        };
        var attributes = dir.File("a.jsonl");
        await File.WriteAllLinesAsync(attributes, Enumerable.Range(0, 5).Select(i => $"{{\"id\":\"{Id(i)}\",\"attributes\":{{\"n\":{i}}}}}"));
        var (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--attributes", attributes, "--no-calibration");
        Assert.Equal(1, exit);
        Assert.StartsWith("error: --attributes: ", err);
        Assert.Contains(expected, err);
        Assert.False(File.Exists(Path.Combine(dir.File("idx"), "current")));
    }

    /// <summary>An attributes row with a key the format does not have names the file, the line and the key; no index is written.</summary>
    [Fact]
    public async Task BuildRefusesAnAttributesRowWithAnUnknownKey()
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("v.fvecs", TempDir.Random(3, 4, 1));
        var attributes = dir.File("a.jsonl");
        await File.WriteAllLinesAsync(attributes, ["{\"attributes\":{\"n\":0}}", "{\"attributes\":{\"n\":1},\"colour\":\"red\"}", "{\"attributes\":{\"n\":2}}"]);
        var (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--attributes", attributes, "--no-calibration");
        Assert.Equal(1, exit);
        Assert.Contains("a.jsonl line 2: unknown key \"colour\"", err);
        Assert.False(File.Exists(Path.Combine(dir.File("idx"), "current")));
    }
}
