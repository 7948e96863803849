using Squash.Functions;

namespace Squash.LocalHost;

/// <summary>
/// The instances of one function app (a pool). An invocation goes to any instance with a free slot — as
/// Azure's front end does, with no partition affinity inside an app — and a new instance (a cold start)
/// is started only when every running one is full and the pool is under its cap. With a <paramref name="log"/>,
/// what the instances write is kept there and an instance that dies is reported with the file's path.
/// </summary>
public sealed class InstancePool(string name, string appPath, IReadOnlyDictionary<string, string> environment, LocalHostOptions options, InstanceLog? log = null) : IAsyncDisposable
{
    private readonly List<FunctionInstance> _instances = [];
    private readonly object _gate = new();
    private int _starting;
    /// <summary>Invocations waiting for a starting instance's slots.</summary>
    private int _waitingForStart;
    /// <summary>Instances that left the pool, kept for their meters (an invocation still running on one stops its meter later).</summary>
    private readonly List<FunctionInstance> _retired = [];

    public string Name { get; } = name;
    /// <summary>The file this pool's instances write to (null: their output is discarded).</summary>
    public string? LogPath => log?.Path;
    public int ColdStarts { get; private set; }
    public int Recycled { get; private set; }
    public int Replaced { get; private set; }

    public IReadOnlyList<FunctionInstance> Instances { get { lock (_gate) return _instances.ToArray(); } }

    /// <summary>
    /// Asked (under the pool's lock) before an idle instance is recycled or stopped; false keeps it. The queue
    /// listeners use it so that an instance is never stopped between taking messages and starting their invocations.
    /// </summary>
    public Func<FunctionInstance, bool>? CanRecycle { get; set; }

    /// <summary>Instances running plus starting (what counts against the cap).</summary>
    public int Allocated { get { lock (_gate) { RemoveDead(); return _instances.Count + _starting; } } }

    /// <summary>
    /// Starts one more instance (a cold start) if the pool is under its cap, for triggers that are not HTTP: the queue
    /// scaler adds instances by queue length, not by waiting invocations. Null at the cap.
    /// </summary>
    public async Task<FunctionInstance?> TryStartAsync()
    {
        lock (_gate)
        {
            RemoveDead();
            if (_instances.Count + _starting >= options.MaxInstancesPerPool) return null;
            _starting++;
        }
        return (await StartReservedAsync(acquire: false).ConfigureAwait(false)).Instance;
    }

    /// <summary>
    /// Starts an instance whose place the caller reserved (<c>_starting</c> counted up) and adds it to the pool in the
    /// same step as it stops counting as starting; with <paramref name="acquire"/>, takes one of its slots in that step too.
    /// Between two separate steps a waiting invocation would see neither and start another instance while this one has
    /// free slots, and a tree's partitions would be split (and fetched twice) over two instances.
    /// </summary>
    private async Task<(FunctionInstance Instance, bool Acquired)> StartReservedAsync(bool acquire)
    {
        FunctionInstance instance;
        try
        {
            // Not bound to the invocation that triggered it: when that call is cancelled (a hedge won, the client
            // left) the instance still joins the pool for the invocations waiting on it, as Azure finishes allocating
            // an instance whatever became of the request that asked for it.
            instance = await FunctionInstance.StartAsync(appPath, Name, environment, CancellationToken.None, log).ConfigureAwait(false);
        }
        catch
        {
            lock (_gate) _starting--;
            throw;
        }
        lock (_gate)
        {
            _starting--;
            _instances.Add(instance);
            ColdStarts++;
            return (instance, acquire && instance.TryAcquire(options.InstanceConcurrency));
        }
    }

    public async Task<(FunctionInstance Instance, bool Cold)> AcquireAsync(CancellationToken ct)
    {
        // An invocation that arrives while an instance is starting waits for that instance's free slots, as
        // Azure's front end queues it on the instance being allocated, instead of starting yet another one
        // (several cold starts at once would also fight over the same cores).
        bool waiting = false;
        try
        {
            while (true)
            {
                bool start = false;
                lock (_gate)
                {
                    RemoveDead();
                    foreach (var i in _instances.OrderByDescending(i => i.Active))
                        if (i.TryAcquire(options.InstanceConcurrency)) return (i, false);
                    if (waiting && _starting == 0) { waiting = false; _waitingForStart--; }
                    if (!waiting && _starting > 0 && _waitingForStart < _starting * (options.InstanceConcurrency - 1))
                    {
                        waiting = true;
                        _waitingForStart++;
                    }
                    else if (!waiting && _instances.Count + _starting < options.MaxInstancesPerPool)
                    {
                        _starting++;
                        start = true;
                    }
                }
                if (start)
                {
                    var (instance, acquired) = await StartReservedAsync(acquire: true).ConfigureAwait(false);
                    if (acquired) return (instance, true);
                }
                await Task.Delay(2, ct).ConfigureAwait(false);
            }
        }
        finally
        {
            if (waiting) lock (_gate) _waitingForStart--;
        }
    }

    /// <summary>Drops an instance that failed (crashed or stopped answering); the next call starts a replacement.</summary>
    public void Discard(FunctionInstance instance, string reason = "stopped answering")
    {
        lock (_gate)
        {
            if (!_instances.Remove(instance)) return;
            Retire(instance);
            Replaced++;
        }
        instance.Discard(reason);
    }

    /// <summary>Recycles instances idle longer than the keep-alive.</summary>
    public void RecycleIdle(DateTime now)
    {
        List<FunctionInstance> idle;
        lock (_gate)
        {
            idle = _instances.Where(i => i.Active == 0 && now - i.LastUsed > options.KeepAlive && (CanRecycle?.Invoke(i) ?? true)).ToList();
            foreach (var i in idle) { _instances.Remove(i); Retire(i); Recycled++; }
        }
        foreach (var i in idle) i.Kill();
    }

    private void RemoveDead()
    {
        foreach (var dead in _instances.Where(i => i.HasExited).ToList())
        {
            _instances.Remove(dead);
            Retire(dead);
            Replaced++;
        }
    }

    private void Retire(FunctionInstance i)
    {
        i.SamplePeakRssNow();
        _retired.Add(i);
    }

    /// <summary>Every instance this pool has run (the retired ones as they were when they left), oldest first.</summary>
    /// <param name="withLog">Include each instance's invocation log (large after a long run).</param>
    public IReadOnlyList<InstanceRecord> History(bool withLog = false)
    {
        lock (_gate) return [.. _retired.Select(i => InstanceRecord.Of(i, running: false, withLog)), .. _instances.Select(i => InstanceRecord.Of(i, running: !i.HasExited, withLog))];
    }

    /// <summary>Every instance's meter this pool has run, added up (<see cref="PoolMeter"/>).</summary>
    public PoolMeter Meter()
    {
        FunctionInstance[] all;
        lock (_gate) all = [.. _retired, .. _instances];
        double active = 0, billed = 0;
        long executions = 0;
        int periods = 0;
        var storage = default(Squash.Storage.StorageOperations);
        foreach (var i in all)
        {
            double now = i.MeterNowMs;
            var p = i.Meter.Periods(now);
            periods += p.Count;
            active += p.Sum(x => x.LengthMs);
            billed += p.Sum(x => x.BilledMs);
            executions += i.Executions;
            storage += i.Meter.Storage;
        }
        return new PoolMeter(active / 1000, billed / 1000, executions, periods, storage);
    }

    /// <summary>Stops every idle instance now (busy ones finish and are recycled later).</summary>
    public async Task StopAllAsync()
    {
        List<FunctionInstance> idle;
        lock (_gate)
        {
            idle = _instances.Where(i => i.Active == 0 && (CanRecycle?.Invoke(i) ?? true)).ToList();
            foreach (var i in idle) { _instances.Remove(i); Retire(i); Recycled++; }
        }
        foreach (var i in idle) await i.DisposeAsync().ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        FunctionInstance[] all;
        lock (_gate) { all = _instances.ToArray(); _instances.Clear(); }
        // Kill everything first, then wait: a shutdown deadline must not leave half the pool running.
        foreach (var i in all) i.Kill();
        await Task.WhenAll(all.Select(i => i.DisposeAsync().AsTask())).ConfigureAwait(false);
        log?.Dispose();
    }
}

/// <summary>A pool's meter: active seconds (periods as they ran), billed seconds (each period ≥ 1 s, rounded up to 100 ms), executions, periods, storage operations.</summary>
public sealed record PoolMeter(double BusySeconds, double BilledSeconds, long Executions, int ActivityPeriods, Squash.Storage.StorageOperations Storage);

/// <summary>
/// One instance as the meter saw it: process id, executions, active and billed seconds, its activity periods, storage
/// operations and peak resident memory; with a log, every invocation (start and end, ms since the instance started).
/// </summary>
public sealed record InstanceRecord(int ProcessId, bool Running, long Executions, double BusySeconds, double PeakRssMb,
    double BilledSeconds = 0, int ActivityPeriods = 0, Squash.Storage.StorageOperations Storage = default,
    IReadOnlyList<ActivityPeriod>? Periods = null, IReadOnlyList<InvocationSpan>? Invocations = null)
{
    public static InstanceRecord Of(FunctionInstance i, bool running, bool withLog = false)
    {
        double now = i.MeterNowMs;
        var periods = i.Meter.Periods(now);
        return new(i.ProcessId, running, i.Executions, Math.Round(periods.Sum(p => p.LengthMs) / 1000, 3), Math.Round(i.PeakRssBytes / 1048576.0, 1),
            periods.Sum(p => p.BilledMs) / 1000, periods.Count, i.Meter.Storage, withLog ? periods : null, withLog ? i.Meter.Log() : null);
    }
}
