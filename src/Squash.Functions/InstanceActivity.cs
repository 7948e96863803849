namespace Squash.Functions;

/// <summary>
/// This instance's activity as Flex Consumption bills it, seen from inside: an activity period runs from the first
/// invocation starting on an idle instance to the last one ending, and is billed at least 1,000 ms, else rounded up to
/// 100 ms (<see cref="PriceTable.BilledMilliseconds"/>). <see cref="Attribute"/> hands each invocation the billed time
/// it added to the period so far: the first one in a period gets the minimum (waking costs 1 s), one that ends inside
/// time already billed gets nothing (reusing an active instance is free but for its execution), one that runs past it
/// gets the extra 100 ms steps. An invocation that starts on an idle instance inside time already billed for its last
/// period continues that period (no millisecond is billed twice). Over a period the attributions add up to exactly what the period is billed (as far as
/// invocations ask; the host's meter, which sees every invocation from outside, is the bill).
/// </summary>
public sealed class InstanceActivity(TimeProvider? clock = null)
{
    private readonly TimeProvider _clock = clock ?? TimeProvider.System;
    private readonly object _gate = new();
    private readonly long _origin = (clock ?? TimeProvider.System).GetTimestamp();
    private int _active;
    private double _periodStartMs;
    /// <summary>The last period that ended (null before the first): the host's meter rule decides whether a new invocation continues it.</summary>
    private ActivityPeriod? _last;
    private double _attributedMs;

    public int Active { get { lock (_gate) return _active; } }

    private double NowMs() => _clock.GetElapsedTime(_origin).TotalMilliseconds;

    /// <summary>An invocation starts (opens a period when the instance was idle, unless it continues the last one).</summary>
    public void Begin()
    {
        lock (_gate)
        {
            if (_active++ > 0) return;
            double now = NowMs();
            if (_last is { } last && last.Continues(now)) return; // the period's start and attributions carry on
            _periodStartMs = now;
            _attributedMs = 0;
        }
    }

    /// <summary>
    /// The billed milliseconds the period has grown by since the last attribution, charged to the caller (0 outside an
    /// invocation). Called once per invocation as it finishes its work.
    /// </summary>
    public double Attribute()
    {
        lock (_gate)
        {
            if (_active == 0) return 0;
            double elapsed = NowMs() - _periodStartMs;
            double billed = PriceTable.BilledMilliseconds(Math.Max(elapsed, 0));
            double added = billed - _attributedMs;
            if (added <= 0) return 0;
            _attributedMs = billed;
            return added;
        }
    }

    /// <summary>An invocation ends (closes the period when it was the last).</summary>
    public void End()
    {
        lock (_gate)
        {
            if (_active == 0) return;
            if (--_active == 0) _last = new ActivityPeriod(_periodStartMs, Math.Max(_periodStartMs, NowMs()));
        }
    }
}

/// <summary>The response header in which an instance says what storage operations an invocation performed (six counts).</summary>
public static class StorageOperationsHeader
{
    public const string Name = "x-squash-storage-ops";
}
