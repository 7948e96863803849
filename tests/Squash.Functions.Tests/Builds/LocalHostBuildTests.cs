using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Squash.Index.Build;
using Squash.LocalHost;
using Squash.Search;
using Squash.Storage;
using Squash.Storage.Builds;
using Squash.Testing;

namespace Squash.Functions.Tests.Builds;

/// <summary>
/// A build submitted to the local host (`squash serve --store azure:…`): real function-app processes, the builder pool
/// polling the Azurite queues as the Functions host would, and its instances killed in the middle of the build.
/// </summary>
[Collection(nameof(BuildQueueCollection))]
public sealed class LocalHostBuildTests
{
    private const int Count = 3000, Dims = 8;


    [Fact]
    public async Task ABuildSubmittedToTheLocalHostSurvivesKilledBuildersAndAnswersAsTheInProcessBuild()
    {
        using var app = await BuildTestApp.StartAsync();
        var rng = new Random(21);
        var data = Enumerable.Range(0, Count * Dims).Select(_ => (float)rng.NextDouble()).ToArray();
        await app.UploadAsync("base.fvecs", BuildTestApp.Fvecs(data, Dims));
        await using var host = new LocalFunctionHost(new LocalHostOptions
        {
            Store = "azure:" + AzuriteTestStore.ConnectionString, Container = app.Container, Port = FreePorts.Next(),
            ProcessorPools = 1, MaxInstancesPerPool = 1, MaxBuilderInstances = 2, QueueMaxPollingInterval = TimeSpan.FromMilliseconds(200),
            Log = _ => { },
        });
        await host.StartAsync();
        using var client = new HttpClient { BaseAddress = host.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        using var submit = await client.PostAsync("/api/indexes/local/builds",
            new StringContent("""{"source":{"vectors":"base.fvecs"},"options":{"partitions":6,"seed":3,"chunkRows":400}}""", Encoding.UTF8, "application/json"));
        var text = await submit.Content.ReadAsStringAsync();
        Assert.True(submit.StatusCode == HttpStatusCode.Accepted, text);
        var location = submit.Headers.Location!.OriginalString;

        var clock = Stopwatch.StartNew();
        bool killed = false;
        JsonElement view;
        while (true)
        {
            view = JsonDocument.Parse(await client.GetStringAsync(location)).RootElement.Clone();
            var status = view.GetProperty("status").GetString()!;
            if (BuildStatus.IsTerminal(status)) break;
            // Kill every builder instance once the build is under way: their tasks must be delivered again and finish.
            if (!killed && status is "assigning" or "encoding" && host.Pools.TryGetValue("builder", out var builders) && builders.Instances.Count > 0)
            {
                foreach (var instance in builders.Instances) Process.GetProcessById(instance.ProcessId).Kill();
                killed = true;
            }
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(240), $"the build did not finish in time: {view}");
            await Task.Delay(100);
        }
        Assert.True(view.GetProperty("status").GetString() == "succeeded", view.ToString());
        Assert.True(killed, "the builders were never seen running");

        var reference = new IndexStore(new FolderBlobStore(Path.Combine(Path.GetTempPath(), "squash-inproc-" + Guid.NewGuid().ToString("N"))), "local");
        await CalibratedBuild.BuildAndPublishAsync(reference, data, Count, Dims, new IndexBuildOptions { Partitions = 6, Seed = 3 });
        var engine = new SearchEngine(await OpenedIndex.OpenAsync(reference));
        for (int q = 0; q < 10; q++)
        {
            var query = data.AsSpan(q * 97 * Dims, Dims).ToArray();
            using var response = await client.PostAsync("/api/indexes/local/query",
                new StringContent(JsonSerializer.Serialize(new { vector = query, k = 10 }), Encoding.UTF8, "application/json"));
            var answer = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
            Assert.Equal(engine.Search(query, new SearchOptions { K = 10 }).Ids,
                answer.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("id").GetInt64()).ToArray());
        }
    }
}
