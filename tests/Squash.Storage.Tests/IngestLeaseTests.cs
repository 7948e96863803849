using Squash.Storage.Writes;

namespace Squash.Storage.Tests;

/// <summary>
/// The ingest lease's keep-alive: work longer than the lease keeps it while the keep-alive runs, and a keep-alive that
/// finds the lease taken says so by cancelling the work. Real time with short leases (3 s: a renewal every second leaves
/// two seconds of slack for a machine running another copy of the suite), and each wait has a deadline.
/// </summary>
public sealed class IngestLeaseTests : IDisposable
{
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(3);
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-lease-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    [Fact]
    public async Task AKeptLeaseOutlastsItsDurationAndAnUnkeptOneDoesNot()
    {
        var blobs = new FolderBlobStore(_root);
        var kept = await IngestLease.TryAcquireAsync(blobs, "kept", Lease);
        var unkept = await IngestLease.TryAcquireAsync(blobs, "unkept", Lease);
        Assert.NotNull(kept);
        Assert.NotNull(unkept);
        using var lost = new CancellationTokenSource();
        using var stop = new CancellationTokenSource();
        var keepAlive = kept!.KeepAliveAsync(lost, stop.Token);

        await Task.Delay(2 * Lease);
        Assert.Null(await IngestLease.TryAcquireAsync(blobs, "kept", Lease));       // still held: renewed meanwhile
        Assert.NotNull(await IngestLease.TryAcquireAsync(blobs, "unkept", Lease));  // expired: another trigger takes it
        Assert.False(lost.IsCancellationRequested);

        await stop.CancelAsync();
        await keepAlive.WaitAsync(TimeSpan.FromSeconds(10));
        await kept.ReleaseAsync();
        Assert.NotNull(await IngestLease.TryAcquireAsync(blobs, "kept", Lease));
    }

    [Fact]
    public async Task AKeepAliveThatFindsTheLeaseTakenCancelsTheWork()
    {
        var blobs = new FolderBlobStore(_root);
        var held = await IngestLease.TryAcquireAsync(blobs, "taken", Lease);
        Assert.NotNull(held);
        // Another holder overwrites the lease (as one that found it expired would): the next renewal fails. (No check here
        // that the lease is still held: its expiry is set before its write's fsync, which a loaded CI machine once held past 3 s.)
        await blobs.WriteAsync(IngestLease.NameFor("taken"), "{\"holder\":\"someone-else\",\"expiresUtc\":\"2999-01-01T00:00:00Z\"}"u8.ToArray(), WriteCondition.Overwrite);

        using var lost = new CancellationTokenSource();
        using var stop = new CancellationTokenSource();
        var keepAlive = held!.KeepAliveAsync(lost, stop.Token);
        await keepAlive.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(lost.IsCancellationRequested);
        Assert.False(await held.RenewAsync());
        Assert.Null(await IngestLease.TryAcquireAsync(blobs, "taken", Lease)); // the other holder's, untouched by our release
        await held.ReleaseAsync();
        Assert.Null(await IngestLease.TryAcquireAsync(blobs, "taken", Lease));
    }
}
