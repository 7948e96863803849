using Squash.Index.Build;
using Squash.Storage;
using Squash.Testing;

namespace Squash.Search.Tests;

/// <summary>
/// The store is only transport: the same build (same data, same seed) in a folder and in Azure Blob
/// Storage (Azurite, started by scripts/test.sh) must give byte-identical segments and identical answers.
/// </summary>
public sealed class AzureStoreSearchTests : IAsyncLifetime
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-azsearch-" + Guid.NewGuid().ToString("N"));
    private AzureBlobStore? _azure;

    public Task InitializeAsync()
    {
        _azure = AzuriteTestStore.NewStore("search");
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        if (_azure is not null) await _azure.Container.DeleteIfExistsAsync();
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    [Fact]
    public async Task TheSameBuildAnswersIdenticallyFromAFolderAndFromAzure()
    {
        const int n = 2500, dims = 24;
        var data = TestData.Clustered(n, dims, clusters: 10, seed: 21);
        var options = new IndexBuildOptions { Partitions = 6, Seed = 5 };
        var folder = new IndexStore(new FolderBlobStore(_root), "products");
        var azure = new IndexStore(new ResilientBlobStore(_azure!), "products");
        var mf = await IndexPublisher.BuildAndPublishAsync(folder, data, n, dims, options);
        var ma = await IndexPublisher.BuildAndPublishAsync(azure, data, n, dims, options);

        // Every segment is byte-identical in both stores (version ids differ: each build gets its own).
        await foreach (var b in folder.Blobs.ListAsync(folder.VersionPrefix(mf.Version)))
        {
            if (b.Name.EndsWith("manifest.json", StringComparison.Ordinal)) continue; // carries the build time and version
            var segment = b.Name[folder.VersionPrefix(mf.Version).Length..];
            Assert.Equal(await folder.Blobs.ReadAllAsync(b.Name), await azure.Blobs.ReadAllAsync(azure.VersionPrefix(ma.Version) + segment));
        }

        var fromFolder = new SearchEngine(await OpenedIndex.OpenAsync(folder));
        var fromAzure = new SearchEngine(await OpenedIndex.OpenAsync(azure));
        var queries = TestData.Clustered(40, dims, clusters: 10, seed: 99);
        foreach (var o in new[] { new SearchOptions { K = 10 }, new SearchOptions { K = 5, HammingKeepPercent = 30 }, new SearchOptions { K = 10, Exact = true } })
        {
            for (int qi = 0; qi < 40; qi++)
            {
                var q = queries.AsSpan(qi * dims, dims);
                var a = fromFolder.Search(q, o);
                var b = fromAzure.Search(q, o);
                Assert.Equal(a.Ids, b.Ids);
                Assert.Equal(a.Distances, b.Distances);
            }
        }
    }
}
