using Squash.Core.Vectors;
using System.Text.Json;
using Squash.Cli.Datasets;
using Squash.Core;

namespace Squash.Cli.Tests.Datasets;

/// <summary>These tests swap Console.Error, so they must not run alongside anything else.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class DatasetCommandCollection
{
    public const string Name = "Squash.Cli dataset commands (console redirection)";
}

[Collection(DatasetCommandCollection.Name)]
public sealed class DatasetCommandTests : IDisposable
{
    private const string FashionMnistSource = "/usr/share/datasets/fashion-mnist";

    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Generate_with_selectivities_writes_attributes_range_filters_and_their_exact_ground_truth()
    {
        string outDir = _dir.File("gen-attrs");
        var (code, stderr) = await Run("dataset", "generate", "--n", "3000", "--dim", "8", "--seed", "5", "--out", outDir, "--queries", "20", "--gt-k", "10", "--selectivities", "10,1");
        Assert.True(code == 0, stderr);
        var baseSet = VectorFile.Read(Path.Combine(outDir, "base.fvecs"));
        var queries = VectorFile.Read(Path.Combine(outDir, "query.fvecs"));
        var u = File.ReadLines(Path.Combine(outDir, "base.attributes.jsonl"))
            .Select(l => JsonDocument.Parse(l).RootElement.GetProperty("attributes").GetProperty("u").GetInt32()).ToArray();
        Assert.Equal(3000, u.Length);
        foreach (var (sel, tag) in new[] { (0.10, "10"), (0.01, "1") })
        {
            var filters = File.ReadAllLines(Path.Combine(outDir, $"filters.sel{tag}.jsonl"))
                .Select(l => JsonDocument.Parse(l).RootElement.GetProperty("u"))
                .Select(f => (Lo: f.GetProperty("$gte").GetInt32(), Hi: f.GetProperty("$lt").GetInt32())).ToArray();
            Assert.Equal(20, filters.Length);
            var truth = VectorFile.ReadIvecs(Path.Combine(outDir, $"groundtruth.sel{tag}.ivecs"));
            double matched = 0;
            for (int q = 0; q < 20; q++)
            {
                var (lo, hi) = filters[q];
                Assert.Equal((int)Math.Round(sel * 100_000), hi - lo);
                matched += u.Count(x => x >= lo && x < hi);
                var expected = GroundTruth.Compute(baseSet, new VectorSet(queries.Row(q).ToArray(), 1, 8), 10, Metric.L2, accept: (_, id) => u[id] >= lo && u[id] < hi)[0];
                Assert.Equal(expected, truth[q]);
            }
            // The range covers about sel of the base (uniform u).
            Assert.InRange(matched / 20 / 3000, sel * 0.6, sel * 1.4 + 0.002);
        }
    }

    [Fact]
    public async Task Generate_writes_vectors_ground_truth_and_manifest()
    {
        string outDir = _dir.File("gen");
        var (code, stderr) = await Run("dataset", "generate", "--n", "600", "--dim", "10", "--seed", "7", "--out", outDir, "--queries", "23", "--gt-k", "5");
        Assert.True(code == 0, stderr);

        var baseSet = VectorFile.Read(Path.Combine(outDir, "base.fvecs"));
        var queries = VectorFile.Read(Path.Combine(outDir, "query.fvecs"));
        var truth = VectorFile.ReadIvecs(Path.Combine(outDir, "groundtruth.ivecs"));
        Assert.Equal((600, 10), (baseSet.Count, baseSet.Dimensions));
        Assert.Equal((23, 10), (queries.Count, queries.Dimensions));
        Assert.Equal(GroundTruth.Compute(baseSet, queries, 5, Metric.L2), truth);

        var expected = GaussianMixtureGenerator.Generate(600, 10, 23, seed: 7);
        Assert.Equal(expected.Base.Data, baseSet.Data);

        var manifest = DatasetManifest.Read(Path.Combine(outDir, "dataset.json"));
        Assert.Equal(Metric.L2, manifest.Metric);
        Assert.Equal((600, 23, 10, 5), (manifest.BaseCount, manifest.QueryCount, manifest.Dimensions, manifest.GroundTruthK));
        Assert.Equal("base.fvecs", manifest.Files[DatasetManifest.Roles.Base]);
        Assert.Equal("7", manifest.Provenance["seed"]);
        Assert.Empty(Directory.GetFiles(outDir, "*.tmp"));
    }

    [Fact]
    public async Task Generate_with_cosine_metric_records_it_and_uses_it()
    {
        string outDir = _dir.File("cos");
        var (code, stderr) = await Run("dataset", "generate", "--n", "300", "--dim", "6", "--seed", "1", "--out", outDir, "--queries", "9", "--gt-k", "4", "--metric", "cosine", "--clusters", "3");
        Assert.True(code == 0, stderr);
        using var json = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(outDir, "dataset.json")));
        Assert.Equal("cosine", json.RootElement.GetProperty("metric").GetString());
        var baseSet = VectorFile.Read(Path.Combine(outDir, "base.fvecs"));
        var queries = VectorFile.Read(Path.Combine(outDir, "query.fvecs"));
        Assert.Equal(GroundTruth.Compute(baseSet, queries, 4, Metric.Cosine), VectorFile.ReadIvecs(Path.Combine(outDir, "groundtruth.ivecs")));
    }

    [Fact]
    public async Task Generate_separated_writes_the_mixture_its_ground_truth_and_its_parameters()
    {
        string outDir = _dir.File("separated");
        var (code, stderr) = await Run(
            "dataset", "generate", "--mode", "separated", "--n", "900", "--dim", "10", "--seed", "4", "--out", outDir,
            "--queries", "17", "--gt-k", "6", "--clusters", "5", "--separation", "5", "--spectrum-decay", "1.5", "--selectivities", "10");
        Assert.True(code == 0, stderr);

        var baseSet = VectorFile.Read(Path.Combine(outDir, "base.fvecs"));
        var queries = VectorFile.Read(Path.Combine(outDir, "query.fvecs"));
        Assert.Equal((900, 10), (baseSet.Count, baseSet.Dimensions));
        Assert.Equal((17, 10), (queries.Count, queries.Dimensions));
        Assert.Equal(GroundTruth.Compute(baseSet, queries, 6, Metric.L2), VectorFile.ReadIvecs(Path.Combine(outDir, "groundtruth.ivecs")));
        Assert.Equal(17, VectorFile.ReadIvecs(Path.Combine(outDir, "groundtruth.sel10.ivecs")).Length);

        var expected = SeparatedMixtureGenerator.Generate(900, 10, 17, seed: 4, clusters: 5, separation: 5, spectrumDecay: 1.5);
        Assert.Equal(expected.Base.Data, baseSet.Data);
        Assert.Equal(expected.Queries.Data, queries.Data);

        var manifest = DatasetManifest.Read(Path.Combine(outDir, "dataset.json"));
        Assert.Equal("separated-n900-d10-s4", manifest.Name);
        Assert.Equal((900, 17, 10, 6), (manifest.BaseCount, manifest.QueryCount, manifest.Dimensions, manifest.GroundTruthK));
        Assert.Equal(nameof(SeparatedMixtureGenerator), manifest.Provenance["generator"]);
        Assert.Equal(("5", "5", "1.5"), (manifest.Provenance["clusters"], manifest.Provenance["separation"], manifest.Provenance["spectrumDecay"]));
    }

    [Fact]
    public async Task Generate_separated_defaults_to_64_clusters()
    {
        string outDir = _dir.File("separated-defaults");
        var (code, stderr) = await Run("dataset", "generate", "--mode", "separated", "--n", "300", "--dim", "6", "--seed", "2", "--out", outDir, "--queries", "3", "--gt-k", "3");
        Assert.True(code == 0, stderr);
        var manifest = DatasetManifest.Read(Path.Combine(outDir, "dataset.json"));
        Assert.Equal("64", manifest.Provenance["clusters"]);
        Assert.Equal(SeparatedMixtureGenerator.Generate(300, 6, 3, seed: 2).Base.Data, VectorFile.Read(Path.Combine(outDir, "base.fvecs")).Data);
    }

    [Theory]
    [InlineData("--mode", "fancy", "separated")]
    [InlineData("--separation", "0", "separated")]
    [InlineData("--separation", "NaN", "separated")]
    [InlineData("--spectrum-decay", "-1", "separated")]
    [InlineData("--separation", "4", "shared")]
    [InlineData("--spectrum-decay", "1", "shared")]
    [InlineData("--clusters", "100000", "separated")]
    public async Task Bad_generate_mode_flag_exits_1_and_names_the_flag(string flag, string value, string mode)
    {
        string outDir = _dir.File("bad-mode");
        var args = new Dictionary<string, string>
        {
            ["--mode"] = mode,
            ["--n"] = "100",
            ["--dim"] = "64",
            ["--seed"] = "1",
            ["--out"] = outDir,
            [flag] = value,
        };
        await AssertGenerateRejectsAsync(args, flag, outDir);
    }

    /// <summary>generate with these flags exits 1 naming <paramref name="flag"/>, prints no stack trace and leaves no dataset.</summary>
    private async Task AssertGenerateRejectsAsync(Dictionary<string, string> args, string flag, string outDir)
    {
        var (code, stderr) = await Run(["dataset", "generate", .. args.SelectMany(kv => new[] { kv.Key, kv.Value })]);
        Assert.Equal(1, code);
        Assert.Contains(flag, stderr);
        Assert.DoesNotContain("   at ", stderr); // no stack trace
        Assert.False(File.Exists(Path.Combine(outDir, "dataset.json")));
    }

    [Theory]
    [InlineData("--n", "0")]
    [InlineData("--dim", "0")]
    [InlineData("--dim", "4097")]
    [InlineData("--queries", "0")]
    [InlineData("--gt-k", "0")]
    [InlineData("--gt-k", "101")]
    [InlineData("--clusters", "0")]
    [InlineData("--metric", "manhattan")]
    [InlineData("--n", "lots")]
    public async Task Bad_generate_flag_exits_1_and_names_the_flag(string flag, string value)
    {
        string outDir = _dir.File("bad");
        var args = new Dictionary<string, string>
        {
            ["--n"] = "100",
            ["--dim"] = "4",
            ["--seed"] = "1",
            ["--out"] = outDir,
            [flag] = value,
        };
        await AssertGenerateRejectsAsync(args, flag, outDir);
    }

    [Fact]
    public async Task Missing_required_flag_exits_1()
    {
        var (code, stderr) = await Run("dataset", "generate", "--n", "100", "--seed", "1", "--out", _dir.File("x"));
        Assert.Equal(1, code);
        Assert.Contains("--dim", stderr);
    }

    [Fact]
    public async Task Fashion_mnist_with_missing_source_says_how_to_install_it()
    {
        var (code, stderr) = await Run("dataset", "fashion-mnist", "--out", _dir.File("fm"), "--source", _dir.File("nowhere"));
        Assert.Equal(1, code);
        Assert.Contains("error:", stderr);
        Assert.Contains("apt-get install dataset-fashion-mnist", stderr);
        Assert.Contains("train-images-idx3-ubyte.gz", stderr);
    }

    [Fact]
    public async Task Fashion_mnist_with_corrupt_source_reports_the_file()
    {
        string source = _dir.File("src");
        Directory.CreateDirectory(source);
        foreach (string name in new[] { "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz" })
        {
            File.WriteAllText(Path.Combine(source, name), "not gzip");
        }

        var (code, stderr) = await Run("dataset", "fashion-mnist", "--out", _dir.File("fm"), "--source", source);
        Assert.Equal(1, code);
        Assert.Contains("train-images-idx3-ubyte.gz", stderr);
        Assert.Contains("gzip", stderr);
        Assert.DoesNotContain("   at ", stderr);
    }

    [Theory]
    [InlineData("--gt-k", "0")]
    [InlineData("--queries", "0")]
    public async Task Bad_fashion_mnist_flag_exits_1_and_names_the_flag(string flag, string value)
    {
        var (code, stderr) = await Run("dataset", "fashion-mnist", "--out", _dir.File("fm"), flag, value);
        Assert.Equal(1, code);
        Assert.Contains(flag, stderr);
    }

    [Fact]
    public async Task Fashion_mnist_conversion_of_the_real_files()
    {
        if (!File.Exists(Path.Combine(FashionMnistSource, "train-images-idx3-ubyte.gz")))
        {
            return; // dataset-fashion-mnist not installed here; the corrupt/missing-source tests still run.
        }

        // All 60,000 base images, but only 500 queries so exact ground truth stays a few seconds.
        string outDir = _dir.File("fm");
        var (code, stderr) = await Run("dataset", "fashion-mnist", "--out", outDir, "--queries", "500", "--gt-k", "10");
        Assert.True(code == 0, stderr);

        var baseSet = VectorFile.Read(Path.Combine(outDir, "base.fvecs"));
        var queries = VectorFile.Read(Path.Combine(outDir, "query.fvecs"));
        Assert.Equal((60_000, 784), (baseSet.Count, baseSet.Dimensions));
        Assert.Equal((500, 784), (queries.Count, queries.Dimensions));
        Assert.InRange(baseSet.Data.Max(), 250f, 255f);
        Assert.Equal(0f, baseSet.Data.Min());

        var baseLabels = VectorFile.ReadIvecs(Path.Combine(outDir, "base.labels.ivecs"));
        var queryLabels = VectorFile.ReadIvecs(Path.Combine(outDir, "query.labels.ivecs"));
        Assert.Equal(60_000, baseLabels.Length);
        Assert.Equal(500, queryLabels.Length);
        Assert.All(baseLabels, row => Assert.InRange(Assert.Single(row), 0, 9));
        Assert.Equal(10, baseLabels.Select(r => r[0]).Distinct().Count());

        string[] lines = File.ReadAllLines(Path.Combine(outDir, "base.attributes.jsonl"));
        Assert.Equal(60_000, lines.Length);
        using (var line = JsonDocument.Parse(lines[59_999]))
        {
            Assert.Equal("59999", line.RootElement.GetProperty("id").GetString());
            Assert.Equal(baseLabels[59_999][0], line.RootElement.GetProperty("attributes").GetProperty("label").GetInt32());
        }

        var truth = VectorFile.ReadIvecs(Path.Combine(outDir, "groundtruth.ivecs"));
        Assert.Equal(500, truth.Length);
        Assert.All(truth, row => Assert.Equal(10, row.Length));
        // Neighbours in pixel space mostly share the query's class: a scrambled id mapping would not.
        double agreement = Enumerable.Range(0, 500).Average(q => truth[q].Count(id => baseLabels[id][0] == queryLabels[q][0]) / 10.0);
        Assert.True(agreement > 0.6, $"label agreement of neighbours {agreement:F2}");

        // The label filter per query asks for the next label, and the filtered ground truth honours it.
        var filters = File.ReadAllLines(Path.Combine(outDir, "filters.jsonl"));
        Assert.Equal(500, filters.Length);
        var filtered = VectorFile.ReadIvecs(Path.Combine(outDir, "groundtruth.filtered.ivecs"));
        Assert.Equal(500, filtered.Length);
        for (int q = 0; q < 500; q++)
        {
            int wanted = (queryLabels[q][0] + 1) % 10;
            Assert.Equal($"{{\"label\":{wanted}}}", filters[q]);
            Assert.All(filtered[q], id => Assert.Equal(wanted, baseLabels[id][0]));
        }
        Assert.NotEqual(truth[0], filtered[0]);

        var manifest = DatasetManifest.Read(Path.Combine(outDir, "dataset.json"));
        Assert.Equal(("fashion-mnist", Metric.L2, 784, 60_000, 500), (manifest.Name, manifest.Metric, manifest.Dimensions, manifest.BaseCount, manifest.QueryCount));
        Assert.Equal("base.attributes.jsonl", manifest.Files[DatasetManifest.Roles.BaseAttributes]);

        // The full test split is 10,000 images; the command only kept the first 500 of them.
        var allQueries = IdxReader.ReadImages(Path.Combine(FashionMnistSource, "t10k-images-idx3-ubyte.gz"));
        Assert.Equal((10_000, 784), (allQueries.Count, allQueries.Dimensions));
        Assert.True(allQueries.Data.AsSpan(0, 500 * 784).SequenceEqual(queries.Data));
    }

    private static async Task<(int Code, string Stderr)> Run(params string[] args)
    {
        var saved = Console.Error;
        var error = new StringWriter();
        Console.SetError(error);
        try
        {
            int code = await Program.BuildRoot().Parse(args).InvokeAsync();
            return (code, error.ToString());
        }
        finally
        {
            Console.SetError(saved);
        }
    }
}
