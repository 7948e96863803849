using Squash.Storage;

namespace Squash.Testing;

/// <summary>
/// A blob store that counts the read requests sent to it, whole and ranged (only of blobs <paramref name="counts"/>
/// accepts, all when null), so a test can assert how many requests a read took.
/// </summary>
internal sealed class RequestCountingStore(IBlobStore inner, Func<string, bool>? counts = null) : PassThroughStore(inner)
{
    public int Reads, RangedReads;

    public override Task<byte[]> ReadAllAsync(string name, CancellationToken ct = default)
    {
        if (counts?.Invoke(name) ?? true) Interlocked.Increment(ref Reads);
        return Inner.ReadAllAsync(name, ct);
    }

    public override Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken ct = default)
    {
        if (counts?.Invoke(name) ?? true) Interlocked.Increment(ref RangedReads);
        return Inner.ReadRangeAsync(name, offset, length, ct);
    }
}
