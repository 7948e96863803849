namespace Squash.Cli.Tests;

public class StoreAndGcCommandTests
{
    private static string[] Versions(string indexRoot) =>
        Directory.Exists(Path.Combine(indexRoot, "versions"))
            ? Directory.GetDirectories(Path.Combine(indexRoot, "versions")).Select(d => Path.GetFileName(d)!).Order(StringComparer.Ordinal).ToArray()
            : [];

    [Fact]
    public async Task GcKeepsTheNewestVersionsAndCurrent()
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(200, 6, 1));
        for (int i = 0; i < 4; i++)
            Assert.Equal(0, (await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--partitions", "2")).Exit);
        var built = Versions(dir.File("idx"));
        Assert.Equal(4, built.Length);
        Assert.All(built, v => Assert.Matches("^v[0-9]{8}-[0-9]{9}-[0-9a-f]{12}$", v));

        // The default grace period (1h) protects versions just built and just superseded.
        var (kept, keptOutput, keptErr) = await CliRunner.RunAsync("gc", "--index", dir.File("idx"), "--keep", "0");
        Assert.True(kept == 0, keptErr);
        Assert.Contains("nothing to delete", keptOutput);
        Assert.Contains($"{built[0]} (younger than --grace 1h: a build may be writing it)", keptOutput);
        Assert.Contains($"{built[3]} (current)", keptOutput);
        Assert.Equal(built, Versions(dir.File("idx")));

        var (exit, output, err) = await CliRunner.RunAsync("gc", "--index", dir.File("idx"), "--keep", "1", "--grace", "0");
        Assert.True(exit == 0, err);
        Assert.Contains($"deleted 3 version(s): {built[0]} {built[1]} {built[2]}", output);
        Assert.Contains($"kept 1: {built[3]} (current)", output);
        Assert.Equal(new[] { built[3] }, Versions(dir.File("idx")));
        var (again, output2, _) = await CliRunner.RunAsync("gc", "--index", dir.File("idx"), "--keep", "0", "--grace", "0");
        Assert.Equal(0, again);
        Assert.Contains("nothing to delete", output2);
        var (bad, _, badErr) = await CliRunner.RunAsync("gc", "--index", dir.File("idx"), "--keep", "-1");
        Assert.Equal(1, bad);
        Assert.Contains("--keep", badErr);
    }

    /// <summary>
    /// A grace period below the default is accepted (a quiet store may be collected at once) but warned about on stderr,
    /// saying what it risks; the default and longer periods print nothing there.
    /// </summary>
    [Theory]
    [InlineData("0", true)]
    [InlineData("59m", true)]
    [InlineData("1h", false)]
    [InlineData(null, false)]
    public async Task AGraceBelowTheDefaultIsWarnedAboutOnStderr(string? grace, bool warned)
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(50, 3, 1));
        for (int i = 0; i < 2; i++)
            Assert.Equal(0, (await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--partitions", "1")).Exit);
        string[] args = ["gc", "--index", dir.File("idx"), "--keep", "0", .. grace is null ? Array.Empty<string>() : ["--grace", grace]];
        var (exit, output, err) = await CliRunner.RunAsync(args);
        Assert.True(exit == 0, err);
        Assert.Equal(warned
            ? $"warning: --grace {grace} is below the default 1h: gc may delete the blobs of a version a build is still writing (the build fails) "
              + "or that queries still read (they fail until they re-read 'current')\n"
            : "", err.ReplaceLineEndings("\n"));
        // The warning changes nothing: a zero grace still collects the superseded version.
        Assert.Equal(grace == "0" ? 1 : 2, Versions(dir.File("idx")).Length);
        Assert.Contains(grace == "0" ? "deleted 1 version(s)" : "nothing to delete", output);
    }

    /// <summary>--log without --store is refused before any version is collected, not after (it once deleted them, then failed).</summary>
    [Fact]
    public async Task LogWithoutAStoreIsRefusedBeforeAnythingIsDeleted()
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(50, 3, 1));
        for (int i = 0; i < 3; i++)
            Assert.Equal(0, (await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--partitions", "1")).Exit);
        var built = Versions(dir.File("idx"));
        var (exit, output, err) = await CliRunner.RunAsync("gc", "--index", dir.File("idx"), "--keep", "0", "--grace", "0", "--log");
        CliRunner.AssertOneErrorLine(exit, err, "--log needs --store and the index's name in it (the write log lives beside the index's versions in the store)");
        Assert.Empty(output);
        Assert.Equal(built, Versions(dir.File("idx")));
    }

    [Theory]
    [InlineData("soon")]
    [InlineData("1")]
    [InlineData("-5m")]
    [InlineData("1y")]
    [InlineData("")]
    public async Task ABadGracePeriodIsOneErrorLine(string grace)
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(50, 3, 1));
        Assert.Equal(0, (await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--partitions", "1")).Exit);
        var (exit, output, err) = await CliRunner.RunAsync("gc", "--index", dir.File("idx"), "--grace", grace);
        Assert.Equal(1, exit);
        Assert.Equal($"error: --grace must be a duration such as 30s, 15m, 1h, 1h30m or 0, got '{grace}'", err.Trim());
        Assert.Empty(output);
        Assert.Single(Versions(dir.File("idx")));
    }

    [Theory]
    [InlineData("90s", "1m30s")]
    [InlineData("1h30m", "1h30m")]
    [InlineData("10m", "10m")]
    [InlineData("2d", "2d")]
    public async Task GraceAcceptsDurations(string grace, string shown)
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(50, 3, 1));
        for (int i = 0; i < 2; i++)
            Assert.Equal(0, (await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--partitions", "1")).Exit);
        var (exit, output, err) = await CliRunner.RunAsync("gc", "--index", dir.File("idx"), "--keep", "0", "--grace", grace);
        Assert.True(exit == 0, err);
        Assert.Contains($"(younger than --grace {shown}: a build may be writing it)", output);
    }

    /// <summary>
    /// Separate `squash build` processes on one folder index at once, with `squash gc --keep 0` processes
    /// started while they run: every build succeeds, current is the newest and answers a query, and every
    /// version that has a manifest is complete.
    /// </summary>
    [Fact]
    public async Task ConcurrentBuildProcessesAndGcNeverDamageTheIndex()
    {
        const int builders = 4, rows = 3000, dims = 16;
        using var dir = new TempDir();
        var index = dir.File("idx");
        var data = Enumerable.Range(0, builders).Select(b => TempDir.Random(rows + 100 * b, dims, 10 + b).ToArray()).ToArray();
        var files = data.Select((d, b) => dir.Fvecs($"base{b}.fvecs", d)).ToArray();
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(8));

        var builds = files.Select(f => RunSquashAsync(deadline.Token, "build", "--index", index, "--vectors", f, "--partitions", "4")).ToArray();
        // At most two gc processes at once (so gc also races gc), a new one as soon as one ends: on a loaded machine a
        // gc started every few hundred milliseconds regardless piled up dozens of processes and starved the builds.
        var gcs = new List<Task<(int Exit, string Out, string Err)>>();
        var allBuilt = Task.WhenAll(builds);
        // gc on a folder that holds nothing yet says there is no index (exit 1): the race starts with the builds' first blob.
        while (!allBuilt.IsCompleted && !(Directory.Exists(index) && Directory.EnumerateFiles(index, "*", SearchOption.AllDirectories).Any()))
            await Task.WhenAny(Task.Delay(20, deadline.Token), allBuilt);
        while (!allBuilt.IsCompleted)
        {
            if (gcs.Count(g => !g.IsCompleted) < 2) gcs.Add(RunSquashAsync(deadline.Token, "gc", "--index", index, "--keep", "0"));
            await Task.WhenAny(Task.Delay(300, deadline.Token), allBuilt);
        }
        var results = await Task.WhenAll(builds);
        foreach (var (exit, _, err) in results) Assert.True(exit == 0, "a build failed: " + err);
        foreach (var (exit, _, err) in await Task.WhenAll(gcs)) Assert.True(exit == 0, "gc failed: " + err);

        // Every build left a complete version, and current is the newest id; its row count says whose data it holds.
        var store = new Squash.Storage.IndexStore(new Squash.Storage.FolderBlobStore(index));
        var published = Versions(index).Where(v => File.Exists(Path.Combine(index, "versions", v, "manifest.json"))).ToArray();
        Assert.Equal(builders, published.Length);
        var current = await store.OpenCurrentAsync();
        Assert.Equal(published.Max(Squash.Storage.VersionIds.Order), current.Version);
        int newest = (int)(current.Count - rows) / 100;

        var queries = dir.Fvecs("q.fvecs", data[newest].Skip(7).Take(1));
        var (qexit, answer, qerr) = await CliRunner.RunAsync("query", "--index", index, "--vectors", queries, "--k", "3");
        Assert.True(qexit == 0, qerr);
        Assert.StartsWith("0: 7:0 ", answer);

        foreach (var v in published)
        {
            var m = await store.ReadManifestAsync(v);
            var named = new[] { m.Routing }.Concat(m.Partitions.SelectMany(p => new[] { p.Codes, p.Vectors }));
            foreach (var segment in named)
                Assert.True(File.Exists(Path.Combine(index, "versions", v, segment.Name)), $"version {v} has a manifest but no {segment.Name}");
        }
    }

    /// <summary>Runs the built CLI as its own process (not in-process like <see cref="CliRunner"/>), killed at the deadline.</summary>
    private static async Task<(int Exit, string Out, string Err)> RunSquashAsync(CancellationToken deadline, params string[] args)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("dotnet", [Path.Combine(AppContext.BaseDirectory, "squash.dll"), .. args])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using var process = System.Diagnostics.Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync(deadline);
        var stderr = process.StandardError.ReadToEndAsync(deadline);
        try
        {
            await process.WaitForExitAsync(deadline);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"squash {string.Join(' ', args)} did not finish before the deadline");
        }
        return (process.ExitCode, await stdout, await stderr);
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
    [InlineData("azure:", "x", "squash", "--store azure: needs a connection string or an account URL, as in azure:https://ACCOUNT.blob.core.windows.net")]
    [InlineData("azure: ", "x", "squash", "--store azure: needs a connection string or an account URL")]
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
        var built = await ListVersionsAsync(connection, container);
        var (gexit, gc, gerr) = await CliRunner.RunAsync(At("gc", "--keep", "0", "--grace", "0"));
        Assert.True(gexit == 0, gerr);
        Assert.Contains($"deleted 1 version(s): {built[0]}", gc);
        Assert.Contains($"{built[1]} (current)", gc);
    }

    private static Task<IReadOnlyList<string>> ListVersionsAsync(string connection, string container) =>
        new Squash.Storage.IndexStore(Squash.Storage.BlobStores.Open("azure:" + connection, container), "products").ListVersionsAsync();
}
