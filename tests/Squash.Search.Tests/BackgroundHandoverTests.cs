using System.Diagnostics;
using Squash.Core;
using Squash.Core.Vectors;
using Squash.Index.Attributes;

namespace Squash.Search.Tests;

/// <summary>
/// A calibration's background thread that gets no core (a lowest-priority thread on a busy machine) is waited for at most
/// <see cref="BackgroundPriority.Handover"/>: the finishing build then does the thread's work itself and gets what the
/// thread would have given. The thread is held at a point of its work to stand for one that is never scheduled.
/// </summary>
public sealed class BackgroundHandoverTests
{
    [Theory]
    [InlineData(false, 1)]
    [InlineData(true, 2)]
    public async Task ExactNeighboursOfAHeldThreadAreComputedByTheFinish(bool afterClaimingAChunk, int seed)
    {
        // Held as it starts, the finish claims every chunk itself; held on a chunk it claimed, the finish computes that one too.
        var point = afterClaimingAChunk ? BackgroundPriority.Point.ChunkClaimed : BackgroundPriority.Point.Started;
        const int n = 2500, dims = 20, k = 10, queries = 700; // three chunks
        var (data, rows, querySet) = TestData.UniformWithRowQueries(n, dims, queries, seed);
        var baseSet = new VectorSet(data, n, dims);
        var expected = GroundTruth.Compute(baseSet, new VectorSet(querySet, queries, dims), k, Metric.L2, accept: (q, id) => id != rows[q]);

        using var release = new ManualResetEventSlim(false);
        var held = Held(point, release, out var reached);
        ExactNeighboursDuringBuild exact;
        try { exact = new ExactNeighboursDuringBuild(baseSet, new VectorSet(querySet, queries, dims), k, Metric.L2, rows.Select(r => (long)r).ToArray(), CancellationToken.None); }
        finally { BackgroundPriority.Hold.Value = null; }
        using (exact)
        {
            Assert.True(reached.Wait(TimeSpan.FromMinutes(1)), $"seed {seed}: the background thread never reached {point}");
            var clock = Stopwatch.StartNew();
            var ids = await exact.FinishAsync().WaitAsync(TimeSpan.FromMinutes(2));
            // It waited for the held thread's unit, then did it itself.
            Assert.True(clock.Elapsed >= BackgroundPriority.Handover * 0.9, $"seed {seed}: finished after {clock.Elapsed.TotalSeconds:F2} s, before the hand-over");
            Assert.Equal(queries, ids.Length);
            for (int q = 0; q < queries; q++)
                Assert.True(expected[q].SequenceEqual(ids[q]), $"seed {seed}, {point}, query {q}: [{string.Join(",", ids[q])}], the brute force [{string.Join(",", expected[q])}]");
            release.Set();
            Assert.Equal(1, held());
        }
    }

    [Fact]
    public async Task FilteredNeighboursOfAHeldThreadAreDrawnAndScoredByTheFinish()
    {
        const int n = 3000, dims = 16, k = RecallCalibrator.DefaultK, sample = 300, dense = 200, seed = 7;
        var data = TestData.Clustered(n, dims, clusters: 10, seed: seed);
        var rng = new Random(seed);
        var table = AttributeReader.ReadJsonLines(new StringReader(string.Concat(Enumerable.Range(0, n).Select(i =>
            $"{{\"attributes\":{{\"label\":{i % 7},\"u\":{rng.Next(100_000)}}}}}\n"))), "attrs.jsonl");
        var queries = CalibrationQueries.FromRows(data, dims, CalibratedBuild.CalibrationRows(n, seed, sample, dense)!);

        using var free = new FilteredRecallCalibrator.NeighboursDuringBuild(table, table.Encoding, data, n, dims, Metric.L2, queries, dense, k, CancellationToken.None);
        var expected = (await free.FinishAsync().WaitAsync(TimeSpan.FromMinutes(2)))!.ExactNeighbours().ToList();

        using var release = new ManualResetEventSlim(false);
        var held = Held(BackgroundPriority.Point.Started, release, out var reached);
        FilteredRecallCalibrator.NeighboursDuringBuild during;
        try { during = new FilteredRecallCalibrator.NeighboursDuringBuild(table, table.Encoding, data, n, dims, Metric.L2, queries, dense, k, CancellationToken.None); }
        finally { BackgroundPriority.Hold.Value = null; }
        using (during)
        {
            Assert.True(reached.Wait(TimeSpan.FromMinutes(1)), "the background thread never started");
            var clock = Stopwatch.StartNew();
            var drawn = await during.FinishAsync().WaitAsync(TimeSpan.FromMinutes(2));
            Assert.True(clock.Elapsed >= BackgroundPriority.Handover * 0.9, $"finished after {clock.Elapsed.TotalSeconds:F2} s, before the hand-over");
            Assert.NotNull(drawn);
            var found = drawn.ExactNeighbours().ToList();
            Assert.Equal(expected.Count, found.Count);
            Assert.True(expected.Count > sample, $"only {expected.Count} filtered queries");
            for (int i = 0; i < expected.Count; i++)
            {
                var (family, query, filter, neighbours, matches) = found[i];
                Assert.True(expected[i].Family == family && expected[i].Query == query && expected[i].Matches == matches
                    && expected[i].Neighbours.SequenceEqual(neighbours),
                    $"filtered query {i} (family {family}, query {query}): {matches} matches, [{string.Join(",", neighbours)}]; " +
                    $"unheld: {expected[i].Matches} matches, [{string.Join(",", expected[i].Neighbours)}]");
            }
            release.Set();
            Assert.Equal(1, held());
        }
    }

    /// <summary>
    /// Once the build has ended, a background thread leaves the idle policy: off the CPU at that policy it would hold up
    /// every GC of the finish on a busy machine, and one the finish abandons would not get a core to end.
    /// </summary>
    [Fact]
    public async Task TheFinishRestoresTheBackgroundThreadsPolicy()
    {
        if (!OperatingSystem.IsLinux() || System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture != System.Runtime.InteropServices.Architecture.X64)
            return; // the policies are set on Linux x64 only
        const int n = 2500, dims = 20, queries = 700;
        var (data, rows, querySet) = TestData.UniformWithRowQueries(n, dims, queries, seed: 4);
        using var release = new ManualResetEventSlim(false);
        var held = Held(BackgroundPriority.Point.ChunkClaimed, release, out var reached);
        BackgroundPriority.NewLowering.Value = FreeMachine;
        ExactNeighboursDuringBuild exact;
        try { exact = new ExactNeighboursDuringBuild(new VectorSet(data, n, dims), new VectorSet(querySet, queries, dims), 10, Metric.L2, null, CancellationToken.None); }
        finally
        {
            BackgroundPriority.Hold.Value = null;
            BackgroundPriority.NewLowering.Value = null;
        }
        using (exact)
        {
            Assert.True(reached.Wait(TimeSpan.FromMinutes(1)), "the background thread never claimed a chunk");
            int tid = exact.Priority.ThreadId;
            Assert.True(tid > 0, "the background thread was not lowered");
            Assert.Equal(SchedIdle, Policy(tid));
            var finish = exact.FinishAsync();
            // The finish restores the policy before it computes anything.
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (Policy(tid) != SchedOther && DateTime.UtcNow < deadline) await Task.Delay(10);
            Assert.Equal(SchedOther, Policy(tid));
            release.Set();
            Assert.Equal(queries, (await finish.WaitAsync(TimeSpan.FromMinutes(2))).Length);
            Assert.Equal(1, held());
        }
    }

    [Fact]
    public void ALoweredThreadRunsAtTheNormalPolicyWhileOtherProcessesTakeTheCpu()
    {
        if (!OperatingSystem.IsLinux() || System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture != System.Runtime.InteropServices.Architecture.X64
            || !Environment.IsPrivilegedProcess)
            return; // the policies are set on Linux x64 only, and leaving the idle policy needs RLIMIT_NICE or root
        double load = 0;
        int samples = 0;
        var lowering = new BackgroundPriority.Lowering(() => { Interlocked.Increment(ref samples); return Volatile.Read(ref load); }, TimeSpan.FromMilliseconds(10));
        using var lowered = new ManualResetEventSlim(false);
        using var release = new ManualResetEventSlim(false);
        var thread = new Thread(() =>
        {
            if (lowering.Lower()) lowered.Set();
            release.Wait(TimeSpan.FromMinutes(2));
            lowering.Ended();
        });
        thread.Start();
        try
        {
            Assert.True(lowered.Wait(TimeSpan.FromSeconds(30)), "the thread was not lowered");
            int tid = lowering.ThreadId;
            Assert.True(tid > 0, "no thread id");
            // Each step sets the other processes' load, lets the watch sample it a few times, and reads the policy.
            int After(double cores)
            {
                Volatile.Write(ref load, cores);
                int target = Volatile.Read(ref samples) + 3;
                var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
                while (Volatile.Read(ref samples) < target && DateTime.UtcNow < deadline) Thread.Sleep(5);
                Assert.True(Volatile.Read(ref samples) >= target, "the watch stopped sampling");
                return Policy(tid);
            }
            Assert.Equal(SchedIdle, After(0));
            Assert.Equal(SchedIdle, After(BackgroundPriority.Lowering.BusyCores - 0.01)); // below the raise: stays idle
            Assert.Equal(SchedOther, After(BackgroundPriority.Lowering.BusyCores));
            Assert.Equal(SchedOther, After(BackgroundPriority.Lowering.FreeCores)); // between the two: stays raised
            Assert.Equal(SchedIdle, After(BackgroundPriority.Lowering.FreeCores - 0.01));
            Assert.Equal(SchedOther, After(2));
            release.Set();
            Assert.True(thread.Join(TimeSpan.FromSeconds(30)), "the thread did not end");
            // Once the thread has ended, neither the watch nor the finish touches its kernel id again.
            int sampled = Volatile.Read(ref samples);
            lowering.Restore();
            Thread.Sleep(100);
            Assert.Equal(sampled, Volatile.Read(ref samples));
        }
        finally
        {
            release.Set();
        }
    }

    private const int SchedOther = 0, SchedIdle = 5;

    /// <summary>A lowering that sees no other process take the CPU, whatever else runs beside the test.</summary>
    internal static BackgroundPriority.Lowering FreeMachine() => new(() => 0);

    /// <summary>A thread's scheduling policy (<see cref="Scheduling"/>).</summary>
    private static int Policy(int tid) => Scheduling(tid).Policy;

    /// <summary>A thread of this process's nice value and scheduling policy.</summary>
    internal static (int Nice, int Policy) Scheduling(int tid)
    {
        var stat = Squash.Testing.ThreadStat.Read($"/proc/self/task/{tid}/stat");
        return (stat.Nice, stat.Policy);
    }

    /// <summary>Holds this flow's background threads at <paramref name="point"/> until <paramref name="release"/>; the result counts the holds.</summary>
    private static Func<int> Held(BackgroundPriority.Point point, ManualResetEventSlim release, out ManualResetEventSlim reached)
    {
        int holds = 0;
        var signal = reached = new ManualResetEventSlim(false);
        BackgroundPriority.Hold.Value = p =>
        {
            if (p != point) return;
            Interlocked.Increment(ref holds);
            signal.Set();
            release.Wait(TimeSpan.FromMinutes(5));
        };
        return () => Volatile.Read(ref holds);
    }
}
