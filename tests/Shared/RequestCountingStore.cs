using Squash.Storage;

namespace Squash.Testing;

/// <summary>
/// A blob store that counts the read requests sent to it, whole and ranged (only of blobs <paramref name="counts"/>
/// accepts, all when null), so a test can assert how many requests a read took.
/// </summary>
internal sealed class RequestCountingStore(IBlobStore inner, Func<string, bool>? counts = null) : IBlobStore
{
    public int Reads, RangedReads;
    public string Description => inner.Description;

    public Task<byte[]> ReadAllAsync(string name, CancellationToken ct = default)
    {
        if (counts?.Invoke(name) ?? true) Interlocked.Increment(ref Reads);
        return inner.ReadAllAsync(name, ct);
    }

    public Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken ct = default)
    {
        if (counts?.Invoke(name) ?? true) Interlocked.Increment(ref RangedReads);
        return inner.ReadRangeAsync(name, offset, length, ct);
    }

    public Task<BlobInfo?> GetInfoAsync(string name, CancellationToken ct = default) => inner.GetInfoAsync(name, ct);
    public IAsyncEnumerable<BlobInfo> ListAsync(string prefix, CancellationToken ct = default) => inner.ListAsync(prefix, ct);
    public Task<bool> DeleteAsync(string name, CancellationToken ct = default) => inner.DeleteAsync(name, ct);
    public Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken ct = default) => inner.WriteAsync(name, data, condition, ct);
}
