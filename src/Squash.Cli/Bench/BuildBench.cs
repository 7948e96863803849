using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Azure.Storage;
using Azure.Storage.Blobs.Models;
using Squash.Cli.Commands;
using Squash.Functions;
using Squash.LocalHost;
using Squash.Storage;
using Squash.Storage.Builds;

namespace Squash.Cli.Bench;

/// <summary>
/// <c>squash bench-builds</c>: one source, built by <c>squash build</c> in one process and through the queue on the local
/// function host (Azurite queues and blobs) with 1, 2, 4… builder workers. Per run: wall time and the time of each stage,
/// peak RSS of every worker, queue messages and deliveries, storage requests and bytes by billing class (measured at the
/// wire by <see cref="StorageMeter"/>), the estimated cost (Flex Consumption + storage transactions), and whether every
/// segment and the calibration equal the in-process build's.
/// </summary>
public static class BuildBench
{
    /// <summary>Storage prices per 10,000 operations by the wire meter's classes: <see cref="PriceTable"/>'s (sources in docs/cost.md).</summary>
    public static readonly IReadOnlyDictionary<string, double> PricePer10k = Squash.Storage.StorageOperations.Classes.ToDictionary(c => c, PriceTable.Per10k);

    /// <summary>Flex Consumption instance size the cost assumes (the smallest above the 1 GB a worker may use).</summary>
    public const int InstanceMemoryMb = 2048;

    public sealed record Run(string Name, int Workers, double Seconds, IReadOnlyList<(string Stage, double Seconds, int Tasks)> Stages,
        IReadOnlyList<InstanceRecord> Instances, long Messages, long Deliveries, IReadOnlyDictionary<string, (long Requests, long BytesSent, long BytesReceived)> Storage,
        double ComputeCost, double StorageCost, string Identical, double BilledSeconds = 0, int ActivityPeriods = 0);

    public static Command Create()
    {
        var vectors = new Option<string>("--vectors") { Description = "Source vectors (.fvecs, .bvecs, .npy): uploaded once into the container, then built.", Required = true };
        var attributes = new Option<string?>("--attributes") { Description = "Attributes (.jsonl or .csv, one row per vector): uploaded once, built by both builds (types inferred)." };
        var store = new Option<string>("--store") { Description = "azure:CONNECTION_STRING of an Azurite account (blobs and queues; the meter sits in front of both).", Required = true };
        var container = new Option<string>("--container") { Description = "Blob container for the source and the indexes.", DefaultValueFactory = _ => "bench-builds" };
        var workers = new Option<string>("--workers") { Description = "Builder worker counts to run, comma-separated (the builder pool's instance cap).", DefaultValueFactory = _ => "1,2,4" };
        var inProcess = new Option<bool>("--no-in-process") { Description = "Skip the in-process build (then nothing is compared)." };
        var partitions = new Option<int>("--partitions") { Description = "Partitions (0: the default for the vector count).", DefaultValueFactory = _ => 0 };
        var seed = new Option<int>("--seed") { Description = "Build seed.", DefaultValueFactory = _ => 42 };
        var chunkRows = new Option<int>("--chunk-rows") { Description = "Rows per assign task (0: about 32 MB of vectors).", DefaultValueFactory = _ => 0 };
        var noCalibration = new Option<bool>("--no-calibration") { Description = "Build without the recall calibration (both builds)." };
        var app = new Option<string?>("--app") { Description = "The function app the builder instances run (published folder, executable or dll). Default: the build beside squash." };
        var timeout = new Option<int>("--timeout") { Description = "Minutes one build may take before the bench gives up on it.", DefaultValueFactory = _ => 240 };
        var noMeter = new Option<bool>("--no-meter") { Description = "Let the host reach Azurite directly: no storage figures, but none of the meter's own CPU on the machine (to see what metering costs)." };
        var output = new Option<string>("--out") { Description = "Folder for builds.csv and the in-process index.", DefaultValueFactory = _ => "bench-results/builds" };
        var cmd = new Command("bench-builds", "Benchmark index builds through the queue (local function host + Azurite, 1/2/4 workers) against squash build in one process.")
        {
            vectors, attributes, store, container, workers, inProcess, partitions, seed, chunkRows, noCalibration, app, timeout, noMeter, output,
        };
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            var source = pr.GetValue(vectors)!;
            CliErrors.Require(File.Exists(source), $"--vectors: no file '{source}'");
            var attributeFile = pr.GetValue(attributes);
            CliErrors.Require(attributeFile is null || File.Exists(attributeFile), $"--attributes: no file '{attributeFile}'");
            var spec = pr.GetValue(store)!;
            var connection = QueueTriggerHost.ConnectionStringOf(spec);
            CliErrors.Require(connection is not null, $"--store must be azure:CONNECTION_STRING (an Azurite account), got '{SecretRedaction.Redact(spec)}'");
            var counts = ParseCounts(pr.GetValue(workers)!);
            int p = pr.GetValue(partitions), c = pr.GetValue(chunkRows), minutes = pr.GetValue(timeout);
            CliErrors.Require(p >= 0, $"--partitions must be ≥ 0, got {p}");
            CliErrors.Require(c >= 0, $"--chunk-rows must be ≥ 0, got {c}");
            CliErrors.Require(minutes >= 1, $"--timeout must be ≥ 1 minute, got {minutes}");
            string? appPath = pr.GetValue(app);
            if (appPath is not null)
            {
                try { appPath = LocalFunctionHost.ResolveApp(appPath); }
                catch (FileNotFoundException) { throw new UsageException($"--app: no function app at '{appPath}'"); }
            }
            var settings = new Settings(source, attributeFile, connection!, pr.GetValue(container)!, p, pr.GetValue(seed), c, !pr.GetValue(noCalibration), appPath,
                TimeSpan.FromMinutes(minutes), Path.GetFullPath(OutputFolder.Create("--out", pr.GetValue(output)!)), !pr.GetValue(noMeter));
            return await RunAsync(settings, counts, !pr.GetValue(inProcess), ct);
        }));
        return cmd;
    }

    private sealed record Settings(string Vectors, string? Attributes, string Connection, string Container, int Partitions, int Seed, int ChunkRows, bool Calibrate,
        string? App, TimeSpan Timeout, string Out, bool Meter);

    private static int[] ParseCounts(string text)
    {
        var counts = new List<int>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            CliErrors.Require(int.TryParse(part, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) && n is >= 1 and <= 64,
                $"--workers: '{part}' is not a worker count (1..64)");
            counts.Add(n);
        }
        CliErrors.Require(counts.Count > 0, "--workers needs at least one count");
        return counts.ToArray();
    }

    private static async Task<int> RunAsync(Settings s, int[] workerCounts, bool inProcess, CancellationToken ct)
    {
        Directory.CreateDirectory(s.Out);
        var direct = new AzureBlobStore(s.Connection, s.Container);
        const string sourceName = "source/vectors";
        var blobName = sourceName + Path.GetExtension(s.Vectors).ToLowerInvariant();
        await UploadAsync(direct, s.Vectors, blobName, ct);
        Console.WriteLine($"source: {s.Vectors} ({new FileInfo(s.Vectors).Length / 1048576.0:N0} MiB) as {s.Container}/{blobName}");
        string? attributesName = null;
        if (s.Attributes is not null)
        {
            attributesName = "source/attributes" + Path.GetExtension(s.Attributes).ToLowerInvariant();
            await UploadAsync(direct, s.Attributes, attributesName, ct);
            Console.WriteLine($"attributes: {s.Attributes} ({new FileInfo(s.Attributes).Length / 1048576.0:N0} MiB) as {s.Container}/{attributesName}");
        }

        string? reference = null;
        (double Seconds, double PeakRssMb)? inProcessFigures = null;
        if (inProcess)
        {
            reference = Path.Combine(s.Out, "inprocess-index");
            inProcessFigures = await BuildInProcessAsync(s, reference, ct);
            Console.WriteLine($"in process (squash build): {inProcessFigures.Value.Seconds:N1} s, peak RSS {inProcessFigures.Value.PeakRssMb:N0} MB");
        }

        var runs = new List<Run>();
        await using var meter = s.Meter ? await StorageMeter.StartAsync(s.Connection, ct) : null;
        foreach (int w in workerCounts)
        {
            var run = await BuildThroughQueueAsync(s, meter, direct, blobName, attributesName, w, reference, ct);
            runs.Add(run);
            Print(run, inProcessFigures);
        }
        WriteCsv(Path.Combine(s.Out, "builds.csv"), runs, inProcessFigures);
        Console.WriteLine($"prices: {PriceTable.Describe(InstanceMemoryMb)}; blob deletes are free");
        Console.WriteLine($"wrote {Path.Combine(s.Out, "builds.csv")}");
        return runs.All(r => r.Identical is "yes" or "not compared") ? 0 : 1;
    }

    /// <summary>The source goes in once (block upload, straight to Azurite, not metered); a blob of the same length is kept.</summary>
    private static async Task UploadAsync(AzureBlobStore store, string path, string name, CancellationToken ct)
    {
        await store.Container.CreateIfNotExistsAsync(cancellationToken: ct);
        var blob = store.Container.GetBlobClient(name);
        long length = new FileInfo(path).Length;
        if (await blob.ExistsAsync(ct) && (await blob.GetPropertiesAsync(cancellationToken: ct)).Value.ContentLength == length) return;
        await using var file = File.OpenRead(path);
        await blob.UploadAsync(file, new BlobUploadOptions
        {
            TransferOptions = new StorageTransferOptions { InitialTransferSize = 64 << 20, MaximumTransferSize = 64 << 20, MaximumConcurrency = 4 },
        }, ct);
    }

    /// <summary>`squash build` as its own process (what a user runs), timed, its peak RSS read from /proc while it runs.</summary>
    private static async Task<(double Seconds, double PeakRssMb)> BuildInProcessAsync(Settings s, string index, CancellationToken ct)
    {
        if (Directory.Exists(index)) Directory.Delete(index, recursive: true);
        var self = Environment.ProcessPath!;
        var psi = self.EndsWith("dotnet", StringComparison.Ordinal) || Path.GetFileNameWithoutExtension(self) == "dotnet"
            ? new ProcessStartInfo(self, [typeof(BuildBench).Assembly.Location]) : new ProcessStartInfo(self);
        foreach (var a in new[] { "build", "--index", index, "--vectors", s.Vectors, "--seed", s.Seed.ToString(CultureInfo.InvariantCulture) }) psi.ArgumentList.Add(a);
        if (s.Partitions > 0) { psi.ArgumentList.Add("--partitions"); psi.ArgumentList.Add(s.Partitions.ToString(CultureInfo.InvariantCulture)); }
        if (!s.Calibrate) psi.ArgumentList.Add("--no-calibration");
        if (s.Attributes is not null) { psi.ArgumentList.Add("--attributes"); psi.ArgumentList.Add(s.Attributes); }
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync(ct);
        var stderr = process.StandardError.ReadToEndAsync(ct);
        long peak = 0;
        while (!process.HasExited)
        {
            try { peak = Math.Max(peak, FunctionInstance.ReadPeakRss(process.Id)); } catch (IOException) { }
            await Task.Delay(50, ct);
        }
        await process.WaitForExitAsync(ct);
        double seconds = clock.Elapsed.TotalSeconds;
        if (process.ExitCode != 0) throw new InvalidOperationException($"squash build failed ({process.ExitCode}): {(await stderr).Trim()} {(await stdout).Trim()}");
        return (seconds, peak / 1048576.0);
    }

    private static async Task<Run> BuildThroughQueueAsync(Settings s, StorageMeter? meter, AzureBlobStore direct, string source, string? attributes, int workers,
        string? reference, CancellationToken ct)
    {
        var index = $"bench-w{workers}";
        var metered = meter?.ConnectionString(s.Connection) ?? s.Connection;
        await using var host = new LocalFunctionHost(new LocalHostOptions
        {
            Store = "azure:" + metered, Container = s.Container, AppPath = s.App, Port = FreePort(), ProcessorPools = 1, MaxInstancesPerPool = 1,
            MaxBuilderInstances = workers, InstanceMemoryMb = InstanceMemoryMb, LogFolder = Path.Combine(s.Out, $"logs-w{workers}"),
            Log = line => Console.Error.WriteLine($"  host: {line}"),
        });
        await host.StartAsync(ct);
        using var http = new HttpClient { BaseAddress = host.BaseAddress, Timeout = TimeSpan.FromMinutes(5) };
        meter?.Reset();
        var options = new Dictionary<string, object> { ["seed"] = s.Seed, ["calibrate"] = s.Calibrate };
        if (s.Partitions > 0) options["partitions"] = s.Partitions;
        if (s.ChunkRows > 0) options["chunkRows"] = s.ChunkRows;
        var sourceSpec = new Dictionary<string, string> { ["vectors"] = source };
        if (attributes is not null) sourceSpec["attributes"] = attributes;
        var body = JsonSerializer.Serialize(new Dictionary<string, object> { ["source"] = sourceSpec, ["options"] = options });
        var clock = Stopwatch.StartNew();
        using var submit = await http.PostAsync($"/api/indexes/{index}/builds", new StringContent(body, Encoding.UTF8, "application/json"), ct);
        var answer = await submit.Content.ReadAsStringAsync(ct);
        if (submit.StatusCode != System.Net.HttpStatusCode.Accepted) throw new InvalidOperationException($"the build was refused ({(int)submit.StatusCode}): {answer}");
        var buildId = JsonDocument.Parse(answer).RootElement.GetProperty("buildId").GetString()!;

        // The job record is read straight from Azurite (not through the meter): polling is the bench's, not the build's.
        var jobs = new BuildJobStore(direct);
        var entered = new Dictionary<string, double>();
        BuildJob job;
        while (true)
        {
            job = (await jobs.GetAsync(index, buildId, ct))?.Job ?? throw new InvalidOperationException($"build {buildId} vanished");
            entered.TryAdd(job.Status, clock.Elapsed.TotalSeconds);
            if (BuildStatus.IsTerminal(job.Status)) break;
            if (clock.Elapsed > s.Timeout) throw new TimeoutException($"build {buildId} with {workers} workers did not finish within {s.Timeout.TotalMinutes:N0} minutes (status {job.Status})");
            await Task.Delay(200, ct);
        }
        double seconds = clock.Elapsed.TotalSeconds;
        if (job.Status != BuildStatus.Succeeded) throw new InvalidOperationException($"build {buildId} with {workers} workers ended {job.Status}: {job.Error?.Message}");
        var storage = meter?.Snapshot() ?? new Dictionary<string, (long, long, long)>();
        var snapshot = host.Snapshot();
        var builder = snapshot.Pools.Single(p => p.Pool == "builder");

        string[] order = [BuildStatus.Training, BuildStatus.Assigning, BuildStatus.Encoding, BuildStatus.Publishing, BuildStatus.Succeeded];
        var stages = new List<(string, double, int)>();
        for (int i = 0; i < order.Length - 1; i++)
        {
            double start = entered.TryGetValue(order[i], out var a) ? a : double.NaN;
            double end = order[(i + 1)..].Select(o => entered.TryGetValue(o, out var b) ? b : double.NaN).FirstOrDefault(x => !double.IsNaN(x), seconds);
            stages.Add((BuildStages.All[i], double.IsNaN(start) ? 0 : end - start, job.TaskCount(BuildStages.All[i])));
        }
        double storageCost = storage.Sum(kv => kv.Value.Requests * PricePer10k.GetValueOrDefault(kv.Key) / 10_000);
        string identical = reference is null ? "not compared" : await CompareAsync(reference, new IndexStore(direct, index), job.Version, ct);
        return new Run(index, workers, seconds, stages, builder.History, job.Stages.Sum(x => x.Total), builder.Executions, storage,
            // Storage comes from the wire meter (it also sees the host's queue traffic), so the host's own storage figure is left out.
            builder.ComputeCostUsd + builder.ExecutionsCostUsd, storageCost, identical, builder.BilledSeconds, builder.ActivityPeriods);
    }

    /// <summary>"yes" when every segment of the queue build equals the in-process build's byte for byte and the calibrations agree.</summary>
    private static async Task<string> CompareAsync(string referenceFolder, IndexStore queued, string version, CancellationToken ct)
    {
        var reference = new IndexStore(new FolderBlobStore(Path.GetDirectoryName(referenceFolder)!), Path.GetFileName(referenceFolder));
        var a = await reference.OpenCurrentAsync(ct);
        var b = await queued.ReadManifestAsync(version, ct);
        if (a.Partitions.Count != b.Partitions.Count) return $"no: {b.Partitions.Count} partitions, in process {a.Partitions.Count}";
        int differ = 0, total = 0;
        foreach (var segment in IndexStore.BlobsNamedBy(a))
        {
            total++;
            var x = await reference.Blobs.ReadAllAsync(reference.VersionPrefix(a.Version) + segment.Name, ct);
            var y = await queued.Blobs.ReadAllAsync(queued.VersionPrefix(version) + segment.Name, ct);
            if (!x.AsSpan().SequenceEqual(y)) differ++;
        }
        bool sameCalibration = JsonSerializer.Serialize(a.Calibration?.Plans) == JsonSerializer.Serialize(b.Calibration?.Plans)
            && JsonSerializer.Serialize(a.Calibration?.Filtered) == JsonSerializer.Serialize(b.Calibration?.Filtered)
            && JsonSerializer.Serialize(a.Calibration?.ByK) == JsonSerializer.Serialize(b.Calibration?.ByK)
            && JsonSerializer.Serialize(a.Calibration?.FilteredByK) == JsonSerializer.Serialize(b.Calibration?.FilteredByK);
        bool sameAttributes = JsonSerializer.Serialize(a.Attributes) == JsonSerializer.Serialize(b.Attributes);
        return differ == 0 && sameCalibration && sameAttributes ? "yes"
            : $"no: {differ} of {total} segments differ{(sameCalibration ? "" : ", calibration differs")}{(sameAttributes ? "" : ", manifest attributes differ")}";
    }

    private static void Print(Run r, (double Seconds, double PeakRssMb)? inProcess)
    {
        var ratio = inProcess is { } ip ? $" = {r.Seconds / ip.Seconds:N2}× in process" : "";
        Console.WriteLine($"queue, {r.Workers} worker{(r.Workers == 1 ? "" : "s")}: {r.Seconds:N1} s{ratio}; same segments and calibration as in process: {r.Identical}");
        Console.WriteLine("  stages: " + string.Join(", ", r.Stages.Select(x => $"{x.Stage} {x.Seconds:N1} s ({x.Tasks} task{(x.Tasks == 1 ? "" : "s")})")));
        Console.WriteLine($"  workers (peak RSS MB / executions / busy s): " + string.Join(", ", r.Instances.Select(i => $"pid {i.ProcessId}: {i.PeakRssMb:N0} / {i.Executions} / {i.BusySeconds:N1}"))
            + $"; max {(r.Instances.Count == 0 ? 0 : r.Instances.Max(i => i.PeakRssMb)):N0} MB");
        if (r.Storage.Count == 0)
        {
            Console.WriteLine($"  messages {r.Messages}, deliveries {r.Deliveries}; storage not metered (--no-meter); estimated compute cost ${r.ComputeCost:F5}");
            return;
        }
        long requests = r.Storage.Sum(kv => kv.Value.Requests);
        Console.WriteLine($"  messages {r.Messages}, deliveries {r.Deliveries}; storage requests {requests:N0} ("
            + string.Join(", ", r.Storage.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key} {kv.Value.Requests:N0}")) + ")");
        Console.WriteLine($"  bytes written {r.Storage.Sum(kv => kv.Value.BytesSent) / 1048576.0:N1} MiB, read {r.Storage.Sum(kv => kv.Value.BytesReceived) / 1048576.0:N1} MiB");
        Console.WriteLine($"  estimated cost ${r.ComputeCost + r.StorageCost:F5} (compute ${r.ComputeCost:F5} for {r.BilledSeconds:N1} billed s in {r.ActivityPeriods} activity periods, "
            + $"storage transactions ${r.StorageCost:F5})");
    }

    private static void WriteCsv(string path, IReadOnlyList<Run> runs, (double Seconds, double PeakRssMb)? inProcess)
    {
        var lines = new List<string> { "run,workers,seconds,train_s,assign_s,encode_s,publish_s,max_worker_rss_mb,worker_rss_mb,messages,deliveries,requests,bytes_written,bytes_read,compute_usd,storage_usd,identical" };
        if (inProcess is { } ip) lines.Add(FormattableString.Invariant($"in-process,1,{ip.Seconds:F2},,,,,{ip.PeakRssMb:F0},{ip.PeakRssMb:F0},,,,,,,,"));
        foreach (var r in runs)
            lines.Add(FormattableString.Invariant($"queue,{r.Workers},{r.Seconds:F2},{string.Join(',', r.Stages.Select(x => x.Seconds.ToString("F2", CultureInfo.InvariantCulture)))},")
                + FormattableString.Invariant($"{(r.Instances.Count == 0 ? 0 : r.Instances.Max(i => i.PeakRssMb)):F0},{string.Join(' ', r.Instances.Select(i => i.PeakRssMb.ToString("F0", CultureInfo.InvariantCulture)))},")
                + FormattableString.Invariant($"{r.Messages},{r.Deliveries},{r.Storage.Sum(kv => kv.Value.Requests)},{r.Storage.Sum(kv => kv.Value.BytesSent)},{r.Storage.Sum(kv => kv.Value.BytesReceived)},")
                + FormattableString.Invariant($"{r.ComputeCost:F6},{r.StorageCost:F6},{r.Identical.Replace(',', ';')}"));
        File.WriteAllLines(path, lines);
    }

    private static int FreePort()
    {
        using var l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        l.Start();
        return ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
    }
}
