using System.Collections.Concurrent;

namespace Squash.Storage;

/// <summary>
/// The bytes of segment blobs a process has read or written, kept up to a byte budget (oldest out first). Only blobs inside
/// version folders whose names <see cref="Keeps"/> accepts: those are written create-only and never changed, so a copy
/// stays true for as long as the blob exists (a blob gc removed is noticed when a version naming it is published: that
/// check lists the folders). For a warm ingest instance: each run reads the codes and masks of every partition, most of
/// which the previous run read or wrote itself. Segments packed in a shared blob (<see cref="SegmentPack"/>) are read by
/// ranged reads: a kept pack this process wrote answers them from its bytes, and a range read from the store is kept as read.
/// </summary>
public sealed class SegmentBlobCache(long capacityBytes)
{
    private readonly ConcurrentDictionary<string, byte[]> _blobs = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<string> _order = new();
    private long _bytes;

    public long CapacityBytes { get; } = capacityBytes;
    public long Bytes => Interlocked.Read(ref _bytes);
    public long Hits => Interlocked.Read(ref _hits);
    private long _hits;

    /// <summary>
    /// Codes, attributes and deletion masks inside version folders, and the index pack that holds them for an ingest run (raw
    /// vectors stay out, but for the vector packs this process wrote: <see cref="KeepsWritten"/>).
    /// </summary>
    public static bool Keeps(string name) =>
        name.Contains("/versions/", StringComparison.Ordinal) &&
        (name.Contains(".codes.", StringComparison.Ordinal) || name.Contains(".attributes.", StringComparison.Ordinal) || name.EndsWith(".deleted.seg", StringComparison.Ordinal)
         || name.EndsWith("/" + SegmentPack.IndexName, StringComparison.Ordinal));

    /// <summary>
    /// What a write keeps besides <see cref="Keeps"/>: the vector pack this process wrote. The next runs' compactions merge
    /// the newest appended segments of a partition and read their rows back from the last few runs' vector packs (bench/writes.md,
    /// "read touched"); a vector pack only read is not kept (each range of it is read once).
    /// </summary>
    private static bool KeepsWritten(string name) =>
        Keeps(name) || (name.Contains("/versions/", StringComparison.Ordinal) && name.EndsWith("/" + SegmentPack.VectorsName, StringComparison.Ordinal));

    /// <summary>
    /// The largest range read from the store that the cache keeps: a segment's range (a partition's codes, attributes or
    /// mask inside a pack, which the next run reads again by the same range) is far smaller; a larger one is a bulk read of
    /// many segments at once, which nothing reads again by that range and which would push out what is read again.
    /// </summary>
    public const int MaxKeptRangeBytes = 1 << 20;

    /// <summary>The largest blob the cache keeps (a quarter of its capacity, so one blob cannot empty it).</summary>
    public long MaxBlobBytes => CapacityBytes / 4;

    /// <summary>Whether the whole blob <paramref name="name"/> of a store that <see cref="Over"/> wraps is held now.</summary>
    public bool Holds(IBlobStore over, string name) => _blobs.ContainsKey(KeyOf(over, name));

    // One cache may serve several stores: the key names the store too.
    private static string KeyOf(IBlobStore store, string name) => store.Description + "\n" + name;

    /// <summary><paramref name="inner"/> with reads of kept blobs answered from this cache when it can, and their reads and writes kept.</summary>
    public IBlobStore Over(IBlobStore inner) => new Caching(inner, this);

    private void Add(string key, byte[] bytes)
    {
        if (bytes.LongLength > MaxBlobBytes || !_blobs.TryAdd(key, bytes)) return;
        _order.Enqueue(key);
        Interlocked.Add(ref _bytes, bytes.LongLength);
        while (Interlocked.Read(ref _bytes) > CapacityBytes && _order.TryDequeue(out var oldest))
            if (_blobs.TryRemove(oldest, out var dropped)) Interlocked.Add(ref _bytes, -dropped.LongLength);
    }

    private sealed class Caching(IBlobStore inner, SegmentBlobCache cache) : IBlobStore
    {
        public string Description => inner.Description;
        private string Key(string name) => KeyOf(inner, name);

        public async Task<byte[]> ReadAllAsync(string name, CancellationToken cancellationToken = default)
        {
            if (!KeepsWritten(name)) return await inner.ReadAllAsync(name, cancellationToken).ConfigureAwait(false);
            if (cache._blobs.TryGetValue(Key(name), out var held))
            {
                Interlocked.Increment(ref cache._hits);
                return held;
            }
            if (!Keeps(name)) return await inner.ReadAllAsync(name, cancellationToken).ConfigureAwait(false);
            var bytes = await inner.ReadAllAsync(name, cancellationToken).ConfigureAwait(false);
            cache.Add(Key(name), bytes);
            return bytes;
        }

        public async Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken cancellationToken = default)
        {
            var info = await inner.WriteAsync(name, data, condition, cancellationToken).ConfigureAwait(false);
            // Create-only writes are the segments' (a version is written once); anything else is not a segment.
            if (condition == WriteCondition.IfNotExists && KeepsWritten(name)) cache.Add(Key(name), data.ToArray());
            return info;
        }

        public async Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken cancellationToken = default)
        {
            if (!KeepsWritten(name)) return await inner.ReadRangeAsync(name, offset, length, cancellationToken).ConfigureAwait(false);
            // The whole blob when this process wrote or read it, else this very range read before.
            if (cache._blobs.TryGetValue(Key(name), out var whole) && offset >= 0 && offset + length <= whole.LongLength)
            {
                Interlocked.Increment(ref cache._hits);
                return whole.AsSpan((int)offset, length).ToArray();
            }
            // A range past MaxKeptRangeBytes spans many segments (IndexStore.PrefetchedAsync): no later read asks for it again.
            if (!Keeps(name) || length > MaxKeptRangeBytes) return await inner.ReadRangeAsync(name, offset, length, cancellationToken).ConfigureAwait(false);
            var rangeKey = Key(name) + $"\n{offset}+{length}";
            if (cache._blobs.TryGetValue(rangeKey, out var held))
            {
                Interlocked.Increment(ref cache._hits);
                return held;
            }
            var bytes = await inner.ReadRangeAsync(name, offset, length, cancellationToken).ConfigureAwait(false);
            cache.Add(rangeKey, bytes);
            return bytes;
        }
        public Task<BlobInfo?> GetInfoAsync(string name, CancellationToken cancellationToken = default) => inner.GetInfoAsync(name, cancellationToken);
        public Task<(byte[] Bytes, BlobInfo Info)?> ReadWithInfoAsync(string name, CancellationToken cancellationToken = default) =>
            inner.ReadWithInfoAsync(name, cancellationToken);
        public IAsyncEnumerable<BlobInfo> ListAsync(string prefix, CancellationToken cancellationToken = default) => inner.ListAsync(prefix, cancellationToken);

        public async Task<bool> DeleteAsync(string name, CancellationToken cancellationToken = default)
        {
            if (cache._blobs.TryRemove(Key(name), out var dropped)) Interlocked.Add(ref cache._bytes, -dropped.LongLength);
            // Ranges kept from it (a pack's sections): a blob name is never reused, but a deleted one must not be served.
            foreach (var key in cache._blobs.Keys.Where(k => k.StartsWith(Key(name) + "\n", StringComparison.Ordinal)).ToList())
                if (cache._blobs.TryRemove(key, out var range)) Interlocked.Add(ref cache._bytes, -range.LongLength);
            return await inner.DeleteAsync(name, cancellationToken).ConfigureAwait(false);
        }
    }
}
