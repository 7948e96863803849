namespace Squash.Storage;

/// <summary>
/// Properties of a stored blob. The ETag changes whenever the content does. <see cref="LastModified"/>
/// is the store's clock (null when a store cannot tell); garbage collection uses it to see builds in flight.
/// </summary>
public sealed record BlobInfo(string Name, long Length, string ETag, DateTimeOffset? LastModified = null);

/// <summary>How a write treats an existing blob.</summary>
public abstract record WriteCondition
{
    private WriteCondition() { }

    /// <summary>Replace whatever is there.</summary>
    public static readonly WriteCondition Overwrite = new OverwriteCondition();
    /// <summary>Fail with <see cref="BlobConditionFailedException"/> if the blob exists.</summary>
    public static readonly WriteCondition IfNotExists = new IfNotExistsCondition();
    /// <summary>Fail unless the blob exists with this ETag (compare-and-swap).</summary>
    public static WriteCondition IfMatch(string etag) => new IfMatchCondition(etag);

    public sealed record OverwriteCondition : WriteCondition;
    public sealed record IfNotExistsCondition : WriteCondition;
    public sealed record IfMatchCondition(string ETag) : WriteCondition;
}

public sealed class BlobNotFoundException(string name) : Exception($"blob '{name}' does not exist")
{
    public string BlobName { get; } = name;
}

public sealed class BlobConditionFailedException(string name, string reason) : Exception($"conditional write of blob '{name}' failed: {reason}")
{
    public string BlobName { get; } = name;
}

/// <summary>
/// The small blob-store contract everything above storage uses: whole and ranged reads,
/// conditional writes, listing and delete. Names use '/' separators.
/// </summary>
public interface IBlobStore
{
    /// <summary>A short description for logs and errors ("dir:/data/idx").</summary>
    string Description { get; }

    Task<byte[]> ReadAllAsync(string name, CancellationToken cancellationToken = default);

    /// <summary>Reads <paramref name="length"/> bytes at <paramref name="offset"/>; a range past the end is an error.</summary>
    Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken cancellationToken = default);

    /// <summary>Writes the whole blob atomically: readers see the old content or the new, never a mix.</summary>
    Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken cancellationToken = default);

    /// <summary>Null when the blob does not exist.</summary>
    Task<BlobInfo?> GetInfoAsync(string name, CancellationToken cancellationToken = default);

    /// <summary>
    /// A small blob's bytes with the ETag of exactly those bytes (for a compare-and-swap), or null when it does not
    /// exist. Stores that can answer both in one request override this; the fallback reads the ETag first, so a
    /// blob changed in between fails the caller's next compare-and-swap instead of passing it.
    /// </summary>
    async Task<(byte[] Bytes, BlobInfo Info)?> ReadWithInfoAsync(string name, CancellationToken cancellationToken = default)
    {
        var info = await GetInfoAsync(name, cancellationToken).ConfigureAwait(false);
        if (info is null) return null;
        try
        {
            return (await ReadAllAsync(name, cancellationToken).ConfigureAwait(false), info);
        }
        catch (BlobNotFoundException)
        {
            return null;
        }
    }

    IAsyncEnumerable<BlobInfo> ListAsync(string prefix, CancellationToken cancellationToken = default);

    /// <summary>Deletes if present; returns whether it was.</summary>
    Task<bool> DeleteAsync(string name, CancellationToken cancellationToken = default);
}
