using Squash.Core.Vectors;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Spectre.Console;
using Squash.Cli.Datasets;

namespace Squash.Cli.Bench;

/// <summary>
/// Benchmarks the HTTP API (through the function tree): cold latency, warm latency at concurrency 1,
/// throughput at a chosen concurrency, invocations, bytes read, cache hit ratio and cost per million
/// queries — for each tree shape.
/// </summary>
public static class EndpointBench
{
    public sealed record Shape(int Branching, int Depth)
    {
        public int Nodes => Depth == 0 || IsAuto ? 0 : (int)Enumerable.Range(1, Depth).Sum(l => Math.Pow(Branching, l));
        /// <summary>No shape sent: the app chooses (its planner, or its configured b and L).</summary>
        public static readonly Shape Auto = new(0, 0);
        public bool IsAuto => Branching == 0;
        public int? SentBranching => IsAuto ? null : Branching;
        public int? SentDepth => IsAuto ? null : Depth;
        public override string ToString() => IsAuto ? "auto (the app's choice)" : $"b={Branching},L={Depth} ({Nodes} nodes)";
    }

    /// <summary>Search options sent with every query (null: the function app's defaults).</summary>
    public sealed record Options(double? CentroidFactor, double? HammingKeepPercent, int? RerankFactor);

    public sealed record Row(Shape Shape, double Recall, double WarmP50, double WarmP99, double Qps, double Invocations, double BytesRead,
        double HitRatio, double CostPerMillion, double MeteredCostPerMillion, double Passes = 1, double DirectShare = 0, int ShortAnswers = 0, double CertifiedShare = 0);

    /// <summary>The index's info (<c>GET /api/indexes/{index}</c>); an unknown index is a usage error naming --index.</summary>
    public static async Task<JsonElement> IndexInfoAsync(HttpClient http, string index, CancellationToken ct)
    {
        using var info = await http.GetAsync($"api/indexes/{index}", ct);
        if (info.StatusCode == HttpStatusCode.NotFound) throw new Commands.UsageException($"--index: the endpoint has no index named '{index}'");
        info.EnsureSuccessStatusCode();
        using var doc = JsonDocument.Parse(await info.Content.ReadAsStringAsync(ct));
        return doc.RootElement.Clone();
    }

    /// <summary>
    /// The index's dimensions and one past its largest row number when the info tells it: a build numbers its rows
    /// 0 … count − 1, and while no write was ever acknowledged that holds; after writes ingest numbers new rows past
    /// the build's (and never reuses one), so the bound is unknown (null).
    /// </summary>
    public static async Task<(int Dimensions, long? RowLimit)> IndexShapeAsync(Uri endpoint, string index, string? functionKey, CancellationToken ct)
    {
        using var http = Commands.EndpointFlags.Client(endpoint, functionKey, TimeSpan.FromMinutes(2));
        var info = await IndexInfoAsync(http, index, ct);
        bool written = info.TryGetProperty("latestSequence", out var latest) && latest.GetInt64() > 0;
        return (info.GetProperty("dimensions").GetInt32(), written ? null : info.GetProperty("count").GetInt64());
    }

    public static async Task<int> RunAsync(Uri endpoint, string index, VectorSet q, int[][] gt, int k, int concurrency, int coldSamples,
        IReadOnlyList<Shape> shapes, string outDir, CancellationToken ct, JsonElement[]? filters = null, Options? options = null, int? warmup = null, string? functionKey = null)
    {
        var searchOptions = options ?? new Options(null, null, null);
        using var http = Commands.EndpointFlags.Client(endpoint, functionKey, TimeSpan.FromMinutes(2));
        await IndexInfoAsync(http, index, ct);

        // Cold: every instance stopped before each sample (needs the local host's admin endpoint).
        var cold = new List<double>();
        for (int i = 0; i < coldSamples; i++)
        {
            var recycle = await http.PostAsync("admin/recycle", null, ct);
            if (!recycle.IsSuccessStatusCode) { Console.Error.WriteLine("cold starts: the endpoint cannot recycle instances (not the local host); skipped"); break; }
            var (ms, _) = await QueryAsync(http, searchOptions, index, q.Row(i % q.Count).ToArray(), k, shapes[0], ct, filters?[i % q.Count]);
            cold.Add(ms);
        }

        var rows = new List<Row>();
        foreach (var shape in shapes)
        {
            // Warm-up, then a timed pass at concurrency 1. By default the warm-up runs every measured query twice, so
            // the timed pass sees instances that already hold the partitions those queries visit: a partition's first
            // query fetches only its re-ranked rows and its second reads its vectors whole (OpenedIndex.WholeVectorsAfter).
            // A shorter warm-up leaves part of a large index unread, and the "warm" pass then measures reads
            // (bench/serverless.md). The timed pass's cache hit ratio is reported beside its latencies.
            int warmupQueries = warmup ?? 2 * q.Count;
            for (int i = 0; i < warmupQueries; i++) await QueryAsync(http, searchOptions, index, q.Row(i % q.Count).ToArray(), k, shape, ct, filters?[i % q.Count]);
            var meterBefore = await MeteredCostAsync(http, ct);
            var latencies = new LatencyRecorder();
            long hits = 0, total = 0;
            double invocations = 0, bytes = 0, cacheHits = 0, cacheLookups = 0, cost = 0, passes = 0, direct = 0, certified = 0;
            int shortAnswers = 0;
            for (int i = 0; i < q.Count; i++)
            {
                long t0 = Stopwatch.GetTimestamp();
                var (_, answer) = await QueryAsync(http, searchOptions, index, q.Row(i).ToArray(), k, shape, ct, filters?[i]);
                latencies.Record(Stopwatch.GetTimestamp() - t0);
                // Filtered ground truth pads with −1 when fewer than k vectors match.
                var truth = gt[i].Take(k).Where(id => id >= 0).ToHashSet();
                var ids = answer.GetProperty("results").EnumerateArray().Select(r => (int)r.GetProperty("row").GetInt64());
                hits += ids.Count(truth.Contains);
                total += truth.Count;
                var s = answer.GetProperty("stats");
                invocations += s.GetProperty("invocations").GetInt32();
                bytes += s.GetProperty("bytesRead").GetInt64();
                cacheHits += s.GetProperty("cacheHits").GetInt32();
                cacheLookups += s.GetProperty("cacheHits").GetInt32() + s.GetProperty("cacheMisses").GetInt32();
                cost += s.GetProperty("estimatedCostUsd").GetDouble();
                passes += s.GetProperty("passes").GetInt32();
                if (s.GetProperty("certified").GetBoolean()) certified++;
                if (s.TryGetProperty("strategy", out var strategy) && strategy.GetString() == "direct") direct++;
                // Short: fewer results than the ground truth says exist (min(k, matches)).
                if (answer.GetProperty("results").GetArrayLength() < Math.Min(k, gt[i].Count(id => id >= 0))) shortAnswers++;
            }
            var meterAfter = await MeteredCostAsync(http, ct);

            // Throughput: `concurrency` clients in parallel over the same queries.
            var clock = Stopwatch.StartNew();
            int next = -1;
            await Task.WhenAll(Enumerable.Range(0, concurrency).Select(async _ =>
            {
                int i;
                while ((i = Interlocked.Increment(ref next)) < q.Count) await QueryAsync(http, searchOptions, index, q.Row(i).ToArray(), k, shape, ct, filters?[i]);
            }));
            double qps = q.Count / clock.Elapsed.TotalSeconds;
            double n = q.Count;
            rows.Add(new Row(shape, total == 0 ? 1 : hits / (double)total, latencies.PercentileMicros(50) / 1000, latencies.PercentileMicros(99) / 1000, qps,
                invocations / n, bytes / n, cacheLookups == 0 ? 1 : cacheHits / cacheLookups, cost / n * 1e6,
                meterAfter is { } a && meterBefore is { } b ? (a - b) / n * 1e6 : double.NaN, passes / n, direct / n, shortAnswers, certified / n));
            Console.Error.WriteLine($"  {shape}: recall {rows[^1].Recall:F4}, warm p50 {rows[^1].WarmP50:F1} ms, {qps:F0} QPS at concurrency {concurrency}");
        }

        if (!AnsiConsole.Profile.Capabilities.Interactive) AnsiConsole.Profile.Width = 200;
        var table = new Table().Border(TableBorder.Simple);
        var columns = new List<string> { "tree", "recall", "warm p50 ms", "warm p99 ms", $"QPS (c={concurrency})", "invocations", "KB read", "cache hit", "$/M queries (est.)", "$/M queries (metered)", "certified" };
        if (filters is not null) columns.AddRange(["passes", "direct", "short answers"]);
        foreach (var c in columns) table.AddColumn(new TableColumn(c).RightAligned());
        foreach (var r in rows)
        {
            var cells = new List<string> { r.Shape.ToString(), r.Recall.ToString("F4"), r.WarmP50.ToString("F1"), r.WarmP99.ToString("F1"), r.Qps.ToString("F0"),
                r.Invocations.ToString("F1"), (r.BytesRead / 1024).ToString("F1"), r.HitRatio.ToString("P1"), r.CostPerMillion.ToString("F2"),
                double.IsNaN(r.MeteredCostPerMillion) ? "-" : r.MeteredCostPerMillion.ToString("F2"), r.CertifiedShare.ToString("P1") };
            if (filters is not null) cells.AddRange([r.Passes.ToString("F2"), r.DirectShare.ToString("P0"), r.ShortAnswers.ToString()]);
            table.AddRow(cells.ToArray());
        }
        AnsiConsole.Write(table);
        if (cold.Count > 0)
        {
            cold.Sort();
            Console.WriteLine($"cold queries (all instances stopped first, {shapes[0]}): p50 {cold[cold.Count / 2]:F0} ms, max {cold[^1]:F0} ms over {cold.Count} samples");
        }
        Console.WriteLine($"prices: {Squash.Functions.PriceTable.Describe(2048)}");
        Directory.CreateDirectory(outDir);
        var csv = Path.Combine(outDir, "endpoint-bench.csv");
        await File.WriteAllLinesAsync(csv, new[] { "branching,depth,nodes,recall,warm_p50_ms,warm_p99_ms,qps,invocations,bytes_read,cache_hit_ratio,cost_per_million_est,cost_per_million_metered,certified_share" }
            .Concat(rows.Select(r => string.Join(',', new object[] { r.Shape.Branching, r.Shape.Depth, r.Shape.Nodes, r.Recall, r.WarmP50, r.WarmP99, r.Qps, r.Invocations, r.BytesRead, r.HitRatio, r.CostPerMillion, r.MeteredCostPerMillion, r.CertifiedShare }
                .Select(o => Convert.ToString(o, CultureInfo.InvariantCulture))))), ct);
        PlotShapes(Path.Combine(outDir, "tree-shapes.png"), rows);
        Console.WriteLine($"wrote {csv} and {Path.Combine(outDir, "tree-shapes.png")}");
        return 0;
    }

    private static async Task<(double Ms, JsonElement Answer)> QueryAsync(HttpClient http, Options o, string index, float[] v, int k, Shape shape, CancellationToken ct,
        JsonElement? filter = null)
    {
        var clock = Stopwatch.StartNew();
        var response = await http.PostAsJsonAsync($"api/indexes/{index}/query", new
        {
            vector = v, k, filter,
            options = new { branching = shape.SentBranching, depth = shape.SentDepth, centroidFactor = o.CentroidFactor, hammingKeepPercent = o.HammingKeepPercent, rerankFactor = o.RerankFactor },
        }, ct);
        var body = await response.Content.ReadAsStringAsync(ct);
        if (!response.IsSuccessStatusCode) throw new IOException($"the endpoint answered {(int)response.StatusCode}: {body}");
        return (clock.Elapsed.TotalMilliseconds, JsonDocument.Parse(body).RootElement);
    }

    private static async Task<double?> MeteredCostAsync(HttpClient http, CancellationToken ct)
    {
        var r = await http.GetAsync("admin/instances", ct);
        if (!r.IsSuccessStatusCode) return null;
        using var doc = JsonDocument.Parse(await r.Content.ReadAsStringAsync(ct));
        return doc.RootElement.GetProperty("totalCostUsd").GetDouble();
    }

    private static void PlotShapes(string path, IReadOnlyList<Row> rows)
    {
        var plot = new ScottPlot.Plot();
        var xs = rows.Select(r => (double)Math.Max(1, r.Shape.Nodes)).ToArray();
        var lat = plot.Add.Scatter(xs, rows.Select(r => r.WarmP50).ToArray());
        lat.LegendText = "warm p50 latency (ms)";
        var cost = plot.Add.Scatter(xs, rows.Select(r => r.CostPerMillion).ToArray());
        cost.LegendText = "est. $ per million queries";
        plot.Title("tree shape sweep (local function host)");
        plot.XLabel("tree nodes (b + b² + … + b^L)");
        plot.ShowLegend();
        plot.SavePng(path, 900, 600);
    }
}
