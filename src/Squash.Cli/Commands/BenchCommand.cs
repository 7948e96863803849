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
/// </summary>
public static class BenchCommand
{
    public sealed record Point(double Cf, double H, int R, double Recall, double Qps, double P50, double P99,
        double Partitions, double Considered, double AfterHamming, double AfterLowerBound, double Reranked, double Bytes,
        double Passes = 1, int MaxPasses = 1, double DirectShare = 0, int Short = 0);

    public static Command Create()
    {
        var index = new Option<string>("--index") { Description = "Folder that holds the index; with --store, the index's name inside the store; with --endpoint, the index name.", Required = true };
        var endpoint = new Option<string?>("--endpoint") { Description = "Benchmark the HTTP API at this URL (e.g. http://127.0.0.1:7071 from squash serve) instead of the in-process engine." };
        var concurrency = new Option<int>("--concurrency") { Description = "With --endpoint: parallel clients for the throughput figure.", DefaultValueFactory = _ => 4 };
        var shapes = new Option<string>("--tree-shapes") { Description = "With --endpoint: tree shapes b×L to sweep (1×1 = 1 node, 10×1 = 10, 4×2 = 20, 4×3 = 84).", DefaultValueFactory = _ => "1x1,10x1,4x2,4x3" };
        var warmupOption = new Option<int?>("--warmup") { Description = "With --endpoint: warm-up queries per tree shape before the timed pass (default: each measured query twice: a partition's first query reads its rows, its second its vectors whole)." };
        var cold = new Option<int>("--cold-samples") { Description = "With --endpoint: cold queries measured (all instances stopped before each).", DefaultValueFactory = _ => 3 };
        var queries = new Option<string>("--queries") { Description = "Query vectors (.fvecs, .bvecs, .npy).", Required = true };
        var truth = new Option<string>("--ground-truth") { Description = "Exact neighbours per query (.ivecs), at least k per row.", Required = true };
        var flags = new SearchFlags();
        var cf = new Option<string>("--cf") { Description = "Centroid factors to sweep (comma-separated); with --endpoint, the first is sent with every query.", DefaultValueFactory = _ => "1.1,1.2,1.3,1.4,1.6" };
        var h = new Option<string>("--h") { Description = "Hamming keep percentages to sweep; with --endpoint, the first is sent with every query.", DefaultValueFactory = _ => "50,100" };
        var r = new Option<string>("--r") { Description = "Re-rank factors to sweep; with --endpoint, the first is sent with every query.", DefaultValueFactory = _ => "2,4" };
        var hb = new Option<string>("--hamming-bits") { Description = "Sign bits compared by the Hamming prune (leading coded dimensions), to sweep.", DefaultValueFactory = _ => "64" };
        var runs = new Option<int>("--runs") { Description = "Timed runs per point; the median QPS is reported.", DefaultValueFactory = _ => 3 };
        var limit = new Option<int>("--limit") { Description = "Use the first N queries (0: all).", DefaultValueFactory = _ => 0 };
        var bfQueries = new Option<int>("--brute-force-queries") { Description = "Queries timed for the brute-force baseline.", DefaultValueFactory = _ => 200 };
        var filtersOption = new Option<string?>("--filters") { Description = "Filter JSON per query, one per line (then --ground-truth must be the filtered one)." };
        var coldMode = new Option<bool>("--cold")
        {
            Description = "Storage figures instead of the QPS sweep (needs --store): cold queries (each on a fresh, empty cache: latency, bytes read, "
                        + "bytes as a fraction of the index) and warm queries over a skewed stream (cache hit ratio, latency), per CF/H/R point.",
        };
        var coldQueries = new Option<int>("--cold-queries") { Description = "With --cold: cold queries measured (spread over the query set).", DefaultValueFactory = _ => 200 };
        var stream = new Option<int>("--stream") { Description = "With --cold: requests in the skewed warm stream (the second half is measured).", DefaultValueFactory = _ => 2000 };
        var zipf = new Option<double>("--zipf") { Description = "With --cold: Zipf exponent of the warm stream over the query set.", DefaultValueFactory = _ => 1.0 };
        var cacheMb = new Option<int>("--cache-mb") { Description = "With --cold: segment cache size for the warm stream, MiB.", DefaultValueFactory = _ => 256 };
        var wholeAfter = new Option<int>("--whole-after") { Description = "With --cold: queries that fetch a partition's rows before the next reads its raw vectors whole into the cache (0: rows only).", DefaultValueFactory = _ => 1 };
        var visit = new Option<double>("--visit") { Description = "With --cold: visit exactly this percentage of the partitions (nearest first) instead of the CF plan, e.g. 10.", DefaultValueFactory = _ => 0 };
        var strategy = new Option<FilterStrategy>("--filter-strategy") { Description = "With --filters (in-process engine): auto (the planner's cost rule), partitions or direct, to compare the strategies.", DefaultValueFactory = _ => FilterStrategy.Auto };
        var outDir = new Option<string>("--out") { Description = "Folder for bench.csv and recall-qps.png.", DefaultValueFactory = _ => "bench-results" };
        var cmd = new Command("bench", "Measure recall, QPS and latency over a sweep of query settings, against brute force.")
        {
            index, queries, truth, flags.K, cf, h, r, hb, runs, limit, bfQueries, outDir, endpoint, concurrency, shapes, cold, filtersOption,
            coldMode, coldQueries, stream, zipf, cacheMb, wholeAfter, visit, strategy, warmupOption,
        };
        IndexLocation.AddStoreOptions(cmd);
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            int k = SearchFlags.ValidateK(pr.GetValue(flags.K));
            var cfs = ParseList(pr.GetValue(cf)!, "--cf", double.Parse);
            var hs = ParseList(pr.GetValue(h)!, "--h", double.Parse);
            var rs = ParseList(pr.GetValue(r)!, "--r", int.Parse);
            var hbs = ParseList(pr.GetValue(hb)!, "--hamming-bits", int.Parse);
            CliErrors.Require(hbs.All(x => x >= 1), "--hamming-bits values must be ≥ 1");
            int nRuns = pr.GetValue(runs);
            CliErrors.Require(nRuns >= 1, $"--runs must be ≥ 1, got {nRuns}");
            int max = pr.GetValue(limit);
            CliErrors.Require(max >= 0, $"--limit must be ≥ 0, got {max}");
            int bf = pr.GetValue(bfQueries);
            CliErrors.Require(bf >= 0, $"--brute-force-queries must be ≥ 0, got {bf}");
            foreach (var c in cfs) SearchFlags.Options(k, c, 100, 1, false);
            foreach (var x in hs) SearchFlags.Options(k, 1, x, 1, false);
            foreach (var x in rs) SearchFlags.Options(k, 1, 100, x, false);

            if (pr.GetValue(endpoint) is { } url)
            {
                CliErrors.Require(Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https", $"--endpoint must be an http(s) URL, got '{url}'");
                int c = pr.GetValue(concurrency);
                CliErrors.Require(c >= 1 && c <= 256, $"--concurrency must be 1..256, got {c}");
                int cs = pr.GetValue(cold);
                CliErrors.Require(cs >= 0, $"--cold-samples must be ≥ 0, got {cs}");
                var shapeList = ParseShapes(pr.GetValue(shapes)!);
                int? warmupCount = pr.GetValue(warmupOption);
                CliErrors.Require(warmupCount is null or >= 0, $"--warmup must be ≥ 0, got {warmupCount}");
                var eq = VectorFile.Read(pr.GetValue(queries)!, max > 0 ? max : null);
                var egt = VectorFile.ReadIvecs(pr.GetValue(truth)!);
                CliErrors.Require(egt.Length >= eq.Count, $"--ground-truth has {egt.Length} rows for {eq.Count} queries");
                JsonElement[]? endpointFilters = null;
                if (pr.GetValue(filtersOption) is { } endpointFiltersPath)
                {
                    // Sent as they are: the function app compiles them and reports errors under "filter".
                    CliErrors.Require(File.Exists(endpointFiltersPath), $"--filters: file '{endpointFiltersPath}' does not exist");
                    var lines = File.ReadLines(endpointFiltersPath).Where(l => l.Trim().Length > 0).Take(eq.Count).ToArray();
                    CliErrors.Require(lines.Length >= eq.Count, $"--filters has {lines.Length} filters for {eq.Count} queries");
                    endpointFilters = new JsonElement[eq.Count];
                    for (int i = 0; i < eq.Count; i++)
                    {
                        try { endpointFilters[i] = JsonDocument.Parse(lines[i]).RootElement.Clone(); }
                        catch (JsonException e) { throw new UsageException($"--filters line {i + 1}: not valid JSON: {e.Message}"); }
                    }
                }
                // Search options go with every request when given (the first value of each list); else the app's defaults.
                var searchOptions = new EndpointBench.Options(
                    pr.GetResult(cf) is { Implicit: false } ? cfs[0] : null,
                    pr.GetResult(h) is { Implicit: false } ? hs[0] : null,
                    pr.GetResult(r) is { Implicit: false } ? rs[0] : null);
                return await EndpointBench.RunAsync(new Uri(uri!.ToString().TrimEnd('/') + "/"), pr.GetValue(index)!, eq, egt, k, c, cs, shapeList, pr.GetValue(outDir)!, ct, endpointFilters, searchOptions, warmupCount);
            }
            var store = IndexLocation.Open(pr, pr.GetValue(index));
            if (pr.GetValue(coldMode))
            {
                CliErrors.Require(pr.GetValue<string?>(IndexLocation.StoreFlag) is not null, "--cold needs --store (dir:PATH or azure:…): it measures reads from a blob store");
                CliErrors.Require(pr.GetValue(filtersOption) is null, "--cold does not take --filters yet: filtered queries are planned inside the engine, which reads whole segments");
                var settings = new ColdBench.Settings(pr.GetValue(coldQueries), pr.GetValue(stream), pr.GetValue(zipf), (long)pr.GetValue(cacheMb) << 20, 42, pr.GetValue(visit) / 100);
                CliErrors.Require(settings.VisitShare is >= 0 and <= 1, $"--visit must be a percentage in 0..100, got {pr.GetValue(visit)}");
                CliErrors.Require(settings.ColdQueries >= 1, $"--cold-queries must be ≥ 1, got {settings.ColdQueries}");
                CliErrors.Require(settings.Stream >= 2, $"--stream must be ≥ 2, got {settings.Stream}");
                CliErrors.Require(settings.ZipfExponent >= 0 && double.IsFinite(settings.ZipfExponent), $"--zipf must be a finite number ≥ 0, got {settings.ZipfExponent}");
                CliErrors.Require(settings.CacheBytes >= 0, "--cache-mb must be ≥ 0");
                var openClock = Stopwatch.StartNew();
                long before = store.BytesRead;
                var routing = await LoadedIndex.OpenAsync(store, loadAll: false, ct);
                CliErrors.Require(pr.GetValue(wholeAfter) >= 0, "--whole-after must be ≥ 0");
                routing.WholeVectorsAfter = pr.GetValue(wholeAfter);
                double openMs = openClock.Elapsed.TotalMilliseconds;
                long openBytes = store.BytesRead - before;
                var cq = VectorFile.Read(pr.GetValue(queries)!, max > 0 ? max : null);
                CliErrors.Require(cq.Dimensions == routing.Manifest.Dimensions, $"--queries: {cq.Dimensions} dimensions, the index has {routing.Manifest.Dimensions}");
                var cgt = VectorFile.ReadIvecs(pr.GetValue(truth)!);
                CliErrors.Require(cgt.Length >= cq.Count, $"--ground-truth has {cgt.Length} rows for {cq.Count} queries");
                Console.WriteLine($"bench --cold: {routing.Manifest.Count:N0} vectors × {routing.Manifest.Dimensions} dims, {routing.PartitionCount} partitions, " +
                                  $"index {routing.StoredBytes / 1048576.0:F1} MiB in {store.Blobs.Description}; open (manifest + routing) {openMs:F0} ms, {openBytes / 1024.0:F1} KiB; one thread");
                var coldResults = new List<ColdBench.Result>();
                // --visit fixes the partitions, so CF does not matter: one point per H and R.
                foreach (var c in settings.VisitShare > 0 ? cfs.Take(1) : cfs)
                    foreach (var hv in hs)
                        foreach (var rv in rs)
                        {
                            var result = await ColdBench.RunAsync(routing, cq, cgt, new SearchOptions { K = k, CentroidFactor = c, HammingKeepPercent = hv, RerankFactor = rv, HammingBits = hbs[0] }, settings, ct);
                            ColdBench.Print(result, settings, routing, Console.Out);
                            coldResults.Add(result);
                        }
                var coldDir = pr.GetValue(outDir)!;
                Directory.CreateDirectory(coldDir);
                ColdBench.WriteCsv(Path.Combine(coldDir, "cold.csv"), coldResults);
                Console.WriteLine($"wrote {Path.Combine(coldDir, "cold.csv")}");
                Console.WriteLine(ReproduceLine(pr.Tokens.Select(t => t.Value)));
                return 0;
            }
            // Not --cold: the sweep measures the engine on data in memory, so everything is loaded first.
            var loaded = await LoadedIndex.OpenAsync(store, loadAll: true, ct);
            var q = VectorFile.Read(pr.GetValue(queries)!, max > 0 ? max : null);
            CliErrors.Require(q.Dimensions == loaded.Manifest.Dimensions, $"--queries: {q.Dimensions} dimensions, the index has {loaded.Manifest.Dimensions}");
            var gt = VectorFile.ReadIvecs(pr.GetValue(truth)!);
            CliErrors.Require(gt.Length >= q.Count, $"--ground-truth has {gt.Length} rows for {q.Count} queries");
            CliErrors.Require(gt.Take(q.Count).All(row => row.Length >= k), $"--ground-truth rows must hold at least k = {k} ids");
            CompiledFilter[]? filters = null;
            if (pr.GetValue(filtersOption) is { } filtersPath)
            {
                CliErrors.Require(File.Exists(filtersPath), $"--filters: file '{filtersPath}' does not exist");
                var lines = File.ReadLines(filtersPath).Where(l => l.Trim().Length > 0).Take(q.Count).ToArray();
                CliErrors.Require(lines.Length >= q.Count, $"--filters has {lines.Length} filters for {q.Count} queries");
                filters = new CompiledFilter[q.Count];
                for (int i = 0; i < q.Count; i++)
                {
                    try { filters[i] = loaded.Filters.Compile(lines[i]); }
                    catch (FilterException e) { throw new UsageException($"--filters line {i + 1}: {e.Message}"); }
                }
            }

            var engine = new SearchEngine(loaded);
            var points = new List<Point>();
            AnsiConsole.MarkupLine($"[bold]bench[/] {loaded.Manifest.Count:N0} vectors × {loaded.Manifest.Dimensions} dims, {loaded.PartitionCount} partitions, {q.Count:N0} queries, k = {k}, {nRuns} runs per point, one thread");
            foreach (var c in cfs)
                foreach (var hv in hs)
                    foreach (var rv in rs)
                        foreach (var bits in hbs)
                        {
                            ct.ThrowIfCancellationRequested();
                            var p = Measure(engine, q, gt, new SearchOptions { K = k, CentroidFactor = c, HammingKeepPercent = hv, RerankFactor = rv, HammingBits = bits, FilterStrategy = pr.GetValue(strategy) }, nRuns, filters);
                            points.Add(p);
                            Console.Error.WriteLine($"  cf={c} h={hv} r={rv} bits={bits}: recall {p.Recall:F4}, {p.Qps:F0} QPS, p50 {p.P50:F0} µs, p99 {p.P99:F0} µs, parts {p.Partitions:F1}, ham {p.AfterHamming:F0}, lb {p.AfterLowerBound:F0}, rerank {p.Reranked:F0}"
                                + (filters is null ? "" : $", passes {p.Passes:F2} (max {p.MaxPasses}), direct {p.DirectShare:P1}, short answers {p.Short}"));
                        }

            var (bfQps, bfRecall) = BruteForce(loaded, q, gt, k, Math.Min(bf, q.Count), filters);
            Report(points, bfQps, bfRecall, loaded, k);
            var dir = pr.GetValue(outDir)!;
            Directory.CreateDirectory(dir);
            WriteCsv(Path.Combine(dir, "bench.csv"), points, bfQps);
            Plot.RecallQps(Path.Combine(dir, "recall-qps.png"), points, bfQps, $"{loaded.Manifest.Count:N0} × {loaded.Manifest.Dimensions}, k = {k}");
            Console.WriteLine($"wrote {Path.Combine(dir, "bench.csv")} and {Path.Combine(dir, "recall-qps.png")}");
            Console.WriteLine(ReproduceLine(pr.Tokens.Select(t => t.Value)));
            return 0;
        }));
        return cmd;
    }

    /// <summary>The command line that runs this again, quoted for a POSIX shell, with every credential redacted.</summary>
    public static string ReproduceLine(IEnumerable<string> args) =>
        "reproduce: squash " + string.Join(' ', args.Select(a => ShellQuote(SecretRedaction.Redact(a))));

    private static string ShellQuote(string arg) =>
        arg.Length > 0 && arg.All(c => char.IsAsciiLetterOrDigit(c) || "-_./:=,@%+".Contains(c)) ? arg : "'" + arg.Replace("'", "'\\''") + "'";

    private static EndpointBench.Shape[] ParseShapes(string s)
    {
        try
        {
            var shapes = s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(x =>
            {
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
        return new Point(options.CentroidFactor, options.HammingKeepPercent, options.RerankFactor, recall, median.Qps,
            medianLatency.PercentileMicros(50), medianLatency.PercentileMicros(99),
            s.PartitionsScanned / n, s.VectorsConsidered / n, s.AfterHamming / n, s.AfterLowerBound / n, s.Reranked / n, s.BytesTouched / n,
            s.Passes / n, results.Max(x => x.Stats.Passes), results.Count(x => x.Stats.Strategy == "direct") / n,
            // An answer is short when it has fewer results than the ground truth has valid ids (up to k).
            Enumerable.Range(0, results.Length).Count(i => results[i].Ids.Length < gt[i].Take(options.K).Count(id => id >= 0)));
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
    public static (double Qps, double Recall) BruteForce(LoadedIndex index, VectorSet q, int[][] gt, int k, int count, CompiledFilter[]? filters = null)
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

    private static void Report(List<Point> points, double bfQps, double bfRecall, LoadedIndex index, int k)
    {
        var table = new Table().Border(TableBorder.Simple);
        foreach (var c in new[] { "CF", "H%", "R", $"recall@{k}", "QPS", "p50 µs", "p99 µs", "parts", "vectors", "after Hamming", "after LB", "re-ranked", "KB touched", "passes", "max passes", "direct", "short" })
            table.AddColumn(new TableColumn(c).RightAligned());
        foreach (var p in points)
            table.AddRow(p.Cf.ToString("G3"), p.H.ToString("G3"), p.R.ToString(), p.Recall.ToString("F4"), p.Qps.ToString("F0"),
                p.P50.ToString("F0"), p.P99.ToString("F0"), p.Partitions.ToString("F1"), p.Considered.ToString("F0"),
                p.AfterHamming.ToString("F0"), p.AfterLowerBound.ToString("F0"), p.Reranked.ToString("F0"), (p.Bytes / 1024).ToString("F0"),
                p.Passes.ToString("F2"), p.MaxPasses.ToString(), p.DirectShare.ToString("P1"), p.Short.ToString());
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
                : $"recall@{k} ≥ {target}: best {best.Qps:F0} QPS (recall {best.Recall:F4}, CF {best.Cf}, H {best.H}, R {best.R}, p50 {best.P50:F0} µs, p99 {best.P99:F0} µs)"
                    + (haveBaseline ? $" = {best.Qps / bfQps:F1}× brute force" : ""));
        }
    }

    private static void WriteCsv(string path, List<Point> points, double bfQps)
    {
        using var w = new StreamWriter(path);
        w.WriteLine("cf,h,r,recall,qps,p50_us,p99_us,partitions,considered,after_hamming,after_lb,reranked,bytes_touched,brute_force_qps,passes,max_passes,direct_share,short_answers");
        foreach (var p in points)
            w.WriteLine(string.Join(',', new object[] { p.Cf, p.H, p.R, p.Recall, p.Qps, p.P50, p.P99, p.Partitions, p.Considered, p.AfterHamming, p.AfterLowerBound, p.Reranked, p.Bytes, bfQps, p.Passes, p.MaxPasses, p.DirectShare, p.Short }
                .Select(o => Convert.ToString(o, CultureInfo.InvariantCulture))));
    }
}
