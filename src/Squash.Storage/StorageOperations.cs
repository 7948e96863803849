namespace Squash.Storage;

/// <summary>Storage operations by billing class (Azure Storage pricing: "Map each REST operation to a price").</summary>
public readonly record struct StorageOperations(long BlobReads, long BlobWrites, long BlobLists, long BlobOther, long BlobDeletes, long QueueOperations)
{
    public static readonly string[] Classes = ["blob read", "blob write", "blob list", "blob other", "blob delete", "queue"];

    [System.Text.Json.Serialization.JsonIgnore]
    public long Total => BlobReads + BlobWrites + BlobLists + BlobOther + BlobDeletes + QueueOperations;

    public static StorageOperations operator +(StorageOperations a, StorageOperations b) => new(a.BlobReads + b.BlobReads, a.BlobWrites + b.BlobWrites,
        a.BlobLists + b.BlobLists, a.BlobOther + b.BlobOther, a.BlobDeletes + b.BlobDeletes, a.QueueOperations + b.QueueOperations);

    public static StorageOperations operator -(StorageOperations a, StorageOperations b) => new(a.BlobReads - b.BlobReads, a.BlobWrites - b.BlobWrites,
        a.BlobLists - b.BlobLists, a.BlobOther - b.BlobOther, a.BlobDeletes - b.BlobDeletes, a.QueueOperations - b.QueueOperations);

    /// <summary>The wire form between an instance and the host (header <c>x-squash-storage-ops</c>): six counts, comma-separated, in <see cref="Classes"/> order.</summary>
    public string ToHeader() => $"{BlobReads},{BlobWrites},{BlobLists},{BlobOther},{BlobDeletes},{QueueOperations}";

    /// <summary>Null for anything but six non-negative integers (the header is an input like any other).</summary>
    public static StorageOperations? ParseHeader(string? text)
    {
        if (text is null) return null;
        var parts = text.Split(',');
        if (parts.Length != 6) return null;
        var n = new long[6];
        for (int i = 0; i < 6; i++)
            if (!long.TryParse(parts[i], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out n[i])) return null;
        return new StorageOperations(n[0], n[1], n[2], n[3], n[4], n[5]);
    }
}

/// <summary>
/// Running counts of storage operations (thread-safe). <see cref="Current"/> is the counter of the work in progress on this
/// async flow (a function invocation sets one); <see cref="CountingBlobStore"/> adds every operation to it.
/// </summary>
public sealed class StorageOperationCounter
{
    private static readonly AsyncLocal<StorageOperationCounter?> Ambient = new();
    private long _reads, _writes, _lists, _other, _deletes, _queue;
    private readonly object _gate = new();

    /// <summary>The counter of the invocation running on this async flow (null: none).</summary>
    public static StorageOperationCounter? Current { get => Ambient.Value; set => Ambient.Value = value; }

    public void AddBlobRead() => Interlocked.Increment(ref _reads);
    public void AddBlobWrite() => Interlocked.Increment(ref _writes);
    public void AddBlobList() => Interlocked.Increment(ref _lists);
    public void AddBlobOther() => Interlocked.Increment(ref _other);
    public void AddBlobDelete() => Interlocked.Increment(ref _deletes);
    public void AddQueue(long n = 1) => Interlocked.Add(ref _queue, n);

    public StorageOperations Read() => new(Interlocked.Read(ref _reads), Interlocked.Read(ref _writes), Interlocked.Read(ref _lists),
        Interlocked.Read(ref _other), Interlocked.Read(ref _deletes), Interlocked.Read(ref _queue));

    /// <summary>
    /// Operations already reported in a part of the answer (a tree node's own figure): the invocation adds only
    /// <see cref="Read"/> − <see cref="Reported"/> on top, so that nothing is counted twice.
    /// </summary>
    public StorageOperations Reported { get; private set; }

    public void MarkReported(StorageOperations ops)
    {
        lock (_gate) Reported += ops;
    }
}

/// <summary>
/// Counts what a blob store is asked to do, by billing class, into <see cref="StorageOperationCounter.Current"/> and a
/// process-wide <see cref="Total"/>. Placed under the retries, so a retried request counts as Azure bills it: twice.
/// </summary>
public sealed class CountingBlobStore(IBlobStore inner) : IBlobStore
{
    public static readonly StorageOperationCounter Total = new();

    public string Description => inner.Description;

    private static void Count(Action<StorageOperationCounter> add)
    {
        add(Total);
        if (StorageOperationCounter.Current is { } current) add(current);
    }

    public Task<byte[]> ReadAllAsync(string name, CancellationToken cancellationToken = default)
    {
        Count(c => c.AddBlobRead());
        return inner.ReadAllAsync(name, cancellationToken);
    }

    public Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken cancellationToken = default)
    {
        Count(c => c.AddBlobRead());
        return inner.ReadRangeAsync(name, offset, length, cancellationToken);
    }

    public Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken cancellationToken = default)
    {
        Count(c => c.AddBlobWrite());
        return inner.WriteAsync(name, data, condition, cancellationToken);
    }

    public Task<BlobInfo?> GetInfoAsync(string name, CancellationToken cancellationToken = default)
    {
        Count(c => c.AddBlobOther());
        return inner.GetInfoAsync(name, cancellationToken);
    }

    /// <summary>One read: the Azure store answers bytes and ETag with one Get Blob.</summary>
    public Task<(byte[] Bytes, BlobInfo Info)?> ReadWithInfoAsync(string name, CancellationToken cancellationToken = default)
    {
        Count(c => c.AddBlobRead());
        return inner.ReadWithInfoAsync(name, cancellationToken);
    }

    /// <summary>One list operation per page the store fetches is what Azure bills; a listing is counted as one (pages of 5,000).</summary>
    public IAsyncEnumerable<BlobInfo> ListAsync(string prefix, CancellationToken cancellationToken = default)
    {
        Count(c => c.AddBlobList());
        return inner.ListAsync(prefix, cancellationToken);
    }

    public Task<bool> DeleteAsync(string name, CancellationToken cancellationToken = default)
    {
        Count(c => c.AddBlobDelete());
        return inner.DeleteAsync(name, cancellationToken);
    }
}
