using Squash.Core;
using Squash.Core.Vectors;

namespace Squash.Search.Tests;

/// <summary>
/// The calibration's exact neighbours computed in chunks beside a build (one background thread, the rest on every core
/// at the end) are the brute force's over all queries at once, each base-sample query left out of its own.
/// </summary>
public sealed class ExactNeighboursDuringBuildTests
{
    [Theory]
    [InlineData(1, Metric.L2, 0)]
    [InlineData(2, Metric.Cosine, 0)]
    [InlineData(3, Metric.L2, 300)]
    public async Task ChunkedNeighboursAreTheWholeBruteForcesWithoutEachQuerysOwnRow(int seed, Metric metric, int backgroundMilliseconds)
    {
        const int n = 2500, dims = 20, k = 10, queries = 700; // three chunks, the last one short
        var (data, rows, querySet) = TestData.UniformWithRowQueries(n, dims, queries, seed);
        var self = rows.Select(r => (long)r).ToArray();
        var baseSet = new VectorSet(data, n, dims);
        var expected = GroundTruth.Compute(baseSet, new VectorSet(querySet, queries, dims), k, metric, accept: (q, id) => id != rows[q]);

        using var exact = new ExactNeighboursDuringBuild(baseSet, new VectorSet(querySet, queries, dims), k, metric, self, CancellationToken.None);
        // 0: the end comes at once and shares out every chunk the background thread has not started; else it has a head start.
        if (backgroundMilliseconds > 0) await Task.Delay(backgroundMilliseconds);
        var ids = await exact.FinishAsync().WaitAsync(TimeSpan.FromMinutes(2));

        Assert.Equal(queries, ids.Length);
        for (int q = 0; q < queries; q++)
        {
            Assert.True(expected[q].SequenceEqual(ids[q]), $"seed {seed}, query {q}: [{string.Join(",", ids[q])}], the brute force [{string.Join(",", expected[q])}]");
            Assert.DoesNotContain(rows[q], ids[q]);
        }
    }

    [Fact]
    public async Task ACancelledBuildStopsTheBackgroundThreadAndFinishingSaysCancelled()
    {
        const int n = 4000, dims = 64, queries = 1000;
        var rng = new Random(5);
        var data = new float[n * dims];
        for (int i = 0; i < data.Length; i++) data[i] = (float)rng.NextDouble();
        using var cancel = new CancellationTokenSource();
        var exact = new ExactNeighboursDuringBuild(new VectorSet(data, n, dims), new VectorSet(data[..(queries * dims)], queries, dims), 10, Metric.L2,
            null, cancel.Token);
        cancel.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => exact.FinishAsync(cancel.Token).WaitAsync(TimeSpan.FromMinutes(2)));
        var disposed = Task.Run(exact.Dispose);
        Assert.Same(disposed, await Task.WhenAny(disposed, Task.Delay(TimeSpan.FromMinutes(1))));
    }

    [Fact]
    public async Task OnLinuxTheBackgroundThreadRunsAtTheLowestPriority()
    {
        if (!OperatingSystem.IsLinux() || System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture != System.Runtime.InteropServices.Architecture.X64)
            return; // the policies are set on Linux x64 only; elsewhere Thread.Priority does it, which the runtime applies itself
        const int n = 40_000, dims = 128, queries = 2048;
        var rng = new Random(6);
        var data = new float[n * dims];
        for (int i = 0; i < data.Length; i++) data[i] = (float)rng.NextDouble();
        // Other tests beside this one would raise the thread to the normal policy (BackgroundPriority.Lowering).
        BackgroundPriority.NewLowering.Value = BackgroundHandoverTests.FreeMachine;
        ExactNeighboursDuringBuild exact;
        try
        {
            exact = new ExactNeighboursDuringBuild(new VectorSet(data, n, dims), new VectorSet(data[..(queries * dims)], queries, dims), 10, Metric.L2,
                null, CancellationToken.None);
        }
        finally { BackgroundPriority.NewLowering.Value = null; }
        using var owned = exact;
        // The idle policy, or nice 19 where the policy is refused.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (exact.Priority.ThreadId == 0 && DateTime.UtcNow < deadline) await Task.Delay(5);
        Assert.True(exact.Priority.ThreadId > 0, "the background thread was not lowered");
        var (nice, policy) = BackgroundHandoverTests.Scheduling(exact.Priority.ThreadId);
        Assert.True(policy == 5 || nice == 19, $"the background thread runs at policy {policy}, nice {nice}");
        Assert.Equal(queries, (await exact.FinishAsync().WaitAsync(TimeSpan.FromMinutes(2))).Length);
    }
}
