using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Squash.Index.Build;
using Squash.Index.Format;
using Squash.Search.Tests.Filters;
using Squash.Search.Writes;
using Squash.Storage;
using Squash.Storage.Writes;

namespace Squash.Search.Tests.Writes;

/// <summary>
/// Ingest runs on a warm instance (decoded segments kept across runs, <see cref="LogIngest.Decoded"/>) write exactly what
/// runs decoding everything afresh write, and the decoded-segment cache hands out one object per segment, a different one
/// for a different segment, and never keeps a segment that failed to decode.
/// </summary>
public sealed partial class WarmIngestTests : IDisposable
{
    private const int N = 2400, Dims = 16;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-warm-ingest-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    [GeneratedRegex(@"v\d{8}-\d{9}-[0-9a-f]{12}")]
    private static partial Regex VersionId();

    [GeneratedRegex("\"createdUtc\":\\s*\"[^\"]*\"")]
    private static partial Regex Created();

    /// <summary>A version as its content: the manifest with version ids and time taken out, and a hash of every segment it names.</summary>
    private static async Task<string> ContentAsync(IndexStore store, string version)
    {
        var m = await store.ReadManifestAsync(version);
        var text = new StringBuilder(Created().Replace(VersionId().Replace(Encoding.UTF8.GetString(m.ToJson()), "V"), ""));
        foreach (var s in IndexStore.BlobsNamedBy(m))
        {
            var name = store.BlobName(m, s);
            var bytes = s.Offset is { } o ? await store.Blobs.ReadRangeAsync(name, o, checked((int)s.Bytes)) : await store.Blobs.ReadAllAsync(name);
            text.Append('\n').Append(s.Name).Append(' ').Append(Convert.ToHexString(SHA256.HashData(bytes)));
        }
        return text.ToString();
    }

    private static void Copy(string from, string to)
    {
        foreach (var dir in Directory.GetDirectories(from, "*", SearchOption.AllDirectories)) Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)));
        foreach (var file in Directory.GetFiles(from, "*", SearchOption.AllDirectories)) File.Copy(file, Path.Combine(to, Path.GetRelativePath(from, file)));
    }

    private static WriteBatch RandomBatch(Random rng, int run)
    {
        var upserts = new List<UpsertItem>();
        for (int i = 0; i < 24; i++)
        {
            // Replacements of built rows and of rows earlier runs appended, rows new to the index, and now and then a colour
            // or tag the dictionaries lack.
            string id = rng.Next(3) switch { 0 => $"new-{run}-{i}", 1 when run > 0 => $"new-{rng.Next(run)}-{rng.Next(24)}", _ => $"v{rng.Next(N)}" };
            var v = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
            string colour = rng.Next(5) == 0 ? $"shade-{rng.Next(4)}" : FilterTestData.Colours[rng.Next(FilterTestData.Colours.Length)];
            var attributes = JsonDocument.Parse(string.Create(CultureInfo.InvariantCulture,
                $"{{\"price\":{Math.Round(rng.NextDouble() * 900, 2)},\"label\":{rng.Next(10)},\"colour\":\"{colour}\",\"tags\":[\"{(char)('a' + rng.Next(8))}\"]}}")).RootElement;
            upserts.Add(new UpsertItem(id, v, attributes));
        }
        var deletes = Enumerable.Range(0, 3).Select(i => i == 0 && run > 0 ? $"new-{rng.Next(run)}-{rng.Next(24)}" : $"v{rng.Next(N)}").ToArray();
        return new WriteBatch { CreatedUtc = DateTimeOffset.UnixEpoch, Upserts = upserts, Deletes = deletes };
    }

    [Fact]
    public async Task WarmRunsWriteWhatColdRunsWrite()
    {
        string warmRoot = Path.Combine(_root, "warm"), coldRoot = Path.Combine(_root, "cold");
        var data = TestData.Clustered(N, Dims, clusters: 6, seed: 51);
        var built = new IndexStore(new FolderBlobStore(warmRoot), "w");
        await IndexPublisher.BuildAndPublishAsync(built, data, N, Dims, new IndexBuildOptions
        {
            Partitions = 6, Seed = 52, Attributes = FilterTestData.Table(N, seed: 53, out _),
        });
        Copy(warmRoot, coldRoot);
        var warm = new IndexStore(new FolderBlobStore(warmRoot), "w");
        var cold = new IndexStore(new FolderBlobStore(coldRoot), "w");
        Assert.NotEqual(warm.Blobs.Description, cold.Blobs.Description);
        var warmLog = new WriteLog(warm.Blobs, "w");
        var coldLog = new WriteLog(cold.Blobs, "w");
        var rng = new Random(54);
        int compacted = 0;
        long hitsBefore = LogIngest.Decoded.Hits;
        // Past the appended-segment limit, so the later runs compact too.
        for (int run = 0; run < LogIngest.MaxAppendedSegments + 3; run++)
        {
            var batch = RandomBatch(rng, run);
            await warmLog.AppendAsync(batch, null, "", 0);
            await coldLog.AppendAsync(batch, null, "", 0);
            var w = await LogIngest.RunAsync(warm, warmLog);
            LogIngest.Decoded.Forget(cold.Blobs);
            var c = await LogIngest.RunAsync(cold, coldLog);
            Assert.True(w.Published && c.Published, $"run {run}: not published");
            Assert.Equal(c.PartitionSummary, w.PartitionSummary);
            Assert.True(await ContentAsync(cold, c.Version!) == await ContentAsync(warm, w.Version!), $"run {run}: the warm run wrote other content than the cold one");
            compacted += w.CompactedPartitions;
        }
        Assert.True(compacted > 0, "no run compacted");
        Assert.True(LogIngest.Decoded.Hits > hitsBefore, "the warm runs decoded every segment again");
    }

    [Fact]
    public async Task TheCacheGivesOneObjectPerSegmentAndKeepsNoDamagedOne()
    {
        var data = TestData.Clustered(N, Dims, clusters: 6, seed: 61);
        var blobs = new FolderBlobStore(Path.Combine(_root, "one"));
        await IndexPublisher.BuildAndPublishAsync(new IndexStore(blobs, "c"), data, N, Dims, new IndexBuildOptions { Partitions = 4, Seed = 62 });
        var cache = new DecodedSegmentCache(64L << 20);
        var store = new IndexStore(blobs, "c") { Decoded = cache };
        var m = await store.OpenCurrentAsync();
        var first = await store.ReadCodesAsync(m, m.Partitions[0]);
        var again = await store.ReadCodesAsync(m, m.Partitions[0]);
        var other = await store.ReadCodesAsync(m, m.Partitions[1]);
        Assert.Same(first, again);
        Assert.NotSame(first, other);
        Assert.NotEqual(first.Ids, other.Ids);
        // What the cache gives is what decoding the segment gives.
        var plain = await new IndexStore(blobs, "c").ReadCodesAsync(m, m.Partitions[1]);
        Assert.Equal(plain.Cells, other.Cells);
        Assert.Equal(plain.Ids, other.Ids);
        Assert.Equal(2, cache.Count);
        Assert.Equal(1L, cache.Hits);

        // A damaged segment is a named CorruptIndexException on every read, cached store or not, and is not kept.
        var name = store.BlobName(m, m.Partitions[2].Codes);
        var bytes = await blobs.ReadAllAsync(name);
        long at = m.Partitions[2].Codes.Offset ?? 0;
        bytes[at + 3] ^= 0x5a;
        await blobs.DeleteAsync(name);
        await blobs.WriteAsync(name, bytes, WriteCondition.IfNotExists);
        for (int i = 0; i < 2; i++)
        {
            var e = await Assert.ThrowsAsync<CorruptIndexException>(() => store.ReadCodesAsync(m, m.Partitions[2]));
            Assert.Contains(name, e.Message);
        }
        Assert.Equal(2, cache.Count);
    }
}
