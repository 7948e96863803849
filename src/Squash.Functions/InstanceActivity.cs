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
    private int _active;
    private long _periodStart;
    private long _lastEnd;
    private bool _hadPeriod;
    private double _attributedMs;

    public int Active { get { lock (_gate) return _active; } }

    /// <summary>An invocation starts (opens a period when the instance was idle).</summary>
    public void Begin()
    {
        lock (_gate)
        {
            if (_active++ == 0)
            {
                long now = _clock.GetTimestamp();
                // Inside the time already billed for the last period (its 1 s minimum, its rounding): the period goes on,
                // as the host's meter counts it; else a new one starts.
                double sinceStart = _clock.GetElapsedTime(_periodStart, now).TotalMilliseconds;
                double billedSoFar = _hadPeriod ? PriceTable.BilledMilliseconds(Math.Max(0, _clock.GetElapsedTime(_periodStart, _lastEnd).TotalMilliseconds)) : 0;
                if (!_hadPeriod || sinceStart >= billedSoFar)
                {
                    _periodStart = now;
                    _attributedMs = 0;
                    _hadPeriod = true;
                }
            }
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
            double elapsed = _clock.GetElapsedTime(_periodStart).TotalMilliseconds;
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
            if (--_active == 0) _lastEnd = _clock.GetTimestamp();
        }
    }
}

/// <summary>The response header in which an instance says what storage operations an invocation performed (six counts).</summary>
public static class StorageOperationsHeader
{
    public const string Name = "x-squash-storage-ops";
}
