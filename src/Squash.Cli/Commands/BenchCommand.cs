using Squash.Core.Vectors;
using System.Text.Json;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Numerics.Tensors;
using Spectre.Console;
using Squash.Cli.Bench;
using Squash.Cli.Datasets;
using Squash.Core.Collections;
using Squash.Search;
using Squash.Search.Filters;
using Squash.Storage;

namespace Squash.Cli.Commands;

/// <summary>
/// Sweeps CF × H × R on one thread and reports recall@k, QPS, latency percentiles and the work done at
/// each level, next to a brute-force scan of the same vectors; writes a CSV and a recall–QPS plot.
/// With <c>--cold</c> it measures reads from a blob store instead (<see cref="ColdBench"/>), and with
/// <c>--endpoint</c> the HTTP API through the function tree (<see cref="EndpointBench"/>).
/// </summary>
public static class BenchCommand
{
    /// <param name="Cf">The plan's CF, and <paramref name="R"/> its R; both null when the queries ran exact (a target no plan reaches, or 1).</param>
    public sealed record Point(double? Cf, double H, int? R, double Recall, double Qps, double P50, double P99,
        double Partitions, double Considered, double AfterHamming, double AfterLowerBound, double Reranked, double Bytes,
        double Passes = 1, int MaxPasses = 1, double DirectShare = 0, int Short = 0, double Certified = 0,
        double? Target = null, double? Predicted = null, string? Plans = null, int? Cap = null);

    /// <summary>The bench command's flags; one set per command, since an option belongs to the command it is added to.</summary>
    private sealed class Flags
    {
        public readonly Option<string> Index = new("--index") { Description = "Folder that holds the index; with --store, the index's name inside the store; with --endpoint, the index name.", Required = true };
        public readonly Option<string?> Endpoint = new("--endpoint") { Description = "Benchmark the HTTP API at this URL (e.g. http://127.0.0.1:7071 from squash serve) instead of the in-process engine." };
        public readonly Option<int> Concurrency = new("--concurrency") { Description = "With --endpoint: parallel clients for the throughput figure.", DefaultValueFactory = _ => 4 };
        public readonly Option<string> Shapes = new("--tree-shapes") { Description = "With --endpoint: tree shapes b×L to sweep (1×1 = 1 node, 10×1 = 10, 4×2 = 20, 4×3 = 84; b×0 = the coordinator alone; auto = the app's own choice, its planner with Squash__Objective). With --load the default is 1x1.", DefaultValueFactory = _ => "1x1,10x1,4x2,4x3" };
        public readonly Option<int?> Warmup = new("--warmup") { Description = "With --endpoint: warm-up queries per tree shape before the timed pass (default: each measured query twice: a partition's first query reads its rows, its second its vectors whole)." };
        public readonly Option<int> ColdSamples = new("--cold-samples") { Description = "With --endpoint: cold queries measured (all instances stopped before each).", DefaultValueFactory = _ => 3 };
        public readonly Option<string> Queries = new("--queries") { Description = "Query vectors (.fvecs, .bvecs, .npy).", Required = true };
        public readonly Option<string> Truth = new("--ground-truth") { Description = "Exact neighbours per query (.ivecs): a record of at least k row ids for each query, each a row of the index or -1 (pads a filtered record with fewer matches).", Required = true };
        public readonly SearchFlags Search = new();
        public readonly Option<string?> Recall = new("--recall") { Description = "In-process: recall targets to sweep (comma-separated, e.g. 0.9,0.95,0.99) instead of CF × R: the index's calibration picks the plan for each; the table shows target, plan, predicted and achieved recall." };
        public readonly Option<string> Cf = new("--cf") { Description = "Centroid factors to sweep (comma-separated); with --endpoint, the first is sent with every query.", DefaultValueFactory = _ => "1.1,1.2,1.3,1.4,1.6" };
        public readonly Option<string> H = new("--h") { Description = "Hamming keep percentages to sweep; with --endpoint, the first is sent with every query.", DefaultValueFactory = _ => "50,100" };
        public readonly Option<string> R = new("--r") { Description = "Re-rank factors to sweep; with --endpoint, the first is sent with every query.", DefaultValueFactory = _ => "2,4" };
        public readonly Option<string> HammingBits = new("--hamming-bits") { Description = "Sign bits compared by the Hamming prune (leading coded dimensions), to sweep.", DefaultValueFactory = _ => "64" };
        public readonly Option<string?> MaxPartitions = new("--max-partitions") { Description = "In-process, unfiltered: partition caps to sweep with CF × R (comma-separated; 'none' for no cap, e.g. none,4,8)." };
        public readonly Option<int> Runs = new("--runs") { Description = "Timed runs per point; the median QPS is reported.", DefaultValueFactory = _ => 3 };
        public readonly Option<int> Limit = new("--limit") { Description = "Use the first N queries (0: all).", DefaultValueFactory = _ => 0 };
        public readonly Option<int> BruteForceQueries = new("--brute-force-queries") { Description = "Queries timed for the brute-force baseline.", DefaultValueFactory = _ => 200 };
        public readonly Option<string?> Filters = new("--filters") { Description = "Filter JSON per query, one per line (then --ground-truth must be the filtered one)." };
        public readonly Option<bool> Cold = new("--cold")
        {
            Description = "Storage figures instead of the QPS sweep (needs --store): cold queries (each on a fresh, empty cache: latency, bytes read, "
                        + "bytes as a fraction of the index) and warm queries over a skewed stream (cache hit ratio, latency), per CF/H/R point.",
        };
        public readonly Option<int> ColdQueries = new("--cold-queries") { Description = "With --cold: cold queries measured (spread over the query set).", DefaultValueFactory = _ => 200 };
        public readonly Option<int> Stream = new("--stream") { Description = "With --cold: requests in the skewed warm stream (the second half is measured).", DefaultValueFactory = _ => 2000 };
        public readonly Option<double> Zipf = new("--zipf") { Description = "With --cold: Zipf exponent of the warm stream over the query set.", DefaultValueFactory = _ => 1.0 };
        public readonly Option<int> CacheMb = new("--cache-mb") { Description = "With --cold: segment cache size for the warm stream, MiB.", DefaultValueFactory = _ => 256 };
        public readonly Option<int> WholeAfter = new("--whole-after") { Description = "With --cold: queries that fetch a partition's rows before the next reads its raw vectors whole into the cache (0: rows only).", DefaultValueFactory = _ => 1 };
        public readonly Option<double> Visit = new("--visit") { Description = "With --cold: visit exactly this percentage of the partitions (nearest first) instead of the CF plan, e.g. 10.", DefaultValueFactory = _ => 0 };
        public readonly Option<FilterStrategy> Strategy = FilterStrategyOption();
        public readonly Option<string> Out = new("--out") { Description = "Folder for bench.csv and recall-qps.png.", DefaultValueFactory = _ => "bench-results" };
        public readonly Option<string?> FunctionKey = EndpointFlags.FunctionKey();
        public readonly Option<string?> Load = new("--load") { Description = "With --endpoint: cost against load instead of the shape sweep: open-loop Poisson arrival rates in QPS and 'saturation' (--concurrency clients), e.g. 0.1,1,10,100,saturation; per rate and tree shape, $ per million queries from the host's meter, p50/p99, instances, activity periods (load.csv, cost-vs-load.png)." };
        public readonly Option<double> Duration = new("--duration") { Description = "With --load: seconds per rate (a rate sends max(rate × duration, --min-queries) queries).", DefaultValueFactory = _ => 20 };
        public readonly Option<int> MinQueries = new("--min-queries") { Description = "With --load: queries sent at least per rate (the low rates need few).", DefaultValueFactory = _ => 5 };

        /// <summary>Parsed here so that a bad value lists the three names (the enum's own error names only its type).</summary>
        private static Option<FilterStrategy> FilterStrategyOption() => new("--filter-strategy")
        {
            Description = "With --filters (in-process engine): auto (the planner's cost rule), partitions or direct, to compare the strategies.",
            DefaultValueFactory = _ => FilterStrategy.Auto,
            CustomParser = r =>
            {
                var text = r.Tokens.Count == 1 ? r.Tokens[0].Value : "";
                if (Enum.TryParse<FilterStrategy>(text, ignoreCase: true, out var strategy) && Enum.IsDefined(strategy) && !int.TryParse(text, out _)) return strategy;
                r.AddError($"--filter-strategy must be auto, partitions or direct, got '{text}'");
                return FilterStrategy.Auto;
            },
        };
    }

    /// <summary>The values every benchmark checks first: k, the CF/H/R/bits lists to sweep, and the query counts.</summary>
    /// <param name="Caps">Partition caps to sweep in process, null for none (<c>--max-partitions</c>; [null] without it).</param>
    private sealed record Sweep(int K, double[] Cfs, double[] Hs, int[] Rs, int[] HammingBits, int Runs, int Limit, int BruteForceQueries, double[]? Targets = null,
        int?[]? Caps = null);

    public static Command Create()
    {
        var f = new Flags();
        var cmd = new Command("bench", "Measure recall, QPS and latency over a sweep of query settings, against brute force.")
        {
            f.Index, f.Queries, f.Truth, f.Search.K, f.Recall, f.Cf, f.H, f.R, f.MaxPartitions, f.HammingBits, f.Runs, f.Limit, f.BruteForceQueries, f.Out, f.Endpoint, f.Concurrency, f.Shapes, f.ColdSamples, f.Filters,
            f.Cold, f.ColdQueries, f.Stream, f.Zipf, f.CacheMb, f.WholeAfter, f.Visit, f.Strategy, f.Warmup, f.FunctionKey, f.Load, f.Duration, f.MinQueries,
        };
        IndexLocation.AddStoreOptions(cmd);
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            var sweep = ReadSweep(pr, f);
            // Before the measurement, which may take minutes: a --out that cannot be a folder fails now (created once the
            // other inputs have been checked, so a refused run leaves no folder behind).
            OutputFolder.Check("--out", pr.GetValue(f.Out)!);
            if (pr.GetValue(f.Endpoint) is { } url) return await RunEndpointAsync(pr, f, sweep, url, ct);
            return pr.GetValue(f.Cold) ? await RunColdAsync(pr, f, sweep, ct) : await RunInProcessAsync(pr, f, sweep, ct);
        }));
        return cmd;
    }

    private static Sweep ReadSweep(ParseResult pr, Flags f)
    {
        int k = SearchFlags.ValidateK(pr.GetValue(f.Search.K));
        var cfs = ParseList(pr.GetValue(f.Cf)!, "--cf", double.Parse);
        var hs = ParseList(pr.GetValue(f.H)!, "--h", double.Parse);
        var rs = ParseList(pr.GetValue(f.R)!, "--r", int.Parse);
        var hbs = ParseList(pr.GetValue(f.HammingBits)!, "--hamming-bits", int.Parse);
        CliErrors.Require(hbs.All(x => x >= 1), "--hamming-bits values must be ≥ 1");
        int runs = pr.GetValue(f.Runs);
        CliErrors.Require(runs >= 1, $"--runs must be ≥ 1, got {runs}");
        int limit = pr.GetValue(f.Limit);
        CliErrors.Require(limit >= 0, $"--limit must be ≥ 0, got {limit}");
        int bf = pr.GetValue(f.BruteForceQueries);
        CliErrors.Require(bf >= 0, $"--brute-force-queries must be ≥ 0, got {bf}");
        foreach (var c in cfs) SearchFlags.Options(k, c, 100, 1, false);
        foreach (var x in hs) SearchFlags.Options(k, 1, x, 1, false);
        foreach (var x in rs) SearchFlags.Options(k, 1, 100, x, false);
        double[]? targets = null;
        if (pr.GetValue(f.Recall) is { } recallList)
        {
            targets = ParseList(recallList, "--recall", double.Parse);
            CliErrors.Require(!SearchFlags.Given(pr, f.Cf) && !SearchFlags.Given(pr, f.R), "--recall cannot be combined with --cf or --r: it sweeps targets, whose plans the index chooses");
            CliErrors.Require(pr.GetValue(f.Endpoint) is null && !pr.GetValue(f.Cold), "--recall sweeps the in-process engine: not with --endpoint or --cold");
            foreach (var t in targets) SearchFlags.Options(k, 1, 100, 1, false, t, planGiven: false);
        }
        int?[] caps = [null];
        if (pr.GetValue(f.MaxPartitions) is { } capList)
        {
            caps = ParseList<int?>(capList, "--max-partitions", (x, provider) => x == "none" ? null : int.Parse(x, provider));
            CliErrors.Require(caps.All(c => c is not < 1), $"--max-partitions values must be ≥ 1 or 'none', got '{capList}'");
            CliErrors.Require(targets is null, "--max-partitions cannot be combined with --recall: the index's calibration chooses a target's cap");
            CliErrors.Require(pr.GetValue(f.Endpoint) is null && !pr.GetValue(f.Cold), "--max-partitions sweeps the in-process engine: not with --endpoint or --cold");
            CliErrors.Require(pr.GetValue(f.Filters) is null, "--max-partitions applies to unfiltered queries only: not with --filters");
        }
        return new Sweep(k, cfs, hs, rs, hbs, runs, limit, bf, targets, caps);
    }

    /// <summary>The HTTP API through the function tree, per tree shape (<see cref="EndpointBench"/>).</summary>
    private static async Task<int> RunEndpointAsync(ParseResult pr, Flags f, Sweep sweep, string url, CancellationToken ct)
    {
        var endpoint = EndpointFlags.ParseEndpoint(url);
        var key = EndpointFlags.Key(pr, f.FunctionKey);
        int concurrency = pr.GetValue(f.Concurrency);
        CliErrors.Require(concurrency >= 1 && concurrency <= 256, $"--concurrency must be 1..256, got {concurrency}");
        int coldSamples = pr.GetValue(f.ColdSamples);
        CliErrors.Require(coldSamples >= 0, $"--cold-samples must be ≥ 0, got {coldSamples}");
        var shapes = ParseShapes(pr.GetValue(f.Shapes)!);
        int? warmup = pr.GetValue(f.Warmup);
        CliErrors.Require(warmup is null or >= 0, $"--warmup must be ≥ 0, got {warmup}");
        var (dimensions, rowLimit) = await EndpointBench.IndexShapeAsync(endpoint, pr.GetValue(f.Index)!, key, ct);
        var (q, gt) = ReadQueries(pr, f, sweep, dimensions, rowLimit);
        JsonElement[]? filters = null;
        if (pr.GetValue(f.Filters) is { } filtersPath)
        {
            // Sent as they are: the function app compiles them and reports errors under "filter".
            var lines = ReadFilterLines(filtersPath, q.Count);
            filters = new JsonElement[q.Count];
            for (int i = 0; i < q.Count; i++)
            {
                try { filters[i] = JsonDocument.Parse(lines[i]).RootElement.Clone(); }
                catch (JsonException e) { throw new UsageException($"--filters line {i + 1}: not valid JSON: {e.Message}"); }
            }
        }
        // Search options go with every request when given (the first value of each list); else the app's defaults.
        var searchOptions = new EndpointBench.Options(
            pr.GetResult(f.Cf) is { Implicit: false } ? sweep.Cfs[0] : null,
            pr.GetResult(f.H) is { Implicit: false } ? sweep.Hs[0] : null,
            pr.GetResult(f.R) is { Implicit: false } ? sweep.Rs[0] : null);
        if (pr.GetValue(f.Load) is { } load)
        {
            var rates = LoadBench.ParseRates(load);
            double seconds = pr.GetValue(f.Duration);
            CliErrors.Require(double.IsFinite(seconds) && seconds > 0 && seconds <= 3600, $"--duration must be 0 < seconds ≤ 3600, got {seconds}");
            int minQueries = pr.GetValue(f.MinQueries);
            CliErrors.Require(minQueries >= 1, $"--min-queries must be ≥ 1, got {minQueries}");
            CliErrors.Require(filters is null, "--load does not take --filters yet");
            // Shapes sweep only when asked for: by default the app's own shape (1x1 is what serve's defaults give).
            var loadShapes = SearchFlags.Given(pr, f.Shapes) ? shapes : [new EndpointBench.Shape(1, 1)];
            return await LoadBench.RunAsync(endpoint, pr.GetValue(f.Index)!, q, gt, sweep.K, loadShapes, rates, TimeSpan.FromSeconds(seconds), minQueries,
                concurrency, warmup ?? Math.Min(2 * q.Count, 400), searchOptions, pr.GetValue(f.Out)!, key, ct);
        }
        return await EndpointBench.RunAsync(endpoint, pr.GetValue(f.Index)!, q, gt, sweep.K, concurrency, coldSamples, shapes,
            pr.GetValue(f.Out)!, ct, filters, searchOptions, warmup, key);
    }

    /// <summary>Cold and warm reads from a blob store, per CF/H/R point (<see cref="ColdBench"/>).</summary>
    private static async Task<int> RunColdAsync(ParseResult pr, Flags f, Sweep sweep, CancellationToken ct)
    {
        var store = IndexLocation.Open(pr, pr.GetValue(f.Index));
        CliErrors.Require(pr.GetValue<string?>(IndexLocation.StoreFlag) is not null, "--cold needs --store (dir:PATH or azure:…): it measures reads from a blob store");
        CliErrors.Require(pr.GetValue(f.Filters) is null, "--cold does not take --filters yet: filtered queries are planned inside the engine, which reads whole segments");
        var settings = new ColdBench.Settings(pr.GetValue(f.ColdQueries), pr.GetValue(f.Stream), pr.GetValue(f.Zipf), (long)pr.GetValue(f.CacheMb) << 20, 42, pr.GetValue(f.Visit) / 100);
        CliErrors.Require(settings.VisitShare is >= 0 and <= 1, $"--visit must be a percentage in 0..100, got {pr.GetValue(f.Visit)}");
        CliErrors.Require(settings.ColdQueries >= 1, $"--cold-queries must be ≥ 1, got {settings.ColdQueries}");
        CliErrors.Require(settings.Stream >= 2, $"--stream must be ≥ 2, got {settings.Stream}");
        CliErrors.Require(settings.ZipfExponent >= 0 && double.IsFinite(settings.ZipfExponent), $"--zipf must be a finite number ≥ 0, got {settings.ZipfExponent}");
        CliErrors.Require(settings.CacheBytes >= 0, "--cache-mb must be ≥ 0");
        var openClock = Stopwatch.StartNew();
        long before = store.BytesRead;
        var routing = await OpenedIndex.OpenAsync(store, loadAll: false, ct);
        CliErrors.Require(pr.GetValue(f.WholeAfter) >= 0, "--whole-after must be ≥ 0");
        routing.WholeVectorsAfter = pr.GetValue(f.WholeAfter);
        double openMs = openClock.Elapsed.TotalMilliseconds;
        long openBytes = store.BytesRead - before;
        var (q, gt) = ReadQueries(pr, f, sweep, routing.Manifest.Dimensions, routing.Manifest.RowLimit);
        Console.WriteLine($"bench --cold: {routing.Manifest.Count:N0} vectors × {routing.Manifest.Dimensions} dims, {routing.PartitionCount} partitions, " +
                          $"index {routing.StoredBytes / 1048576.0:F1} MiB in {store.Blobs.Description}; open (manifest + routing) {openMs:F0} ms, {openBytes / 1024.0:F1} KiB; one thread");
        var results = new List<ColdBench.Result>();
        // --visit fixes the partitions, so CF does not matter: one point per H and R.
        foreach (var c in settings.VisitShare > 0 ? sweep.Cfs.Take(1) : sweep.Cfs)
            foreach (var hv in sweep.Hs)
                foreach (var rv in sweep.Rs)
                {
                    var result = await ColdBench.RunAsync(routing, q, gt, new SearchOptions { K = sweep.K, CentroidFactor = c, HammingKeepPercent = hv, RerankFactor = rv, HammingBits = sweep.HammingBits[0] }, settings, ct);
                    ColdBench.Print(result, settings, routing, Console.Out);
                    results.Add(result);
                }
        var dir = pr.GetValue(f.Out)!;
        Directory.CreateDirectory(dir);
        ColdBench.WriteCsv(Path.Combine(dir, "cold.csv"), results);
        Console.WriteLine($"wrote {Path.Combine(dir, "cold.csv")}");
        Console.WriteLine(ReproduceLine(pr.Tokens.Select(t => t.Value)));
        return 0;
    }

    /// <summary>The engine on one thread over the CF × H × R × bits sweep, against brute force.</summary>
    private static async Task<int> RunInProcessAsync(ParseResult pr, Flags f, Sweep sweep, CancellationToken ct)
    {
        var store = IndexLocation.Open(pr, pr.GetValue(f.Index));
        // The sweep measures the engine on data in memory, so everything is loaded first.
        var loaded = await OpenedIndex.OpenAsync(store, loadAll: true, ct);
        var (q, gt) = ReadQueries(pr, f, sweep, loaded.Manifest.Dimensions, loaded.Manifest.RowLimit);
        int k = sweep.K;
        CompiledFilter[]? filters = null;
        if (pr.GetValue(f.Filters) is { } filtersPath)
        {
            var lines = ReadFilterLines(filtersPath, q.Count);
            filters = new CompiledFilter[q.Count];
            for (int i = 0; i < q.Count; i++)
            {
                try { filters[i] = loaded.Filters.Compile(lines[i]); }
                catch (FilterException e) { throw new UsageException($"--filters line {i + 1}: {e.Message}"); }
            }
        }

        var engine = new SearchEngine(loaded);
        var points = new List<Point>();
        AnsiConsole.MarkupLine($"[bold]bench[/] {loaded.Manifest.Count:N0} vectors × {loaded.Manifest.Dimensions} dims, {loaded.PartitionCount} partitions, {q.Count:N0} queries, k = {k}, {sweep.Runs} runs per point, one thread, lower bounds by {KernelName()}");
        var (gbps, latencyNs) = HostMemoryProbe.Measure();
        AnsiConsole.MarkupLine($"host memory now: {gbps:F1} GB/s read by one thread, {latencyNs:F0} ns a dependent load (64 MB each)");
        // A recall sweep asks for targets; the plan (CF, R) of each comes from the index's calibration.
        var settings = sweep.Targets is { } targets
            ? targets.Select(t => new SearchOptions { K = k, Recall = t, HammingKeepPercent = SearchFlags.Given(pr, f.H) ? sweep.Hs[0] : SearchFlags.DefaultH, HammingBits = sweep.HammingBits[0], FilterStrategy = pr.GetValue(f.Strategy) })
            : from c in sweep.Cfs from hv in sweep.Hs from rv in sweep.Rs from bits in sweep.HammingBits from cap in sweep.Caps ?? [null]
              select new SearchOptions { K = k, CentroidFactor = c, HammingKeepPercent = hv, RerankFactor = rv, HammingBits = bits, FilterStrategy = pr.GetValue(f.Strategy),
                  MaxPartitions = cap };
        if (sweep.Targets is not null && loaded.Manifest.Calibration is null)
            Console.Error.WriteLine("note: this index has no recall calibration (built with --no-calibration or before calibration existed): targets plan with the default CF and R");
        // Targets plan with the frontier (or filtered bands) measured at the smallest calibrated K ≥ k.
        else if (sweep.Targets is not null && loaded.Manifest.Calibration is { } measured
            && RecallPlanner.CalibratedK(measured, k, filtered: filters is not null) is var calibratedK && calibratedK != k)
            Console.Error.WriteLine($"note: the calibration measured recall@{calibratedK}; with --k {k} the targets run the plans chosen for k = {calibratedK}, so 'predicted' is recall@{calibratedK} and recall@{k} may fall outside the target's band");
        foreach (var options in settings)
                    {
                        ct.ThrowIfCancellationRequested();
                        var p = Measure(engine, q, gt, options, sweep.Runs, filters);
                        points.Add(p);
                        Console.Error.WriteLine((p.Target is { } t ? $"  recall target {t} (predicted {p.Predicted:F4}) " : "  ") + $"cf={PlanText(p.Cf)} h={p.H} r={PlanText(p.R)}{(p.Cap is { } cap ? $" cap={cap}" : "")}{(p.Plans is { } mixed ? $" (plans CF/R[/≤cap]:share {mixed})" : "")} bits={options.HammingBits}: recall {p.Recall:F4}, {p.Qps:F0} QPS, p50 {p.P50:F0} µs, p99 {p.P99:F0} µs, parts {p.Partitions:F1}, ham {p.AfterHamming:F0}, lb {p.AfterLowerBound:F0}, rerank {p.Reranked:F0}"
                            + (filters is null ? "" : $", passes {p.Passes:F2} (max {p.MaxPasses}), direct {p.DirectShare:P1}, short answers {p.Short}"));
                    }

        var (bfQps, bfRecall) = BruteForce(loaded, q, gt, k, Math.Min(sweep.BruteForceQueries, q.Count), filters);
        Report(points, bfQps, bfRecall, loaded, k);
        var dir = pr.GetValue(f.Out)!;
        Directory.CreateDirectory(dir);
        WriteCsv(Path.Combine(dir, "bench.csv"), points, bfQps);
        Plot.RecallQps(Path.Combine(dir, "recall-qps.png"), points, bfQps, $"{loaded.Manifest.Count:N0} × {loaded.Manifest.Dimensions}, k = {k}");
        Console.WriteLine($"wrote {Path.Combine(dir, "bench.csv")} and {Path.Combine(dir, "recall-qps.png")}");
        Console.WriteLine(ReproduceLine(pr.Tokens.Select(t => t.Value)));
        return 0;
    }

    /// <summary>
    /// The lower-bound kernel this process chose, with what its probe measured: the loads kernel's time per dimension (how
    /// fast this machine is at the moment) and the gather kernel's time over it.
    /// </summary>
    internal static string KernelName()
    {
        double ratio = Squash.Core.Bounds.LowerBoundTable.GatherTimeRatio, ns = Squash.Core.Bounds.LowerBoundTable.LoadsNanosecondsPerDimension;
        string kernel = Squash.Core.Bounds.LowerBoundTable.UsesGather ? "AVX2 gathers" : "plain loads";
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        return double.IsNaN(ratio) ? kernel
            : $"{kernel} (probe: loads {ns.ToString("F2", inv)} ns a dimension, gathers {ratio.ToString("F2", inv)}× that)";
    }

    /// <summary>
    /// The query vectors (the first --limit), whose dimensions must match the index's, and their ground truth
    /// (<see cref="ReadGroundTruth"/>; <paramref name="rowLimit"/>: one past the index's largest row number, null when unknown).
    /// </summary>
    private static (VectorSet Queries, int[][] Truth) ReadQueries(ParseResult pr, Flags f, Sweep sweep, int indexDimensions, long? rowLimit)
    {
        var q = VectorFile.Read(pr.GetValue(f.Queries)!, sweep.Limit > 0 ? sweep.Limit : null);
        CliErrors.Require(q.Dimensions == indexDimensions, $"--queries: {q.Dimensions} dimensions, the index has {indexDimensions}");
        return (q, ReadGroundTruth(pr.GetValue(f.Truth)!, q.Count, sweep.K, rowLimit));
    }

    /// <summary>
    /// A --ground-truth file, checked before it scores anything: an .ivecs file with a record of at least
    /// <paramref name="k"/> ids for each of the first <paramref name="queries"/> queries, every id a row of the index
    /// (below <paramref name="rowLimit"/> when known) or −1, which pads a filtered row with fewer than k matches. Ids
    /// from another data set, or a file of another kind read as ids, would otherwise just lower the recall reported.
    /// </summary>
    internal static int[][] ReadGroundTruth(string path, int queries, int k, long? rowLimit)
    {
        CliErrors.RequireFile("--ground-truth", path);
        CliErrors.Require(Path.GetExtension(path).Equals(".ivecs", StringComparison.OrdinalIgnoreCase),
            $"--ground-truth: '{path}' is not an .ivecs file (one record of int32 row ids per query)");
        int[][] gt;
        try { gt = VectorFile.ReadIvecs(path); }
        catch (InvalidDataException e) { throw new UsageException($"--ground-truth: {e.Message}"); }
        CliErrors.Require(gt.Length >= queries, $"--ground-truth: '{path}' has {gt.Length:N0} records for {queries:N0} queries");
        CliErrors.Require(gt[0].Length >= k, $"--ground-truth: '{path}' holds {gt[0].Length} ids per query, fewer than k = {k}");
        for (int i = 0; i < queries; i++)
            foreach (int id in gt[i])
                if (id < -1 || id >= rowLimit)
                    throw new UsageException($"--ground-truth: '{path}' record {i} holds id {id}, not a row of the index "
                        + (rowLimit is { } rows ? $"(0 … {rows - 1:N0}" : "(≥ 0") + "; −1 pads a filtered record)");
        return gt;
    }

    /// <summary>The first <paramref name="count"/> non-blank lines of a --filters file: one filter per query.</summary>
    private static string[] ReadFilterLines(string path, int count)
    {
        CliErrors.RequireFile("--filters", path);
        var lines = File.ReadLines(path).Where(l => l.Trim().Length > 0).Take(count).ToArray();
        CliErrors.Require(lines.Length >= count, $"--filters has {lines.Length} filters for {count} queries");
        return lines;
    }

    /// <summary>The command line that runs this again, quoted for a POSIX shell, with every credential redacted (a function key too).</summary>
    public static string ReproduceLine(IEnumerable<string> args)
    {
        var list = args.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            if (list[i] == EndpointFlags.FunctionKeyFlag && i + 1 < list.Count) list[++i] = SecretRedaction.Mask;
            else if (list[i].StartsWith(EndpointFlags.FunctionKeyFlag + "=", StringComparison.Ordinal)) list[i] = EndpointFlags.FunctionKeyFlag + "=" + SecretRedaction.Mask;
        }
        return "reproduce: squash " + string.Join(' ', list.Select(a => ShellQuote(SecretRedaction.Redact(a))));
    }

    private static string ShellQuote(string arg) =>
        arg.Length > 0 && arg.All(c => char.IsAsciiLetterOrDigit(c) || "-_./:=,@%+".Contains(c)) ? arg : "'" + arg.Replace("'", "'\\''") + "'";

    private static EndpointBench.Shape[] ParseShapes(string s)
    {
        try
        {
            var shapes = s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(x =>
            {
                // The app's own choice (its planner with Squash__Objective, else its configured shape): no branching or depth sent.
                if (x == "auto") return EndpointBench.Shape.Auto;
                var parts = x.Split('x');
                var shape = new EndpointBench.Shape(int.Parse(parts[0], CultureInfo.InvariantCulture), int.Parse(parts[1], CultureInfo.InvariantCulture));
                CliErrors.Require(shape.Branching is >= 1 and <= 16 && shape.Depth is >= 0 and <= 4, $"--tree-shapes: '{x}' needs 1 ≤ b ≤ 16 and 0 ≤ L ≤ 4");
                return shape;
            }).ToArray();
            CliErrors.Require(shapes.Length > 0, "--tree-shapes needs at least one shape");
            return shapes;
        }
        catch (Exception e) when (e is FormatException or IndexOutOfRangeException)
        {
            throw new UsageException($"--tree-shapes must look like 1x1,10x1,4x2, got '{s}'");
        }
    }

    private static T[] ParseList<T>(string s, string flag, Func<string, IFormatProvider, T> parse)
    {
        try
        {
            var items = s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(x => parse(x, CultureInfo.InvariantCulture)).ToArray();
            CliErrors.Require(items.Length > 0, $"{flag} needs at least one value");
            return items;
        }
        catch (FormatException)
        {
            throw new UsageException($"{flag} must be a comma-separated list of numbers, got '{s}'");
        }
    }

    public static Point Measure(SearchEngine engine, VectorSet q, int[][] gt, SearchOptions options, int runs, CompiledFilter[]? filters = null)
    {
        // Per-query options (the filter differs per query), built before timing.
        var perQuery = new SearchOptions[q.Count];
        for (int i = 0; i < q.Count; i++) perQuery[i] = filters is null ? options : options with { Filter = filters[i] };
        // Warm up caches and the JIT (tiered compilation needs a while to reach optimised code): at least
        // one second and at least 200 queries, cycling through the set.
        var warm = Stopwatch.StartNew();
        for (int i = 0; i < 200 || warm.ElapsedMilliseconds < 1000; i++) engine.Search(q.Row(i % q.Count), perQuery[i % q.Count]);
        var qpsRuns = new List<double>();
        LatencyRecorder? medianLatency = null;
        var latencies = new List<(double Qps, LatencyRecorder Rec)>();
        SearchResult[] results = new SearchResult[q.Count];
        for (int run = 0; run < runs; run++)
        {
            var rec = new LatencyRecorder();
            long total = 0;
            for (int i = 0; i < q.Count; i++)
            {
                long t0 = Stopwatch.GetTimestamp();
                results[i] = engine.Search(q.Row(i), perQuery[i]);
                long dt = Stopwatch.GetTimestamp() - t0;
                total += dt;
                rec.Record(dt);
            }
            double qps = q.Count / (total / (double)Stopwatch.Frequency);
            latencies.Add((qps, rec));
        }
        latencies.Sort((a, b) => a.Qps.CompareTo(b.Qps));
        var median = latencies[latencies.Count / 2];
        medianLatency = median.Rec;
        double recall = Recall(results, gt, options.K);

        var s = new QueryStats();
        foreach (var res in results) s.Add(res.Stats);
        double n = q.Count;
        // A recall target's plan is the calibration's choice: one plan, or a mix of two run on shares of the queries (and
        // filtered queries plan per band). CF, R and the partition cap report the plan most queries ran, Plans every plan with its share.
        var ran = results.GroupBy(x => (x.Stats.CentroidFactor, x.Stats.RerankFactor, x.Stats.MaxPartitions)).OrderByDescending(g => g.Count()).ThenBy(g => g.Key).ToArray();
        var planned = ran.Length > 0 ? ran[0].First().Stats
            : new QueryStats { CentroidFactor = options.Exact ? null : options.CentroidFactor, RerankFactor = options.Exact ? null : options.RerankFactor,
                MaxPartitions = options.Exact ? null : options.MaxPartitions };
        string? plans = ran.Length > 1
            ? string.Join(' ', ran.OrderBy(g => g.Key).Select(g => string.Create(CultureInfo.InvariantCulture, $"{(g.Key.CentroidFactor is null ? "exact" : $"{g.Key.CentroidFactor}/{g.Key.RerankFactor}{(g.Key.MaxPartitions is { } cap ? $"/≤{cap}" : "")}")}:{g.Count() / n:0.###}")))
            : null;
        var predictions = results.Where(x => x.Stats.PredictedRecall is not null).Select(x => x.Stats.PredictedRecall!.Value).ToArray();
        double? predicted = predictions.Length > 0 ? predictions.Average() : null;
        return new Point(planned.CentroidFactor, options.HammingKeepPercent, planned.RerankFactor, recall, median.Qps,
            medianLatency.PercentileMicros(50), medianLatency.PercentileMicros(99),
            s.PartitionsScanned / n, s.VectorsConsidered / n, s.AfterHamming / n, s.AfterLowerBound / n, s.Reranked / n, s.BytesTouched / n,
            s.Passes / n, results.Max(x => x.Stats.Passes), results.Count(x => x.Stats.Strategy == "direct") / n,
            // An answer is short when it has fewer results than the ground truth has valid ids (up to k).
            Enumerable.Range(0, results.Length).Count(i => results[i].Ids.Length < gt[i].Take(options.K).Count(id => id >= 0)),
            results.Count(x => x.Stats.Certified) / n, options.Recall, predicted, plans, planned.MaxPartitions);
    }

    public static double Recall(IReadOnlyList<SearchResult> results, int[][] gt, int k)
    {
        long hits = 0, total = 0;
        for (int i = 0; i < results.Count; i++)
        {
            // Filtered ground truth pads rows with −1 when fewer than k vectors match.
            var truth = new HashSet<long>(gt[i].Take(k).Where(x => x >= 0).Select(x => (long)x));
            hits += results[i].Ids.Count(truth.Contains);
            total += truth.Count;
        }
        return total == 0 ? 1 : hits / (double)total;
    }

    /// <summary>A flat scan of every stored vector with TensorPrimitives, one thread: the baseline.</summary>
    public static (double Qps, double Recall) BruteForce(OpenedIndex index, VectorSet q, int[][] gt, int k, int count, CompiledFilter[]? filters = null)
    {
        if (count == 0) return (0, 0);
        var space = index.Space;
        var mapped = new float[space.InternalDimensions];
        var results = new List<SearchResult>();
        long total = 0;
        for (int i = 0; i < count; i++)
        {
            space.MapQuery(q.Row(i), mapped);
            long t0 = Stopwatch.GetTimestamp();
            var top = new TopK(k);
            for (int p = 0; p < index.PartitionCount; p++)
            {
                var v = index.Vectors(p);
                var ids = index.Codes(p).Ids;
                var attrs = filters is null ? null : index.Attributes(p);
                for (int row = 0; row < v.Count; row++)
                    if (filters is null || filters[i].Matches(attrs!, row))
                        top.TryAdd(ids[row], TensorPrimitives.Distance(mapped, v.Row(row)));
            }
            total += Stopwatch.GetTimestamp() - t0;
            var best = top.ToSortedArray();
            results.Add(new SearchResult(best.Select(b => b.Id).ToArray(), best.Select(b => b.Distance).ToArray(), new QueryStats()));
        }
        return (count / (total / (double)Stopwatch.Frequency), Recall(results, gt, k));
    }

    private static void Report(List<Point> points, double bfQps, double bfRecall, OpenedIndex index, int k)
    {
        var table = new Table().Border(TableBorder.Simple);
        bool targets = points.Any(p => p.Target is not null);
        foreach (var c in (targets ? new[] { "target", "predicted" } : []).Concat(new[] { "CF", "H%", "R", "cap", $"recall@{k}", "QPS", "p50 µs", "p99 µs", "parts", "vectors", "after Hamming", "after LB", "re-ranked", "KB touched", "passes", "max passes", "direct", "short", "certified" }))
            table.AddColumn(new TableColumn(c).RightAligned());
        foreach (var p in points)
            table.AddRow((targets ? new[] { p.Target?.ToString("G4") ?? "", p.Predicted?.ToString("F4") ?? "" } : []).Concat(new[] { p.Cf?.ToString("G3") ?? "exact", p.H.ToString("G3"), PlanText(p.R), p.Cap?.ToString(CultureInfo.InvariantCulture) ?? "-", p.Recall.ToString("F4"), p.Qps.ToString("F0"),
                p.P50.ToString("F0"), p.P99.ToString("F0"), p.Partitions.ToString("F1"), p.Considered.ToString("F0"),
                p.AfterHamming.ToString("F0"), p.AfterLowerBound.ToString("F0"), p.Reranked.ToString("F0"), (p.Bytes / 1024).ToString("F0"),
                p.Passes.ToString("F2"), p.MaxPasses.ToString(), p.DirectShare.ToString("P1"), p.Short.ToString(), p.Certified.ToString("P1") }).ToArray());
        if (!AnsiConsole.Profile.Capabilities.Interactive) AnsiConsole.Profile.Width = 200;
        AnsiConsole.Write(table);
        double raw = (double)index.Manifest.InternalDimensions * 4;
        // --brute-force-queries 0 skips the baseline: say so rather than print 0 QPS and a ratio against it.
        bool haveBaseline = bfQps > 0;
        Console.WriteLine(haveBaseline
            ? $"brute force (TensorPrimitives, one thread): {bfQps:F1} QPS, recall@{k} {bfRecall:F4}"
            : "brute force: skipped (--brute-force-queries 0)");
        Console.WriteLine($"index: OSQ+sign codes {index.CodeBytesPerVector:F1} B/vector = {index.CodeBytesPerVector / raw:P2} of float32; build {index.Manifest.Build.BuildSeconds:F1} s");
        foreach (var target in new[] { 0.95, 0.99 })
        {
            var best = points.Where(p => p.Recall >= target).OrderByDescending(p => p.Qps).FirstOrDefault();
            Console.WriteLine(best is null
                ? $"recall@{k} ≥ {target}: not reached in this sweep"
                : $"recall@{k} ≥ {target}: best {best.Qps:F0} QPS (recall {best.Recall:F4}, CF {PlanText(best.Cf)}, H {best.H}, R {PlanText(best.R)}{(best.Cap is { } cap ? $", at most {cap} partitions" : "")}, p50 {best.P50:F0} µs, p99 {best.P99:F0} µs)"
                    + (haveBaseline ? $" = {best.Qps / bfQps:F1}× brute force" : ""));
        }
    }

    /// <summary>A plan's CF or R as printed; an exact plan has neither.</summary>
    private static string PlanText(double? cf) => cf?.ToString(CultureInfo.InvariantCulture) ?? "exact";
    private static string PlanText(int? r) => r?.ToString(CultureInfo.InvariantCulture) ?? "exact";

    private static void WriteCsv(string path, List<Point> points, double bfQps)
    {
        using var w = new StreamWriter(path);
        w.WriteLine("cf,h,r,recall,qps,p50_us,p99_us,partitions,considered,after_hamming,after_lb,reranked,bytes_touched,brute_force_qps,passes,max_passes,direct_share,short_answers,certified_share,recall_target,predicted_recall,plans,max_partitions");
        // An exact point has no CF or R: empty, like a point without a target.
        foreach (var p in points)
            w.WriteLine(string.Join(',', new object[] { p.Cf?.ToString(CultureInfo.InvariantCulture) ?? "", p.H, p.R?.ToString(CultureInfo.InvariantCulture) ?? "", p.Recall, p.Qps, p.P50, p.P99, p.Partitions, p.Considered, p.AfterHamming, p.AfterLowerBound, p.Reranked, p.Bytes, bfQps, p.Passes, p.MaxPasses, p.DirectShare, p.Short, p.Certified, p.Target?.ToString(CultureInfo.InvariantCulture) ?? "", p.Predicted?.ToString(CultureInfo.InvariantCulture) ?? "", p.Plans ?? "", p.Cap?.ToString(CultureInfo.InvariantCulture) ?? "" }
                .Select(o => Convert.ToString(o, CultureInfo.InvariantCulture))));
    }
}
