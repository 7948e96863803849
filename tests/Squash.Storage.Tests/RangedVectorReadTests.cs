using Squash.Index.Format;
using Squash.Index.Model;

namespace Squash.Storage.Tests;

/// <summary>Cold reads of raw-vector rows: ranged, coalesced, and verified block by block.</summary>
public sealed class RangedVectorReadTests : IDisposable
{
    private const int Dims = 100; // 400-byte rows: 2 rows per 1 KiB block, so boundaries fall between rows 1|2, 3|4...
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-ranged-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    /// <summary>Counts ranged reads (the requests a cold query costs) and whole reads.</summary>
    private sealed class CountingStore(IBlobStore inner) : IBlobStore
    {
        public int RangedReads, WholeReads;
        public List<(long Offset, int Length)> Ranges { get; } = [];
        public string Description => inner.Description;
        public Task<byte[]> ReadAllAsync(string name, CancellationToken ct = default) { Interlocked.Increment(ref WholeReads); return inner.ReadAllAsync(name, ct); }
        public Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken ct = default)
        {
            Interlocked.Increment(ref RangedReads);
            lock (Ranges) Ranges.Add((offset, length));
            return inner.ReadRangeAsync(name, offset, length, ct);
        }
        public Task<BlobInfo?> GetInfoAsync(string name, CancellationToken ct = default) => inner.GetInfoAsync(name, ct);
        public IAsyncEnumerable<BlobInfo> ListAsync(string prefix, CancellationToken ct = default) => inner.ListAsync(prefix, ct);
        public Task<bool> DeleteAsync(string name, CancellationToken ct = default) => inner.DeleteAsync(name, ct);
        public Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken ct = default) => inner.WriteAsync(name, data, condition, ct);
    }

    private static PartitionVectors Vectors(int rows, int seed)
    {
        var rng = new Random(seed);
        return new PartitionVectors { Count = rows, Dimensions = Dims, Data = Enumerable.Range(0, rows * Dims).Select(_ => (float)rng.NextDouble()).ToArray() };
    }

    private static PartitionEntry Entry(int rows, long bytes) => new()
    {
        Id = 0, Count = rows, CodedDimensions = 1, BitsPerVector = 1,
        Codes = new SegmentRef("p00000.codes.seg", 0), Vectors = new SegmentRef("p00000.vectors.seg", bytes),
    };

    private async Task<(IndexStore Store, CountingStore Counting, PartitionEntry Entry, PartitionVectors Full, VectorBlockTable Table)> Stored(
        int rows, IBlobStore? backing = null, RangedReadOptions? options = null)
    {
        var full = Vectors(rows, rows);
        var segment = full.ToSegment();
        var counting = new CountingStore(backing ?? new FolderBlobStore(_root));
        await counting.WriteAsync("p00000.vectors.seg", segment, WriteCondition.Overwrite);
        var store = new IndexStore(counting) { RangedReads = options ?? new RangedReadOptions() };
        var entry = Entry(rows, segment.Length);
        var table = await store.ReadVectorBlockTableAsync("p00000.vectors.seg", entry, Dims);
        return (store, counting, entry, full, table);
    }

    private static async Task<PartitionVectors> Rows(IndexStore store, VectorBlockTable table, PartitionEntry entry, params int[] rows)
    {
        var blocks = new float[]?[table.BlockCount];
        foreach (var (b, data) in await store.ReadVectorBlocksAsync(table, rows.Select(table.BlockOf))) blocks[b] = data;
        return PartitionVectors.Sparse(entry.Count, Dims, table.RowsPerBlock, blocks);
    }

    [Theory]
    [InlineData(16, false)] // 16 × 400 B is a multiple of 64: the last row ends exactly at the end of the blob
    [InlineData(17, false)] // an odd count: the last block holds one row, and padding follows it
    [InlineData(16, true)]
    [InlineData(17, true)]
    public async Task RowsAtTheEndsAndAcrossBlockBoundariesComeBackExactly(int rows, bool azure)
    {
        var (store, _, entry, full, table) = await Stored(rows, azure ? Azurite.NewStore("ranged") : null);
        Assert.Equal(2, table.RowsPerBlock);
        var (lastOffset, lastLength) = table.BlockRange(table.BlockCount - 1);
        if (rows == 16) Assert.Equal(entry.Vectors.Bytes, lastOffset + lastLength);
        else Assert.Equal(Dims * sizeof(float), lastLength);

        int[] wanted = [0, 1, 2, rows - 2, rows - 1]; // first row, a 1|2 block boundary, the last two rows
        var sparse = await Rows(store, table, entry, wanted);
        foreach (int r in wanted) Assert.Equal(full.Row(r).ToArray(), sparse.Row(r).ToArray());
        Assert.False(sparse.HasRow(6));
        Assert.Throws<MissingRowException>(() => sparse.Row(6).ToArray());
        Assert.Throws<InvalidOperationException>(() => sparse.Data);
    }

    [Fact]
    public async Task AdjacentRowsAreOneRequestAndDistantRowsAreNot()
    {
        var (store, counting, entry, full, table) = await Stored(200, options: new RangedReadOptions { CoalesceGapBytes = 0 });
        int before = counting.RangedReads;
        // Rows 10..17 are blocks 5..8, back to back: one request.
        var sparse = await Rows(store, table, entry, 10, 11, 12, 13, 14, 15, 16, 17);
        Assert.Equal(1, counting.RangedReads - before);
        Assert.Equal(full.Row(17).ToArray(), sparse.Row(17).ToArray());

        // Blocks 20, 22 and 90 (one block apart, then far): three requests without a gap allowance...
        before = counting.RangedReads;
        await Rows(store, table, entry, 40, 44, 180);
        Assert.Equal(3, counting.RangedReads - before);

        // ...and two when a gap of one block (800 B) may be read through.
        var tolerant = new IndexStore(counting) { RangedReads = new RangedReadOptions { CoalesceGapBytes = 1024 } };
        before = counting.RangedReads;
        var joined = await Rows(tolerant, table, entry, 40, 44, 180);
        Assert.Equal(2, counting.RangedReads - before);
        Assert.Equal(full.Row(44).ToArray(), joined.Row(44).ToArray());
        Assert.Equal(0, counting.WholeReads);
    }

    [Fact]
    public async Task AFlippedByteInOneBlockIsAnErrorNamingTheBlobAndOtherBlocksStillRead()
    {
        var (store, counting, entry, full, table) = await Stored(40);
        var bytes = await counting.ReadAllAsync("p00000.vectors.seg");
        var (offset, _) = table.BlockRange(7); // rows 14 and 15
        bytes[offset + 123] ^= 0x04;
        await counting.WriteAsync("p00000.vectors.seg", bytes, WriteCondition.Overwrite);

        var e = await Assert.ThrowsAsync<CorruptIndexException>(() => Rows(store, table, entry, 15));
        Assert.Contains("p00000.vectors.seg", e.Message);
        Assert.Contains("block 7", e.Message);
        // The blocks around it are intact and still verify.
        var ok = await Rows(store, table, entry, 13, 16);
        Assert.Equal(full.Row(16).ToArray(), ok.Row(16).ToArray());
        // Read whole, the segment checksum catches the same byte.
        Assert.Throws<CorruptIndexException>(() => PartitionVectors.FromSegment(bytes, "p00000.vectors.seg", entry, Dims));
    }

    [Fact]
    public async Task AFlippedByteInTheHeadIsAnErrorNamingTheBlob()
    {
        var (store, counting, entry, _, table) = await Stored(40);
        var bytes = await counting.ReadAllAsync("p00000.vectors.seg");
        bytes[SegmentFile.HeaderSize + 24 * 2 + 40] ^= 0x01; // inside the block-checksum table
        await counting.WriteAsync("p00000.vectors.seg", bytes, WriteCondition.Overwrite);
        var e = await Assert.ThrowsAsync<CorruptIndexException>(() => store.ReadVectorBlockTableAsync("p00000.vectors.seg", entry, Dims));
        Assert.Contains("p00000.vectors.seg", e.Message);
        Assert.Contains("head checksum", e.Message);
    }

    [Fact]
    public async Task RowsGoThroughTheCacheSoARepeatReadsNothing()
    {
        var folder = new FolderBlobStore(_root);
        var store = new IndexStore(folder);
        var manifest = await IndexPublisher.BuildAndPublishAsync(store, Enumerable.Range(0, 300 * Dims).Select(i => (float)Math.Sin(i)).ToArray(), 300, Dims,
            new Squash.Index.Build.IndexBuildOptions { Partitions = 2 });
        var entry = manifest.Partitions[1];
        var cache = new SegmentCache();
        var first = await store.ReadVectorRowsAsync(manifest, entry, [0, 5, 6, entry.Count - 1], cache);
        Assert.True(first.BytesRead > 0);
        Assert.Equal(0, first.BlocksFromCache);
        Assert.True(first.BytesRead < entry.Vectors.Bytes / 4, $"{first.BytesRead} bytes for 4 rows of a {entry.Vectors.Bytes}-byte segment");
        var again = await store.ReadVectorRowsAsync(manifest, entry, [5, entry.Count - 1], cache);
        Assert.Equal(0, again.BytesRead);
        Assert.Equal(0, again.Requests);
        Assert.Equal(2, again.BlocksFromCache);
        var whole = await store.ReadVectorsAsync(manifest, entry);
        Assert.Equal(whole.Row(entry.Count - 1).ToArray(), again.Vectors.Row(entry.Count - 1).ToArray());
    }
}
