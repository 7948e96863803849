using Squash.Core;
using Squash.Index.Build;
using Squash.Index.Model;
using Squash.Search.Filters;
using Squash.Search.Tests.Filters;
using Squash.Storage;
using Squash.Testing;

namespace Squash.Search.Tests;

/// <summary>
/// A version whose segments all live in the two packs an ingest run writes (routing, codes, attributes in one, raw vectors
/// in the other, each named by offset): cold readers — codes, then re-ranked rows by ranged reads inside the pack — and
/// loaded readers answer as brute force does, and as the version the packs were copied from, filtered or not.
/// </summary>
public sealed class PackedVersionReadTests : IDisposable
{
    private const int N = 2000, Dims = 32;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-packed-read-" + Guid.NewGuid().ToString("N"));
    private readonly float[] _data = TestData.Clustered(N, Dims, clusters: 10, seed: 41);
    private readonly float[] _queries = TestData.Clustered(20, Dims, clusters: 10, seed: 43);

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    private ReadOnlySpan<float> Query(int i) => _queries.AsSpan(i * Dims, Dims);

    [Fact]
    public async Task ColdAndLoadedReadersOfAPackedVersionEqualBruteForceAndTheOriginal()
    {
        var store = new IndexStore(new FolderBlobStore(_root), "packed") { RangedReads = new RangedReadOptions { CoalesceGapBytes = 0 } };
        var table = FilterTestData.Table(N, seed: 5, out _);
        await IndexPublisher.BuildAndPublishAsync(store, _data, N, Dims, new IndexBuildOptions { Partitions = 5, Seed = 7, Attributes = table });
        var original = new SearchEngine(await OpenedIndex.OpenAsync(store));
        var packed = await PackedVersion.RepackCurrentAsync(store);
        var loaded = new SearchEngine(await OpenedIndex.OpenAsync(store));
        Assert.Equal(packed.Version, loaded.Index.Manifest.Version);
        var filter = new FilterCompiler(packed.Attributes).Compile(System.Text.Json.JsonDocument.Parse("""{"colour":{"$in":["red","blue"]}}""").RootElement);

        for (int qi = 0; qi < 20; qi++)
        {
            var context = $"query {qi}";
            // Exact: brute force over the built data.
            var exact = loaded.Search(Query(qi), new SearchOptions { K = 10, Exact = true });
            var expected = TestData.BruteForce(_data, N, Dims, Query(qi), 10, Metric.L2);
            for (int i = 0; i < 10; i++)
                Assert.True(Math.Abs(expected[i].Distance - exact.Distances[i]) <= 1e-4 * Math.Max(1, expected[i].Distance), $"{context} rank {i}: {exact.Distances[i]} vs brute force {expected[i].Distance}");

            foreach (var options in new[] { new SearchOptions { K = 10 }, new SearchOptions { K = 10, Filter = filter }, new SearchOptions { K = 10, Exact = true } })
            {
                var want = original.Search(Query(qi), options);
                var got = loaded.Search(Query(qi), options);
                Assert.Equal(want.Ids, got.Ids);
                Assert.Equal(want.Distances, got.Distances);

                // Cold: a fresh index per query, rows fetched by ranged reads of the vector pack.
                var index = await OpenedIndex.OpenAsync(store, loadAll: false);
                var engine = new SearchEngine(index);
                var ctx = new QueryContext(index, Query(qi));
                var plan = engine.Plan(ctx, options);
                var nodeOptions = plan.NodeOptions();
                var fetch = await index.FetchForQueryAsync(ctx, plan.Partitions, nodeOptions);
                Assert.All(plan.Partitions, p => Assert.True(fetch[p].Vectors.IsSparse, $"{context}: partition {p} was read whole"));
                var top = engine.NewTopK(nodeOptions);
                var stats = new QueryStats();
                engine.ScanPartitions(ctx, plan.Partitions, plan.CentroidDistances, nodeOptions, top, stats, fetch.PartitionOf);
                var cold = engine.Finish(top.ToSortedArray(), ctx, stats);
                Assert.Equal(want.Ids, cold.Ids);
                Assert.Equal(want.Distances, cold.Distances);
            }
        }
    }
}
