using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Squash.LocalHost;
using Squash.Search;
using Squash.Testing;

namespace Squash.Functions.Tests;

/// <summary>The local function host end to end: real processes on loopback, the tree over HTTP, cold and warm instances.</summary>
[Collection(nameof(IndexCollection))]
public sealed class LocalHostTests(IndexFixture fx)
{

    private static async Task<LocalFunctionHost> StartHostAsync(LocalHostOptions options)
    {
        var host = new LocalFunctionHost(options);
        try { await host.StartAsync(); return host; }
        catch { await host.DisposeAsync(); throw; }
    }

    private static HttpClient Client(LocalFunctionHost host) => new() { BaseAddress = host.BaseAddress, Timeout = TimeSpan.FromSeconds(120) };

    private static StringContent Body(object o) => new(JsonSerializer.Serialize(o), Encoding.UTF8, "application/json");

    [Fact]
    public async Task QueriesThroughRealProcessesEqualTheEngineAndADeadInstanceIsReplaced()
    {
        await using var host = await StartHostAsync(new LocalHostOptions { Store = "dir:" + fx.Root, Port = FreePorts.Next(), Branching = 2, Depth = 2, ProcessorPools = 2, MaxInstancesPerPool = 2, InstanceConcurrency = 8 });
        using var client = Client(host);

        async Task<JsonElement> Query(float[] q)
        {
            var response = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = q, k = 10 }));
            response.EnsureSuccessStatusCode();
            return JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        }

        var first = await Query(fx.Queries[0]);
        Assert.True(first.GetProperty("stats").GetProperty("coldInstances").GetInt32() >= 1);
        // A folder store: the cold query's reads are counted as Blob Storage would bill them, but priced at $0.
        var firstCost = first.GetProperty("stats").GetProperty("cost");
        Assert.True(firstCost.GetProperty("blobReads").GetInt64() > 0);
        Assert.False(firstCost.GetProperty("storageBilled").GetBoolean());
        Assert.Equal(0, firstCost.GetProperty("storageUsd").GetDouble());
        foreach (var q in fx.Queries.Take(30))
        {
            var answer = await Query(q);
            var ids = answer.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("id").GetInt64()).ToArray();
            Assert.Equal(fx.Engine.Search(q, new SearchOptions { K = 10 }).Ids, ids);
            Assert.True(answer.GetProperty("complete").GetBoolean());
        }
        var warm = await Query(fx.Queries[1]);
        Assert.Equal(0, warm.GetProperty("stats").GetProperty("coldInstances").GetInt32());

        // Kill every processor instance: the next query still answers completely on replacements.
        foreach (var pool in host.Pools.Values.Where(p => p.Name != "coordinator"))
            foreach (var instance in pool.Instances)
                Process.GetProcessById(instance.ProcessId).Kill();
        var after = await Query(fx.Queries[2]);
        Assert.True(after.GetProperty("complete").GetBoolean());
        Assert.Equal(fx.Engine.Search(fx.Queries[2], new SearchOptions { K = 10 }).Ids,
            after.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("id").GetInt64()).ToArray());
        Assert.True(host.Pools.Values.Sum(p => p.Replaced) >= 1);
        var snapshot = host.Snapshot();
        Assert.True(snapshot.TotalCostUsd > 0);
        Assert.True(snapshot.TotalExecutions >= 33);
        Assert.True(snapshot.TotalStorageOperations.BlobReads > 0);
        Assert.Equal(0, snapshot.TotalStorageUsd);
        Assert.Contains("folder store", snapshot.StoragePricing, StringComparison.Ordinal);
    }

    /// <summary>
    /// A cold query starts one instance per pool: the coordinator wakes the processor pools as it starts, and the
    /// scans that arrive while a pool's instance is still starting wait for its slots instead of starting more.
    /// </summary>
    [Fact]
    public async Task AColdQueryStartsOneInstancePerPoolAndTheCoordinatorWakesThePools()
    {
        // 64 slots hold every call one query can send a pool while its instance starts, hedges included (a child that
        // waits out a slow start past the hedging delay is sent again): one start per pool is then what the waiting
        // rule guarantees, whatever the timing. Fewer slots let a slow start's hedges overflow into a second instance.
        await using var host = await StartHostAsync(new LocalHostOptions { Store = "dir:" + fx.Root, Port = FreePorts.Next(), Branching = 4, Depth = 2, ProcessorPools = 2, MaxInstancesPerPool = 4, InstanceConcurrency = 64 });
        using var client = Client(host);
        // Exact mode: all 12 partitions over up to 20 tree nodes, so each pool gets several scans at once.
        var response = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = fx.Queries[7], k = 10, options = new { exact = true } }));
        response.EnsureSuccessStatusCode();
        var answer = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.True(answer.GetProperty("complete").GetBoolean());
        Assert.True(answer.GetProperty("stats").GetProperty("treeNodes").GetInt32() >= 4);
        foreach (var pool in host.Pools.Values)
            Assert.True(pool.ColdStarts == 1, $"pool {pool.Name} started {pool.ColdStarts} instances for one cold query");
        // The wake-up call is an execution of each processor pool on top of the scans.
        Assert.True(host.Pools.Values.Where(p => p.Name != "coordinator").All(p => p.Meter().Executions >= 2));
    }

    /// <summary>Invocations that arrive together on an empty pool share the one instance being started (up to its slots).</summary>
    [Fact]
    public async Task InvocationsArrivingDuringAColdStartWaitForThatInstanceInsteadOfStartingMore()
    {
        var options = new LocalHostOptions { Store = "dir:" + fx.Root, MaxInstancesPerPool = 4, InstanceConcurrency = 4 };
        await using var pool = new InstancePool("p0", LocalFunctionHost.ResolveApp(null), new Dictionary<string, string> { ["Squash__Store"] = options.Store }, options);
        var acquired = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => pool.AcquireAsync(CancellationToken.None)));
        Assert.Equal(1, pool.ColdStarts);
        Assert.Single(acquired.Select(a => a.Instance).Distinct());
        Assert.Single(acquired, a => a.Cold);
        // A fifth finds every slot taken and no instance starting: that one starts a second instance.
        var fifth = await pool.AcquireAsync(CancellationToken.None);
        Assert.True(fifth.Cold);
        Assert.Equal(2, pool.ColdStarts);
    }

    /// <summary>
    /// Many invocations spread over one instance's start (as a tree's calls arrive): all of them share it while it
    /// has free slots — none starts a second instance as the first becomes ready, which would split the pool's
    /// partitions over two caches.
    /// </summary>
    [Fact]
    public async Task ABurstOfWaitingInvocationsNeverStartsASecondInstanceWhileTheFirstHasFreeSlots()
    {
        for (int round = 0; round < 3; round++)
        {
            var options = new LocalHostOptions { Store = "dir:" + fx.Root, MaxInstancesPerPool = 4, InstanceConcurrency = 64 };
            await using var pool = new InstancePool("p0", LocalFunctionHost.ResolveApp(null), new Dictionary<string, string> { ["Squash__Store"] = options.Store }, options);
            var acquired = await Task.WhenAll(Enumerable.Range(0, 48).Select(async i =>
            {
                await Task.Delay(i % 8); // arrivals spread over the start, as a tree's calls are
                return await pool.AcquireAsync(CancellationToken.None);
            }));
            Assert.True(pool.ColdStarts == 1, $"round {round}: {pool.ColdStarts} instances started for 48 invocations on 64 slots");
            Assert.Single(acquired.Select(a => a.Instance).Distinct());
        }
    }

    /// <summary>
    /// Data retention: after a cold pass, 1,000 queries find their partitions already decoded in warm
    /// instances (hit ratio ≥ 0.9) and read less than 5 % of the bytes the cold pass read.
    /// </summary>
    [Fact]
    public async Task WarmInstancesServeAThousandQueriesFromMemory()
    {
        await using var host = await StartHostAsync(new LocalHostOptions { Store = "dir:" + fx.Root, Port = FreePorts.Next(), Branching = 4, Depth = 1, ProcessorPools = 2, MaxInstancesPerPool = 2, InstanceConcurrency = 4 });
        using var client = Client(host);

        async Task<(long Bytes, long Hits, long Misses)> Pass(int repeat)
        {
            long bytes = 0, hits = 0, misses = 0;
            for (int r = 0; r < repeat; r++)
                foreach (var q in fx.Queries)
                {
                    var response = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = q, k = 10 }));
                    response.EnsureSuccessStatusCode();
                    using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
                    var stats = doc.RootElement.GetProperty("stats");
                    bytes += stats.GetProperty("bytesRead").GetInt64();
                    hits += stats.GetProperty("cacheHits").GetInt32();
                    misses += stats.GetProperty("cacheMisses").GetInt32();
                }
            return (bytes, hits, misses);
        }

        var cold = await Pass(1);
        var warm = await Pass(5);
        Assert.True(cold.Bytes > 0);
        double hitRatio = warm.Hits / (double)(warm.Hits + warm.Misses);
        Assert.True(hitRatio >= 0.9, $"warm hit ratio {hitRatio:F3}");
        Assert.True(warm.Bytes < 0.05 * cold.Bytes, $"warm run read {warm.Bytes} bytes, cold run {cold.Bytes}");
    }
}
