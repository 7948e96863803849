using Squash.Core.Vectors;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Spectre.Console;
using Squash.Cli.Datasets;
using Squash.Core;

namespace Squash.Cli.Commands;

/// <summary>
/// <c>squash dataset</c>: turns raw sources into a benchmark directory (base/query vectors, exact ground truth,
/// optional labels and attributes, and a dataset.json manifest written last).
/// </summary>
public static class DatasetCommand
{
    public const string DefaultFashionMnistSource = "/usr/share/datasets/fashion-mnist";

    private const string BaseFile = "base.fvecs";
    private const string QueryFile = "query.fvecs";
    private const string GroundTruthFile = "groundtruth.ivecs";
    private const string BaseLabelsFile = "base.labels.ivecs";
    private const string QueryLabelsFile = "query.labels.ivecs";
    private const string BaseAttributesFile = "base.attributes.jsonl";
    private const string FiltersFile = "filters.jsonl";
    private const string FilteredGroundTruthFile = "groundtruth.filtered.ivecs";

    public static Command Create()
    {
        var command = new Command("dataset", "Prepare benchmark data sets: vectors, exact ground truth and a dataset.json manifest.");
        command.Subcommands.Add(CreateFashionMnist());
        command.Subcommands.Add(CreateGenerate());
        return command;
    }

    private static Command CreateFashionMnist()
    {
        var outOption = new Option<string>("--out") { Description = "Output directory (created if missing).", Required = true };
        var sourceOption = new Option<string>("--source")
        {
            Description = "Directory with the gzip IDX files from the Debian package dataset-fashion-mnist.",
            DefaultValueFactory = _ => DefaultFashionMnistSource,
        };
        var queriesOption = new Option<int?>("--queries")
        {
            Description = "Use only the first N of the 10,000 test images as queries (default: all); handy for quick runs.",
        };
        var gtKOption = GroundTruthKOption();
        var command = new Command(
            "fashion-mnist",
            "Convert Fashion-MNIST (60,000 base / 10,000 query images, 784 dims) with labels, attributes and L2 ground truth.")
        {
            outOption,
            sourceOption,
            queriesOption,
            gtKOption,
        };

        command.SetAction((ParseResult pr, CancellationToken ct) => RunGuarded(pr, () => FashionMnistAsync(
            pr.GetValue(outOption)!, pr.GetValue(sourceOption)!, pr.GetValue(queriesOption), pr.GetValue(gtKOption), ct)));
        return command;
    }

    private static Command CreateGenerate()
    {
        var nOption = new Option<int>("--n") { Description = "Number of base vectors.", Required = true };
        var dimOption = new Option<int>("--dim") { Description = $"Dimensions (1..{VectorFile.MaxDimensions}).", Required = true };
        var seedOption = new Option<int>("--seed") { Description = "Random seed; the same seed gives identical files.", Required = true };
        var outOption = new Option<string>("--out") { Description = "Output directory (created if missing).", Required = true };
        var queriesOption = new Option<int>("--queries") { Description = "Number of query vectors.", DefaultValueFactory = _ => 1000 };
        var modeOption = new Option<string>("--mode")
        {
            Description = "shared: every cluster has the same decaying spectrum under one global rotation; "
                        + "separated: far-apart clusters, each with its own random rotation and a heavy-tailed spectrum "
                        + "(global PCA truncation loses neighbours on it).",
            DefaultValueFactory = _ => SharedMode,
        };
        var clustersOption = new Option<int?>("--clusters")
        {
            Description = $"Mixture components (default max(16, n/2000) for shared, {SeparatedMixtureGenerator.DefaultClusters} for separated).",
        };
        var separationOption = new Option<double?>("--separation")
        {
            Description = "separated only: expected centre-to-centre distance in cluster RMS radii "
                        + $"(default {SeparatedMixtureGenerator.DefaultSeparation.ToString(CultureInfo.InvariantCulture)}).",
        };
        var decayOption = new Option<double?>("--spectrum-decay")
        {
            Description = "separated only: within-cluster variance along principal axis i is i^-a "
                        + $"(default a = {SeparatedMixtureGenerator.DefaultSpectrumDecay.ToString(CultureInfo.InvariantCulture)}).",
        };
        var metricOption = new Option<string>("--metric")
        {
            Description = "Metric for the ground truth: l2, cosine or ip.",
            DefaultValueFactory = _ => "l2",
        };
        var gtKOption = GroundTruthKOption();
        var selectivityOption = new Option<string?>("--selectivities")
        {
            Description = "Also write attributes (u: integer 0..99,999, price: number, colour: category, tags) and, per selectivity "
                        + "in percent (e.g. 50,10,1,0.1), filters.selS.jsonl (a random u range per query) with groundtruth.selS.ivecs.",
        };
        var command = new Command(
            "generate",
            "Generate a rotated Gaussian-mixture data set with a decaying spectrum, plus exact ground truth.")
        {
            nOption,
            dimOption,
            seedOption,
            outOption,
            queriesOption,
            modeOption,
            clustersOption,
            separationOption,
            decayOption,
            metricOption,
            gtKOption,
            selectivityOption,
        };

        command.SetAction((ParseResult pr, CancellationToken ct) => RunGuarded(pr, () => GenerateAsync(
            new GenerateSettings(
                pr.GetValue(nOption),
                pr.GetValue(dimOption),
                pr.GetValue(seedOption),
                pr.GetValue(outOption)!,
                pr.GetValue(queriesOption),
                pr.GetValue(modeOption)!,
                pr.GetValue(clustersOption),
                pr.GetValue(separationOption),
                pr.GetValue(decayOption),
                pr.GetValue(metricOption)!,
                pr.GetValue(gtKOption),
                ParseSelectivities(pr.GetValue(selectivityOption))),
            ct)));
        return command;
    }

    private static Option<int> GroundTruthKOption() => new("--gt-k")
    {
        Description = "Neighbours per query in groundtruth.ivecs.",
        DefaultValueFactory = _ => 100,
    };

    private const string SharedMode = "shared";
    private const string SeparatedMode = "separated";

    private sealed record GenerateSettings(
        int N, int Dim, int Seed, string Out, int Queries, string Mode, int? Clusters, double? Separation, double? SpectrumDecay,
        string Metric, int GtK, double[] Selectivities);

    private static double[] ParseSelectivities(string? s)
    {
        if (string.IsNullOrWhiteSpace(s)) return [];
        try
        {
            var values = s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(x => double.Parse(x, CultureInfo.InvariantCulture)).ToArray();
            Require(values.All(v => v > 0 && v <= 100), $"--selectivities are percentages in (0, 100], got '{s}'");
            return values;
        }
        catch (FormatException)
        {
            throw new UsageException($"--selectivities must be a comma-separated list of percentages, got '{s}'");
        }
    }

    /// <summary>Range of the generated integer attribute u: a filter on u covering w values selects w/URange of the base.</summary>
    private const int URange = 100_000;

    /// <summary>
    /// Attributes independent of the vectors (so a filter's matches spread over every partition) and, per
    /// selectivity, one random u range per query with its exact filtered ground truth.
    /// </summary>
    private static async Task WriteAttributesAsync(ProgressContext ctx, VectorSet baseSet, VectorSet querySet, GenerateSettings s, Metric metric, CancellationToken ct)
    {
        var rng = new Random(s.Seed ^ 0x5eed);
        var u = new int[baseSet.Count];
        string[] colours = ["red", "orange", "yellow", "green", "blue", "indigo", "violet", "black", "white", "grey"];
        AtomicFile.WriteText(Path.Combine(s.Out, BaseAttributesFile), w =>
        {
            for (int i = 0; i < baseSet.Count; i++)
            {
                u[i] = rng.Next(URange);
                int t1 = rng.Next(20), t2 = (t1 + 1 + rng.Next(19)) % 20;
                w.Write(string.Create(CultureInfo.InvariantCulture,
                    $"{{\"id\":\"v{i}\",\"attributes\":{{\"u\":{u[i]},\"price\":{Math.Round(rng.NextDouble() * 1000, 2)},\"colour\":\"{colours[rng.Next(colours.Length)]}\",\"tags\":[\"t{t1}\",\"t{t2}\"]}}}}\n"));
            }
        });
        foreach (double sel in s.Selectivities)
        {
            int width = Math.Max(1, (int)Math.Round(sel / 100 * URange));
            var start = new int[querySet.Count];
            for (int q = 0; q < start.Length; q++) start[q] = rng.Next(URange - width + 1);
            string tag = sel.ToString(CultureInfo.InvariantCulture);
            AtomicFile.WriteText(Path.Combine(s.Out, $"filters.sel{tag}.jsonl"), w =>
            {
                foreach (int a in start) w.Write(string.Create(CultureInfo.InvariantCulture, $"{{\"u\":{{\"$gte\":{a},\"$lt\":{a + width}}}}}\n"));
            });
            var task = ctx.AddTask($"filtered ground truth ({tag}%)", maxValue: querySet.Count);
            var truth = await Task.Run(() => GroundTruth.Compute(baseSet, querySet, s.GtK, metric, new MonotonicProgress(task),
                (qi, id) => u[id] >= start[qi] && u[id] < start[qi] + width, ct), ct);
            VectorFile.WriteIvecs(Path.Combine(s.Out, $"groundtruth.sel{tag}.ivecs"), truth);
        }
    }

    private static async Task FashionMnistAsync(string outDir, string source, int? maxQueries, int gtK, CancellationToken ct)
    {
        Require(maxQueries is null or >= 1, $"--queries must be at least 1 (got {maxQueries})");
        Require(gtK >= 1 && gtK <= VectorFile.MaxDimensions, $"--gt-k must be between 1 and {VectorFile.MaxDimensions} (got {gtK})");
        string[] names =
        [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ];
        string[] paths = names.Select(name => Path.Combine(source, name)).ToArray();
        string[] missing = names.Where((_, i) => !File.Exists(paths[i])).ToArray();
        if (missing.Length > 0)
        {
            throw new UsageException(
                $"Fashion-MNIST files not found in '{source}' (missing: {string.Join(", ", missing)}). "
                + "Install them with `apt-get install dataset-fashion-mnist`, or point --source at a directory holding them.");
        }

        OutputFolder.Create("--out", outDir);
        var clock = Stopwatch.StartNew();
        await AnsiConsole.Progress().AutoClear(false).StartAsync(async ctx =>
        {
            var read = ctx.AddTask("read IDX files", maxValue: 4);
            var (baseSet, baseLabels, querySet, queryLabels) = await Task.Run(
                () =>
                {
                    var b = IdxReader.ReadImages(paths[0]);
                    read.Increment(1);
                    var bl = IdxReader.ReadLabels(paths[1]);
                    read.Increment(1);
                    var q = IdxReader.ReadImages(paths[2]);
                    read.Increment(1);
                    var ql = IdxReader.ReadLabels(paths[3]);
                    read.Increment(1);
                    return (b, bl, q, ql);
                },
                ct);

            RequireSameCount(paths[0], baseSet.Count, paths[1], baseLabels.Length);
            RequireSameCount(paths[2], querySet.Count, paths[3], queryLabels.Length);
            if (maxQueries < querySet.Count)
            {
                int n = maxQueries.Value;
                querySet = new VectorSet(querySet.Data[..(n * querySet.Dimensions)], n, querySet.Dimensions);
                queryLabels = queryLabels[..n];
            }

            if (baseSet.Dimensions != querySet.Dimensions)
            {
                throw new InvalidDataException(
                    $"{paths[2]}: images have {querySet.Dimensions} pixels but the training images have {baseSet.Dimensions}");
            }

            Require(gtK <= baseSet.Count, $"--gt-k must not exceed the {baseSet.Count} base vectors (got {gtK})");

            var write = ctx.AddTask("write vectors and labels", maxValue: 5);
            await Task.Run(
                () =>
                {
                    VectorFile.WriteFvecs(Path.Combine(outDir, BaseFile), baseSet);
                    write.Increment(1);
                    VectorFile.WriteFvecs(Path.Combine(outDir, QueryFile), querySet);
                    write.Increment(1);
                    VectorFile.WriteIvecs(Path.Combine(outDir, BaseLabelsFile), LabelRows(baseLabels));
                    write.Increment(1);
                    VectorFile.WriteIvecs(Path.Combine(outDir, QueryLabelsFile), LabelRows(queryLabels));
                    write.Increment(1);
                    AttributesFile.WriteIntAttribute(Path.Combine(outDir, BaseAttributesFile), baseLabels.Select(l => (int)l).ToArray());
                    write.Increment(1);
                },
                ct);

            await GroundTruthAsync(ctx, baseSet, querySet, gtK, Metric.L2, outDir, ct);

            // A label filter per query that never asks for the query's own label: (label + 1) mod 10, so the
            // matches are about 10% of the base and mostly away from the query's own cluster.
            var wanted = queryLabels.Select(l => (byte)((l + 1) % 10)).ToArray();
            AtomicFile.WriteText(Path.Combine(outDir, FiltersFile), w =>
            {
                foreach (byte l in wanted) w.Write("{\"label\":" + l.ToString(CultureInfo.InvariantCulture) + "}\n");
            });
            var filteredTask = ctx.AddTask($"filtered ground truth (k={gtK})", maxValue: querySet.Count);
            var filtered = await Task.Run(() => GroundTruth.Compute(baseSet, querySet, gtK, Metric.L2, new MonotonicProgress(filteredTask),
                (qi, id) => baseLabels[id] == wanted[qi], ct), ct);
            VectorFile.WriteIvecs(Path.Combine(outDir, FilteredGroundTruthFile), filtered);

            new DatasetManifest
            {
                Name = "fashion-mnist",
                Metric = Metric.L2,
                Dimensions = baseSet.Dimensions,
                BaseCount = baseSet.Count,
                QueryCount = querySet.Count,
                GroundTruthK = gtK,
                Files = new Dictionary<string, string>
                {
                    [DatasetManifest.Roles.Base] = BaseFile,
                    [DatasetManifest.Roles.Query] = QueryFile,
                    [DatasetManifest.Roles.GroundTruth] = GroundTruthFile,
                    [DatasetManifest.Roles.BaseLabels] = BaseLabelsFile,
                    [DatasetManifest.Roles.QueryLabels] = QueryLabelsFile,
                    [DatasetManifest.Roles.BaseAttributes] = BaseAttributesFile,
                    ["filters"] = FiltersFile,
                    ["filteredGroundTruth"] = FilteredGroundTruthFile,
                },
                Provenance = new Dictionary<string, string> { ["source"] = Path.GetFullPath(source) },
            }.Write(Path.Combine(outDir, DatasetManifest.FileName));
        });

        AnsiConsole.MarkupLine(
            $"[green]fashion-mnist[/] written to [blue]{Markup.Escape(outDir)}[/] in {clock.Elapsed.TotalSeconds.ToString("F1", CultureInfo.InvariantCulture)} s");
    }

    private static async Task GenerateAsync(GenerateSettings s, CancellationToken ct)
    {
        Require(s.N >= 1, $"--n must be at least 1 (got {s.N})");
        Require(s.Dim >= 1 && s.Dim <= VectorFile.MaxDimensions, $"--dim must be between 1 and {VectorFile.MaxDimensions} (got {s.Dim})");
        Require(s.Queries >= 1, $"--queries must be at least 1 (got {s.Queries})");
        Require(s.Clusters is null or >= 1, $"--clusters must be at least 1 (got {s.Clusters})");
        Require(s.GtK >= 1 && s.GtK <= s.N, $"--gt-k must be between 1 and --n = {s.N} (got {s.GtK})");
        Require(s.GtK <= VectorFile.MaxDimensions, $"--gt-k must be at most {VectorFile.MaxDimensions} (got {s.GtK})");
        Require(DatasetManifest.TryParseMetric(s.Metric, out var metric), $"--metric must be l2, cosine or ip (got '{s.Metric}')");
        Require(
            (long)s.N * s.Dim <= Array.MaxLength && (long)s.Queries * s.Dim <= Array.MaxLength,
            $"--n x --dim = {(long)s.N * s.Dim} values is more than one in-memory array holds ({Array.MaxLength})");

        Require(s.Mode is SharedMode or SeparatedMode, $"--mode must be {SharedMode} or {SeparatedMode} (got '{s.Mode}')");
        bool separated = s.Mode == SeparatedMode;
        Require(separated || s.Separation is null, "--separation applies only to --mode separated");
        Require(separated || s.SpectrumDecay is null, "--spectrum-decay applies only to --mode separated");
        double separation = s.Separation ?? SeparatedMixtureGenerator.DefaultSeparation;
        double decay = s.SpectrumDecay ?? SeparatedMixtureGenerator.DefaultSpectrumDecay;
        Require(double.IsFinite(separation) && separation > 0, $"--separation must be a positive number (got {separation})");
        Require(double.IsFinite(decay) && decay >= 0, $"--spectrum-decay must be a number >= 0 (got {decay})");
        int clusters = s.Clusters ?? (separated ? SeparatedMixtureGenerator.DefaultClusters : GaussianMixtureGenerator.DefaultClusters(s.N));
        Require(
            !separated || (long)clusters * s.Dim * s.Dim <= SeparatedMixtureGenerator.MaxRotationValues,
            $"--clusters x --dim² = {(long)clusters * s.Dim * s.Dim} is more than the {SeparatedMixtureGenerator.MaxRotationValues} "
            + "rotation values --mode separated holds (one rotation per cluster); lower --clusters or --dim");

        OutputFolder.Create("--out", s.Out);
        var clock = Stopwatch.StartNew();
        await AnsiConsole.Progress().AutoClear(false).StartAsync(async ctx =>
        {
            var gen = ctx.AddTask($"generate {s.N:N0} x {s.Dim} (+{s.Queries:N0} queries)", maxValue: 1);
            gen.IsIndeterminate = true;
            var (baseSet, querySet) = await Task.Run(
                () =>
                {
                    if (!separated) return GaussianMixtureGenerator.Generate(s.N, s.Dim, s.Queries, s.Seed, clusters);
                    var mixture = SeparatedMixtureGenerator.Generate(s.N, s.Dim, s.Queries, s.Seed, clusters, separation, decay);
                    return (mixture.Base, mixture.Queries);
                },
                ct);
            gen.IsIndeterminate = false;
            gen.Value = 1;

            var write = ctx.AddTask("write vectors", maxValue: 2);
            await Task.Run(
                () =>
                {
                    VectorFile.WriteFvecs(Path.Combine(s.Out, BaseFile), baseSet);
                    write.Increment(1);
                    VectorFile.WriteFvecs(Path.Combine(s.Out, QueryFile), querySet);
                    write.Increment(1);
                },
                ct);

            await GroundTruthAsync(ctx, baseSet, querySet, s.GtK, metric, s.Out, ct);
            if (s.Selectivities.Length > 0) await WriteAttributesAsync(ctx, baseSet, querySet, s, metric, ct);

            new DatasetManifest
            {
                Name = string.Create(CultureInfo.InvariantCulture, $"{(separated ? "separated" : "gmm")}-n{s.N}-d{s.Dim}-s{s.Seed}"),
                Metric = metric,
                Dimensions = s.Dim,
                BaseCount = s.N,
                QueryCount = s.Queries,
                GroundTruthK = s.GtK,
                Files = new Dictionary<string, string>
                {
                    [DatasetManifest.Roles.Base] = BaseFile,
                    [DatasetManifest.Roles.Query] = QueryFile,
                    [DatasetManifest.Roles.GroundTruth] = GroundTruthFile,
                },
                Provenance = separated
                    ? new Dictionary<string, string>
                    {
                        ["generator"] = nameof(SeparatedMixtureGenerator),
                        ["seed"] = s.Seed.ToString(CultureInfo.InvariantCulture),
                        ["clusters"] = clusters.ToString(CultureInfo.InvariantCulture),
                        ["separation"] = separation.ToString(CultureInfo.InvariantCulture),
                        ["spectrumDecay"] = decay.ToString(CultureInfo.InvariantCulture),
                    }
                    : new Dictionary<string, string>
                    {
                        ["generator"] = nameof(GaussianMixtureGenerator),
                        ["seed"] = s.Seed.ToString(CultureInfo.InvariantCulture),
                        ["clusters"] = clusters.ToString(CultureInfo.InvariantCulture),
                    },
            }.Write(Path.Combine(s.Out, DatasetManifest.FileName));
        });

        AnsiConsole.MarkupLine(
            $"[green]generated[/] {s.N:N0} x {s.Dim} into [blue]{Markup.Escape(s.Out)}[/] in {clock.Elapsed.TotalSeconds.ToString("F1", CultureInfo.InvariantCulture)} s");
    }

    private static async Task GroundTruthAsync(
        ProgressContext ctx, VectorSet baseSet, VectorSet querySet, int k, Metric metric, string outDir, CancellationToken ct)
    {
        var task = ctx.AddTask($"ground truth ({DatasetManifest.MetricName(metric)}, k={k})", maxValue: querySet.Count);
        var progress = new MonotonicProgress(task);
        var truth = await Task.Run(() => GroundTruth.Compute(baseSet, querySet, k, metric, progress, cancellationToken: ct), ct);
        VectorFile.WriteIvecs(Path.Combine(outDir, GroundTruthFile), truth);
    }

    private static int[][] LabelRows(byte[] labels)
    {
        var rows = new int[labels.Length][];
        for (int i = 0; i < labels.Length; i++)
        {
            rows[i] = [labels[i]];
        }

        return rows;
    }

    private static void RequireSameCount(string imagesPath, int images, string labelsPath, int labels)
    {
        if (images != labels)
        {
            throw new InvalidDataException($"{labelsPath}: has {labels} labels but {imagesPath} has {images} images");
        }
    }

    private static void Require(bool condition, string message)
    {
        if (!condition)
        {
            throw new UsageException(message);
        }
    }

    /// <summary>Runs a generator: every failure is one "error: ..." line (see <see cref="CliErrors"/>).</summary>
    private static Task<int> RunGuarded(ParseResult parse, Func<Task> body) => CliErrors.RunAsync(parse, async () =>
    {
        await body();
        return 0;
    });

    /// <summary>
    /// Progress sink safe to call from worker threads: Progress&lt;T&gt; would post to the thread pool and could
    /// deliver counts out of order, so this keeps the largest value seen.
    /// </summary>
    private sealed class MonotonicProgress(ProgressTask task) : IProgress<int>
    {
        private readonly Lock _gate = new();

        public void Report(int value)
        {
            lock (_gate)
            {
                if (value > task.Value)
                {
                    task.Value = value;
                }
            }
        }
    }
}
