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
    private static string Connection => Squash.Testing.AzuriteTestStore.ConnectionString;

    [Fact]
    public async Task AnswersThroughATreeFromAzuriteEqualTheInProcessEngine()
    {
        var container = "fn-" + Guid.NewGuid().ToString("N")[..20];
        var azure = new AzureBlobStore(Connection, container);
        try
        {
            var store = new IndexStore(new ResilientBlobStore(azure), IndexFixture.IndexName);
            await IndexPublisher.BuildAndPublishAsync(store, fx.Data, IndexFixture.Count, IndexFixture.Dims, new IndexBuildOptions
            {
                Partitions = 12, Seed = 2, Attributes = Squash.Index.Attributes.AttributeReader.ReadJsonLines(new StringReader(fx.AttributeLines), "test.jsonl"),
            });
            var engine = new SearchEngine(await OpenedIndex.OpenAsync(store));

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
                // 200 queries, each unfiltered and with a filter (category, range, tags, a selective one).
                string[] filters = ["{\"colour\":\"green\"}", "{\"price\":{\"$gte\":200,\"$lt\":260}}", "{\"tags\":{\"$in\":[\"t2\",\"t9\"]}}", "{\"price\":{\"$eq\":17.5}}"];
                for (int i = 0; i < fx.Queries.Length; i++)
                {
                    var q = fx.Queries[i];
                    foreach (var filter in new[] { (string?)null, filters[i % filters.Length] })
                    {
                        var json = JsonSerializer.Serialize(new { vector = q, k = 10 });
                        if (filter is not null) json = json[..^1] + ",\"filter\":" + filter + "}";
                        var response = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", new StringContent(json, Encoding.UTF8, "application/json"));
                        var text = await response.Content.ReadAsStringAsync();
                        Assert.True(response.IsSuccessStatusCode, text);
                        using var doc = JsonDocument.Parse(text);
                        var rows = doc.RootElement.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("row").GetInt64()).ToArray();
                        var options = new SearchOptions { K = 10, Filter = filter is null ? null : engine.Index.Filters.Compile(filter) };
                        Assert.Equal(engine.Search(q, options).Ids, rows);
                        Assert.True(doc.RootElement.GetProperty("complete").GetBoolean());
                    }
                }
            }
        }
        finally
        {
            await azure.Container.DeleteIfExistsAsync();
        }
    }
}
