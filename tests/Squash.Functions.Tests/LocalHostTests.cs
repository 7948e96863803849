using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Squash.LocalHost;
using Squash.Search;

namespace Squash.Functions.Tests;

/// <summary>The local function host end to end: real processes on loopback, the tree over HTTP, cold and warm instances.</summary>
[Collection(nameof(IndexCollection))]
public sealed class LocalHostTests(IndexFixture fx)
{
    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    private static StringContent Body(object o) => new(JsonSerializer.Serialize(o), Encoding.UTF8, "application/json");

    [Fact]
    public async Task QueriesThroughRealProcessesEqualTheEngineAndADeadInstanceIsReplaced()
    {
        await using var host = new LocalFunctionHost(new LocalHostOptions
        {
            Store = "dir:" + fx.Root, Port = FreePort(), Branching = 2, Depth = 2, ProcessorPools = 2,
            MaxInstancesPerPool = 2, InstanceConcurrency = 8,
        });
        await host.StartAsync();
        using var client = new HttpClient { BaseAddress = host.BaseAddress, Timeout = TimeSpan.FromSeconds(120) };

        async Task<JsonElement> Query(float[] q)
        {
            var response = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = q, k = 10 }));
            response.EnsureSuccessStatusCode();
            return JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        }

        var first = await Query(fx.Queries[0]);
        Assert.True(first.GetProperty("stats").GetProperty("coldInstances").GetInt32() >= 1);
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
    }
}
