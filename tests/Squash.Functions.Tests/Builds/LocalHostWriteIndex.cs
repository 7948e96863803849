using System.Net;
using System.Text;
using System.Text.Json;
using Squash.Functions.Writes;
using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.LocalHost;
using Squash.Storage;
using Squash.Testing;

namespace Squash.Functions.Tests.Builds;

/// <summary>
/// The index the local-host write tests start from: <c>items</c> in a fresh Azurite container, random vectors with ids
/// item-0, item-1, … and a <c>shelf</c> category, with the model of its rows; and the local host serving that container
/// (one pool of one instance, one builder, queues polled every 200 ms).
/// </summary>
internal sealed record LocalHostWriteIndex(AzureBlobStore Blobs, string Container, IndexStore Store, Dictionary<string, float[]> Model)
{
    /// <summary>Builds and publishes the index from <paramref name="rng"/>'s vectors, and empties the ingest queue.</summary>
    public static async Task<LocalHostWriteIndex> BuildAsync(string prefix, Random rng, int seed, int rows, int dims)
    {
        var blobs = AzuriteTestStore.NewStore(prefix);
        var container = blobs.Description[(blobs.Description.LastIndexOf('/') + 1)..];
        var model = new Dictionary<string, float[]>(StringComparer.Ordinal);
        var data = new float[rows * dims];
        var lines = new StringBuilder();
        for (int i = 0; i < rows; i++)
        {
            var v = Enumerable.Range(0, dims).Select(_ => (float)rng.NextDouble()).ToArray();
            v.CopyTo(data, i * dims);
            model[$"item-{i}"] = v;
            lines.AppendLine($"{{\"id\":\"item-{i}\",\"attributes\":{{\"shelf\":\"s{i % 3}\"}}}}");
        }
        var store = new IndexStore(blobs, "items");
        await IndexPublisher.BuildAndPublishAsync(store, data, rows, dims, new IndexBuildOptions
        {
            Partitions = 5, Seed = seed, Attributes = AttributeReader.ReadJsonLines(new StringReader(lines.ToString()), "a.jsonl"),
        });
        var queue = BuildTestApp.Queue(IngestTrigger.QueueName);
        await queue.CreateIfNotExistsAsync();
        await queue.ClearMessagesAsync();
        return new LocalHostWriteIndex(blobs, container, store, model);
    }

    /// <summary>
    /// Eight random exact queries through the host: each answer reports <paramref name="watermark"/> as indexed and equals
    /// brute force over <see cref="Model"/> (or <paramref name="model"/>), read at <paramref name="consistency"/>.
    /// </summary>
    public async Task AssertExactAnswersAsync(HttpClient client, Random rng, long watermark, string consistency = "eventual", Dictionary<string, float[]>? model = null)
    {
        model ??= Model;
        int dims = model.Values.First().Length;
        for (int q = 0; q < 8; q++)
        {
            var query = Enumerable.Range(0, dims).Select(_ => (float)rng.NextDouble()).ToArray();
            using var response = await client.PostAsync("/api/indexes/items/query", new StringContent(
                $"{{\"vector\":{Bodies.Vector(query)},\"k\":10,\"options\":{{\"exact\":true,\"consistency\":\"{consistency}\"}}}}", Encoding.UTF8, "application/json"));
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, text);
            var answer = JsonDocument.Parse(text).RootElement;
            Assert.Equal(watermark, answer.GetProperty("indexedSequence").GetInt64());
            var expected = model.OrderBy(e => e.Value.Select((x, j) => (double)(x - query[j]) * (x - query[j])).Sum()).Take(10).Select(e => e.Key);
            Assert.Equal(expected, answer.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("id").GetString()));
        }
    }

    /// <param name="appSettings">Settings of the app's instances on top of the host's (such as their own AzureWebJobsStorage).</param>
    public LocalFunctionHost Host(IReadOnlyDictionary<string, string>? appSettings = null) => new(new LocalHostOptions
    {
        Store = "azure:" + AzuriteTestStore.ConnectionString, Container = Container, Port = FreePorts.Next(),
        ProcessorPools = 1, MaxInstancesPerPool = 1, MaxBuilderInstances = 1, QueueMaxPollingInterval = TimeSpan.FromMilliseconds(200),
        Log = _ => { }, AppSettings = appSettings,
    });
}
