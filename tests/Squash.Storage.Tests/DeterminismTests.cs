using Squash.Index.Build;

namespace Squash.Storage.Tests;

/// <summary>Invariant 6: a build is deterministic for a given seed (every segment byte-identical).</summary>
public sealed class DeterminismTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-determinism-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    private async Task<Dictionary<string, byte[]>> BuildAsync(string folder, int seed)
    {
        var rng = new Random(3);
        var data = Enumerable.Range(0, 2000 * 24).Select(_ => (float)rng.NextDouble()).ToArray();
        var blobs = new FolderBlobStore(Path.Combine(_root, folder));
        await IndexPublisher.BuildAndPublishAsync(new IndexStore(blobs), data, 2000, 24, new IndexBuildOptions { Partitions = 6, Seed = seed });
        var result = new Dictionary<string, byte[]>();
        // Keyed by the name inside the version folder: version ids differ per build.
        await foreach (var b in blobs.ListAsync("versions/"))
            if (b.Name.EndsWith(".seg", StringComparison.Ordinal)) result[b.Name[(b.Name.LastIndexOf('/') + 1)..]] = await blobs.ReadAllAsync(b.Name);
        return result;
    }

    [Fact]
    public async Task SameSeedGivesIdenticalSegmentsAndAnotherSeedDoesNot()
    {
        var a = await BuildAsync("a", 7);
        var b = await BuildAsync("b", 7);
        var c = await BuildAsync("c", 8);
        Assert.Equal(13, a.Count);
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var (name, bytes) in a) Assert.True(bytes.AsSpan().SequenceEqual(b[name]), $"{name} differs between two builds with the same seed");
        Assert.Contains(a, kv => !kv.Value.AsSpan().SequenceEqual(c[kv.Key]));
    }
}
