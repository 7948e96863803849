using HdrHistogram;

namespace Squash.Cli.Bench;

/// <summary>Latency percentiles in microseconds (HdrHistogram, 3 significant digits).</summary>
public sealed class LatencyRecorder
{
    private readonly LongHistogram _histogram = new(TimeSpan.FromSeconds(60).Ticks, 3);

    public void Record(long stopwatchTicks) =>
        _histogram.RecordValue(Math.Max(1, stopwatchTicks * TimeSpan.TicksPerSecond / System.Diagnostics.Stopwatch.Frequency));

    public double PercentileMicros(double p) => _histogram.GetValueAtPercentile(p) / (double)TimeSpan.TicksPerMillisecond * 1000;
}
