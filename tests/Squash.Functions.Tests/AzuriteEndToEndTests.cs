using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Squash.Functions.Tree;
using Squash.Index.Build;
using Squash.Search;
using Squash.Storage;

namespace Squash.Functions.Tests;

/// <summary>End to end over HTTP with the index in Azure Blob Storage (Azurite, started by scripts/test.sh).</summary>
[Collection(nameof(IndexCollection))]
public sealed class AzuriteEndToEndTests(IndexFixture fx)
{
    private static string Connection =>
        Environment.GetEnvironmentVariable("SQUASH_TEST_AZURITE") is { Length: > 0 } cs
            ? cs
            : throw new InvalidOperationException("SQUASH_TEST_AZURITE is not set: run the tests through scripts/test.sh, which starts Azurite and sets it");

    [Fact]
    public async Task AnswersThroughATreeFromAzuriteEqualTheInProcessEngine()
    {
        var container = "fn-" + Guid.NewGuid().ToString("N")[..20];
        var azure = new AzureBlobStore(Connection, container);
        try
        {
            var store = new IndexStore(new ResilientBlobStore(azure), IndexFixture.IndexName);
            await IndexPublisher.BuildAndPublishAsync(store, fx.Data, IndexFixture.Count, IndexFixture.Dims, new IndexBuildOptions { Partitions = 12, Seed = 2 });
            var engine = new SearchEngine(await LoadedIndex.OpenAsync(store));

            WebApplicationFactory<Program>? app = null;
            app = new WebApplicationFactory<Program>().WithWebHostBuilder(b =>
            {
                b.UseSetting("Squash:Store", "azure:" + Connection);
                b.UseSetting("Squash:Container", container);
                b.UseSetting("Squash:Branching", "2");
                b.UseSetting("Squash:Depth", "3");
                b.UseSetting("Squash:ScanUrl", "http://localhost");
                b.ConfigureTestServices(s => s.AddHttpClient(ScanInvoker.ClientName).ConfigurePrimaryHttpMessageHandler(() => app!.Server.CreateHandler()));
            });
            using (app)
            {
                var client = app.CreateClient();
                foreach (var q in fx.Queries)
                {
                    var body = new StringContent(JsonSerializer.Serialize(new { vector = q, k = 10 }), Encoding.UTF8, "application/json");
                    var response = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", body);
                    response.EnsureSuccessStatusCode();
                    using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
                    var ids = doc.RootElement.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("id").GetInt64()).ToArray();
                    Assert.Equal(engine.Search(q, new SearchOptions { K = 10 }).Ids, ids);
                    Assert.True(doc.RootElement.GetProperty("complete").GetBoolean());
                }
            }
        }
        finally
        {
            await azure.Container.DeleteIfExistsAsync();
        }
    }
}
