using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;

namespace Squash.Cli.Bench;

/// <summary>
/// What this machine's memory does at the moment, for a benchmark's header: one thread's streaming read rate over 64 MB
/// and the time of a dependent load over 64 MB in random order (each a cache miss). The scan's query rotation, its cold
/// cells and its re-rank read memory, and on a shared VM the memory slows with the neighbours' load as much as the cores
/// do (bench/README.md); with these figures beside the kernel probe's, runs on different hosts or hours can be compared.
/// About half a second.
/// </summary>
public static class HostMemoryProbe
{
    private const int Floats = 16 << 20, Steps = 500_000;

    public static (double GigabytesPerSecond, double DependentLoadNanoseconds) Measure()
    {
        var data = new float[Floats];
        for (int i = 0; i < data.Length; i++) data[i] = i & 1023;
        var vectors = MemoryMarshal.Cast<float, Vector<float>>(data.AsSpan());
        var best = double.PositiveInfinity;
        float sink = 0;
        for (int rep = 0; rep < 3; rep++)
        {
            long t0 = Stopwatch.GetTimestamp();
            var acc = Vector<float>.Zero;
            foreach (var v in vectors) acc += v;
            sink += Vector.Sum(acc);
            best = Math.Min(best, (Stopwatch.GetTimestamp() - t0) / (double)Stopwatch.Frequency);
        }
        // One cycle through every slot in random order (Sattolo's shuffle), so each step waits for the one before.
        var next = new int[Floats];
        for (int i = 0; i < next.Length; i++) next[i] = i;
        var rng = new Random(1);
        for (int i = next.Length - 1; i > 0; i--)
        {
            int j = rng.Next(i);
            (next[i], next[j]) = (next[j], next[i]);
        }
        int p = 0;
        long t1 = Stopwatch.GetTimestamp();
        for (int i = 0; i < Steps; i++) p = next[p];
        double latency = (Stopwatch.GetTimestamp() - t1) * 1e9 / Stopwatch.Frequency / Steps;
        GC.KeepAlive(sink + p);
        return (Floats * (double)sizeof(float) / best / 1e9, latency);
    }
}
