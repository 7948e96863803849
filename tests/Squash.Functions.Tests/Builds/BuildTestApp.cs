using System.Buffers.Binary;
using System.Net.Http.Json;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Azure.Storage.Queues;
using Azure.Storage.Queues.Models;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.AspNetCore.TestHost;
using Squash.Storage;
using Squash.Storage.Builds;
using Squash.Testing;

namespace Squash.Functions.Tests.Builds;

/// <summary>
/// Build tests share the four stage queues of one Azurite: they run one at a time and start from empty queues, and hold
/// the queues against other test processes (<see cref="BuildQueueLock"/>) while they run.
/// </summary>
[CollectionDefinition(nameof(BuildQueueCollection), DisableParallelization = true)]
public sealed class BuildQueueCollection : ICollectionFixture<BuildQueueLock>;

/// <summary>
/// The function app over a fresh Azurite container with the queue account set (AzureWebJobsStorage), plus a stand-in
/// for the Functions host's queue listener: receive a message, POST the custom-handler invocation payload to
/// /build-{stage} exactly as the host does, delete it on 2xx, leave it to reappear otherwise, and move it to
/// the poison queue after the dequeue limit.
/// </summary>
public sealed class BuildTestApp : IDisposable
{
    public const int MaxDequeueCount = 3;
    private static readonly TimeSpan RetryVisibility = TimeSpan.FromMilliseconds(300);

    private BuildTestApp(string container, Func<HttpRequestMessage, HttpResponseMessage?>? intercept)
    {
        Container = container;
        var connection = AzuriteTestStore.ConnectionString;
        Store = new AzureBlobStore(connection, container);
        Factory = new WebApplicationFactory<Program>().WithWebHostBuilder(b =>
        {
            b.UseSetting("Squash:Store", "azure:" + connection);
            b.UseSetting("Squash:Container", container);
            b.UseSetting("AzureWebJobsStorage", connection);
            b.UseSetting("Squash:MaxDequeueCount", MaxDequeueCount.ToString());
        });
        Client = Factory.CreateClient();
        Intercept = intercept;
    }

    public string Container { get; }
    public AzureBlobStore Store { get; }
    public WebApplicationFactory<Program> Factory { get; }
    public HttpClient Client { get; }
    /// <summary>Returns a response to use instead of the handler's (a worker that fails), or null to deliver normally.</summary>
    public Func<HttpRequestMessage, HttpResponseMessage?>? Intercept { get; set; }
    /// <summary>Every invocation delivered, with its answer's status.</summary>
    public List<(string Function, string Message, int DequeueCount, int Status, string Log, double Ms)> Deliveries { get; } = [];

    public static async Task<BuildTestApp> StartAsync(Func<HttpRequestMessage, HttpResponseMessage?>? intercept = null)
    {
        var app = new BuildTestApp($"builds-{Guid.NewGuid():N}"[..38], intercept);
        await app.ClearQueuesAsync();
        return app;
    }

    public static QueueClient Queue(string name) => new(AzuriteTestStore.ConnectionString, name, StorageBuildQueues.NewOptions());

    public async Task ClearQueuesAsync()
    {
        foreach (var stage in BuildStages.All)
            foreach (var name in new[] { BuildStages.QueueName(stage), BuildStages.QueueName(stage) + "-poison" })
            {
                var q = Queue(name);
                await q.CreateIfNotExistsAsync();
                await q.ClearMessagesAsync();
            }
    }

    public async Task UploadAsync(string name, byte[] bytes) => await Store.WriteAsync(name, bytes, WriteCondition.Overwrite);

    public static byte[] Fvecs(float[] data, int dims)
    {
        int n = data.Length / dims;
        var bytes = new byte[n * (4 + dims * 4)];
        for (int i = 0; i < n; i++)
        {
            int at = i * (4 + dims * 4);
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(at), dims);
            MemoryMarshal.AsBytes(data.AsSpan(i * dims, dims)).CopyTo(bytes.AsSpan(at + 4));
        }
        return bytes;
    }

    public static byte[] Npy(float[] data, int dims)
    {
        int n = data.Length / dims;
        var dict = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {dims}), }}";
        int pad = (64 - (10 + dict.Length + 1) % 64) % 64;
        var text = dict + new string(' ', pad) + "\n";
        var bytes = new byte[10 + text.Length + data.Length * 4];
        new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0 }.CopyTo(bytes, 0);
        BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(8), (ushort)text.Length);
        Encoding.Latin1.GetBytes(text, bytes.AsSpan(10));
        MemoryMarshal.AsBytes(data.AsSpan()).CopyTo(bytes.AsSpan(10 + text.Length));
        return bytes;
    }

    public Task<HttpResponseMessage> SubmitAsync(string index, string body, string? key = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, $"/api/indexes/{index}/builds") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        if (key is not null) request.Headers.Add("Idempotency-Key", key);
        return Client.SendAsync(request);
    }

    public async Task<string> SubmitOkAsync(string index, string body, string? key = null)
    {
        using var response = await SubmitAsync(index, body, key);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == System.Net.HttpStatusCode.Accepted, text);
        return JsonDocument.Parse(text).RootElement.GetProperty("buildId").GetString()!;
    }

    public async Task<JsonElement> ShowAsync(string index, string buildId)
    {
        var text = await Client.GetStringAsync($"/api/indexes/{index}/builds/{buildId}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    /// <summary>The invocation payload the Functions host sends for a queue message (Metadata primitives as their JSON text).</summary>
    public static string InvocationPayload(string functionName, QueueMessage m) => JsonSerializer.Serialize(new Dictionary<string, object>
    {
        ["Data"] = new Dictionary<string, object> { ["task"] = JsonSerializer.Serialize(m.Body.ToString()) },
        ["Metadata"] = new Dictionary<string, object>
        {
            ["DequeueCount"] = m.DequeueCount.ToString(),
            ["Id"] = JsonSerializer.Serialize(m.MessageId),
            ["InsertionTime"] = JsonSerializer.Serialize(m.InsertedOn),
            ["ExpirationTime"] = JsonSerializer.Serialize(m.ExpiresOn),
            ["NextVisibleTime"] = JsonSerializer.Serialize(m.NextVisibleOn),
            ["PopReceipt"] = JsonSerializer.Serialize(m.PopReceipt),
            ["sys"] = new Dictionary<string, object> { ["MethodName"] = functionName, ["UtcNow"] = DateTime.UtcNow.ToString("O"), ["RandGuid"] = Guid.NewGuid().ToString() },
        },
    });

    /// <summary>Delivers one message of the stage's queue, if there is one; true when something was delivered.</summary>
    public async Task<bool> DeliverOneAsync(string stage)
    {
        var queue = Queue(BuildStages.QueueName(stage));
        var received = await queue.ReceiveMessageAsync(TimeSpan.FromMinutes(2));
        if (received.Value is not { } m) return false;
        var function = BuildStages.FunctionName(stage);
        var request = new HttpRequestMessage(HttpMethod.Post, "/" + function) { Content = new StringContent(InvocationPayload(function, m), Encoding.UTF8, "application/json") };
        request.Headers.Add("X-Azure-Functions-InvocationId", Guid.NewGuid().ToString());
        request.Headers.Add("X-Azure-Functions-HostVersion", "4.1040.0");
        request.Headers.UserAgent.ParseAdd("Azure-Functions-Host/4.1040.0");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var response = Intercept?.Invoke(request) ?? await Client.SendAsync(request);
        int status = (int)response.StatusCode;
        var log = await response.Content.ReadAsStringAsync();
        lock (Deliveries) Deliveries.Add((function, m.Body.ToString(), (int)m.DequeueCount, status, log, clock.Elapsed.TotalMilliseconds));
        if (status is >= 200 and < 300) await queue.DeleteMessageAsync(m.MessageId, m.PopReceipt);
        else if (m.DequeueCount >= MaxDequeueCount)
        {
            // The host's rule: past the limit the message moves to <queue>-poison.
            await Queue(BuildStages.QueueName(stage) + "-poison").SendMessageAsync(m.Body.ToString());
            await queue.DeleteMessageAsync(m.MessageId, m.PopReceipt);
        }
        else await queue.UpdateMessageAsync(m.MessageId, m.PopReceipt, visibilityTimeout: RetryVisibility);
        return true;
    }

    /// <summary>Delivers messages from every stage queue until <paramref name="until"/> holds or the queues stay empty; fails after the deadline.</summary>
    public async Task DriveAsync(Func<Task<bool>> until, TimeSpan deadline, Func<string, Task>? beforeDelivery = null)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            if (await until()) return;
            Assert.True(clock.Elapsed < deadline, $"the build did not finish within {deadline.TotalSeconds:0} s; deliveries: {string.Join("; ", Deliveries.Select(d => $"{d.Function} #{d.DequeueCount} → {d.Status} {d.Log}"))}");
            bool any = false;
            foreach (var stage in BuildStages.All)
            {
                if (beforeDelivery is not null) await beforeDelivery(stage);
                any |= await DeliverOneAsync(stage);
            }
            if (!any) await Task.Delay(50);
        }
    }

    /// <summary>Drives the queues until the job is terminal; returns its final view.</summary>
    public async Task<JsonElement> RunToEndAsync(string index, string buildId, TimeSpan? deadline = null)
    {
        JsonElement view = default;
        await DriveAsync(async () =>
        {
            view = await ShowAsync(index, buildId);
            return BuildStatus.IsTerminal(view.GetProperty("status").GetString()!);
        }, deadline ?? TimeSpan.FromSeconds(120));
        return view;
    }

    public void Dispose()
    {
        Client.Dispose();
        Factory.Dispose();
        try { Store.Container.DeleteIfExists(); } catch (Azure.RequestFailedException) { }
    }
}
