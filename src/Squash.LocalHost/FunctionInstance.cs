using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Squash.LocalHost;

/// <summary>One function-app instance: a real OS process on a loopback port, with its concurrency slots and billing meter.</summary>
public sealed class FunctionInstance : IAsyncDisposable
{
    private readonly Process _process;
    private readonly InstanceLog? _log;
    private readonly object _gate = new();
    private int _active;
    /// <summary>Billing: activity periods, executions, storage operations (times in ms since <see cref="_born"/>).</summary>
    private readonly ActivityMeter _meter = new();
    private readonly long _born = Stopwatch.GetTimestamp();
    /// <summary>Set once the host stops the process itself (recycle, discard, shutdown): its exit is then expected.</summary>
    private volatile bool _stopping;
    private volatile bool _ready;

    private FunctionInstance(Process process, int port, string pool, InstanceLog? log)
    {
        _process = process;
        _log = log;
        Port = port;
        Pool = pool;
        LastUsed = DateTime.UtcNow;
        process.EnableRaisingEvents = true;
        process.Exited += (_, _) =>
        {
            if (_stopping) return;
            int code;
            try { code = _process.ExitCode; } catch (InvalidOperationException) { return; }
            _log?.ReportExit(Pool, _process.Id, code, duringStartup: !_ready);
        };
    }

    public int Port { get; }
    public string Pool { get; }
    private long _peakRssBytes;

    /// <summary>
    /// The process's peak resident set so far (Linux VmHWM), as last read: after each invocation and before the host stops
    /// it, so that a recycled or killed instance keeps its figure. 0 where /proc is not available.
    /// </summary>
    public long PeakRssBytes
    {
        get
        {
            SamplePeakRss();
            return Interlocked.Read(ref _peakRssBytes);
        }
    }

    /// <summary>Reads the peak resident memory now (before the host stops the process, so that a retired instance keeps its figure).</summary>
    public void SamplePeakRssNow() => SamplePeakRss();

    /// <summary>Reads VmHWM of the running process into <see cref="PeakRssBytes"/> (a high-water mark: it only grows).</summary>
    private void SamplePeakRss()
    {
        long bytes;
        try
        {
            if (_process.HasExited) return;
            bytes = ReadPeakRss(_process.Id);
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or UnauthorizedAccessException)
        {
            return;
        }
        long seen = Interlocked.Read(ref _peakRssBytes);
        while (bytes > seen)
        {
            long was = Interlocked.CompareExchange(ref _peakRssBytes, bytes, seen);
            if (was == seen) break;
            seen = was;
        }
    }

    /// <summary>VmHWM of a process from /proc/PID/status, in bytes (0 when the line is missing or there is no /proc).</summary>
    public static long ReadPeakRss(int pid)
    {
        var path = $"/proc/{pid}/status";
        if (!File.Exists(path)) return 0;
        foreach (var line in File.ReadLines(path))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
            {
                var parts = line["VmHWM:".Length..].Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return parts.Length > 0 && long.TryParse(parts[0], out long kb) ? kb * 1024 : 0;
            }
        return 0;
    }
    public int Active { get { lock (_gate) return _active; } }
    public long Executions => _meter.Executions;
    /// <summary>This instance's meter (activity periods, the invocation log, storage operations).</summary>
    public ActivityMeter Meter => _meter;
    /// <summary>Milliseconds on the meter's clock now.</summary>
    public double MeterNowMs => Stopwatch.GetElapsedTime(_born).TotalMilliseconds;
    public DateTime LastUsed { get; private set; }
    public bool HasExited => _process.HasExited;
    /// <summary>Kept once the process started: a retired instance's record still names it after the process object is disposed.</summary>
    public int ProcessId => _pid != 0 ? _pid : _process.Id;
    private int _pid;
    public Uri BaseAddress => new($"http://127.0.0.1:{Port}");

    /// <summary>Active time so far (activity periods not rounded), in seconds.</summary>
    public double BusySeconds => _meter.ActiveMs(MeterNowMs) / 1000;

    /// <summary>Billed time so far (each activity period ≥ 1 s, rounded up to 100 ms), in seconds.</summary>
    public double BilledSeconds => _meter.BilledMs(MeterNowMs) / 1000;

    /// <summary>
    /// Starts the process the way the Functions host does (FUNCTIONS_CUSTOMHANDLER_PORT) and waits until it answers.
    /// Its stdout and stderr go to <paramref name="log"/> (discarded without one); an exit the host did not ask for is reported there.
    /// </summary>
    public static async Task<FunctionInstance> StartAsync(string appPath, string pool, IReadOnlyDictionary<string, string> environment, CancellationToken ct, InstanceLog? log = null)
    {
        int port = FreePort();
        // A dll runs on the shared runtime; a published executable (Native AOT, or self-contained ReadyToRun) runs directly.
        var psi = appPath.EndsWith(".dll", StringComparison.OrdinalIgnoreCase) ? new ProcessStartInfo("dotnet", [appPath]) : new ProcessStartInfo(appPath);
        psi.WorkingDirectory = Path.GetDirectoryName(appPath)!;
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.UseShellExecute = false;
        psi.Environment["FUNCTIONS_CUSTOMHANDLER_PORT"] = port.ToString();
        psi.Environment["Logging__LogLevel__Default"] = "Warning";
        // The instance exits by itself if this host dies without stopping it (no orphans).
        psi.Environment["SQUASH_PARENT_PID"] = Environment.ProcessId.ToString();
        foreach (var (k, v) in environment) psi.Environment[k] = v;
        var process = new Process { StartInfo = psi };
        var instance = new FunctionInstance(process, port, pool, log);
        // Always drained, so that the child never blocks on a full pipe; kept when there is a log.
        process.OutputDataReceived += (_, e) => { if (e.Data is { } line) log?.Write(instance.ProcessId, "out", line); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is { } line) log?.Write(instance.ProcessId, "err", line); };
        if (!process.Start()) throw new InvalidOperationException("could not start the function app");
        instance._pid = process.Id;
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var probe = new HttpClient { Timeout = TimeSpan.FromSeconds(1) };
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            if (process.HasExited)
            {
                // Its last lines reach the log before anyone is told to look there.
                try { await process.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromSeconds(5), ct).ConfigureAwait(false); } catch (TimeoutException) { }
                throw new InstanceStartException($"the function app exited during start-up with code {process.ExitCode}", log?.Path);
            }
            try
            {
                using var r = await probe.GetAsync(instance.BaseAddress, ct).ConfigureAwait(false);
                instance._ready = true;
                return instance; // any HTTP answer means ready, as for the Functions host
            }
            catch (HttpRequestException) { }
            catch (TaskCanceledException) when (!ct.IsCancellationRequested) { }
            if (DateTime.UtcNow > deadline)
            {
                await instance.DisposeAsync().ConfigureAwait(false);
                throw new InstanceStartException("the function app did not answer within 60 s", log?.Path);
            }
            await Task.Delay(25, ct).ConfigureAwait(false);
        }
    }

    /// <summary>Where this instance's output goes (null: discarded).</summary>
    public string? LogPath => _log?.Path;

    /// <summary>The host gave up on this instance (it stopped answering): stop it and say so, with where its output is.</summary>
    public void Discard(string reason)
    {
        if (!_stopping && !_process.HasExited) _log?.ReportDiscarded(Pool, ProcessId, reason);
        Kill();
    }

    /// <summary>Takes a slot if one is free.</summary>
    public bool TryAcquire(int concurrency)
    {
        lock (_gate)
        {
            if (_active >= concurrency || _process.HasExited) return false;
            _active++;
            _meter.Start(MeterNowMs);
            LastUsed = DateTime.UtcNow;
            return true;
        }
    }

    /// <summary>Adds what an invocation's answer said it did in storage (the app's <c>x-squash-storage-ops</c> header; ignored when absent or malformed).</summary>
    public void AddStorage(System.Net.Http.Headers.HttpResponseHeaders headers)
    {
        if (headers.TryGetValues(Squash.Functions.StorageOperationsHeader.Name, out var values)
            && Squash.Storage.StorageOperations.ParseHeader(values.FirstOrDefault()) is { } ops)
            _meter.AddStorage(ops);
    }

    public void Release()
    {
        lock (_gate)
        {
            _active--;
            _meter.Stop(MeterNowMs);
            LastUsed = DateTime.UtcNow;
        }
        SamplePeakRss();
    }

    public void Kill()
    {
        SamplePeakRss();
        _stopping = true;
        try { if (!_process.HasExited) _process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
    }

    public async ValueTask DisposeAsync()
    {
        Kill();
        try { await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false); } catch (TimeoutException) { }
        _process.Dispose();
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}

/// <summary>An instance that could not start; <see cref="LogPath"/> holds what it wrote (the message leaves paths out: it may reach an HTTP client).</summary>
public sealed class InstanceStartException(string message, string? logPath) : InvalidOperationException(message)
{
    public string? LogPath { get; } = logPath;
}
