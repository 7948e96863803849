using Squash.Functions;

namespace Squash.LocalHost;

/// <summary>One invocation as the meter logged it (ms on the meter's clock).</summary>
public readonly record struct InvocationSpan(double StartMs, double EndMs);

/// <summary>
/// An instance's meter, as Flex Consumption bills it: activity periods (the first invocation starting on an idle instance
/// to the last one ending, overlapping invocations merged into one period, and an invocation that starts inside time
/// already billed for the period joins it), each billed at least 1,000 ms, else rounded up to 100 ms, × the instance's memory; plus one execution per invocation and the storage operations the instance said
/// it performed. It also keeps the log of every invocation, from which <see cref="Recompute"/> derives the same bill
/// independently (a test holds the two equal). Times are milliseconds on a clock the caller supplies.
/// </summary>
public sealed class ActivityMeter
{
    private readonly object _gate = new();
    private readonly List<ActivityPeriod> _closed = [];
    private readonly List<InvocationSpan> _log = [];
    // Start times of the invocations running now, oldest first. Pairing each end with the oldest start keeps every logged
    // span valid (start ≤ end), and the union of the spans, so the periods, does not depend on the pairing.
    private readonly Queue<double> _running = new();
    private double _periodStart;
    private double _lastEvent = double.NegativeInfinity;
    private Squash.Storage.StorageOperations _storage;

    public long Executions { get { lock (_gate) return _log.Count + _running.Count; } }
    public int Active { get { lock (_gate) return _running.Count; } }
    public Squash.Storage.StorageOperations Storage { get { lock (_gate) return _storage; } }

    /// <summary>An invocation starts at <paramref name="atMs"/> (times must not go backwards).</summary>
    public void Start(double atMs)
    {
        lock (_gate)
        {
            atMs = Monotonic(atMs);
            if (_running.Count == 0)
            {
                // Starting inside the time billed for the last period (or as it ended): the period goes on.
                if (_closed.Count > 0 && _closed[^1].Continues(atMs))
                {
                    _periodStart = _closed[^1].StartMs;
                    _closed.RemoveAt(_closed.Count - 1);
                }
                else _periodStart = atMs;
            }
            _running.Enqueue(atMs);
        }
    }

    /// <summary>An invocation ends at <paramref name="atMs"/>; the last one running closes the period.</summary>
    public void Stop(double atMs)
    {
        lock (_gate)
        {
            if (_running.Count == 0) throw new InvalidOperationException("no invocation is running on this instance");
            atMs = Monotonic(atMs);
            _log.Add(new InvocationSpan(_running.Dequeue(), atMs));
            if (_running.Count == 0) _closed.Add(new ActivityPeriod(_periodStart, atMs));
        }
    }

    public void AddStorage(Squash.Storage.StorageOperations ops)
    {
        lock (_gate) _storage += ops;
    }

    private double Monotonic(double atMs)
    {
        // Two threads may read the clock in one order and take the lock in the other.
        if (atMs < _lastEvent) atMs = _lastEvent;
        _lastEvent = atMs;
        return atMs;
    }

    /// <summary>Every period so far; one still open ends at <paramref name="nowMs"/>.</summary>
    public IReadOnlyList<ActivityPeriod> Periods(double nowMs)
    {
        lock (_gate)
        {
            var all = new List<ActivityPeriod>(_closed);
            if (_running.Count > 0) all.Add(new ActivityPeriod(_periodStart, Math.Max(_periodStart, nowMs)));
            return all;
        }
    }

    /// <summary>The invocations that have ended, in the order they ended.</summary>
    public IReadOnlyList<InvocationSpan> Log() { lock (_gate) return _log.ToArray(); }

    public double BilledMs(double nowMs) => Periods(nowMs).Sum(p => p.BilledMs);

    /// <summary>Active time, not rounded (what the busy-time estimate used to bill).</summary>
    public double ActiveMs(double nowMs) => Periods(nowMs).Sum(p => p.LengthMs);

    /// <summary>
    /// The billed milliseconds of a log of invocations, derived from the log alone: sort by start; a span that starts before
    /// the current period's activity or billed time ends joins it; bill each period.
    /// </summary>
    public static double Recompute(IEnumerable<InvocationSpan> log)
    {
        double billed = 0;
        ActivityPeriod? current = null;
        foreach (var span in log.OrderBy(s => s.StartMs))
        {
            if (current is { } p && p.Continues(span.StartMs))
            {
                current = p with { EndMs = Math.Max(p.EndMs, span.EndMs) };
                continue;
            }
            billed += current?.BilledMs ?? 0;
            current = new ActivityPeriod(span.StartMs, span.EndMs);
        }
        return billed + (current?.BilledMs ?? 0);
    }
}
