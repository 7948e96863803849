using System.Buffers.Binary;
using Squash.Storage.Builds;

namespace Squash.Storage.Tests;

/// <summary>A queue build's source as the stages read it: a prefix of blobs back to back, here of byte vectors (.bvecs).</summary>
public sealed class BlobVectorSourceTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-blob-source-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    /// <summary>Each record: its dimension as int32, then one byte per component.</summary>
    private static byte[] Bvecs(byte[][] rows)
    {
        var bytes = new List<byte>();
        foreach (var row in rows)
        {
            var head = new byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(head, row.Length);
            bytes.AddRange(head);
            bytes.AddRange(row);
        }
        return bytes.ToArray();
    }

    [Fact]
    public async Task RowsOfBvecsBlobsUnderAPrefixAreReadInNameOrderAcrossTheBlobBoundary()
    {
        const int dims = 3;
        var rng = new Random(21);
        byte[][] Rows(int n) => Enumerable.Range(0, n).Select(_ => Enumerable.Range(0, dims).Select(_ => (byte)rng.Next(256)).ToArray()).ToArray();
        var first = Rows(5);
        var second = Rows(4);
        var store = new FolderBlobStore(_root);
        // Written out of order: the source is the blobs in name order, not in the order they arrived.
        await store.WriteAsync("src/part-b.bvecs", Bvecs(second), WriteCondition.Overwrite);
        await store.WriteAsync("src/part-a.bvecs", Bvecs(first), WriteCondition.Overwrite);

        var source = await BlobVectorSource.ResolveAsync(store, "src");
        Assert.Equal(["src/part-a.bvecs", "src/part-b.bvecs"], source.Select(b => b.Name));
        Assert.Equal([5L, 4L], source.Select(b => b.Rows));

        // Rows 3..7: the last two of part-a and the first three of part-b, each byte as a float.
        var read = new float[5 * dims];
        await BlobVectorSource.ReadRowsAsync(store, source, 3, 5, read);
        var expected = first[3..].Concat(second[..3]).SelectMany(r => r).Select(b => (float)b).ToArray();
        Assert.Equal(expected, read);
    }
}
