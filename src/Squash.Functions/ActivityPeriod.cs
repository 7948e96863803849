namespace Squash.Functions;

/// <summary>One activity period of an instance: from an invocation starting on it while idle to the last one ending (ms on the meter's clock).</summary>
public readonly record struct ActivityPeriod(double StartMs, double EndMs)
{
    public double LengthMs => EndMs - StartMs;
    public double BilledMs => PriceTable.BilledMilliseconds(LengthMs);
    /// <summary>Where the time billed for the period ends (its start + <see cref="BilledMs"/>).</summary>
    public double BilledEndMs => StartMs + BilledMs;

    /// <summary>
    /// Whether an invocation starting at <paramref name="atMs"/> belongs to this period: it starts before the period's
    /// activity ended or inside the time already billed for it (the 1 s minimum, the 100 ms rounding), so that no
    /// millisecond of an instance is billed twice.
    /// </summary>
    public bool Continues(double atMs) => atMs <= EndMs || atMs < BilledEndMs;
}
