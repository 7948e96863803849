using Squash.Storage;

namespace Squash.Testing;

/// <summary>Passes every call to the inner store; a test store overrides the calls it changes.</summary>
internal abstract class PassThroughStore(IBlobStore inner) : IBlobStore
{
    protected IBlobStore Inner => inner;
    public string Description => inner.Description;
    public virtual Task<byte[]> ReadAllAsync(string name, CancellationToken ct = default) => inner.ReadAllAsync(name, ct);
    public virtual Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken ct = default) => inner.ReadRangeAsync(name, offset, length, ct);
    public virtual Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken ct = default) => inner.WriteAsync(name, data, condition, ct);
    public virtual Task<BlobInfo?> GetInfoAsync(string name, CancellationToken ct = default) => inner.GetInfoAsync(name, ct);
    public virtual IAsyncEnumerable<BlobInfo> ListAsync(string prefix, CancellationToken ct = default) => inner.ListAsync(prefix, ct);
    public virtual Task<bool> DeleteAsync(string name, CancellationToken ct = default) => inner.DeleteAsync(name, ct);
}
