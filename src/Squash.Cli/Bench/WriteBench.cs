using System.Buffers;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Squash.Cli.Commands;
using Squash.Cli.Datasets;
using Squash.Core;
using Squash.Core.Vectors;
using Squash.Index.Build;
using Squash.Search;
using Squash.Storage;
using Squash.Storage.Writes;

namespace Squash.Cli.Bench;

/// <summary>
/// <c>squash bench-writes</c>: the write figures of issue #15 against a running <c>squash serve</c> (HTTP API, the queue
/// ingest function, Azurite). An index built from the first N vectors of --base, then in order:
/// (1) replace 10 % of its rows (a random permutation of row ids, vectors from --pool) by concurrent batches as fast as the
/// API acknowledges them: write throughput, ack p50/p99 under that load, and how long until the watermark covers them (the
/// sustained ingest rate); recall@k of eventual queries against brute force over the final data, next to a fresh build of
/// the same data queried the same way; (2) the same up to 50 % replaced; (3) ack latency of sequential small batches;
/// (4) lag from ack to indexed at a fixed write rate; (5) strong-read overhead with a tail held back by taking the ingest
/// lease (the ingest function finds it held and waits), eventual against strong p50.
/// </summary>
public static class WriteBench
{
    public static Command Create()
    {
        var endpoint = new Option<string>("--endpoint") { Description = "The API of a running squash serve (e.g. http://127.0.0.1:7091).", Required = true };
        var store = new Option<string>("--store") { Description = "The store the server serves (azure:… or dir:…): for the ingest lease and the fresh builds.", Required = true };
        var container = new Option<string>("--container") { Description = "Blob container for --store azure:….", DefaultValueFactory = _ => IndexLocation.DefaultContainer };
        var index = new Option<string>("--index") { Description = "The index, built without ids from --base.", Required = true };
        var baseFile = new Option<string>("--base") { Description = "The vectors the index was built from (row i is id \"i\").", Required = true };
        var pool = new Option<string>("--pool") { Description = "Replacement vectors (at least half as many as --base), drawn in order.", Required = true };
        var queries = new Option<string>("--queries") { Description = "Query vectors for recall and the read overhead.", Required = true };
        var k = new Option<int>("--k") { Description = "Neighbours per query for recall.", DefaultValueFactory = _ => 10 };
        var batch = new Option<int>("--batch") { Description = "Upserts per request in the replacement phases (1..1000).", DefaultValueFactory = _ => 1000 };
        var concurrency = new Option<int>("--concurrency") { Description = "Requests in flight in the replacement phases.", DefaultValueFactory = _ => 4 };
        var ackBatches = new Option<int>("--ack-batches") { Description = "Sequential requests timed for the ack latency.", DefaultValueFactory = _ => 200 };
        var ackBatch = new Option<int>("--ack-batch") { Description = "Upserts per request for the ack latency and the lag.", DefaultValueFactory = _ => 100 };
        var rate = new Option<int>("--rate") { Description = "Upserts per second while the lag is measured.", DefaultValueFactory = _ => 1000 };
        var lagSeconds = new Option<int>("--lag-seconds") { Description = "How long the fixed-rate writes run.", DefaultValueFactory = _ => 30 };
        var tail = new Option<int>("--tail") { Description = "Upserts left in the log tail for the strong-read overhead.", DefaultValueFactory = _ => 10_000 };
        var readQueries = new Option<int>("--read-queries") { Description = "Half the queries per consistency for the read overhead (2 × this pairs: one vector eventual and strong back to back).", DefaultValueFactory = _ => 200 };
        var fresh = new Option<bool>("--no-fresh") { Description = "Skip the fresh builds (recall of the ingested index only)." };
        var timeout = new Option<int>("--timeout") { Description = "Minutes to wait for the watermark to reach the last write, per phase.", DefaultValueFactory = _ => 20 };
        var seed = new Option<int>("--seed") { Description = "Seed of the replaced rows' order.", DefaultValueFactory = _ => 15 };
        var phases = new Option<string>("--phases") { Description = "Phases to run, comma-separated, in this order: replace (10 %, 50 %, recall), rebuild (up to 60 %, the full rebuild ingest queues, writes while it runs, recall before and after), ack, lag, strong.", DefaultValueFactory = _ => "replace,ack,lag,strong" };
        var encoding = new Option<string>("--vector-encoding") { Description = "How upserts carry their vectors: base64 (little-endian float32) or json (arrays of numbers).", DefaultValueFactory = _ => "base64" };
        var cmd = new Command("bench-writes", "Benchmark writes through the HTTP API of squash serve: sustained ingest, ack latency, lag to indexed, strong-read overhead, recall after replacing 10 % and 50 %.")
        {
            endpoint, store, container, index, baseFile, pool, queries, k, batch, concurrency, ackBatches, ackBatch, rate, lagSeconds, tail, readQueries, fresh, timeout, seed, phases, encoding,
        };
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            var settings = new Settings(pr.GetValue(index)!, pr.GetValue(k), pr.GetValue(batch), pr.GetValue(concurrency), pr.GetValue(ackBatches), pr.GetValue(ackBatch),
                pr.GetValue(rate), pr.GetValue(lagSeconds), pr.GetValue(tail), pr.GetValue(readQueries), !pr.GetValue(fresh), TimeSpan.FromMinutes(pr.GetValue(timeout)), pr.GetValue(seed),
                pr.GetValue(phases)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet(StringComparer.Ordinal),
                pr.GetValue(encoding) == "base64");
            CliErrors.Require(pr.GetValue(encoding) is "base64" or "json", $"--vector-encoding: expected base64 or json, got '{pr.GetValue(encoding)}'");
            var unknown = settings.Phases.Except(["replace", "rebuild", "ack", "lag", "strong"]).ToArray();
            CliErrors.Require(settings.Phases.Count > 0 && unknown.Length == 0, $"--phases: expected some of replace, rebuild, ack, lag, strong, got '{pr.GetValue(phases)}'");
            CliErrors.Require(settings.K is >= 1 and <= 100, $"--k must be 1..100, got {settings.K}");
            CliErrors.Require(settings.Batch is >= 1 and <= 1000, $"--batch must be 1..1000, got {settings.Batch}");
            CliErrors.Require(settings.AckBatch is >= 1 and <= 1000, $"--ack-batch must be 1..1000, got {settings.AckBatch}");
            CliErrors.Require(settings.Concurrency is >= 1 and <= 64, $"--concurrency must be 1..64, got {settings.Concurrency}");
            // One check per flag, so that the message names the flag that was wrong and its value.
            foreach (var (flag, value) in new[] { ("--ack-batches", settings.AckBatches), ("--rate", settings.Rate), ("--lag-seconds", settings.LagSeconds),
                         ("--tail", settings.Tail), ("--read-queries", settings.ReadQueries), ("--timeout", pr.GetValue(timeout)) })
                CliErrors.Require(value >= 1, $"{flag} must be ≥ 1, got {value}");
            foreach (var (flag, path) in new[] { ("--base", pr.GetValue(baseFile)!), ("--pool", pr.GetValue(pool)!), ("--queries", pr.GetValue(queries)!) })
                CliErrors.RequireFile(flag, path);
            var data = VectorFile.Read(pr.GetValue(baseFile)!);
            var replacements = VectorFile.Read(pr.GetValue(pool)!);
            var q = VectorFile.Read(pr.GetValue(queries)!);
            CliErrors.Require(replacements.Dimensions == data.Dimensions && q.Dimensions == data.Dimensions, "--base, --pool and --queries must have the same dimensions");
            // The replacement phases draw distinct vectors; the later phases go round the pool again.
            CliErrors.Require(replacements.Count >= data.Count / 2, $"--pool has {replacements.Count:N0} vectors; replacing half of --base takes {data.Count / 2:N0}");
            var blobs = IndexLocation.OpenStore(pr.GetValue(store)!, pr.GetValue(container)!);
            using var http = EndpointFlags.Client(EndpointFlags.ParseEndpoint(pr.GetValue(endpoint)!), null, TimeSpan.FromMinutes(2));
            await new Runner(http, blobs, settings, data, replacements, q).RunAsync(ct);
            return 0;
        }));
        return cmd;
    }

    private sealed record Settings(string Index, int K, int Batch, int Concurrency, int AckBatches, int AckBatch, int Rate, int LagSeconds, int Tail, int ReadQueries,
        bool Fresh, TimeSpan Timeout, int Seed, IReadOnlySet<string> Phases, bool Base64);

    private sealed class Runner(HttpClient http, IBlobStore blobs, Settings s, VectorSet data, VectorSet pool, VectorSet queries)
    {
        private readonly float[] _current = (float[])data.Data.Clone();
        private readonly int _dims = data.Dimensions;
        private int _poolNext;

        public async Task RunAsync(CancellationToken ct)
        {
            Console.WriteLine($"index {s.Index}: {data.Count:N0} × {_dims}; endpoint {http.BaseAddress}");
            var (indexed0, latest0) = await SequencesAsync(s.Index, ct);
            if (indexed0 != latest0) throw new UsageException($"--index: the index has writes waiting (indexed {indexed0}, latest {latest0}); start from a fresh build");

            // Rows replaced, in a fixed random order: the first 10 %, then up to 50 %.
            var order = Enumerable.Range(0, data.Count).ToArray();
            new Random(s.Seed).Shuffle(order);
            int tenth = data.Count / 10, half = data.Count / 2;
            if (s.Phases.Contains("replace"))
            {
                var truth = GroundTruth.Compute(data, queries, s.K, Metric.L2, cancellationToken: ct);
                Console.WriteLine($"recall@{s.K} as built ({queries.Count} queries, default options): {await EndpointRecallAsync(s.Index, truth, null, ct)}");
                await ReplaceAsync("replace 10 %", order[..tenth], ct);
                await RecallAsync("after 10 % replaced", "fresh10", ct);
                await ReplaceAsync("replace 10 → 50 %", order[tenth..half], ct);
                await RecallAsync("after 50 % replaced", "fresh50", ct);
            }
            if (s.Phases.Contains("rebuild")) await RebuildAsync(order, s.Phases.Contains("replace") ? half : 0, ct);
            if (s.Phases.Contains("ack")) await AckLatencyAsync(ct);
            if (s.Phases.Contains("lag")) await LagAsync(ct);
            if (s.Phases.Contains("strong")) await StrongOverheadAsync(ct);
        }

        /// <summary>Upserts of existing row ids with pool vectors, as JSON (vectors in base64 or as arrays); the expected data follows them.</summary>
        private byte[] Body(ReadOnlySpan<int> rows)
        {
            var buffer = new ArrayBufferWriter<byte>(rows.Length * _dims * 12 + 64);
            using (var w = new Utf8JsonWriter(buffer))
            {
                w.WriteStartObject();
                w.WriteStartArray("upserts");
                foreach (int row in rows)
                {
                    var v = pool.Row(_poolNext++ % pool.Count);
                    v.CopyTo(_current.AsSpan(row * _dims, _dims));
                    w.WriteStartObject();
                    w.WriteString("id", row.ToString(CultureInfo.InvariantCulture));
                    if (s.Base64 && BitConverter.IsLittleEndian) w.WriteBase64String("vector", System.Runtime.InteropServices.MemoryMarshal.AsBytes(v));
                    else
                    {
                        w.WriteStartArray("vector");
                        foreach (float x in v) w.WriteNumberValue(x);
                        w.WriteEndArray();
                    }
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            return buffer.WrittenSpan.ToArray();
        }

        private async Task<(long Sequence, double Ms)> WriteAsync(byte[] body, CancellationToken ct)
        {
            long t0 = Stopwatch.GetTimestamp();
            using var content = new ByteArrayContent(body);
            content.Headers.ContentType = new("application/json");
            using var response = await http.PostAsync($"api/indexes/{s.Index}/vectors", content, ct);
            var text = await response.Content.ReadAsStringAsync(ct);
            if (!response.IsSuccessStatusCode) throw new IOException($"a write was answered {(int)response.StatusCode}: {text}");
            double ms = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            using var doc = JsonDocument.Parse(text);
            return (doc.RootElement.GetProperty("sequence").GetInt64(), ms);
        }

        private async Task<(long Indexed, long Latest)> SequencesAsync(string index, CancellationToken ct)
        {
            using var response = await http.GetAsync($"api/indexes/{index}", ct);
            if (response.StatusCode == HttpStatusCode.NotFound) throw new UsageException($"--index: the endpoint has no index named '{index}'");
            var text = await response.Content.ReadAsStringAsync(ct);
            if (!response.IsSuccessStatusCode) throw new IOException($"GET api/indexes/{index} was answered {(int)response.StatusCode}: {text}");
            using var doc = JsonDocument.Parse(text);
            return (doc.RootElement.GetProperty("indexedSequence").GetInt64(), doc.RootElement.GetProperty("latestSequence").GetInt64());
        }

        /// <summary>Polls the index until its watermark reaches <paramref name="sequence"/>; the time it did, from the stopwatch's start.</summary>
        private async Task<double> WaitIndexedAsync(long sequence, Stopwatch clock, CancellationToken ct)
        {
            var deadline = clock.Elapsed + s.Timeout;
            while (true)
            {
                var (indexed, _) = await SequencesAsync(s.Index, ct);
                if (indexed >= sequence) return clock.Elapsed.TotalSeconds;
                if (clock.Elapsed > deadline) throw new TimeoutException($"the watermark stayed at {indexed} for {s.Timeout.TotalMinutes:0} min, short of {sequence}: is the ingest function running?");
                await Task.Delay(100, ct);
            }
        }

        private async Task ReplaceAsync(string name, int[] rows, CancellationToken ct)
        {
            var bodies = rows.Chunk(s.Batch).Select(c => Body(c)).ToArray();
            var acks = new double[bodies.Length];
            long last = 0;
            int next = -1;
            var clock = Stopwatch.StartNew();
            await Task.WhenAll(Enumerable.Range(0, s.Concurrency).Select(async _ =>
            {
                int i;
                while ((i = Interlocked.Increment(ref next)) < bodies.Length)
                {
                    var (sequence, ms) = await WriteAsync(bodies[i], ct);
                    acks[i] = ms;
                    lock (acks) last = Math.Max(last, sequence);
                }
            }));
            double written = clock.Elapsed.TotalSeconds;
            double indexed = await WaitIndexedAsync(last, clock, ct);
            Console.WriteLine($"{name}: {rows.Length:N0} upserts in {bodies.Length} requests of ≤ {s.Batch}, concurrency {s.Concurrency}: " +
                $"acknowledged in {written:F1} s ({rows.Length / written:N0} vectors/s; ack p50 {Percentile(acks, 0.5):F0} ms, p99 {Percentile(acks, 0.99):F0} ms), " +
                $"indexed after {indexed:F1} s ({rows.Length / indexed:N0} vectors/s sustained)");
        }

        private async Task<RecallFigure> RecallAsync(string name, string? freshSuffix, CancellationToken ct)
        {
            var final = new VectorSet(_current, data.Count, _dims);
            var truth = GroundTruth.Compute(final, queries, s.K, Metric.L2, cancellationToken: ct);
            var ingested = await EndpointRecallAsync(s.Index, truth, null, ct);
            string line = $"recall@{s.K} {name} ({queries.Count} queries, default options, eventual): ingested {ingested}";
            if (s.Fresh && freshSuffix is not null)
            {
                var freshName = $"{s.Index}-{freshSuffix}";
                var clock = Stopwatch.StartNew();
                await CalibratedBuild.BuildAndPublishAsync(new IndexStore(blobs, freshName), (float[])_current.Clone(), data.Count, _dims, new IndexBuildOptions(), cancellationToken: ct);
                double built = clock.Elapsed.TotalSeconds;
                var fresh = await EndpointRecallAsync(freshName, truth, null, ct);
                // The same plan on both separates the index (clustering, codes) from the calibration that chose the plan.
                var ingestedAtFreshPlan = await EndpointRecallAsync(s.Index, truth, (fresh.CentroidFactor, fresh.RerankFactor, fresh.MaxPartitions), ct);
                line += $"; fresh build {fresh} (built in {built:F0} s), difference {ingested.Recall - fresh.Recall:+0.0000;-0.0000}; " +
                    $"ingested at the fresh build's plan {ingestedAtFreshPlan.Recall:F4}";
            }
            Console.WriteLine(line);
            return ingested;
        }

        /// <summary>The index's last full rebuild as GET /api/indexes/{index} reports it: build id, status and the log position it covers.</summary>
        private async Task<(string BuildId, string Status, long Covers)?> RebuildStatusAsync(CancellationToken ct)
        {
            using var response = await http.GetAsync($"api/indexes/{s.Index}", ct);
            var text = await response.Content.ReadAsStringAsync(ct);
            if (!response.IsSuccessStatusCode) throw new IOException($"GET api/indexes/{s.Index} was answered {(int)response.StatusCode}: {text}");
            using var doc = JsonDocument.Parse(text);
            if (!doc.RootElement.TryGetProperty("rebuild", out var r)) return null;
            return (r.GetProperty("buildId").GetString()!, r.GetProperty("status").GetString()!, r.GetProperty("coversSequence").GetInt64());
        }

        /// <summary>
        /// Replaces rows up to 60 % (past the server's Squash:RebuildShare), measures recall before the rebuild ingest then
        /// queues is published, writes at --rate in requests of --ack-batch while it runs (the lag of each: ack → indexed),
        /// and measures recall once it is published, next to a fresh build of the same rows.
        /// </summary>
        private async Task RebuildAsync(int[] order, int start, CancellationToken ct)
        {
            int sixty = data.Count * 6 / 10;
            var clock = Stopwatch.StartNew();
            await ReplaceAsync($"replace {100L * start / data.Count} → 60 %", order[start..sixty], ct);
            // The run that indexed the last write queues the rebuild after its publish (it writes the rows' snapshot first).
            var queued = await RebuildStatusAsync(ct);
            for (var wait = Stopwatch.StartNew(); queued is null && wait.Elapsed < TimeSpan.FromMinutes(2); queued = await RebuildStatusAsync(ct)) await Task.Delay(250, ct);
            Console.WriteLine(queued is { } q0 ? $"full rebuild {q0.BuildId}: {q0.Status}, covers sequence {q0.Covers}" : "no full rebuild was queued (is Squash:RebuildShare off or above 0.6?)");
            if (queued is null) return;
            var before = await RecallAsync("after 60 % replaced, before the rebuild is published", null, ct);
            var stillBefore = await RebuildStatusAsync(ct);
            if (stillBefore?.Status == "published") Console.WriteLine("(the rebuild was published before that measurement ended: the figure may mix both)");

            // Writes at fixed times while the rebuild runs, until it is published (or ends otherwise), and a little after.
            var random = new Random(s.Seed + 4);
            double interval = (double)s.AckBatch / s.Rate;
            var acked = new List<(long Sequence, double At)>();
            var indexedAt = new SortedList<long, double>();
            var lag = Stopwatch.StartNew();
            double? publishedAt = null;
            string status = stillBefore?.Status ?? queued.Value.Status;
            using var gate = new SemaphoreSlim(8);
            var writes = new List<Task>();
            var poller = Task.Run(async () =>
            {
                long seen = -1;
                while (lag.Elapsed < s.Timeout)
                {
                    var (indexed, _) = await SequencesAsync(s.Index, ct);
                    if (indexed > seen) { lock (indexedAt) indexedAt[indexed] = lag.Elapsed.TotalSeconds; seen = indexed; }
                    var now = await RebuildStatusAsync(ct);
                    status = now?.Status ?? status;
                    if (status is "published" or "failed" or "cancelled" or "superseded")
                    {
                        publishedAt ??= lag.Elapsed.TotalSeconds;
                        if (lag.Elapsed.TotalSeconds > publishedAt + 5) return;
                    }
                    await Task.Delay(50, ct);
                }
                throw new TimeoutException($"the rebuild stayed {status} for {s.Timeout.TotalMinutes:0} min");
            }, ct);
            for (int i = 0; !poller.IsCompleted; i++)
            {
                var due = TimeSpan.FromSeconds(i * interval) - lag.Elapsed;
                if (due > TimeSpan.Zero) await Task.Delay(due, ct);
                if (poller.IsCompleted) break;
                await gate.WaitAsync(ct);
                var body = Body(RandomRows(random, s.AckBatch));
                writes.Add(Task.Run(async () =>
                {
                    try
                    {
                        var (sequence, _) = await WriteAsync(body, ct);
                        lock (acked) acked.Add((sequence, lag.Elapsed.TotalSeconds));
                    }
                    finally { gate.Release(); }
                }, ct));
            }
            await poller;
            await Task.WhenAll(writes);
            long last = acked.Count == 0 ? 0 : acked.Max(a => a.Sequence);
            await WaitIndexedAsync(last, lag, ct);
            var (indexedNow, _) = await SequencesAsync(s.Index, ct);
            lock (indexedAt) indexedAt[indexedNow] = lag.Elapsed.TotalSeconds;
            var lags = acked.Select(a => indexedAt.First(w => w.Key >= a.Sequence).Value - a.At).ToArray();
            string times = "";
            using (var response = await http.GetAsync($"api/indexes/{s.Index}/builds/{queued.Value.BuildId}", ct))
            {
                if (response.IsSuccessStatusCode)
                {
                    using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync(ct));
                    var job = doc.RootElement;
                    if (job.TryGetProperty("finishedUtc", out var f) && job.TryGetProperty("createdUtc", out var c))
                        times = $"job queued → built {(f.GetDateTimeOffset() - c.GetDateTimeOffset()).TotalSeconds:F1} s";
                }
            }
            Console.WriteLine($"full rebuild {queued.Value.BuildId} {status}: {times}; seen published {publishedAt:F1} s after the writes below began " +
                $"({clock.Elapsed.TotalSeconds:F1} s after this phase began); lag ack → indexed meanwhile at {s.Rate:N0} upserts/s ({acked.Count} requests of {s.AckBatch}): " +
                $"p50 {Percentile(lags, 0.5):F2} s, p99 {Percentile(lags, 0.99):F2} s, max {(lags.Length == 0 ? double.NaN : lags.Max()):F2} s");
            var after = await RecallAsync("after the rebuild", "fresh60", ct);
            Console.WriteLine($"recall@{s.K} before the rebuild {before.Recall:F4}, after {after.Recall:F4}");
        }

        /// <summary>A recall figure and the plan of its last query: CF, R and the partition cap (null: none), CF and R both null when it ran exact.</summary>
        private sealed record RecallFigure(double Recall, double? CentroidFactor, int? RerankFactor, double? Predicted, double Partitions, int Incomplete,
            int? MaxPartitions = null)
        {
            public override string ToString() =>
                $"{Recall:F4} ({(CentroidFactor is { } cf ? $"plan CF {cf:0.###} R {RerankFactor}{(MaxPartitions is { } cap ? $" ≤{cap} partitions" : "")}" : "plan exact")}, predicted {(Predicted is { } p ? p.ToString("F3", CultureInfo.InvariantCulture) : "—")}, {Partitions:F1} partitions/query" +
                (Incomplete > 0 ? $"; {Incomplete} answers incomplete (a branch of the tree failed)" : "") + ")";
        }

        /// <summary>
        /// Recall@k of eventual queries against <paramref name="truth"/>, with the plan the index chose (and the mean partitions scanned),
        /// or a given CF, R and cap (CF and R null: exact).
        /// </summary>
        private async Task<RecallFigure> EndpointRecallAsync(string index, int[][] truth, (double? Cf, int? R, int? Cap)? plan, CancellationToken ct)
        {
            long hits = 0, total = 0, scanned = 0;
            int incomplete = 0;
            double? cf = null;
            double predicted = 0;
            int? r = null, cap = null;
            bool anyPredicted = false;
            for (int i = 0; i < queries.Count; i++)
            {
                var (_, answer) = await QueryAsync(index, queries.Row(i).ToArray(), "eventual", s.K, ct, plan: plan);
                var expected = truth[i].ToHashSet();
                foreach (var row in answer.GetProperty("results").EnumerateArray()) if (expected.Contains((int)row.GetProperty("row").GetInt64())) hits++;
                total += expected.Count;
                // A partial answer (a branch failed) lowers recall for a reason that is not the index's: counted, so it shows.
                if (!answer.GetProperty("complete").GetBoolean()) incomplete++;
                var stats = answer.GetProperty("stats");
                // An exact plan reports no CF or R.
                cf = stats.TryGetProperty("centroidFactor", out var c) ? c.GetDouble() : null;
                r = stats.TryGetProperty("rerankFactor", out var rf) ? rf.GetInt32() : null;
                cap = stats.TryGetProperty("maxPartitions", out var most) ? most.GetInt32() : null;
                scanned += stats.GetProperty("partitionsScanned").GetInt64();
                if (stats.TryGetProperty("predictedRecall", out var p) && p.ValueKind == JsonValueKind.Number) { predicted = p.GetDouble(); anyPredicted = true; }
            }
            return new RecallFigure((double)hits / total, cf, r, anyPredicted ? predicted : null, (double)scanned / queries.Count, incomplete, cap);
        }

        private async Task<(double Ms, JsonElement Answer)> QueryAsync(string index, float[] vector, string consistency, int k, CancellationToken ct, int? depth = null,
            (double? Cf, int? R, int? Cap)? plan = null)
        {
            long t0 = Stopwatch.GetTimestamp();
            var options = new { consistency, depth, exact = plan is { Cf: null } ? true : (bool?)null, centroidFactor = plan?.Cf, rerankFactor = plan?.R,
                maxPartitions = plan is { Cf: not null } ? plan.Value.Cap : null };
            using var response = await http.PostAsync($"api/indexes/{index}/query", JsonContent(new { vector, k, options }), ct);
            var text = await response.Content.ReadAsStringAsync(ct);
            if (!response.IsSuccessStatusCode) throw new IOException($"a query of {index} was answered {(int)response.StatusCode}: {text}");
            return (Stopwatch.GetElapsedTime(t0).TotalMilliseconds, JsonDocument.Parse(text).RootElement);
        }

        private static StringContent JsonContent(object body) =>
            new(JsonSerializer.Serialize(body, new JsonSerializerOptions { DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull }),
                Encoding.UTF8, "application/json");

        private int[] RandomRows(Random random, int n) => Enumerable.Range(0, n).Select(_ => random.Next(data.Count)).Distinct().ToArray();

        private async Task AckLatencyAsync(CancellationToken ct)
        {
            var random = new Random(s.Seed + 1);
            var acks = new double[s.AckBatches];
            long last = 0;
            for (int i = 0; i < s.AckBatches; i++) (last, acks[i]) = await WriteAsync(Body(RandomRows(random, s.AckBatch)), ct);
            Console.WriteLine($"ack latency ({s.AckBatches} sequential requests of {s.AckBatch} upserts): p50 {Percentile(acks, 0.5):F1} ms, p99 {Percentile(acks, 0.99):F1} ms");
            await WaitIndexedAsync(last, Stopwatch.StartNew(), ct);
        }

        private async Task LagAsync(CancellationToken ct)
        {
            var random = new Random(s.Seed + 2);
            int requests = Math.Max(1, s.Rate * s.LagSeconds / s.AckBatch);
            double interval = (double)s.AckBatch / s.Rate;
            var bodies = Enumerable.Range(0, requests).Select(_ => Body(RandomRows(random, s.AckBatch))).ToArray();
            var acked = new List<(long Sequence, double At)>();
            var indexedAt = new SortedList<long, double>();
            var clock = Stopwatch.StartNew();
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            long target = long.MaxValue;
            var poller = Task.Run(async () =>
            {
                long seen = -1;
                var deadline = s.Timeout + TimeSpan.FromSeconds(s.LagSeconds);
                while (clock.Elapsed < deadline)
                {
                    var (indexed, _) = await SequencesAsync(s.Index, ct);
                    if (indexed > seen) { lock (indexedAt) indexedAt[indexed] = clock.Elapsed.TotalSeconds; seen = indexed; }
                    if (seen >= Interlocked.Read(ref target)) return;
                    await Task.Delay(50, ct);
                }
                throw new TimeoutException($"the watermark stayed at {seen} during the lag phase");
            }, ct);
            // Writes at fixed times (a slow ack does not push the later ones back; up to 8 in flight).
            using var gate = new SemaphoreSlim(8);
            var writes = new List<Task>();
            for (int i = 0; i < requests; i++)
            {
                var due = TimeSpan.FromSeconds(i * interval) - clock.Elapsed;
                if (due > TimeSpan.Zero) await Task.Delay(due, ct);
                await gate.WaitAsync(ct);
                var body = bodies[i];
                writes.Add(Task.Run(async () =>
                {
                    try
                    {
                        var (sequence, _) = await WriteAsync(body, ct);
                        lock (acked) acked.Add((sequence, clock.Elapsed.TotalSeconds));
                    }
                    finally { gate.Release(); }
                }, ct));
            }
            await Task.WhenAll(writes);
            double writeSeconds = clock.Elapsed.TotalSeconds;
            Interlocked.Exchange(ref target, acked.Max(a => a.Sequence));
            await poller;
            // A write is indexed at the first poll whose watermark covers its sequence (so lag includes up to one poll interval, 50 ms).
            var lags = acked.Select(a => indexedAt.First(w => w.Key >= a.Sequence).Value - a.At).ToArray();
            Console.WriteLine($"lag ack → indexed at {s.Rate:N0} upserts/s ({requests} requests of {s.AckBatch} over {writeSeconds:F0} s, {indexedAt.Count} watermark moves seen): " +
                $"p50 {Percentile(lags, 0.5):F2} s, p99 {Percentile(lags, 0.99):F2} s");
        }

        private async Task StrongOverheadAsync(CancellationToken ct)
        {
            // Hold the ingest lease so the tail stays: the ingest function finds it held and asks again later.
            var deadline = Stopwatch.StartNew();
            IngestLease? lease;
            while ((lease = await IngestLease.TryAcquireAsync(blobs, s.Index, TimeSpan.FromMinutes(30), ct: ct)) is null)
            {
                if (deadline.Elapsed > s.Timeout) throw new TimeoutException("the ingest lease stayed held");
                await Task.Delay(500, ct);
            }
            try
            {
                var (indexed, latest) = await SequencesAsync(s.Index, ct);
                if (indexed != latest) throw new IOException($"writes are still waiting (indexed {indexed}, latest {latest}) after the lag phase");
                var random = new Random(s.Seed + 3);
                var rows = Enumerable.Range(0, data.Count).ToArray();
                random.Shuffle(rows);
                foreach (var chunk in rows[..Math.Min(s.Tail, data.Count)].Chunk(1000)) await WriteAsync(Body(chunk), ct);
                var times = new Dictionary<string, List<double>> { ["eventual"] = [], ["strong"] = [] };
                var paired = new List<double>();
                int tailItems = 0;
                // Warm: the instance reads each tail batch once.
                for (int i = 0; i < 5; i++) { await QueryAsync(s.Index, queries.Row(i).ToArray(), "strong", 10, ct); await QueryAsync(s.Index, queries.Row(i).ToArray(), "eventual", 10, ct); }
                // Each query vector eventual and strong back to back (which goes first alternates), so that the machine's
                // load, which drifts over seconds on a shared host, weighs on both alike; the paired differences say it too.
                for (int i = 0; i < 2 * s.ReadQueries; i++)
                {
                    var vector = queries.Row(i % queries.Count).ToArray();
                    var pair = new Dictionary<string, double>();
                    foreach (var consistency in i % 2 == 0 ? new[] { "eventual", "strong" } : ["strong", "eventual"])
                    {
                        var (ms, answer) = await QueryAsync(s.Index, vector, consistency, 10, ct);
                        times[consistency].Add(ms);
                        pair[consistency] = ms;
                        if (answer.TryGetProperty("tailItems", out var t)) tailItems = t.GetInt32();
                    }
                    paired.Add(pair["strong"] - pair["eventual"]);
                }
                double e50 = Percentile(times["eventual"], 0.5), s50 = Percentile(times["strong"], 0.5);
                Console.WriteLine($"strong-read overhead, tail of {tailItems:N0} items ({2 * s.ReadQueries} queries each, interleaved): eventual p50 {e50:F2} ms, p99 {Percentile(times["eventual"], 0.99):F2} ms; " +
                    $"strong p50 {s50:F2} ms, p99 {Percentile(times["strong"], 0.99):F2} ms; added to p50 {s50 - e50:F2} ms; median of the paired differences {Percentile(paired, 0.5):F2} ms");
            }
            finally
            {
                await lease.ReleaseAsync(CancellationToken.None);
            }
        }

        private static double Percentile(IReadOnlyCollection<double> xs, double q)
        {
            var sorted = xs.OrderBy(x => x).ToArray();
            return sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, (int)(q * sorted.Length))];
        }
    }
}
