using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;
using Squash.Functions.Api;
using Squash.Functions.Tree;
using Squash.LocalHost;
using Squash.Search;
using Squash.Testing;

namespace Squash.Functions.Tests;

/// <summary>
/// Function keys between tree nodes: the local host checks keys as the Functions host does (authLevel from function.json),
/// and the coordinator calls each processor pool with that pool's key.
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class FunctionKeyTests(IndexFixture fx)
{

    private static StringContent Body(object o) => new(JsonSerializer.Serialize(o), Encoding.UTF8, "application/json");

    /// <summary>Keys that differ per app and per run (printed on failure through the assertion messages).</summary>
    private static Dictionary<string, string> NewKeys() => new()
    {
        ["coordinator"] = "coord-" + Guid.NewGuid().ToString("N"),
        ["p0"] = "pool0-" + Guid.NewGuid().ToString("N"),
        ["p1"] = "pool1-" + Guid.NewGuid().ToString("N"),
    };

    private static async Task<JsonElement> ProblemOf(HttpResponseMessage response)
    {
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        return JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
    }

    [Fact]
    public async Task ATwoPoolTreeWithKeysOnAnswersQueriesAndRefusesCallsWithoutTheRightKey()
    {
        var keys = NewKeys();
        var host = new LocalFunctionHost(new LocalHostOptions
        {
            Store = "dir:" + fx.Root, Port = FreePorts.Next(), Branching = 2, Depth = 2, ProcessorPools = 2, MaxInstancesPerPool = 2,
            InstanceConcurrency = 16, FunctionKeys = keys,
        });
        await using var _ = host;
        await host.StartAsync();
        using var client = new HttpClient { BaseAddress = host.BaseAddress, Timeout = TimeSpan.FromSeconds(120) };
        var queryPath = $"/api/indexes/{IndexFixture.IndexName}/query";

        // With the coordinator's key (header, then the code query parameter): the tree's scans reach both pools with
        // their keys, so the answer is complete and equals the engine's.
        for (int q = 0; q < 5; q++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, q % 2 == 0 ? queryPath : $"{queryPath}?code={keys["coordinator"]}")
            {
                Content = Body(new { vector = fx.Queries[q], k = 10, options = new { exact = true } }),
            };
            if (q % 2 == 0) request.Headers.Add("x-functions-key", keys["coordinator"]);
            using var response = await client.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, $"query {q} with keys {string.Join(',', keys)}: {(int)response.StatusCode} {text}");
            var answer = JsonDocument.Parse(text).RootElement;
            Assert.True(answer.GetProperty("complete").GetBoolean());
            Assert.True(answer.GetProperty("stats").GetProperty("treeNodes").GetInt32() >= 2, text);
            Assert.Equal(fx.Engine.Search(fx.Queries[q], new SearchOptions { K = 10, Exact = true }).Ids,
                answer.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("id").GetInt64()).ToArray());
        }
        Assert.All(host.Pools.Values.Where(p => p.Name != "coordinator"), p => Assert.True(p.Meter().Executions >= 1, $"pool {p.Name} was never called"));

        // No key: 401, before any instance is bothered.
        using (var none = await client.PostAsync(queryPath, Body(new { vector = fx.Queries[0], k = 10 })))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, none.StatusCode);
            var problem = await ProblemOf(none);
            Assert.Equal(401, problem.GetProperty("status").GetInt32());
            Assert.Equal("Function key required", problem.GetProperty("title").GetString());
            Assert.Equal("function 'query' of app 'coordinator' needs a key: send it in the x-functions-key header or the code query parameter",
                problem.GetProperty("detail").GetString());
        }
        // A wrong key, and a pool's key on the coordinator (keys belong to one app): 401.
        foreach (var wrong in new[] { keys["coordinator"] + "x", keys["p0"] })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, queryPath) { Content = Body(new { vector = fx.Queries[0], k = 10 }) };
            request.Headers.Add("x-functions-key", wrong);
            using var response = await client.SendAsync(request);
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            Assert.Equal("the key sent to function 'query' is not a key of app 'coordinator'", (await ProblemOf(response)).GetProperty("detail").GetString());
        }
        // A pool's scan function without its key, and with the coordinator's key: 401.
        using (var scan = await client.PostAsync($"/pools/p1/api/indexes/{IndexFixture.IndexName}/scan?code={keys["coordinator"]}", Body(new { })))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, scan.StatusCode);
            Assert.Equal("the key sent to function 'scan' is not a key of app 'p1'", (await ProblemOf(scan)).GetProperty("detail").GetString());
        }
        // Anonymous functions stay open; a route no function serves is a 404 as on Azure.
        Assert.Equal("""{"status":"ok"}""", await client.GetStringAsync("/api/health"));
        Assert.Equal("""{"status":"ok"}""", await client.GetStringAsync("/pools/p0/api/health"));
        using (var unknown = await client.GetAsync($"/api/indexes/{IndexFixture.IndexName}/nothing-here?code={keys["coordinator"]}"))
        {
            Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
            Assert.Equal($"no HTTP function of app 'coordinator' serves GET /api/indexes/{IndexFixture.IndexName}/nothing-here",
                (await ProblemOf(unknown)).GetProperty("detail").GetString());
        }
    }

    [Fact]
    public async Task KeysMustBeGivenForEveryApp()
    {
        var keys = NewKeys();
        keys.Remove("p1");
        await using var host = new LocalFunctionHost(new LocalHostOptions { Store = "dir:" + fx.Root, Port = FreePorts.Next(), ProcessorPools = 2, FunctionKeys = keys });
        var e = await Assert.ThrowsAsync<ArgumentException>(() => host.StartAsync());
        Assert.Equal("LocalHostOptions.FunctionKeys has no key for app 'p1' (each of coordinator, p0, p1, … needs one)", e.Message);
    }

    /// <summary>Records each request the invoker sends and answers with <paramref name="status"/>.</summary>
    private sealed class RecordingHandler(HttpStatusCode status) : HttpMessageHandler
    {
        public List<(Uri Url, string? Key)> Sent { get; } = [];

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
        {
            lock (Sent) Sent.Add((request.RequestUri!, request.Headers.TryGetValues("x-functions-key", out var v) ? v.Single() : null));
            var body = """{"neighbours":[[]],"stats":[{}],"missingPartitions":[],"invocations":1,"levels":[]}""";
            return Task.FromResult(new HttpResponseMessage(status) { Content = new StringContent(body, Encoding.UTF8, "application/json") });
        }
    }

    private sealed class Clients(HttpMessageHandler handler) : IHttpClientFactory
    {
        public HttpClient CreateClient(string name) => new(handler, disposeHandler: false);
    }

    private static ScanRequest Request(int node) => new()
    {
        Version = "v000001", Vectors = [[1f]], K = 1, Options = new QueryOptions(), Plans = [[0]], Node = new ScanNode(node, [0], []),
    };

    [Fact]
    public async Task EachTreeNodeCallsItsPoolWithThatPoolsKey()
    {
        var handler = new RecordingHandler(HttpStatusCode.OK);
        var settings = new FunctionSettings { Pools = [new() { Url = "https://pool-a.example/", Key = "key-a" }, new() { Url = "https://pool-b.example", Key = "key-b" }] };
        var invoker = new ScanInvoker(new Clients(handler), Options.Create(settings));
        for (int node = 0; node < 4; node++) await invoker.ScanAsync("idx", Request(node), null, CancellationToken.None);
        Assert.Equal(
            [("https://pool-a.example/api/indexes/idx/scan", "key-a"), ("https://pool-b.example/api/indexes/idx/scan", "key-b"),
             ("https://pool-a.example/api/indexes/idx/scan", "key-a"), ("https://pool-b.example/api/indexes/idx/scan", "key-b")],
            handler.Sent.Select(s => (s.Url.ToString(), s.Key)).ToArray());

        // ScanUrls names pools without keys: no header is sent.
        var keyless = new RecordingHandler(HttpStatusCode.OK);
        await new ScanInvoker(new Clients(keyless), Options.Create(new FunctionSettings { ScanUrls = "http://a;http://b" })).ScanAsync("idx", Request(1), null, CancellationToken.None);
        Assert.Equal([("http://b/api/indexes/idx/scan", (string?)null)], keyless.Sent.Select(s => (s.Url.ToString(), s.Key)).ToArray());
    }

    [Fact]
    public async Task APoolThatRefusesTheKeyFailsTheCallNamingTheSettingInsteadOfShorteningTheAnswer()
    {
        var settings = new FunctionSettings { Pools = [new() { Url = "https://pool-a.example", Key = "old-key" }, new() { Url = "https://pool-b.example" }] };
        var invoker = new ScanInvoker(new Clients(new RecordingHandler(HttpStatusCode.Unauthorized)), Options.Create(settings));
        var wrongKey = await Assert.ThrowsAsync<InvalidOperationException>(() => invoker.ScanAsync("idx", Request(0), null, CancellationToken.None));
        Assert.Equal("processor pool 0 (https://pool-a.example) refused the scan call (401): its key (Squash:Pools:0:Key) is not one of its keys", wrongKey.Message);
        var noKey = await Assert.ThrowsAsync<InvalidOperationException>(() => invoker.ScanAsync("idx", Request(1), null, CancellationToken.None));
        Assert.Equal("processor pool 1 (https://pool-b.example) refused the scan call (401): no function key is configured for it (Squash:Pools:1:Key)", noKey.Message);
    }

    [Theory]
    [InlineData("https://a.example", "k", "", null)]
    [InlineData("https://a.example", "k", "http://b", "Squash:Pools and Squash:ScanUrls (or ScanUrl) both name processor pools; set one of them")]
    [InlineData("a.example", "k", "", "Squash:Pools:0:Url must be an absolute http(s) URL, got 'a.example'")]
    [InlineData("ftp://a.example", "k", "", "Squash:Pools:0:Url must be an absolute http(s) URL, got 'ftp://a.example'")]
    [InlineData("https://a.example", "@Microsoft.KeyVault(VaultName=kv;SecretName=scan-key-0)", "",
        "Squash:Pools:0:Key is a Key Vault reference that was not resolved (can the app's identity read the vault?)")]
    public void PoolSettingsAreCheckedAtStartUp(string url, string key, string scanUrls, string? expected)
    {
        var settings = new FunctionSettings { Pools = [new() { Url = url, Key = key }], ScanUrls = scanUrls };
        Assert.Equal(expected, ScanInvoker.CheckPools(settings));
    }

    [Fact]
    public void PoolsBindFromIndexedSettingsAsAppSettingsGiveThem()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Squash:Pools:0:Url"] = "https://p0", ["Squash:Pools:0:Key"] = "k0", ["Squash:Pools:1:Url"] = "https://p1", ["Squash:Pools:1:Key"] = "k1",
        }).Build();
        var settings = config.GetSection("Squash").Get<FunctionSettings>()!;
        Assert.Equal([new ScanInvoker.PoolTarget("https://p0", "k0"), new ScanInvoker.PoolTarget("https://p1", "k1")], ScanInvoker.PoolTargets(settings));
    }
}
