using Squash.Index.Format;
using Squash.Index.Model;

namespace Squash.Storage;

/// <summary>How ranged reads of raw-vector rows are grouped into requests.</summary>
public sealed record RangedReadOptions
{
    /// <summary>
    /// Two blocks whose byte ranges are at most this far apart are read by one request: a few KiB more on the
    /// wire cost less than another round trip (bench/storage.md), but the gap counts as bytes read, so it stays small.
    /// </summary>
    public int CoalesceGapBytes { get; init; } = 4 << 10;
    /// <summary>No single request grows past this.</summary>
    public int MaxRequestBytes { get; init; } = 4 << 20;
    /// <summary>
    /// Ranged requests in flight at once through one <see cref="IndexStore"/>, however many partitions and
    /// queries ask: a query that visits 100 partitions would otherwise open thousands of connections at once.
    /// </summary>
    public int MaxConcurrency { get; init; } = 32;
}

/// <summary>Rows of one partition fetched for a query: a sparse <see cref="PartitionVectors"/> and what it cost.</summary>
public sealed record FetchedRows(PartitionVectors Vectors, long BytesRead, int Requests, int BlocksFromCache, int BlocksRead);

// Cold reads of raw vectors: the head (block checksums) by one ranged read, then only the blocks that hold the
// rows a query re-ranks, coalesced into few requests issued in parallel, each block verified on arrival.
public sealed partial class IndexStore
{
    private long _rangedRequests;
    private SemaphoreSlim? _rangeGate;

    /// <summary>Ranged requests this instance issued (tests and statistics).</summary>
    public long RangedRequests => Interlocked.Read(ref _rangedRequests);

    public RangedReadOptions RangedReads { get; init; } = new();

    /// <summary>A vector segment's block table, by one ranged read of its head (two if the head is not where this build expects it).</summary>
    public Task<VectorBlockTable> ReadVectorBlockTableAsync(IndexManifest m, PartitionEntry p, CancellationToken ct = default) =>
        ReadVectorBlockTableAsync(BlobName(m, p.Vectors), p, m.InternalDimensions, ct);

    /// <summary>
    /// The same for a segment blob named directly (<paramref name="dims"/>: floats per row); when the segment is packed
    /// (<see cref="SegmentRef.Offset"/>), the table's block ranges are positions in the pack.
    /// </summary>
    public async Task<VectorBlockTable> ReadVectorBlockTableAsync(string name, PartitionEntry p, int dims, CancellationToken ct = default)
    {
        if (p.IsComposite) throw new InvalidOperationException($"partition {p.Id} has appended rows or a deletion mask: its vectors are read whole, not by rows");
        long start = p.Vectors.Offset ?? 0;
        var described = p.Vectors.Offset is { } o ? PackedName(name, o, p.Vectors.Bytes) : name;
        int guess = (int)Math.Min(VectorBlockTable.ExpectedHeadLength(p.Count, dims), p.Vectors.Bytes);
        var head = await ReadRangeCountedAsync(name, start, guess, ct).ConfigureAwait(false);
        int announced = SegmentFile.HeadLength(head);
        if (announced > head.Length && announced <= p.Vectors.Bytes)
        {
            // Written with another block size: fetch the rest of the head (FromHead validates it all).
            var rest = await ReadRangeCountedAsync(name, start + head.Length, announced - head.Length, ct).ConfigureAwait(false);
            head = [.. head, .. rest];
        }
        return VectorBlockTable.FromHead(head, described, p, dims, name, start);
    }

    /// <summary>The block table through <paramref name="cache"/>.</summary>
    public Task<VectorBlockTable> ReadVectorBlockTableAsync(IndexManifest m, PartitionEntry p, SegmentCache cache, CancellationToken ct = default) =>
        cache.GetOrLoadAsync(new SegmentKey(Name, m.Version, p.Id, CacheEntryKind.VectorBlockTable), t => ReadVectorBlockTableAsync(m, p, t),
            t => t.Hashes.Length * 8L + 128, ct);

    /// <summary>
    /// Reads the given blocks (block indexes of <paramref name="table"/>): neighbouring blocks are coalesced
    /// (<see cref="RangedReadOptions"/>), requests run in parallel, and every block is checked against its
    /// checksum — a corrupt block is a <see cref="CorruptIndexException"/> naming the blob, never data.
    /// </summary>
    public async Task<IReadOnlyDictionary<int, float[]>> ReadVectorBlocksAsync(VectorBlockTable table, IEnumerable<int> blocks, CancellationToken ct = default)
    {
        var result = new System.Collections.Concurrent.ConcurrentDictionary<int, float[]>();
        var groups = Coalesce(table, blocks);
        await Parallel.ForEachAsync(groups, new ParallelOptions { MaxDegreeOfParallelism = RangedReads.MaxConcurrency, CancellationToken = ct }, async (group, t) =>
        {
            foreach (var (b, rows) in (await ReadGroupAsync(table, group, t).ConfigureAwait(false)).Blocks) result[b] = rows;
        }).ConfigureAwait(false);
        return result;
    }

    /// <summary>
    /// The rows a query needs from one partition, as a sparse <see cref="PartitionVectors"/>: blocks already in
    /// <paramref name="cache"/> (when given) are used as they are, the others are read (coalesced, parallel,
    /// verified) and put in the cache, so a warm instance ends up holding the rows its queries touch.
    /// </summary>
    public Task<FetchedRows> ReadVectorRowsAsync(IndexManifest m, PartitionEntry p, IEnumerable<int> rows, SegmentCache? cache, CancellationToken ct = default) =>
        ReadVectorRowsAsync(m, p, rows, cache, null, ct);

    /// <summary>The same with the block table already at hand (the caller read it alongside other segments, and counted it).</summary>
    public async Task<FetchedRows> ReadVectorRowsAsync(IndexManifest m, PartitionEntry p, IEnumerable<int> rows, SegmentCache? cache, VectorBlockTable? knownTable, CancellationToken ct = default)
    {
        // Counted here rather than from the store-wide counters, which other partitions' reads move concurrently.
        long bytes = 0;
        int requests = 0;
        VectorBlockTable table;
        if (knownTable is not null)
        {
            table = knownTable;
        }
        else if (cache is null)
        {
            table = await ReadVectorBlockTableAsync(m, p, ct).ConfigureAwait(false);
            bytes += table.HeadBytes;
            requests++;
        }
        else
        {
            table = await cache.GetOrLoadAsync(new SegmentKey(Name, m.Version, p.Id, CacheEntryKind.VectorBlockTable), async t =>
            {
                var loaded = await ReadVectorBlockTableAsync(m, p, t).ConfigureAwait(false);
                Interlocked.Add(ref bytes, loaded.HeadBytes);
                Interlocked.Increment(ref requests);
                return loaded;
            }, t => t.Hashes.Length * 8L + 128, ct).ConfigureAwait(false);
        }
        var blocks = new float[]?[table.BlockCount];
        var wanted = rows.Select(table.BlockOf).Distinct().Order().ToList();
        var missing = new List<int>();
        int fromCache = 0;
        foreach (int b in wanted)
        {
            if (cache is not null && cache.TryGet<float[]>(BlockKey(m, p, b), out var data)) { blocks[b] = data; fromCache++; }
            else missing.Add(b);
        }
        // One shared read per coalesced group, started by the first of its blocks that needs it; with a cache,
        // a block another query is already loading is awaited, not read twice.
        // Reads that other queries may be waiting on (through the cache) are not cancelled by this caller.
        var readToken = cache is null ? ct : CancellationToken.None;
        var reads = new Dictionary<int, Lazy<Task<Dictionary<int, float[]>>>>();
        foreach (var group in Coalesce(table, missing))
        {
            var read = new Lazy<Task<Dictionary<int, float[]>>>(async () =>
            {
                var (result, groupBytes) = await ReadGroupAsync(table, group, readToken).ConfigureAwait(false);
                Interlocked.Add(ref bytes, groupBytes);
                Interlocked.Increment(ref requests);
                return result;
            });
            foreach (int b in group) reads[b] = read;
        }
        await Task.WhenAll(missing.Select(async b =>
        {
            blocks[b] = cache is null
                ? (await reads[b].Value.ConfigureAwait(false))[b]
                : await cache.GetOrLoadAsync(BlockKey(m, p, b), async _ => (await reads[b].Value.ConfigureAwait(false))[b],
                    data => data.Length * (long)sizeof(float) + 64, ct).ConfigureAwait(false);
        })).ConfigureAwait(false);
        var vectors = PartitionVectors.Sparse(p.Count, m.InternalDimensions, table.RowsPerBlock, blocks);
        return new FetchedRows(vectors, Interlocked.Read(ref bytes), requests, fromCache, wanted.Count - fromCache);
    }

    private SegmentKey BlockKey(IndexManifest m, PartitionEntry p, int block) => new(Name, m.Version, p.Id, CacheEntryKind.VectorBlock, block);

    /// <summary>Sorted distinct blocks grouped into runs that one request reads.</summary>
    public List<int[]> Coalesce(VectorBlockTable table, IEnumerable<int> blocks)
    {
        var groups = new List<int[]>();
        var current = new List<int>();
        long start = 0, end = 0;
        foreach (int b in blocks.Distinct().Order())
        {
            if (b < 0 || b >= table.BlockCount) throw new ArgumentOutOfRangeException(nameof(blocks), $"block {b} is outside 0..{table.BlockCount - 1} of '{table.Name}'");
            var (offset, length) = table.BlockRange(b);
            if (current.Count > 0 && (offset - end > RangedReads.CoalesceGapBytes || offset + length - start > RangedReads.MaxRequestBytes))
            {
                groups.Add([.. current]);
                current.Clear();
            }
            if (current.Count == 0) start = offset;
            current.Add(b);
            end = offset + length;
        }
        if (current.Count > 0) groups.Add([.. current]);
        return groups;
    }

    /// <summary>One request covering a group's first to last block; each block of the group is verified.</summary>
    private async Task<(Dictionary<int, float[]> Blocks, long Bytes)> ReadGroupAsync(VectorBlockTable table, int[] group, CancellationToken ct)
    {
        long start = table.BlockRange(group[0]).Offset;
        var (lastOffset, lastLength) = table.BlockRange(group[^1]);
        var bytes = await ReadRangeCountedAsync(table.Blob, start, checked((int)(lastOffset + lastLength - start)), ct).ConfigureAwait(false);
        var result = new Dictionary<int, float[]>(group.Length);
        foreach (int b in group)
        {
            var (offset, length) = table.BlockRange(b);
            result[b] = table.Decode(b, bytes.AsSpan((int)(offset - start), length));
        }
        return (result, bytes.LongLength);
    }

    private async Task<byte[]> ReadRangeCountedAsync(string name, long offset, int length, CancellationToken ct)
    {
        var gate = LazyInitializer.EnsureInitialized(ref _rangeGate, () => new SemaphoreSlim(Math.Max(1, RangedReads.MaxConcurrency)));
        byte[] bytes;
        await gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            bytes = await Blobs.ReadRangeAsync(name, offset, length, ct).ConfigureAwait(false);
        }
        catch (BlobNotFoundException)
        {
            throw new CorruptIndexException($"blob '{name}' named by the index is missing from {Blobs.Description}");
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new CorruptIndexException($"blob '{name}' is shorter than the index says: {e.Message}");
        }
        finally
        {
            gate.Release();
        }
        Interlocked.Add(ref _bytesRead, bytes.LongLength);
        Interlocked.Increment(ref _rangedRequests);
        if (bytes.Length != length) throw new CorruptIndexException($"ranged read of blob '{name}' returned {bytes.Length} of {length} bytes");
        return bytes;
    }
}
