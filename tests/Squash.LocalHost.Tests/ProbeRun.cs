using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Reflection;
using System.Text.Json;
using Azure.Storage.Queues;
using Azure.Storage.Queues.Models;
using Squash.Testing;

namespace Squash.LocalHost.Tests;

/// <summary>
/// One local host running the probe handler app against Azurite, on a queue of its own (the probe's function.json
/// names its queue as %PROBE_QUEUE%, an app setting, so tests never share a queue). The probe writes one record per
/// invocation it receives; the test reads them back.
/// </summary>
internal sealed class ProbeRun : IAsyncDisposable
{
    public static string ProbeApp => Path.GetFullPath(typeof(ProbeRun).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "ProbeApp").Value!);

    private readonly DirectoryInfo _folder;
    private readonly ConcurrentQueue<string> _reports = new();

    private ProbeRun(string queue, DirectoryInfo folder)
    {
        QueueName = queue;
        _folder = folder;
        var options = new QueueClientOptions(QueueClientOptions.ServiceVersion.V2026_06_06) { MessageEncoding = QueueMessageEncoding.Base64 };
        Queue = new QueueClient(AzuriteTestStore.ConnectionString, queue, options);
        Poison = new QueueClient(AzuriteTestStore.ConnectionString, queue + "-poison", options);
        RawQueue = new QueueClient(AzuriteTestStore.ConnectionString, queue, new QueueClientOptions(QueueClientOptions.ServiceVersion.V2026_06_06) { MessageEncoding = QueueMessageEncoding.None });
    }

    public string QueueName { get; }
    /// <summary>The app's own producer view of the queue (base64, as host.json says).</summary>
    public QueueClient Queue { get; }
    public QueueClient Poison { get; }
    /// <summary>The queue without encoding: for writing what a foreign producer would.</summary>
    public QueueClient RawQueue { get; }
    public LocalFunctionHost Host { get; private set; } = null!;
    public string RecordFolder => Path.Combine(_folder.FullName, "records");
    public IReadOnlyCollection<string> Reports => _reports;

    /// <summary>Creates the queue; the host starts now or, with <paramref name="startHost"/> false, at <see cref="StartHostAsync"/>.</summary>
    public static async Task<ProbeRun> CreateAsync(int maxBuilders = 2, TimeSpan? lease = null, bool startHost = true)
    {
        var run = new ProbeRun($"probe-{Guid.NewGuid():N}"[..30], Directory.CreateTempSubdirectory("squash-queue-"));
        await run.Queue.CreateAsync();
        if (startHost) await run.StartHostAsync(maxBuilders, lease);
        return run;
    }

    public async Task StartHostAsync(int maxBuilders = 2, TimeSpan? lease = null)
    {
        Host = new LocalFunctionHost(new LocalHostOptions
        {
            Store = "azure:" + AzuriteTestStore.ConnectionString,
            Port = FreePorts.Next(),
            AppPath = ProbeApp,
            AppSettings = new Dictionary<string, string> { ["PROBE_QUEUE"] = QueueName, ["PROBE_RECORDS"] = RecordFolder },
            MaxBuilderInstances = maxBuilders,
            QueueMaxPollingInterval = TimeSpan.FromMilliseconds(250),
            QueueMessageLease = lease ?? TimeSpan.FromSeconds(20),
            LogFolder = Path.Combine(_folder.FullName, "logs"),
            Log = _reports.Enqueue,
        });
        try { await Host.StartAsync(); }
        catch { await Host.DisposeAsync(); throw; }
    }

    public Task<Azure.Response<SendReceipt>> SendAsync(string text) => Queue.SendMessageAsync(text);

    /// <summary>Every invocation the probe received so far.</summary>
    public IReadOnlyList<Record> Records()
    {
        if (!Directory.Exists(RecordFolder)) return [];
        return Directory.EnumerateFiles(RecordFolder, "*.json").Select(file =>
        {
            var stem = Path.ChangeExtension(file, null);
            var parts = Path.GetFileName(stem).Split('.');
            var done = File.Exists(stem + ".done") ? File.ReadAllText(stem + ".done") : null;
            return new Record(parts[0], int.Parse(parts[1]), int.Parse(parts[2]), JsonDocument.Parse(File.ReadAllText(file)).RootElement.Clone(), done);
        }).OrderBy(r => r.Id).ThenBy(r => r.DequeueCount).ToList();
    }

    public IReadOnlyList<Record> Records(string id) => Records().Where(r => r.Id == id).ToList();

    public static async Task<int> CountAsync(QueueClient queue)
    {
        try { return (await queue.GetPropertiesAsync()).Value.ApproximateMessagesCount; }
        catch (Azure.RequestFailedException e) when (e.Status == 404) { return 0; }
    }

    /// <summary>Waits for <paramref name="condition"/>; past the deadline, fails with what the host reported and what the probe saw.</summary>
    public async Task UntilAsync(Func<Task<bool>> condition, TimeSpan deadline, string what)
    {
        var end = DateTime.UtcNow + deadline;
        while (!await condition())
        {
            if (DateTime.UtcNow > end)
                throw new TimeoutException($"not within {deadline.TotalSeconds:0} s: {what}\nhost reports:\n  {string.Join("\n  ", _reports)}\nprobe records:\n  " +
                    string.Join("\n  ", Records().Select(r => $"{r.Id} delivery {r.DequeueCount} pid {r.Pid}: {r.Outcome ?? "running"}")));
            await Task.Delay(100);
        }
    }

    public Task UntilAsync(Func<bool> condition, TimeSpan deadline, string what) => UntilAsync(() => Task.FromResult(condition()), deadline, what);


    public async ValueTask DisposeAsync()
    {
        if (Host is not null) await Host.DisposeAsync();
        try { await Queue.DeleteIfExistsAsync(); await Poison.DeleteIfExistsAsync(); } catch (Azure.RequestFailedException) { }
        try { _folder.Delete(true); } catch (IOException) { }
    }

    /// <summary>One invocation as the probe recorded it: which message, which delivery, which process, the request, and how it ended.</summary>
    public sealed record Record(string Id, int DequeueCount, int Pid, JsonElement Request, string? Outcome)
    {
        public JsonElement Body => JsonDocument.Parse(Request.GetProperty("body").GetString()!).RootElement;
    }
}
