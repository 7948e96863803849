using System.Text.Json;
using Squash.Index.Model;
using Squash.Storage;

namespace Squash.Cli.Tests;

/// <summary>
/// <c>squash calibrate</c>: the recall calibration measured again on the user's queries and filters without a rebuild, published
/// as a version of the same rows; on an index built with those queries it measures what the build measured.
/// </summary>
public sealed class CalibrateCommandTests
{
    private const int Rows = 1000, Dims = 8, Queries = 100;

    private static (string Vectors, string Attributes, string Queries, string Labels) Files(TempDir dir)
    {
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(Rows, Dims, 3));
        var queries = dir.Fvecs("q.fvecs", TempDir.Random(Queries, Dims, 4));
        File.WriteAllText(dir.File("a.jsonl"), string.Concat(Enumerable.Range(0, Rows).Select(i => $"{{\"attributes\":{{\"label\":{i % 3},\"price\":{i}}}}}\n")));
        File.WriteAllText(dir.File("labels.jsonl"), string.Concat(Enumerable.Range(0, Queries).Select(i => i % 10 == 0 ? "null\n" : $"{{\"label\":{i % 3}}}\n")));
        return (vectors, dir.File("a.jsonl"), queries, dir.File("labels.jsonl"));
    }

    private static async Task<IndexManifest> CurrentAsync(string folder) =>
        await new IndexStore(new FolderBlobStore(folder)).OpenCurrentAsync();

    [Fact]
    public async Task OnAnIndexBuiltWithTheSameQueriesItMeasuresWhatTheBuildMeasured()
    {
        using var dir = new TempDir();
        var (vectors, attributes, queries, labels) = Files(dir);
        var (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--attributes", attributes, "--seed", "5",
            "--calibration-queries", queries, "--calibration-filters", labels);
        Assert.True(exit == 0, err);
        var built = await CurrentAsync(dir.File("idx"));

        string output;
        (exit, output, err) = await CliRunner.RunAsync("calibrate", "--index", dir.File("idx"), "--calibration-queries", queries, "--calibration-filters", labels);
        Assert.True(exit == 0, err);
        var again = await CurrentAsync(dir.File("idx"));
        Assert.NotEqual(built.Version, again.Version);
        Assert.Contains($"calibrated {dir.File("idx")} version {built.Version} on your queries → version {again.Version} (current)", output);
        // The same rows (the build's segments, referenced), the same calibration: the unfiltered frontier and every band.
        Assert.Equal(built.Count, again.Count);
        Assert.Equal(IndexStore.BlobsNamedBy(built).Where(s => s.Name != RecallCalibration.QueriesBlobName && !s.Name.StartsWith("calibration-filters/", StringComparison.Ordinal))
            .Select(s => (s.Name, s.Version ?? built.Version)), IndexStore.BlobsNamedBy(again).Where(s => s.Name != RecallCalibration.QueriesBlobName && !s.Name.StartsWith("calibration-filters/", StringComparison.Ordinal))
            .Select(s => (s.Name, s.Version ?? again.Version)));
        Assert.Equal(JsonSerializer.Serialize(built.Calibration!.Plans), JsonSerializer.Serialize(again.Calibration!.Plans));
        Assert.Equal(JsonSerializer.Serialize(built.Calibration.Filtered), JsonSerializer.Serialize(again.Calibration.Filtered));
        Assert.NotNull(again.Calibration.FilteredByK);
        Assert.Equal(JsonSerializer.Serialize(built.Calibration.FilteredByK), JsonSerializer.Serialize(again.Calibration.FilteredByK));
        Assert.Equal(("queries", Queries), (again.Calibration.Source, again.Calibration.Queries));
        // The queries and the family are kept in the new version's folder, with the build's bytes.
        Assert.Equal([again.Version, again.Version], new[] { again.Calibration.QueriesBlob!, again.Calibration.FilterBlobs!.Single() }.Select(b => b.Version));
        var store = new IndexStore(new FolderBlobStore(dir.File("idx")));
        foreach (var (a, b) in new[] { (built.Calibration.QueriesBlob!, again.Calibration.QueriesBlob!), (built.Calibration.FilterBlobs!.Single(), again.Calibration.FilterBlobs!.Single()) })
            Assert.Equal(await store.Blobs.ReadAllAsync(store.BlobName(built, a)), await store.Blobs.ReadAllAsync(store.BlobName(again, b)));
    }

    [Fact]
    public async Task ADefaultBuildIsCalibratedOnTheUsersQueriesAndFamilies()
    {
        using var dir = new TempDir();
        var (vectors, attributes, queries, labels) = Files(dir);
        var (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--attributes", attributes);
        Assert.True(exit == 0, err);
        var built = await CurrentAsync(dir.File("idx"));
        Assert.Equal("base-sample", built.Calibration!.Source);
        Assert.Contains(built.Calibration.Filtered!.SelectMany(b => b.Families), f => !f.StartsWith("labels.jsonl:", StringComparison.Ordinal));
        // A base-sample calibration keeps nothing and says nothing of it.
        var (bexit, before, berr) = await CliRunner.RunAsync("inspect", "--index", dir.File("idx"));
        Assert.True(bexit == 0, berr);
        Assert.Contains("calibrated recall@10 on", before);
        Assert.DoesNotContain("kept with the index", before);

        string output;
        (exit, output, err) = await CliRunner.RunAsync("calibrate", "--index", dir.File("idx"), "--calibration-queries", queries, "--calibration-filters", labels);
        Assert.True(exit == 0, err);
        var again = await CurrentAsync(dir.File("idx"));
        Assert.Equal(("queries", Queries), (again.Calibration!.Source, again.Calibration.Queries));
        Assert.All(again.Calibration.Filtered!.SelectMany(b => b.Families), f => Assert.StartsWith("labels.jsonl: 90 queries", f));
        Assert.Contains($"calibrated recall@10 on {Queries} of your queries", output);
        // inspect reads the new calibration back.
        var (iexit, shown, ierr) = await CliRunner.RunAsync("inspect", "--index", dir.File("idx"));
        Assert.True(iexit == 0, ierr);
        Assert.Contains($"version {again.Version}", shown);
        Assert.Contains($"calibrated recall@10 on {Queries} of your queries", shown);
        Assert.Contains("  your queries are kept with the index (measured again after writes and by a rebuild), with 1 filter family: labels.jsonl", shown);
    }

    [Fact]
    public async Task BadInputIsOneLineNamingTheFlag()
    {
        using var dir = new TempDir();
        var (vectors, attributes, queries, labels) = Files(dir);
        Assert.Equal(0, (await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--attributes", attributes)).Exit);
        Assert.Equal(0, (await CliRunner.RunAsync("build", "--index", dir.File("plain"), "--vectors", vectors, "--no-calibration")).Exit);
        Assert.Equal(0, (await CliRunner.RunAsync("build", "--index", dir.File("bare"), "--vectors", vectors)).Exit);
        var wide = dir.Fvecs("wide.fvecs", TempDir.Random(10, Dims + 1, 5));
        File.WriteAllText(dir.File("short.jsonl"), "null\n{\"label\":1}\n");
        File.WriteAllText(dir.File("bad.jsonl"), string.Concat(Enumerable.Range(0, Queries).Select(i => i == 3 ? "{\"colour\":\"red\"}\n" : "null\n")));
        var index = dir.File("idx");
        Directory.CreateDirectory(dir.File("sub"));
        File.Copy(labels, dir.File("sub/labels.jsonl"));
        foreach (var (args, expected) in new (string[], string)[]
        {
            (["--index", index, "--calibration-queries", dir.File("none.fvecs")], $"--calibration-queries: file '{dir.File("none.fvecs")}' does not exist"),
            (["--index", index, "--calibration-queries", wide], $"--calibration-queries: '{wide}' has {Dims + 1} dimensions; the index has {Dims}"),
            (["--index", index, "--calibration-queries", queries, "--calibration-filters", dir.File("short.jsonl")],
                $"--calibration-filters: '{dir.File("short.jsonl")}' has 2 filters; --calibration-queries has {Queries} queries (one filter per query, null for none)"),
            (["--index", index, "--calibration-queries", queries, "--calibration-filters", dir.File("bad.jsonl")],
                $"--calibration-filters: '{dir.File("bad.jsonl")}' line 4: filter $.colour: unknown attribute 'colour'"),
            (["--index", dir.File("bare"), "--calibration-queries", queries, "--calibration-filters", labels], "--calibration-filters needs an index with attributes: the filters name attributes"),
            (["--index", index, "--calibration-queries", queries, "--calibration-filters", labels, "--calibration-filters", dir.File("sub/labels.jsonl")],
                $"--calibration-filters: '{labels}' and '{dir.File("sub/labels.jsonl")}' have the same file name, which names a family: rename one"),
        })
        {
            var (exit, _, err) = await CliRunner.RunAsync(["calibrate", .. args]);
            CliRunner.AssertOneErrorLine(exit, err, expected);
        }
        var plain = await CurrentAsync(dir.File("plain"));
        var (pexit, _, perr) = await CliRunner.RunAsync("calibrate", "--index", dir.File("plain"), "--calibration-queries", queries);
        CliRunner.AssertOneErrorLine(pexit, perr, $"--index: version {plain.Version} has no recall calibration (built with --no-calibration, or too small to calibrate): rebuild it to calibrate");
        // Nothing was published by any of them.
        Assert.Equal(plain.Version, (await CurrentAsync(dir.File("plain"))).Version);
        Assert.Equal("base-sample", (await CurrentAsync(index)).Calibration!.Source);
    }
}
