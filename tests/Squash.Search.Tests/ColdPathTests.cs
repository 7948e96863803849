using Squash.Index.Build;
using Squash.Index.Model;
using Squash.Search.Tests.Filters;
using Squash.Storage;
using Squash.Testing;

namespace Squash.Search.Tests;

/// <summary>
/// Cold queries that fetch only what they need (codes, then the re-ranked rows by ranged reads) answer exactly
/// as the fully loaded engine does, from a folder and from Azure Blob Storage (Azurite), and read less.
/// </summary>
public sealed class ColdPathTests : IAsyncLifetime
{
    private const int N = 3000, Dims = 64; // 256-byte rows: 4 rows per checksummed block
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-cold-" + Guid.NewGuid().ToString("N"));
    private AzureBlobStore? _azure;
    private readonly float[] _data = TestData.Clustered(N, Dims, clusters: 12, seed: 31);
    private readonly float[] _queries = TestData.Clustered(25, Dims, clusters: 12, seed: 77);

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (_azure is not null) await _azure.Container.DeleteIfExistsAsync();
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    private async Task<IndexStore> Built(string where)
    {
        IBlobStore blobs = where == "azure"
            ? new ResilientBlobStore(_azure = AzuriteTestStore.NewStore("cold"))
            : new FolderBlobStore(_root);
        // No read-through gaps: with 64 KiB partitions the default gap allowance would join most of the rows a query wants.
        var store = new IndexStore(blobs, "cold") { RangedReads = new RangedReadOptions { CoalesceGapBytes = 0 } };
        var table = FilterTestData.Table(N, seed: 3, out _);
        await IndexPublisher.BuildAndPublishAsync(store, _data, N, Dims, new IndexBuildOptions { Partitions = 6, Seed = 5, Attributes = table });
        return store;
    }

    private ReadOnlySpan<float> Query(int i) => _queries.AsSpan(i * Dims, Dims);

    /// <summary>A fresh index (empty cache, routing only) per query: plan → fetch → scan.</summary>
    private static async Task<(SearchResult Result, PartitionFetch Fetch, int[] Planned)> ColdSearch(IndexStore store, float[] query, SearchOptions options)
    {
        var index = await OpenedIndex.OpenAsync(store, loadAll: false);
        var engine = new SearchEngine(index);
        var ctx = new QueryContext(index, query);
        var plan = engine.Plan(ctx, options);
        var fetch = await index.FetchForQueryAsync(ctx, plan.Partitions, options);
        var top = engine.NewTopK(options);
        var stats = new QueryStats();
        engine.ScanPartitions(ctx, plan.Partitions, plan.CentroidDistances, options, top, stats, fetch.PartitionOf);
        return (engine.Finish(top.ToSortedArray(), ctx, stats), fetch, plan.Partitions);
    }

    [Theory]
    [InlineData("folder")]
    [InlineData("azure")]
    public async Task UnfilteredColdQueriesEqualTheLoadedEngineAndReadLessThanWholeSegments(string where)
    {
        var store = await Built(where);
        var loaded = new SearchEngine(await OpenedIndex.OpenAsync(store));
        var manifest = loaded.Index.Manifest;
        foreach (var options in new[]
        {
            new SearchOptions { K = 10 }, new SearchOptions { K = 5, HammingKeepPercent = 30 }, new SearchOptions { K = 10, RerankFactor = 4, CentroidFactor = 2 },
            new SearchOptions { K = 10, Exact = true },
        })
        {
            for (int qi = 0; qi < 25; qi++)
            {
                var expected = loaded.Search(Query(qi), options);
                var (cold, fetch, planned) = await ColdSearch(store, Query(qi).ToArray(), options);
                Assert.Equal(expected.Ids, cold.Ids);
                Assert.Equal(expected.Distances, cold.Distances);
                Assert.Equal(planned.Length, fetch.CacheMisses);
                if (options.Exact) continue;
                long whole = planned.Sum(p => manifest.Partitions[p].Codes.Bytes + manifest.Partitions[p].Vectors.Bytes);
                long codes = planned.Sum(p => manifest.Partitions[p].Codes.Bytes);
                Assert.True(fetch.BytesRead < whole, $"cold query read {fetch.BytesRead} bytes, the visited segments hold {whole}");
                // The raw vectors are most of a partition; a cold query reads part of them (here 20 to 40 of 500 rows per
                // partition, at most 40 of 125 blocks).
                Assert.True(fetch.BytesRead - codes < (whole - codes) / 2, $"{fetch.BytesRead - codes} bytes of raw vectors read of {whole - codes}");
            }
        }
    }

    [Fact]
    public async Task AWarmIndexAnswersTheSameQueryWithoutReading()
    {
        var store = await Built("folder");
        var index = await OpenedIndex.OpenAsync(store, loadAll: false);
        index.WholeVectorsAfter = 0; // rows only: the repeat must find every row it needs in the cache
        var engine = new SearchEngine(index);
        var options = new SearchOptions { K = 10 };
        var ctx = new QueryContext(index, Query(3));
        var plan = engine.Plan(ctx, options);
        var first = await index.FetchForQueryAsync(ctx, plan.Partitions, options);
        var again = await index.FetchForQueryAsync(ctx, plan.Partitions, options);
        Assert.True(first.BytesRead > 0);
        Assert.Equal(0, again.BytesRead);
        Assert.Equal(plan.Partitions.Length, again.CacheHits);
        Assert.Equal(0, again.CacheMisses);
    }

    [Fact]
    public async Task APartitionAskedForAgainIsReadWholeAndThenServedFromMemory()
    {
        var store = await Built("folder");
        var index = await OpenedIndex.OpenAsync(store, loadAll: false);
        var engine = new SearchEngine(index);
        var options = new SearchOptions { K = 10 };
        var manifest = index.Manifest;
        var first = new QueryContext(index, Query(4));
        var plan = engine.Plan(first, options);
        var cold = await index.FetchForQueryAsync(first, plan.Partitions, options);
        Assert.All(plan.Partitions, p => Assert.True(cold[p].Vectors.IsSparse));
        // Another query on the same partitions: their vector segments are read whole, once.
        var second = await index.FetchForQueryAsync(new QueryContext(index, Query(5)), plan.Partitions, options);
        Assert.All(plan.Partitions, p => Assert.False(second[p].Vectors.IsSparse));
        Assert.Equal(plan.Partitions.Sum(p => manifest.Partitions[p].Vectors.Bytes), second.BytesRead);
        var third = await index.FetchForQueryAsync(new QueryContext(index, Query(6)), plan.Partitions, options);
        Assert.Equal(0, third.BytesRead);
        Assert.Equal(plan.Partitions.Length, third.CacheHits);
    }

    [Fact]
    public async Task ARowTheScanNeedsButWasNotFetchedFailsLoudly()
    {
        var store = await Built("folder");
        var index = await OpenedIndex.OpenAsync(store, loadAll: false);
        var engine = new SearchEngine(index);
        var ctx = new QueryContext(index, Query(0));
        var narrow = new SearchOptions { K = 1, RerankFactor = 1 };
        var plan = engine.Plan(ctx, narrow);
        var fetch = await index.FetchForQueryAsync(ctx, plan.Partitions, narrow);
        // Re-ranking 200 rows where 1 was fetched per partition.
        var wide = new SearchOptions { K = 100, RerankFactor = 2 };
        Assert.Throws<MissingRowException>(() =>
            engine.ScanPartitions(ctx, plan.Partitions, plan.CentroidDistances, wide, engine.NewTopK(wide), new QueryStats(), fetch.PartitionOf));
    }

    /// <summary>
    /// Filtered scans over fetched data equal filtered scans over loaded data, partition by partition in centroid
    /// order: the code-level filter, the few-matches exact path and the recheck all pick rows from what was fetched.
    /// For the direct strategy every row that passes the filter is fetched.
    /// </summary>
    [Theory]
    [InlineData("folder")]
    [InlineData("azure")]
    public async Task FilteredColdScansEqualLoadedScans(string where)
    {
        var store = await Built(where);
        var full = await OpenedIndex.OpenAsync(store);
        var engine = new SearchEngine(full);
        var rng = new Random(12);
        var filters = new List<string> { "{\"label\":3}", "{\"price\":{\"$lt\":40}}", "{\"colour\":{\"$in\":[\"red\",\"blue\"]},\"ok\":true}", "{\"qty\":{\"$gt\":990}}" };
        for (int i = 0; i < 6; i++) filters.Add(FilterTestData.Nested(rng, 3));
        var scanner = new PartitionScanner();
        int checkedQueries = 0;
        foreach (var json in filters)
        {
            var filter = full.Filters.Compile(json);
            for (int qi = 0; qi < 6; qi++)
            {
                var q = Query(qi).ToArray();
                var cold = await OpenedIndex.OpenAsync(store, loadAll: false);
                cold.WholeVectorsAfter = 0; // two fetches per query below: both must pick rows
                var ctx = new QueryContext(full, q);
                var coldCtx = new QueryContext(cold, q);
                var (order, _) = engine.RankPartitions(ctx);
                var partitions = order.Take(5).ToArray();

                var options = new SearchOptions { K = 10, Filter = filter, FilterStrategy = FilterStrategy.Partitions };
                var fetch = await cold.FetchForQueryAsync(coldCtx, partitions, options with { Filter = cold.Filters.Compile(json) });
                var expected = engine.NewTopK(options);
                var actual = engine.NewTopK(options);
                foreach (int p in partitions)
                {
                    scanner.Scan(ctx, full.Codes(p), full.Vectors(p), full.Attributes(p), expected, options, new QueryStats());
                    var d = fetch[p];
                    scanner.Scan(coldCtx, d.Codes, d.Vectors, d.Attributes, actual, options, new QueryStats());
                }
                Assert.Equal(expected.ToSortedArray(), actual.ToSortedArray());

                var direct = options with { Filter = cold.Filters.Compile(json), FilterStrategy = FilterStrategy.Direct };
                var rows = await cold.FetchForQueryAsync(coldCtx, partitions, direct);
                foreach (int p in partitions)
                {
                    var attributes = full.Attributes(p)!;
                    for (int r = 0; r < attributes.Count; r++)
                    {
                        if (!filter.Matches(attributes, r)) continue;
                        Assert.True(rows[p].Vectors.HasRow(r), $"matching row {r} of partition {p} was not fetched");
                        Assert.Equal(full.Vectors(p).Row(r).ToArray(), rows[p].Vectors.Row(r).ToArray());
                    }
                }
                checkedQueries++;
            }
        }
        Assert.Equal(60, checkedQueries);
    }
}
