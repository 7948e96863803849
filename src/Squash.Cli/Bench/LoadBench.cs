using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json;
using Spectre.Console;
using Squash.Core.Vectors;

namespace Squash.Cli.Bench;

/// <summary>
/// Cost against load: open-loop Poisson arrivals at each rate (queries are sent when they arrive, whether or not earlier
/// ones have answered), and a closed loop of <c>--concurrency</c> clients for "saturation". Per rate: cost per million
/// queries from the host's meter (its change over the rate's run divided by the queries: activity periods billed as
/// Flex bills them, executions, storage operations), the answers' own marginal estimate beside it, latency p50/p99,
/// instances and activity periods.
/// </summary>
public static class LoadBench
{
    /// <summary>A rate to run: arrivals per second, or null for saturation (closed loop).</summary>
    public sealed record Rate(double? Qps)
    {
        public override string ToString() => Qps is { } q ? q.ToString("0.###", CultureInfo.InvariantCulture) : "saturation";
    }

    public sealed record Row(EndpointBench.Shape Shape, Rate Rate, int Queries, double Seconds, double AchievedQps, double Recall, double P50, double P99,
        double MeteredPerMillion, double ComputePerMillion, double ExecutionsPerMillion, double StoragePerMillion, double EstimatedPerMillion,
        int Instances, int Periods, int Failures, string Chosen = "", double TailServerMs = double.NaN, int TailCold = 0);

    /// <summary>Parses "0.1,1,10,saturation" (also "sat"); every rate must be positive and finite.</summary>
    public static Rate[] ParseRates(string text)
    {
        var rates = new List<Rate>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (part is "saturation" or "sat") { rates.Add(new Rate(null)); continue; }
            if (!double.TryParse(part, NumberStyles.Float, CultureInfo.InvariantCulture, out double q) || !double.IsFinite(q) || q <= 0 || q > 100_000)
                throw new Commands.UsageException($"--load: '{part}' is not a rate in queries per second (0 < rate ≤ 100000) or 'saturation'");
            rates.Add(new Rate(q));
        }
        if (rates.Count == 0) throw new Commands.UsageException("--load needs at least one rate, e.g. 0.1,1,10,saturation");
        return rates.ToArray();
    }

    public static async Task<int> RunAsync(Uri endpoint, string index, VectorSet q, int[][] gt, int k, IReadOnlyList<EndpointBench.Shape> shapes, Rate[] rates,
        TimeSpan duration, int minQueries, int concurrency, int warmup, EndpointBench.Options options, string outDir, string? functionKey, CancellationToken ct)
    {
        using var http = Commands.EndpointFlags.Client(endpoint, functionKey, TimeSpan.FromMinutes(2));
        await EndpointBench.IndexInfoAsync(http, index, ct);
        if (await MeterAsync(http, ct) is null)
            throw new Commands.UsageException("--load needs the local host's meter (GET /admin/instances): run it against `squash serve`");

        var rows = new List<Row>();
        foreach (var shape in shapes)
        {
            // Warm-up at concurrency 1: the instances hold what the queries visit, so the rates compare billing, not reads.
            for (int i = 0; i < warmup; i++) await SendAsync(http, index, q.Row(i % q.Count).ToArray(), k, shape, options, ct);
            foreach (var rate in rates)
            {
                // The same arrivals (seed 42) for every shape at a rate, so that shapes are compared on one sequence.
                var row = await RunRateAsync(http, index, q, gt, k, shape, rate, duration, minQueries, concurrency, options, new Random(42), ct);
                rows.Add(row);
                Console.Error.WriteLine($"  {shape} at {rate} QPS: {row.Queries} queries in {row.Seconds:F1} s, ${row.MeteredPerMillion:F2}/M metered, p50 {row.P50:F1} ms, p99 {row.P99:F1} ms (slowest 1 %: {row.TailServerMs:F1} ms of it in the coordinator, {row.TailCold} cold); shapes run: {row.Chosen}");
            }
        }
        Print(rows);
        Directory.CreateDirectory(outDir);
        var csv = Path.Combine(outDir, "load.csv");
        await File.WriteAllLinesAsync(csv, new[] { "branching,depth,nodes,rate,queries,seconds,achieved_qps,recall,p50_ms,p99_ms,metered_per_million,compute_per_million,executions_per_million,storage_per_million,estimated_per_million,instances,activity_periods,failures,shapes_run,slowest_1pct_server_ms,slowest_1pct_cold" }
            .Concat(rows.Select(r => string.Join(',', new object[] { r.Shape.Branching, r.Shape.Depth, r.Shape.Nodes, r.Rate.ToString(), r.Queries, r.Seconds, r.AchievedQps, r.Recall, r.P50, r.P99,
                r.MeteredPerMillion, r.ComputePerMillion, r.ExecutionsPerMillion, r.StoragePerMillion, r.EstimatedPerMillion, r.Instances, r.Periods, r.Failures, r.Chosen, r.TailServerMs, r.TailCold }
                .Select(o => Convert.ToString(o, CultureInfo.InvariantCulture))))), ct);
        var png = Path.Combine(outDir, "cost-vs-load.png");
        PlotCurves(png, rows);
        Console.WriteLine($"prices: {Squash.Functions.PriceTable.Describe(2048)}");
        Console.WriteLine($"wrote {csv} and {png}");
        return rows.Any(r => r.Failures > 0) ? 1 : 0;
    }

    private static async Task<Row> RunRateAsync(HttpClient http, string index, VectorSet q, int[][] gt, int k, EndpointBench.Shape shape, Rate rate,
        TimeSpan duration, int minQueries, int concurrency, EndpointBench.Options options, Random random, CancellationToken ct)
    {
        var before = (await MeterAsync(http, ct))!.Value;
        var latencies = new ConcurrentBag<double>();
        // Per query: the time seen here and inside the coordinator (stats.milliseconds), and whether it met a cold instance,
        // to tell where a p99 went: in the app, or outside it (the host's front end, this client, the machine).
        var timed = new ConcurrentBag<(double ClientMs, double ServerMs, bool Cold)>();
        var chosen = new ConcurrentDictionary<string, int>();
        long hits = 0, truthTotal = 0, failures = 0;
        double estimated = 0;
        var gate = new object();
        int sent = 0;
        async Task One(int i)
        {
            long t0 = Stopwatch.GetTimestamp();
            try
            {
                var answer = await SendAsync(http, index, q.Row(i % q.Count).ToArray(), k, shape, options, ct);
                latencies.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
                var truth = gt[i % q.Count].Take(k).Where(id => id >= 0).ToHashSet();
                int found = answer.GetProperty("results").EnumerateArray().Count(r => truth.Contains((int)r.GetProperty("row").GetInt64()));
                var stats = answer.GetProperty("stats");
                timed.Add((Stopwatch.GetElapsedTime(t0).TotalMilliseconds, stats.GetProperty("milliseconds").GetDouble(), stats.GetProperty("coldInstances").GetInt32() > 0));
                double cost = stats.GetProperty("estimatedCostUsd").GetDouble();
                if (stats.TryGetProperty("shape", out var used))
                    chosen.AddOrUpdate($"b={used.GetProperty("branching").GetInt32()},L={used.GetProperty("depth").GetInt32()}", 1, (_, c) => c + 1);
                lock (gate) { hits += found; truthTotal += truth.Count; estimated += cost; }
            }
            catch (Exception e) when (e is IOException or HttpRequestException or TaskCanceledException && !ct.IsCancellationRequested)
            {
                Interlocked.Increment(ref failures);
                Console.Error.WriteLine($"  query failed: {e.Message}");
            }
        }

        var clock = Stopwatch.StartNew();
        if (rate.Qps is { } qps)
        {
            // Open loop: exponential gaps (a Poisson process) from a fixed seed; a query goes out when it arrives.
            var inFlight = new List<Task>();
            double next = 0;
            int target = Math.Max(minQueries, (int)Math.Ceiling(qps * duration.TotalSeconds));
            while (sent < target)
            {
                double wait = next - clock.Elapsed.TotalSeconds;
                if (wait > 0) await Task.Delay(TimeSpan.FromSeconds(wait), ct);
                inFlight.Add(One(sent++));
                next += -Math.Log(1 - random.NextDouble()) / qps;
            }
            await Task.WhenAll(inFlight);
        }
        else
        {
            await Task.WhenAll(Enumerable.Range(0, concurrency).Select(async _ =>
            {
                while (clock.Elapsed < duration || Volatile.Read(ref sent) < minQueries)
                    await One(Interlocked.Increment(ref sent) - 1);
            }));
        }
        double seconds = clock.Elapsed.TotalSeconds;
        var after = (await MeterAsync(http, ct))!.Value;
        int n = Math.Max(1, sent - (int)failures);
        var sorted = latencies.Order().ToArray();
        double Pct(double p) => sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p / 100 * sorted.Length) - 1)];
        // The slowest 1 % (at least one query): their mean time inside the coordinator, and how many met a cold instance.
        var tail = timed.OrderByDescending(t => t.ClientMs).Take(Math.Max(1, timed.Count / 100)).ToArray();
        return new Row(shape, rate, sent, seconds, sent / seconds, truthTotal == 0 ? 1 : hits / (double)truthTotal, Pct(50), Pct(99),
            (after.Total - before.Total) / n * 1e6, (after.Compute - before.Compute) / n * 1e6, (after.Executions - before.Executions) / n * 1e6,
            (after.Storage - before.Storage) / n * 1e6, estimated / n * 1e6, after.Instances, after.Periods - before.Periods, (int)failures,
            string.Join(' ', chosen.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key}×{kv.Value}")),
            tail.Length == 0 ? double.NaN : tail.Average(t => t.ServerMs), tail.Count(t => t.Cold));
    }

    private static async Task<JsonElement> SendAsync(HttpClient http, string index, float[] v, int k, EndpointBench.Shape shape, EndpointBench.Options o, CancellationToken ct)
    {
        using var response = await http.PostAsJsonAsync($"api/indexes/{index}/query", new
        {
            vector = v, k,
            options = new { branching = shape.SentBranching, depth = shape.SentDepth, centroidFactor = o.CentroidFactor, hammingKeepPercent = o.HammingKeepPercent, rerankFactor = o.RerankFactor },
        }, ct);
        var body = await response.Content.ReadAsStringAsync(ct);
        if (!response.IsSuccessStatusCode) throw new IOException($"the endpoint answered {(int)response.StatusCode}: {body}");
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    private readonly record struct Meter(double Total, double Compute, double Executions, double Storage, int Periods, int Instances);

    private static async Task<Meter?> MeterAsync(HttpClient http, CancellationToken ct)
    {
        using var r = await http.GetAsync("admin/instances", ct);
        if (!r.IsSuccessStatusCode) return null;
        using var doc = JsonDocument.Parse(await r.Content.ReadAsStringAsync(ct));
        var root = doc.RootElement;
        if (!root.TryGetProperty("totalComputeUsd", out var compute)) return null;
        return new Meter(root.GetProperty("totalCostUsd").GetDouble(), compute.GetDouble(), root.GetProperty("totalExecutionsUsd").GetDouble(),
            root.GetProperty("totalStorageUsd").GetDouble(), root.GetProperty("totalActivityPeriods").GetInt32(),
            root.GetProperty("pools").EnumerateArray().Sum(p => p.GetProperty("instances").GetInt32()));
    }

    private static void Print(IReadOnlyList<Row> rows)
    {
        if (!AnsiConsole.Profile.Capabilities.Interactive) AnsiConsole.Profile.Width = 220;
        var table = new Table().Border(TableBorder.Simple);
        foreach (var c in new[] { "tree", "rate QPS", "queries", "achieved QPS", "recall", "p50 ms", "p99 ms", "$/M metered", "compute", "executions", "storage", "$/M est. (stats)", "instances", "periods", "failed" })
            table.AddColumn(new TableColumn(c).RightAligned());
        foreach (var r in rows)
            table.AddRow(r.Shape.ToString(), r.Rate.ToString(), r.Queries.ToString(), r.AchievedQps.ToString("F1"), r.Recall.ToString("F4"), r.P50.ToString("F1"), r.P99.ToString("F1"),
                r.MeteredPerMillion.ToString("F2"), r.ComputePerMillion.ToString("F2"), r.ExecutionsPerMillion.ToString("F2"), r.StoragePerMillion.ToString("F3"),
                r.EstimatedPerMillion.ToString("F2"), r.Instances.ToString(), r.Periods.ToString(), r.Failures.ToString());
        AnsiConsole.Write(table);
    }

    /// <summary>Metered cost per million queries against achieved QPS, one curve per tree shape (both axes log10).</summary>
    private static void PlotCurves(string path, IReadOnlyList<Row> rows)
    {
        var plot = new ScottPlot.Plot();
        foreach (var group in rows.GroupBy(r => r.Shape))
        {
            var points = group.Where(r => r.MeteredPerMillion > 0 && r.AchievedQps > 0).OrderBy(r => r.AchievedQps).ToArray();
            if (points.Length == 0) continue;
            var s = plot.Add.Scatter(points.Select(r => Math.Log10(r.AchievedQps)).ToArray(), points.Select(r => Math.Log10(r.MeteredPerMillion)).ToArray());
            s.LegendText = group.Key.ToString();
        }
        var labels = new ScottPlot.TickGenerators.NumericAutomatic { LabelFormatter = v => Math.Pow(10, v).ToString("G3", CultureInfo.InvariantCulture) };
        plot.Axes.Bottom.TickGenerator = labels;
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { LabelFormatter = v => "$" + Math.Pow(10, v).ToString("G3", CultureInfo.InvariantCulture) };
        plot.Title("cost per million queries against load (local function host, Flex billing)");
        plot.XLabel("queries per second (log)");
        plot.YLabel("$ per million queries, metered (log)");
        plot.ShowLegend();
        // The curves fall to the right: the upper right corner is where they are not.
        plot.Legend.Alignment = ScottPlot.Alignment.UpperRight;
        plot.SavePng(path, 900, 600);
    }
}
