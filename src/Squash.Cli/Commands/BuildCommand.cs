using Squash.Core.Vectors;
using System.CommandLine;
using System.Diagnostics;
using Spectre.Console;
using Squash.Cli.Datasets;
using Squash.Core;
using Squash.Core.Quantization;
using Squash.Functions.Builds;
using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.Search;
using Squash.Storage;

namespace Squash.Cli.Commands;

public static partial class BuildCommand
{
    /// <summary>The build command's flags: the in-process build's, and those of a build through the queue (--endpoint).</summary>
    internal sealed class Flags
    {
        public readonly Option<string> Index = new("--index") { Description = "Folder that holds the index (created if missing); with --store, the index's name inside the store; with --endpoint, the index's name in the service.", Required = true };
        public readonly Option<string?> Vectors = new("--vectors") { Description = "Vectors to index: .fvecs, .bvecs or .npy (float32). With --endpoint it is uploaded into --store first." };
        // The defaults are the build API's (BuildSubmission.Defaults), so a build in process and one through the queue agree.
        public readonly Option<string> Metric = new("--metric") { Description = "Distance: l2, cosine or ip.", DefaultValueFactory = _ => BuildSubmission.Defaults.Metric };
        public readonly Option<int> Partitions = new("--partitions") { Description = "Partition count (0: clamp(N / 1000, 1, 4096)).", DefaultValueFactory = _ => BuildSubmission.Defaults.Partitions };
        public readonly Option<double> Bits = new("--bits-per-dim") { Description = "Average OSQ bits per kept KLT dimension, sign bits included (the code budget).", DefaultValueFactory = _ => BuildSubmission.Defaults.BitsPerDim };
        public readonly Option<double> Energy = new("--energy") { Description = "Fraction of the within-partition variance (offsets from partition means) the codes keep; the rest goes to a residual norm.", DefaultValueFactory = _ => BuildSubmission.Defaults.Energy };
        public readonly Option<int> MaxBits = new("--max-bits") { Description = $"Most bits one dimension may get (1..{BitAllocation.MaxBitsPerDimension}).", DefaultValueFactory = _ => BuildSubmission.Defaults.MaxBits };
        public readonly Option<string?> Attributes = new("--attributes") { Description = "Attributes beside the vectors, one row per vector by position: .jsonl ({\"id\":\"…\",\"attributes\":{…}}) or .csv (header row, optional id column). With --endpoint and --vectors a local file (uploaded too); with --source a blob in the service's store." };
        public readonly Option<string?> Schema = new("--schema") { Description = "Declared attribute types, e.g. \"price:number,label:integer,colour:category,tags:tags,ok:bool\" (default: inferred)." };
        public readonly Option<int> Seed = new("--seed") { Description = "Seed for k-means; a build is deterministic for a seed (the same index in process and through the queue).", DefaultValueFactory = _ => BuildSubmission.Defaults.Seed };
        public readonly Option<string?> CalibrationQueries = new("--calibration-queries") { Description = "Queries like the ones the index will serve (.fvecs, .bvecs or .npy) to calibrate recall targets with; default: a sample of the base vectors, each searched without itself. With --endpoint, a local file is uploaded beside --vectors (with --source, a blob in the service's store)." };
        public readonly Option<string[]> CalibrationFilters = new("--calibration-filters") { Description = "With --calibration-queries: filters like the ones the index will serve, one JSON filter per line, line i for calibration query i (null: none), as many as the query file has queries; the filtered calibration measures these instead of filters it draws from the attributes. Give it once per kind of filter: each file is measured as its own family, and a recall target holds for each. With --endpoint, uploaded as --calibration-queries is (with --source, blobs in the service's store).", Arity = ArgumentArity.ZeroOrMore };
        public readonly Option<bool> NoCalibration = new("--no-calibration") { Description = "Skip the recall calibration: queries then plan with CF and R only (recall targets fall back to their defaults)." };
        public readonly Option<string?> Endpoint = new(CliErrors.EndpointFlag) { Description = "Build through the queue of the service at this URL (e.g. http://127.0.0.1:7071 from squash serve --store azure:…): upload --vectors into --store (or name a blob with --source), submit, and follow the build until it is published." };
        public readonly Option<string?> Source = new("--source") { Description = "With --endpoint: build from a blob already in the service's store (a .fvecs/.bvecs/.npy blob, or a prefix: every blob under it in name order) instead of uploading --vectors." };
        public readonly Option<int> ChunkRows = new("--chunk-rows") { Description = "With --endpoint: vectors per assign task (0: about 32 MB of float32 each).", DefaultValueFactory = _ => BuildSubmission.Defaults.ChunkRows };
        public readonly Option<string?> IdempotencyKey = new("--idempotency-key") { Description = "With --endpoint: the submission's Idempotency-Key (default: a new one per run). The same key and the same request return the same build, so a rerun follows the build it started." };
        public readonly Option<bool> NoWait = new("--no-wait") { Description = "With --endpoint: print the build id once the service has accepted the build, and exit without following it." };
        public readonly Option<string?> FunctionKey = EndpointFlags.FunctionKey();
    }

    public static Command Create()
    {
        var f = new Flags();
        var cmd = new Command("build", "Build an index from a vector file, calibrate what each recall target needs, and publish it as the index's current version; "
            + "in this process, or with --endpoint through the service's queue.")
        {
            f.Index, f.Vectors, f.Metric, f.Partitions, f.Bits, f.MaxBits, f.Energy, f.Seed, f.Attributes, f.Schema, f.CalibrationQueries, f.CalibrationFilters, f.NoCalibration,
            f.Endpoint, f.Source, f.ChunkRows, f.IdempotencyKey, f.NoWait, f.FunctionKey,
        };
        IndexLocation.AddStoreOptions(cmd);
        var store = cmd.Options.First(o => o.Name == IndexLocation.StoreFlag);
        store.Description += " With --endpoint: the service's azure: store, which --vectors (and --attributes) are uploaded into.";
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, () => pr.GetValue(f.Endpoint) is { } endpoint
            ? RunThroughQueueAsync(pr, f, endpoint, ct)
            : RunInProcessAsync(pr, f, ct)));
        return cmd;
    }

    /// <summary>The options both builds share, checked as the in-process build checks them.</summary>
    private static (Metric Metric, int Partitions, double Bits, int MaxBits, double Energy) CheckedOptions(ParseResult pr, Flags f)
    {
        var metricValue = ParseMetric(pr.GetValue(f.Metric)!);
        int p = pr.GetValue(f.Partitions);
        double b = pr.GetValue(f.Bits);
        int mb = pr.GetValue(f.MaxBits);
        CliErrors.Require(p >= 0, $"--partitions must be ≥ 0 (0 picks a default), got {p}");
        const int mostBits = BitAllocation.MaxBitsPerDimension;
        CliErrors.Require(b > 0 && b <= mostBits, $"--bits-per-dim must be > 0 and ≤ {mostBits}, got {b}");
        CliErrors.Require(b <= mb, $"--bits-per-dim ({b}) cannot exceed --max-bits ({mb})");
        CliErrors.Require(mb is >= 1 and <= mostBits, $"--max-bits must be between 1 and {mostBits}, got {mb}");
        double e = pr.GetValue(f.Energy);
        CliErrors.Require(e > 0 && e <= 1, $"--energy must be in (0, 1], got {e}");
        return (metricValue, p, b, mb, e);
    }

    private static async Task<int> RunInProcessAsync(ParseResult pr, Flags f, CancellationToken ct)
    {
        foreach (var queueOnly in new Option[] { f.Source, f.ChunkRows, f.IdempotencyKey, f.NoWait, f.FunctionKey })
            CliErrors.Require(pr.GetResult(queueOnly) is null or { Implicit: true }, $"{queueOnly.Name} is for a build through the queue: it needs --endpoint");
        var (metricValue, p, b, mb, e) = CheckedOptions(pr, f);
        var store = IndexLocation.Open(pr, pr.GetValue(f.Index));
        var path = pr.GetValue(f.Vectors);
        CliErrors.Require(path is not null, "--vectors is required: the vector file to index (.fvecs, .bvecs or .npy)");
        CliErrors.RequireFile("--vectors", path!);

        var clock = Stopwatch.StartNew();
        var set = VectorFile.Read(path!);
        VectorFile.RequireIndexable(path!, set, metricValue);
        CliErrors.Require(p <= set.Count, $"--partitions ({p}) cannot exceed the number of vectors ({set.Count})");
        var attrPath = pr.GetValue(f.Attributes);
        AttributeSchema? declared = null;
        if (attrPath is not null)
        {
            CliErrors.RequireFile("--attributes", attrPath);
            declared = ParseSchema(pr.GetValue(f.Schema));
        }
        else CliErrors.Require(pr.GetValue(f.Schema) is null, "--schema needs --attributes");
        CalibrationQueries? calibration = null;
        List<GivenFilters>? givenFilters = null;
        if (pr.GetValue(f.CalibrationQueries) is { } queryPath)
        {
            CliErrors.Require(!pr.GetValue(f.NoCalibration), "--calibration-queries cannot be combined with --no-calibration");
            CliErrors.RequireFile("--calibration-queries", queryPath);
            var q = VectorFile.Read(queryPath);
            VectorFile.RequireIndexable(queryPath, q, metricValue);
            CliErrors.Require(q.Dimensions == set.Dimensions, $"--calibration-queries: '{queryPath}' has {q.Dimensions} dimensions; the vectors have {set.Dimensions}");
            int take = Math.Min(q.Count, RecallCalibrator.BuildQueries(set.Count));
            var filterPaths = pr.GetValue(f.CalibrationFilters) ?? [];
            CliErrors.Require(filterPaths.Length == 0 || attrPath is not null, "--calibration-filters needs --attributes: the filters name attributes");
            givenFilters = ReadCalibrationFilters(filterPaths, q.Count, take);
            calibration = new CalibrationQueries(q.Data[..(take * q.Dimensions)], take, q.Dimensions, null, "queries",
                Filters: givenFilters?.Select(g => g.Family).ToArray());
        }
        else CliErrors.Require(pr.GetValue(f.CalibrationFilters) is not { Length: > 0 }, "--calibration-filters needs --calibration-queries (line i is the filter of query i)");
        // The calibration's exact neighbours need only the vectors: they start now, on the core the attributes' parsing leaves idle.
        bool calibrate = !pr.GetValue(f.NoCalibration);
        using var started = calibrate ? CalibratedBuild.StartCalibration(set.Data, set.Count, set.Dimensions, metricValue, pr.GetValue(f.Seed), calibration, cancellationToken: ct) : null;
        AttributeTable? table = null;
        if (attrPath is not null)
        {
            table = AttributeReader.ReadFile(attrPath, declared);
            CliErrors.Require(table.Count == set.Count, $"--attributes: '{attrPath}' has {table.Count:N0} rows but there are {set.Count:N0} vectors (rows are matched by position)");
            CheckIds(table.Ids, attrPath);
            if (givenFilters is not null) CheckCalibrationFilters(givenFilters, table.Encoding);
            Console.Error.WriteLine($"read attributes for {table.Count:N0} vectors: " + string.Join(", ", table.Schema.Attributes.Select(a => $"{a.Name} ({AttributeSchema.TypeName(a.Type)})")) + (table.Ids is null ? "" : ", with ids"));
        }
        // Before the build's work, so that a build the index's write log rules out says so at once (the publish checks again).
        await Squash.Storage.Writes.WriteLogConflict.ThrowIfAnyAsync(store, set.Dimensions, table?.Ids is not null, ct);
        var options = new IndexBuildOptions { Metric = metricValue, Partitions = p, BitsPerDimension = b, EnergyKept = e, MaxBitsPerDimension = mb, Seed = pr.GetValue(f.Seed), Attributes = table };
        Console.Error.WriteLine($"read {set.Count:N0} × {set.Dimensions} vectors from {path} in {clock.Elapsed.TotalSeconds:F1} s");

        var manifest = await RunWithProgress(store, set, options, started, calibrate, ct);
        double rawBytes = (double)set.Count * set.Dimensions * 4;
        double codeBytes = manifest.Partitions.Sum(x => (double)x.BitsPerVector * x.Count) / 8;
        AnsiConsole.MarkupLine($"[green]built[/] {Markup.Escape(store.Blobs.Description)} version [bold]{manifest.Version}[/]: " +
            $"{manifest.Count:N0} vectors, {manifest.Partitions.Count} partitions, metric {manifest.Metric}, " +
            $"{manifest.GlobalDimensions} global KLT dims, OSQ+sign codes {codeBytes / manifest.Count:F1} B/vector " +
            $"({codeBytes / rawBytes:P1} of float32), {clock.Elapsed.TotalSeconds:F1} s");
        if (manifest.Calibration is not null)
            foreach (var line in CalibrationLines(manifest)) Console.Error.WriteLine(line);
        // The pointer only moves to newer ids: a build that started before another one finished stays unpublished.
        if (await store.GetCurrentAsync(ct) is { } current && current.Version != manifest.Version)
            Console.Error.WriteLine($"note: version {manifest.Version} is not current: the newer build {current.Version} was published meanwhile (gc removes the older one)");
        return 0;
    }

    /// <summary>
    /// Ids as the write API takes them (<see cref="IdRules"/>): each at most once, at most <see cref="IdRules.MaxLength"/>
    /// characters, no control characters. Rows are named by position (row 0 is the file's first row).
    /// </summary>
    internal static void CheckIds(string?[]? ids, string path)
    {
        if (IdRules.FirstProblem(ids) is { } problem) throw new UsageException("--attributes: " + problem.Describe($"'{path}'"));
    }

    /// <summary>--schema as the in-process build reads it (null: inferred).</summary>
    internal static AttributeSchema? ParseSchema(string? text)
    {
        if (text is null) return null;
        try { return AttributeSchema.Parse(text); }
        catch (ArgumentException ex) { throw new UsageException($"--schema: {ex.Message}"); }
    }

    /// <summary>
    /// Each --calibration-filters file as a family: one filter per non-blank line, one per query of the
    /// --calibration-queries file (<paramref name="queries"/>), the first <paramref name="take"/> kept; "null" is no filter.
    /// </summary>
    internal static List<GivenFilters>? ReadCalibrationFilters(string[] paths, int queries, int take)
    {
        if (paths.Length == 0) return null;
        RequireDistinctFamilyNames(paths);
        var families = new List<GivenFilters>();
        foreach (string path in paths)
        {
            var file = ReadCalibrationFilterFile(path, queries);
            families.Add(new GivenFilters(path, file, take));
        }
        return families;
    }

    /// <summary>A family is named by its file's name: two --calibration-filters files of one name would make two families of one name.</summary>
    internal static void RequireDistinctFamilyNames(string[] paths)
    {
        if (paths.GroupBy(p => Path.GetFileName(p)).FirstOrDefault(g => g.Count() > 1) is { } same)
            throw new UsageException($"--calibration-filters: '{same.First()}' and '{same.Skip(1).First()}' have the same file name, which names a family: rename one");
    }

    /// <summary>One --calibration-filters file, checked to hold one filter per calibration query (<paramref name="queries"/>).</summary>
    internal static CalibrationFilterFile ReadCalibrationFilterFile(string path, int queries)
    {
        CliErrors.RequireFile("--calibration-filters", path);
        var file = CalibrationFilterFile.Parse(Path.GetFileName(path), File.ReadLines(path));
        CliErrors.Require(file.Texts.Length == queries,
            $"--calibration-filters: '{path}' has {file.Texts.Length:N0} filters; --calibration-queries has {queries:N0} queries (one filter per query, null for none)");
        return file;
    }

    /// <summary>Compiles every calibration filter against the attributes, so that a bad one stops the work before it starts, naming its file and line.</summary>
    internal static void CheckCalibrationFilters(List<GivenFilters> files, IndexAttributes attributes)
    {
        foreach (var (path, file, take) in files)
            if (file.FirstError(attributes, take) is { } error)
                throw new UsageException($"--calibration-filters: '{path}' line {error.Line}: {error.Message}");
    }

    /// <summary>One --calibration-filters file: its path, its filters, and how many the build keeps (one per calibration query kept).</summary>
    internal sealed record GivenFilters(string Path, CalibrationFilterFile File, int Take)
    {
        public CalibrationFilters Family => File.Family(Take);
    }

    /// <summary>
    /// What the calibration holds, as `build` prints it and `inspect` shows it: what it measured on, and the plan each
    /// target gets, unfiltered and in each filtered band (with the families the band was measured on).
    /// </summary>
    internal static IEnumerable<string> CalibrationLines(Squash.Index.Model.IndexManifest manifest)
    {
        if (manifest.Calibration is not { } cal)
        {
            yield return "calibration: none (built with --no-calibration, or too small to calibrate): recall targets plan with the default CF and R";
            yield break;
        }
        string on = cal.Source switch
        {
            "queries" => "of your queries",
            "live-sample" => "live rows, measured again after writes (leave-one-out)",
            _ => "base vectors (leave-one-out)",
        };
        yield return $"calibrated recall@{cal.K} on {cal.Queries} {on} in {cal.Seconds:F1} s: " +
            string.Join(", ", new[] { 0.9, 0.95, 0.99 }.Select(t => Describe(manifest, t)));
        // A query of k neighbours plans with the frontier of the smallest measured K ≥ k (the largest past them all).
        static string KsUpTo(int k, int[] measuredKs)
        {
            int at = Array.IndexOf(measuredKs, k), from = at == 0 ? 1 : measuredKs[at - 1] + 1;
            return at == measuredKs.Length - 1 ? $"{from} and more" : from == k ? $"{from}" : $"{from}–{k}";
        }
        var measuredKs = (cal.ByK ?? []).Select(f => f.K).Append(cal.K).Order().ToArray();
        foreach (var atK in cal.ByK ?? [])
            yield return $"  unfiltered k {KsUpTo(atK.K, measuredKs)}: recall@{atK.K} on {(atK.Queries == cal.Queries ? "the same" : $"the first {atK.Queries}")}: " +
                string.Join(", ", new[] { 0.9, 0.95, 0.99 }.Select(t => Describe(manifest, t, k: atK.K)));
        if (cal.QueriesBlob is not null)
            yield return $"  your queries are kept with the index (measured again after writes and by a rebuild)" +
                (cal.FilterBlobs is { Count: > 0 } kept ? $", with {kept.Count} filter famil{(kept.Count == 1 ? "y" : "ies")}: {string.Join(", ", kept.Select(Squash.Index.Model.RecallCalibration.FamilyOf))}" : "");
        static string Band(Squash.Index.Model.FilteredCalibration band) => $"selectivity {band.MinSelectivity:0.###}–{band.MaxSelectivity:0.###}" +
            (band.MinAnchorRatio is null && band.MaxAnchorRatio is null ? "" : $", anchor ratio {band.MinAnchorRatio ?? 0:0.##}–{(band.MaxAnchorRatio is { } r ? r.ToString("0.##", System.Globalization.CultureInfo.InvariantCulture) : "")}");
        foreach (var band in cal.Filtered ?? [])
            yield return $"  filtered, {Band(band)} ({string.Join("; ", band.Families)}): " +
                string.Join(", ", new[] { 0.9, 0.95, 0.99 }.Select(t => Describe(manifest, t, band)));
        // The same bands measured at the other K (the same queries and families).
        var filteredKs = (cal.FilteredByK ?? []).Select(f => f.K).Append(cal.K).Order().ToArray();
        foreach (var atK in cal.FilteredByK ?? [])
            foreach (var band in atK.Bands)
                yield return $"  filtered k {KsUpTo(atK.K, filteredKs)}, {Band(band)}: recall@{atK.K}: " +
                    string.Join(", ", new[] { 0.9, 0.95, 0.99 }.Select(t => Describe(manifest, t, band, atK.K)));
    }

    private static string Describe(Squash.Index.Model.IndexManifest manifest, double target, Squash.Index.Model.FilteredCalibration? band = null,
        int k = RecallCalibrator.DefaultK)
    {
        // A band is named by a point inside it (its geometric middle, the open end clipped).
        double? selectivity = band is null ? null : Math.Sqrt(Math.Max(band.MinSelectivity, 1e-4) * band.MaxSelectivity);
        var plan = RecallPlanner.Resolve(manifest.Calibration, new SearchOptions { K = k, Recall = target }, out double? predicted, out double? share,
            selectivity, band?.MinAnchorRatio ?? 1);
        if (plan.Exact) return $"{target} → exact";
        static string Name(SearchOptions o) => $"CF {o.CentroidFactor}" +
            (o.FilterMargin == SearchOptions.DefaultFilterMargin ? "" : FormattableString.Invariant($" margin {o.FilterMargin}")) + $" R {o.RerankFactor}" +
            (o.MaxPartitions is { } cap ? $" ≤{cap} partitions" : "");
        if (share is null) return $"{target} → {Name(plan)} ({predicted:F3})";
        // A mix: draw 0 runs the higher plan, a draw just under 1 the lower one.
        var low = RecallPlanner.Resolve(manifest.Calibration, new SearchOptions { K = k, Recall = target }, out _, out double? lowShare, selectivity,
            band?.MinAnchorRatio ?? 1, Math.BitDecrement(1.0));
        return $"{target} → {Name(low)} on {lowShare:P0} + {Name(plan)} on {share:P0} ({predicted:F3})";
    }

    public static Metric ParseMetric(string s)
    {
        try
        {
            return MetricSpace.Parse(s);
        }
        catch (ArgumentException)
        {
            throw new UsageException($"--metric must be l2, cosine or ip, got '{s}'");
        }
    }

    private static async Task<Squash.Index.Model.IndexManifest> RunWithProgress(IndexStore store, VectorSet set, IndexBuildOptions options,
        CalibrationStart? started, bool calibrate, CancellationToken ct)
    {
        if (!AnsiConsole.Profile.Capabilities.Interactive)
        {
            // Logs and CI: one line per stage instead of a redrawn bar.
            string last = "";
            var plain = new Progress<BuildProgress>(p =>
            {
                if (p.Stage != last) { Console.Error.WriteLine($"  {p.Stage}..."); last = p.Stage; }
            });
            return await CalibratedBuild.BuildAndPublishAsync(store, set.Data, set.Count, set.Dimensions, options, plain, ct, calibrate: calibrate, started: started);
        }
        Squash.Index.Model.IndexManifest? result = null;
        await AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .StartAsync(async ctx =>
            {
                var tasks = new Dictionary<string, ProgressTask>();
                var progress = new SyncProgress<BuildProgress>(p =>
                {
                    lock (tasks)
                    {
                        if (!tasks.TryGetValue(p.Stage, out var t))
                        {
                            foreach (var other in tasks.Values) other.Value = other.MaxValue;
                            t = tasks[p.Stage] = ctx.AddTask(p.Stage, maxValue: 1);
                        }
                        t.Value = Math.Max(t.Value, p.Fraction);
                    }
                });
                result = await CalibratedBuild.BuildAndPublishAsync(store, set.Data, set.Count, set.Dimensions, options, progress, ct, calibrate: calibrate, started: started);
                foreach (var t in tasks.Values) t.Value = t.MaxValue;
            });
        return result!;
    }
}

/// <summary>An IProgress that reports on the caller's thread (Progress&lt;T&gt; posts to the thread pool and can reorder).</summary>
public sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
