namespace Squash.Cli.Tests;

/// <summary>
/// Reading commands given a folder that is not there (a typo) say there is no index and leave no folder
/// behind: an empty folder they made would later pass for a store, and `serve` would start on it.
/// </summary>
public sealed class MissingIndexFolderTests
{
    private static Task<(int Exit, string Out, string Err)> Run(params string[] args) =>
        CliRunner.RunAsync(args).WaitAsync(TimeSpan.FromSeconds(60));

    [Theory]
    [InlineData("query", false)]
    [InlineData("query", true)]
    [InlineData("inspect", false)]
    [InlineData("inspect", true)]
    public async Task AReadingCommandOnAMissingFolderSaysNoIndexAndCreatesNothing(string command, bool withStore)
    {
        using var dir = new TempDir();
        var queries = dir.Fvecs("q.fvecs", TempDir.Random(1, 4, 1));
        var missing = dir.File("typo");
        string[] location = withStore ? ["--store", "dir:" + missing, "--index", "x"] : ["--index", missing];
        string[] rest = command == "query" ? ["--vectors", queries] : [];
        var (exit, output, err) = await Run([command, .. location, .. rest]);
        CliRunner.AssertOneErrorLine(exit, err,
            $"no index is published at dir:{missing}{(withStore ? " under 'x'" : "")} (no 'current' pointer)");
        Assert.Equal("", output);
        Assert.False(Directory.Exists(missing));
    }

    /// <summary>gc on a mistyped folder or name says there is no index and fails, as reading commands do (it said "nothing to delete").</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task GcOnAMissingFolderSaysNoIndexAndCreatesNothing(bool withStore)
    {
        using var dir = new TempDir();
        var missing = dir.File("typo");
        string[] location = withStore ? ["--store", "dir:" + missing, "--index", "x"] : ["--index", missing];
        var (exit, output, err) = await Run(["gc", .. location]);
        CliRunner.AssertOneErrorLine(exit, err, $"no index at dir:{missing}{(withStore ? " under 'x'" : "")} (nothing is stored there)");
        Assert.Equal("", output);
        Assert.False(Directory.Exists(missing));
    }

    /// <summary>A store that exists but holds nothing under the name given (a mistyped --index) is no index either.</summary>
    [Fact]
    public async Task GcOnANameNothingIsStoredUnderSaysNoIndex()
    {
        using var dir = new TempDir();
        var store = dir.File("store");
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(100, 4, 2));
        var (bexit, _, berr) = await Run("build", "--store", "dir:" + store, "--index", "shop", "--vectors", vectors);
        Assert.True(bexit == 0, berr);
        var (exit, output, err) = await Run("gc", "--store", "dir:" + store, "--index", "shpo");
        CliRunner.AssertOneErrorLine(exit, err, $"no index at dir:{store} under 'shpo' (nothing is stored there)");
        Assert.Equal("", output);
        var (gexit, gout, gerr) = await Run("gc", "--store", "dir:" + store, "--index", "shop");
        Assert.True(gexit == 0, gerr);
        Assert.StartsWith("nothing to delete\nkept 1: ", gout.ReplaceLineEndings("\n"));
    }

    [Fact]
    public async Task ServeStillRefusesAStoreFolderThatReadingCommandsWerePointedAt()
    {
        using var dir = new TempDir();
        var queries = dir.Fvecs("q.fvecs", TempDir.Random(1, 4, 1));
        var missing = dir.File("typo");
        Assert.Equal(1, (await Run("query", "--store", "dir:" + missing, "--index", "x", "--vectors", queries)).Exit);
        Assert.Equal(1, (await Run("inspect", "--store", "dir:" + missing, "--index", "x")).Exit);
        Assert.Equal(1, (await Run("gc", "--store", "dir:" + missing, "--index", "x")).Exit);
        var (exit, _, err) = await Run("serve", "--store", "dir:" + missing, "--log-dir", dir.File("logs"));
        CliRunner.AssertOneErrorLine(exit, err,
            $"--store dir:{missing}: the folder does not exist (build an index there first: squash build --store dir:{missing} --index NAME --vectors FILE)");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ABuildIntoAMissingFolderCreatesItAndCanBeQueried(bool withStore)
    {
        using var dir = new TempDir();
        var rows = TempDir.Random(100, 4, 2).ToArray();
        var vectors = dir.Fvecs("base.fvecs", rows);
        var queries = dir.Fvecs("q.fvecs", rows.Take(1));
        var missing = Path.Combine(dir.Path, "new", "indexes");
        string[] location = withStore ? ["--store", "dir:" + missing, "--index", "x"] : ["--index", missing];
        var (bexit, _, berr) = await Run(["build", .. location, "--vectors", vectors]);
        Assert.True(bexit == 0, berr);
        Assert.True(File.Exists(Path.Combine(missing, withStore ? "x" : "", "current")));
        var (qexit, output, qerr) = await Run(["query", .. location, "--vectors", queries, "--k", "1"]);
        Assert.True(qexit == 0, qerr);
        Assert.StartsWith("0: 0:0", output);
    }
}
