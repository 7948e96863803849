namespace Squash.Cli.Tests;

public class StoreAndGcCommandTests
{
    private static string[] Versions(string indexRoot) =>
        Directory.Exists(Path.Combine(indexRoot, "versions"))
            ? Directory.GetDirectories(Path.Combine(indexRoot, "versions")).Select(d => Path.GetFileName(d)!).Order().ToArray()
            : [];

    [Fact]
    public async Task GcKeepsTheNewestVersionsAndCurrent()
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(200, 6, 1));
        for (int i = 0; i < 4; i++)
            Assert.Equal(0, (await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--partitions", "2")).Exit);
        Assert.Equal(4, Versions(dir.File("idx")).Length);
        var (exit, output, err) = await CliRunner.RunAsync("gc", "--index", dir.File("idx"), "--keep", "1");
        Assert.True(exit == 0, err);
        Assert.Contains("deleted 3 version(s): v000001 v000002 v000003", output);
        Assert.Contains("v000004 (current)", output);
        Assert.Equal(new[] { "v000004" }, Versions(dir.File("idx")));
        var (again, output2, _) = await CliRunner.RunAsync("gc", "--index", dir.File("idx"), "--keep", "0");
        Assert.Equal(0, again);
        Assert.Contains("nothing to delete", output2);
        var (bad, _, badErr) = await CliRunner.RunAsync("gc", "--index", dir.File("idx"), "--keep", "-1");
        Assert.Equal(1, bad);
        Assert.Contains("--keep", badErr);
    }

    [Fact]
    public async Task ADirStoreHoldsSeveralNamedIndexes()
    {
        using var dir = new TempDir();
        var rows = TempDir.Random(300, 8, 2).ToArray();
        var vectors = dir.Fvecs("base.fvecs", rows);
        var queries = dir.Fvecs("q.fvecs", rows.Take(2));
        var store = "dir:" + dir.File("store");
        foreach (var name in new[] { "products", "team/images" })
        {
            var (exit, _, err) = await CliRunner.RunAsync("build", "--store", store, "--index", name, "--vectors", vectors, "--partitions", "2");
            Assert.True(exit == 0, err);
        }
        Assert.True(File.Exists(Path.Combine(dir.File("store"), "products", "current")));
        Assert.True(File.Exists(Path.Combine(dir.File("store"), "team", "images", "current")));
        var (qexit, output, qerr) = await CliRunner.RunAsync("query", "--store", store, "--index", "team/images", "--vectors", queries, "--k", "3");
        Assert.True(qexit == 0, qerr);
        Assert.StartsWith("0: 0:0 ", output);
        var (iexit, inspect, ierr) = await CliRunner.RunAsync("inspect", "--store", store, "--index", "products");
        Assert.True(iexit == 0, ierr);
        Assert.Contains("300 vectors", inspect);
    }

    [Theory]
    [InlineData("s3:bucket", "x", "squash", "--store must be dir:PATH or azure:")]
    [InlineData("dir:", "x", "squash", "--store dir: needs a folder")]
    [InlineData("azure:not a connection string", "x", "squash", "--store azure:… is neither")]
    [InlineData("azure:UseDevelopmentStorage=true", "x", "Bad_Name", "--container")]
    [InlineData("azure:UseDevelopmentStorage=true", "../up", "squash", "--index")]
    public async Task BadStoreValuesNameTheFlag(string store, string index, string container, string expected)
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(20, 3, 3));
        var (exit, _, err) = await CliRunner.RunAsync("build", "--store", store, "--container", container, "--index", index, "--vectors", vectors);
        Assert.Equal(1, exit);
        Assert.StartsWith("error: ", err);
        Assert.Contains(expected, err);
        Assert.DoesNotContain("not a connection string", err);
    }

    [Fact]
    public async Task AnAzureStoreWorksEndToEndThroughTheCli()
    {
        var connection = Squash.Testing.AzuriteTestStore.ConnectionString;
        using var dir = new TempDir();
        var rows = TempDir.Random(300, 8, 4).ToArray();
        var vectors = dir.Fvecs("base.fvecs", rows);
        var queries = dir.Fvecs("q.fvecs", rows.Skip(5).Take(2));
        var container = "cli-" + Guid.NewGuid().ToString("N")[..12];
        string[] At(params string[] args) => [.. args, "--store", "azure:" + connection, "--container", container, "--index", "products"];
        for (int i = 0; i < 2; i++)
        {
            var (exit, _, err) = await CliRunner.RunAsync(At("build", "--vectors", vectors, "--partitions", "2"));
            Assert.True(exit == 0, err);
        }
        var (qexit, output, qerr) = await CliRunner.RunAsync(At("query", "--vectors", queries, "--k", "3"));
        Assert.True(qexit == 0, qerr);
        Assert.StartsWith("0: 5:0 ", output);
        var (gexit, gc, gerr) = await CliRunner.RunAsync(At("gc", "--keep", "0"));
        Assert.True(gexit == 0, gerr);
        Assert.Contains("deleted 1 version(s): v000001", gc);
        Assert.Contains("v000002 (current)", gc);
    }
}
