using System.Net;
using System.Text;
using System.Text.Json;
using Azure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Squash.Storage;
using Squash.Storage.Tests;

namespace Squash.Functions.Tests;

/// <summary>An index whose store fails for a while, or whose manifest is damaged: clear answers, a trace in the log, and recovery.</summary>
[Collection(nameof(IndexCollection))]
public sealed class IndexAvailabilityTests(IndexFixture fx)
{
    private string Query => "{\"vector\":" + Bodies.Vector(fx.Queries[0]) + ",\"k\":5}";

    [Fact]
    public async Task AVersionWhoseOpenFailedOnceOpensOnTheNextTry()
    {
        var store = new FaultInjectingBlobStore(new FolderBlobStore(fx.Root));
        var catalog = new IndexCatalog(Options.Create(new FunctionSettings()), store);
        var version = (await catalog.StoreFor(IndexFixture.IndexName).GetCurrentAsync())!.Value.Version;
        store.FailNext = 1;
        await Assert.ThrowsAnyAsync<Exception>(() => catalog.OpenAsync(IndexFixture.IndexName, version, CancellationToken.None));
        var opened = await catalog.OpenAsync(IndexFixture.IndexName, version, CancellationToken.None);
        Assert.NotNull(opened);
        Assert.Equal(version, opened.Manifest.Version);
    }

    [Fact]
    public async Task AStoreThatCannotBeReadIs503NamingTheIndexAndTheNextQueryAfterItRecoversIsAnswered()
    {
        ScriptedStore? store = null;
        using var app = fx.App(2, 1, wrapStore: inner => store = new ScriptedStore(inner));
        var client = app.CreateClient();
        _ = app.Services; // builds the host, so the store exists
        store!.Fails = name => name.EndsWith("manifest.json", StringComparison.Ordinal) ? new RequestFailedException(503, "injected: server busy") : null;
        var failed = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Bodies.Json(Query));
        var problem = await Problems.Read(failed, HttpStatusCode.ServiceUnavailable);
        Assert.Equal($"index '{IndexFixture.IndexName}' could not be read from the store; try again later", problem.GetProperty("detail").GetString());
        Assert.Equal(TimeSpan.FromSeconds(1), failed.Headers.RetryAfter?.Delta); // a busy store is worth asking again soon

        store.Fails = _ => null;
        var answered = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Bodies.Json(Query));
        Assert.True(answered.StatusCode == HttpStatusCode.OK, await answered.Content.ReadAsStringAsync());
        using var doc = JsonDocument.Parse(await answered.Content.ReadAsStringAsync());
        Assert.Equal(5, doc.RootElement.GetProperty("results").GetArrayLength());
    }

    /// <summary>
    /// A current pointer that names a path rather than a version ('../other/versions/…', here the other index's version) is
    /// a damaged index like a pointer that is not JSON: before, it was a bare 500 from an invalid blob name.
    /// </summary>
    [Fact]
    public async Task ACurrentPointerNamingAPathIs500IndexDamagedNamingThePointer()
    {
        using var app = fx.App(2, 1, wrapStore: inner => new ScriptedStore(inner)
        {
            Replaces = name => name == IndexFixture.IndexName + "/current"
                ? Encoding.UTF8.GetBytes($"{{\"version\":\"../{IndexFixture.AttributedIndexName}/versions/v1\"}}")
                : null,
        });
        var client = app.CreateClient();
        foreach (var response in new[]
        {
            await client.GetAsync($"/api/indexes/{IndexFixture.IndexName}"),
            await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Bodies.Json(Query)),
            await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/vectors", Bodies.Json("{\"deletes\":[\"1\"]}")),
        })
        {
            var problem = await Problems.Read(response, HttpStatusCode.InternalServerError);
            Assert.Equal("Index damaged", problem.GetProperty("title").GetString());
            Assert.Equal($"index '{IndexFixture.IndexName}' is damaged: 'current' in the store names \"../{IndexFixture.AttributedIndexName}/versions/v1\", which is not a version id",
                problem.GetProperty("detail").GetString());
        }
    }

    [Fact]
    public async Task ACorruptManifestIs500ProblemNamingTheIndexAndWhatIsWrongWithoutPathsAndIsLogged()
    {
        var logs = new CapturingLoggerProvider();
        using var app = fx.App(2, 1, wrapStore: inner => new ScriptedStore(inner)
        {
            Replaces = name => name.StartsWith(IndexFixture.IndexName + "/", StringComparison.Ordinal) && name.EndsWith("manifest.json", StringComparison.Ordinal)
                ? Encoding.UTF8.GetBytes("{ this is not a manifest")
                : null,
        }, services: s => s.AddSingleton<ILoggerProvider>(logs));
        var client = app.CreateClient();
        foreach (var response in new[]
        {
            await client.GetAsync($"/api/indexes/{IndexFixture.IndexName}"),
            await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Bodies.Json(Query)),
        })
        {
            var problem = await Problems.Read(response, HttpStatusCode.InternalServerError);
            var detail = problem.GetProperty("detail").GetString()!;
            Assert.StartsWith($"index '{IndexFixture.IndexName}' is damaged: manifest 'manifest.json' is not valid JSON", detail);
            Assert.DoesNotContain(fx.Root, detail);
            Assert.DoesNotContain("/", detail);
        }
        Assert.Contains(logs.Entries, e => e.Level == LogLevel.Error && e.Exception is not null && e.Message.Contains(IndexFixture.IndexName));
        // The other index of the same store is unaffected.
        var other = await client.GetAsync($"/api/indexes/{IndexFixture.AttributedIndexName}");
        Assert.Equal(HttpStatusCode.OK, other.StatusCode);
    }
}
