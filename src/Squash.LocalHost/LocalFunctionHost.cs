using Squash.Functions;
using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Squash.LocalHost;

/// <summary>
/// Runs the function app on one machine the way Azure Functions would: a front end on a public loopback
/// port routes <c>/api/...</c> to the coordinator pool and <c>/pools/{pool}/api/...</c> to processor pools;
/// each pool starts real processes on demand (cold starts), caps them, gives each a concurrency limit,
/// recycles idle ones, replaces dead ones, and meters cost as Flex Consumption bills it.
/// A development stand-in, not a second platform.
/// </summary>
public sealed class LocalFunctionHost : IAsyncDisposable
{
    private readonly LocalHostOptions _options;
    private readonly Dictionary<string, InstancePool> _pools = new();
    private readonly HttpClient _forward = new(new SocketsHttpHandler { PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30), UseProxy = false }) { Timeout = TimeSpan.FromMinutes(2) };
    private static readonly JsonSerializerOptions JsonOptions = new(JsonSerializerDefaults.Web);
    private WebApplication? _app;
    /// <summary>Function keys (null: not checked); see <see cref="FunctionKeyCheck"/>.</summary>
    private FunctionKeyCheck? _keyCheck;
    private Timer? _recycler;
    private QueueTriggerHost? _queueTriggers;

    public LocalFunctionHost(LocalHostOptions options) => _options = options;

    public Uri BaseAddress => new($"http://127.0.0.1:{_options.Port}");
    /// <summary>Where each pool's instances write their output (&lt;pool&gt;.log).</summary>
    public string LogFolder => Path.GetFullPath(_options.LogFolder ?? Path.Combine(Path.GetTempPath(), $"squash-serve-{_options.Port}"));
    public IReadOnlyDictionary<string, InstancePool> Pools => _pools;
    /// <summary>The queue-triggered functions' runtime (null with a dir: store, or when the app has none).</summary>
    public QueueTriggerHost? QueueTriggers => _queueTriggers;

    public static string DefaultAppPath => Path.Combine(AppContext.BaseDirectory, "Squash.Functions.dll");

    /// <summary>
    /// The function app to start: a dll (run with dotnet), a published folder (its Squash.Functions executable,
    /// e.g. the Native AOT output of scripts/publish.sh), or the executable itself.
    /// </summary>
    public static string ResolveApp(string? path)
    {
        path ??= DefaultAppPath;
        if (Directory.Exists(path))
        {
            var executable = Path.Combine(path, "Squash.Functions");
            var dll = Path.Combine(path, "Squash.Functions.dll");
            path = File.Exists(executable) ? executable : dll;
        }
        if (!File.Exists(path)) throw new FileNotFoundException($"function app not found at {path}");
        return Path.GetFullPath(path);
    }

    public async Task StartAsync(CancellationToken ct = default)
    {
        var appPath = ResolveApp(_options.AppPath);
        var scanUrls = string.Join(';', Enumerable.Range(0, _options.ProcessorPools).Select(i => $"{BaseAddress}pools/p{i}"));
        var env = new Dictionary<string, string>
        {
            ["Squash__Store"] = _options.Store,
            ["Squash__Container"] = _options.Container,
            ["Squash__Preload"] = _options.Preload,
            ["Squash__Branching"] = _options.Branching.ToString(),
            ["Squash__Depth"] = _options.Depth.ToString(),
            ["Squash__ScanUrls"] = scanUrls,
            ["Squash__InstanceMemoryMb"] = _options.InstanceMemoryMb.ToString(),
        };
        // Queues live in the store's account, as AzureWebJobsStorage names it on Azure; a folder store has none.
        var queueAccount = QueueTriggerHost.ConnectionStringOf(_options.Store);
        if (queueAccount is not null) env["AzureWebJobsStorage"] = queueAccount;
        foreach (var (name, value) in _options.AppSettings ?? new Dictionary<string, string>()) env[name] = value;
        _keyCheck = FunctionKeyCheck.Create(_options, appPath, ["coordinator", .. Enumerable.Range(0, _options.ProcessorPools).Select(i => $"p{i}")]);
        FunctionKeyCheck.UsePoolKeys(env, _options);
        // Only the coordinator wakes the processor pools as it starts (as its own function app would on Azure).
        _pools["coordinator"] = new InstancePool("coordinator", appPath, new Dictionary<string, string>(env) { ["Squash__WakePoolsOnStart"] = "true" }, _options, PoolLog("coordinator"));
        for (int i = 0; i < _options.ProcessorPools; i++) _pools[$"p{i}"] = new InstancePool($"p{i}", appPath, env, _options, PoolLog($"p{i}"));
        if (queueAccount is not null)
        {
            var appFolder = Path.GetDirectoryName(appPath)!;
            var definitions = FunctionDefinitions.Load(appFolder);
            if (definitions.Functions.Any(f => f.IsQueue))
            {
                _queueTriggers = new QueueTriggerHost(definitions, queueAccount, appPath, env, _options, PoolLog("builder"), _options.Log ?? (line => Console.Error.WriteLine(line)), appFolder);
                _pools["builder"] = _queueTriggers.Pool;
            }
        }

        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls(BaseAddress.ToString());
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        // A failed start (the port is taken) is thrown to the caller, who says it in one line; the hosting
        // layer would also log it with a stack trace.
        builder.Logging.AddFilter("Microsoft.Extensions.Hosting", LogLevel.None);
        _app = builder.Build();
        // ?log=true adds every instance's activity periods and invocation log.
        _app.MapGet("/admin/instances", (HttpContext http) => Results.Text(JsonSerializer.Serialize(
            Snapshot(withLog: string.Equals(http.Request.Query["log"], "true", StringComparison.OrdinalIgnoreCase)), JsonOptions), "application/json"));
        // Stops every instance so that the next query meets only cold starts (benchmarks of cold latency).
        _app.MapPost("/admin/recycle", async () =>
        {
            foreach (var p in _pools.Values) await p.StopAllAsync().ConfigureAwait(false);
            return Results.NoContent();
        });
        _app.Map("/pools/{pool}/{**rest}", (HttpContext http, string pool, string? rest) =>
            _pools.TryGetValue(pool, out var p) && pool is not ("coordinator" or "builder")
                ? ForwardAsync(http, p, "/" + rest)
                : Task.FromResult(Results.Problem(statusCode: 404, title: "Unknown pool", detail: $"no processor pool '{pool}'")));
        _app.Map("/{**rest}", (HttpContext http, string? rest) => ForwardAsync(http, _pools["coordinator"], "/" + rest));
        try
        {
            await _app.StartAsync(ct).ConfigureAwait(false);
        }
        catch (IOException e) when (e.InnerException is Microsoft.AspNetCore.Connections.AddressInUseException)
        {
            throw new PortInUseException(_options.Port, e);
        }
        _recycler = new Timer(_ => { foreach (var p in _pools.Values) p.RecycleIdle(DateTime.UtcNow); }, null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
        _queueTriggers?.Start();
    }

    private async Task<IResult> ForwardAsync(HttpContext http, InstancePool pool, string path)
    {
        if (_keyCheck?.Check(http, pool.Name, path) is { } refused) return refused;
        var ct = http.RequestAborted;
        FunctionInstance instance;
        bool cold;
        try
        {
            (instance, cold) = await pool.AcquireAsync(ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is InstanceStartException or System.ComponentModel.Win32Exception)
        {
            // No instance could be started (the app crashed at start-up, or did not answer): the exit was reported with
            // the log's path; the caller gets a problem, not a stack trace.
            return Results.Problem(statusCode: (int)HttpStatusCode.ServiceUnavailable, title: "Instance failed to start",
                detail: $"no instance of pool '{pool.Name}' could start: {e.Message}");
        }
        try
        {
            using var request = new HttpRequestMessage(new HttpMethod(http.Request.Method), new Uri(instance.BaseAddress, path + http.Request.QueryString));
            if (http.Request.ContentLength > 0 || http.Request.Headers.TransferEncoding.Count > 0)
            {
                request.Content = new StreamContent(http.Request.Body);
                if (http.Request.ContentType is { } type) request.Content.Headers.TryAddWithoutValidation("Content-Type", type);
            }
            foreach (var h in http.Request.Headers)
                if (!IsHopByHop(h.Key) && !h.Key.StartsWith("Content-", StringComparison.OrdinalIgnoreCase))
                    request.Headers.TryAddWithoutValidation(h.Key, h.Value.ToArray());
            using var response = await _forward.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false);
            instance.AddStorage(response.Headers);
            http.Response.StatusCode = (int)response.StatusCode;
            foreach (var h in response.Headers.Concat(response.Content.Headers))
                if (!IsHopByHop(h.Key)) http.Response.Headers[h.Key] = h.Value.ToArray();
            http.Response.Headers["x-squash-instance"] = $"{pool.Name}/{instance.ProcessId}";
            http.Response.Headers["x-squash-cold-start"] = cold ? "true" : "false";
            await response.Content.CopyToAsync(http.Response.Body, ct).ConfigureAwait(false);
            return Results.Empty;
        }
        catch (HttpRequestException e) when (!ct.IsCancellationRequested && ClientBodyFailure(e) is { } bad)
        {
            // Reading the caller's body failed (past Kestrel's request body limit, or cut short): the caller's fault, not the
            // instance's, which keeps serving its other invocations.
            return Results.Problem(statusCode: bad.StatusCode, title: bad.StatusCode == StatusCodes.Status413PayloadTooLarge
                ? "Request too large" : "Bad request body", detail: bad.Message);
        }
        catch (HttpRequestException e) when (!ct.IsCancellationRequested)
        {
            // The instance crashed or stopped answering: drop it; the caller's retry lands on a new one.
            pool.Discard(instance, e.Message);
            return Results.Problem(statusCode: (int)HttpStatusCode.ServiceUnavailable, title: "Instance failed", detail: e.Message);
        }
        finally
        {
            instance.Release();
        }
    }

    /// <summary>The failure to read the caller's request body inside a forwarding failure, if that is what it was.</summary>
    private static BadHttpRequestException? ClientBodyFailure(Exception e)
    {
        for (Exception? inner = e; inner is not null; inner = inner.InnerException)
            if (inner is BadHttpRequestException bad) return bad;
        return null;
    }

    private InstanceLog PoolLog(string pool) =>
        new(Path.Combine(LogFolder, pool + ".log"), _options.Log ?? (line => Console.Error.WriteLine(line)), _options.MaxLogBytes);

    private static bool IsHopByHop(string header) => header.Equals("Connection", StringComparison.OrdinalIgnoreCase)
        || header.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase) || header.Equals("Keep-Alive", StringComparison.OrdinalIgnoreCase)
        || header.Equals("Host", StringComparison.OrdinalIgnoreCase) || header.Equals("Upgrade", StringComparison.OrdinalIgnoreCase);

    /// <param name="BusySeconds">Activity as it ran (periods not rounded).</param>
    /// <param name="BilledSeconds">Activity as Flex bills it: each period at least 1 s, else rounded up to 100 ms.</param>
    /// <param name="CostUsd">Compute (billed seconds × instance memory) + executions + storage operations.</param>
    /// <param name="PeakRssMb">The largest peak resident memory of any instance the pool has run (Linux VmHWM; 0 elsewhere).</param>
    /// <param name="History">Every instance the pool has run, with its own figures.</param>
    public sealed record PoolSnapshot(string Pool, int Instances, int ColdStarts, int Recycled, int Replaced, long Executions, double BusySeconds, double CostUsd,
        double PeakRssMb, IReadOnlyList<InstanceRecord> History, double BilledSeconds = 0, int ActivityPeriods = 0,
        double ComputeCostUsd = 0, double ExecutionsCostUsd = 0, double StorageCostUsd = 0, Squash.Storage.StorageOperations StorageOperations = default);

    /// <param name="TotalCostUsd">Everything metered: compute + executions + storage (the listeners' queue operations included), all pools.</param>
    /// <param name="QueueListenerOperations">Requests the host's queue listeners and scale controller sent (receive, update, delete, length, poison).</param>
    /// <param name="StoragePricing">How storage operations are priced: Azure Blob/Queue Storage, or a folder store, which no one bills.</param>
    public sealed record HostSnapshot(IReadOnlyList<PoolSnapshot> Pools, double TotalCostUsd, long TotalExecutions, string PriceTable,
        double TotalComputeUsd = 0, double TotalExecutionsUsd = 0, double TotalStorageUsd = 0, int TotalActivityPeriods = 0,
        double TotalBilledSeconds = 0, Squash.Storage.StorageOperations TotalStorageOperations = default,
        long QueueListenerOperations = 0, double QueueListenerCostUsd = 0, string StoragePricing = "");

    /// <param name="withLog">Include every instance's activity periods and invocation log (to recompute the bill from them).</param>
    public HostSnapshot Snapshot(bool withLog = false)
    {
        // A folder store stands in for Blob Storage here: its operations are counted, but nothing bills them.
        bool storageBilled = !_options.Store.StartsWith("dir:", StringComparison.Ordinal);
        long listenerOps = _queueTriggers?.QueueRequests.Requests ?? 0;
        double listenerCost = PriceTable.StorageCost(new Squash.Storage.StorageOperations { QueueOperations = listenerOps });
        var pools = _pools.Values.Select(p =>
        {
            var meter = p.Meter();
            var history = p.History(withLog);
            double compute = PriceTable.ComputeCost(meter.BilledSeconds * 1000, _options.InstanceMemoryMb);
            double executions = PriceTable.ExecutionsCost(meter.Executions);
            double storage = storageBilled ? PriceTable.StorageCost(meter.Storage) : 0;
            return new PoolSnapshot(p.Name, p.Instances.Count, p.ColdStarts, p.Recycled, p.Replaced, meter.Executions, Math.Round(meter.BusySeconds, 3),
                compute + executions + storage, history.Count == 0 ? 0 : history.Max(h => h.PeakRssMb), history, meter.BilledSeconds, meter.ActivityPeriods,
                compute, executions, storage, meter.Storage);
        }).ToList();
        return new HostSnapshot(pools, pools.Sum(p => p.CostUsd) + listenerCost, pools.Sum(p => p.Executions), PriceTable.Describe(_options.InstanceMemoryMb),
            pools.Sum(p => p.ComputeCostUsd), pools.Sum(p => p.ExecutionsCostUsd), pools.Sum(p => p.StorageCostUsd) + listenerCost, pools.Sum(p => p.ActivityPeriods),
            pools.Sum(p => p.BilledSeconds), pools.Aggregate(default(Squash.Storage.StorageOperations), (a, p) => a + p.StorageOperations),
            listenerOps, listenerCost,
            storageBilled ? "Azure Storage (blob hot LRS, queue LRS) list prices"
                : "folder store (dir:): operations counted as Blob Storage would bill them, priced at $0 (nothing bills a local folder)");
    }

    public async ValueTask DisposeAsync()
    {
        if (_recycler is not null) await _recycler.DisposeAsync().ConfigureAwait(false);
        // Listeners stop first and give their messages back; then the builder pool goes with the others.
        if (_queueTriggers is not null) await _queueTriggers.DisposeAsync().ConfigureAwait(false);
        // Instances first: they are separate processes and must never outlive the host.
        await Task.WhenAll(_pools.Values.Select(p => p.DisposeAsync().AsTask())).ConfigureAwait(false);
        if (_app is not null)
        {
            try { await _app.DisposeAsync().ConfigureAwait(false); } catch (OperationCanceledException) { }
        }
        _forward.Dispose();
    }
}

/// <summary>The host's public port is taken (by another squash serve, or anything else).</summary>
public sealed class PortInUseException(int port, Exception inner) : IOException($"port {port} on 127.0.0.1 is already in use", inner)
{
    public int Port { get; } = port;
}
