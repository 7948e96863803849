using System.Collections.Concurrent;
using Azure.Identity;
using Azure.Storage.Queues;

namespace Squash.Storage.Builds;

/// <summary>Where build tasks are sent: the stage queues on Azure, or straight to the stage code in one process.</summary>
public interface IBuildQueue
{
    Task SendAsync(BuildTaskMessage message, CancellationToken ct);
}

/// <summary>
/// The four stage queues of the storage account named by the Functions app setting <c>AzureWebJobsStorage</c>:
/// either a connection string (Azurite, or an account's keys) or the identity-based form
/// (<c>AzureWebJobsStorage__queueServiceUri</c> or <c>__accountName</c>, with <c>__credential=managedidentity</c>
/// and <c>__clientId</c> for a user-assigned identity). Messages are base64 on the wire, as the queue trigger expects.
/// </summary>
public sealed class StorageBuildQueues : IBuildQueue
{
    /// <summary>Pinned so that the SDK's default (newer than Azurite 3.37 accepts) works against the emulator too.</summary>
    public const QueueClientOptions.ServiceVersion PinnedServiceVersion = QueueClientOptions.ServiceVersion.V2026_06_06;

    private readonly Func<string, QueueClient> _create;
    private readonly ConcurrentDictionary<string, Lazy<Task<QueueClient>>> _queues = new();

    private StorageBuildQueues(Func<string, QueueClient> create, string description)
    {
        _create = create;
        Description = description;
    }

    /// <summary>Which account, without secrets.</summary>
    public string Description { get; }

    public static QueueClientOptions NewOptions() => new(PinnedServiceVersion) { MessageEncoding = QueueMessageEncoding.Base64 };

    /// <summary>
    /// The app's options: <see cref="NewOptions"/> with every request counted per retry (each try is a billed queue
    /// operation), into the queue count of the invocation that sends it.
    /// </summary>
    private static QueueClientOptions CountedOptions()
    {
        var options = NewOptions();
        options.AddPolicy(new QueueRequestCountingPolicy(), Azure.Core.HttpPipelinePosition.PerRetry);
        return options;
    }

    /// <summary>
    /// The queues from the app settings (<paramref name="setting"/> reads one by its configuration key, with ':' for
    /// the environment's '__'); null when no queue account is configured.
    /// </summary>
    public static StorageBuildQueues? FromSettings(Func<string, string?> setting)
    {
        var connection = setting("AzureWebJobsStorage");
        if (!string.IsNullOrWhiteSpace(connection))
        {
            // Parsed now so that a malformed setting fails at start-up, not on the first build.
            var service = new QueueServiceClient(connection, CountedOptions());
            return new StorageBuildQueues(name => service.GetQueueClient(name), $"queues of account {service.AccountName}");
        }
        var uri = setting("AzureWebJobsStorage:queueServiceUri");
        if (string.IsNullOrWhiteSpace(uri) && setting("AzureWebJobsStorage:accountName") is { Length: > 0 } account)
            uri = $"https://{account}.queue.core.windows.net";
        if (string.IsNullOrWhiteSpace(uri)) return null;
        Azure.Core.TokenCredential credential = string.Equals(setting("AzureWebJobsStorage:credential"), "managedidentity", StringComparison.OrdinalIgnoreCase)
            ? new ManagedIdentityCredential(setting("AzureWebJobsStorage:clientId") is { Length: > 0 } clientId
                ? ManagedIdentityId.FromUserAssignedClientId(clientId) : ManagedIdentityId.SystemAssigned)
            : new DefaultAzureCredential();
        var identityService = new QueueServiceClient(new Uri(uri), credential, CountedOptions());
        return new StorageBuildQueues(name => identityService.GetQueueClient(name), $"queues of account {identityService.AccountName}");
    }

    /// <summary>The stage's queue, created on first use (the Functions host also creates it when it starts listening).</summary>
    public Task<QueueClient> QueueAsync(string stage, CancellationToken ct) => QueueNamedAsync(BuildStages.QueueName(stage), ct);

    /// <summary>
    /// Any queue of the account by its name (the ingest queue shares the account and its settings), created on first use.
    /// A creation that failed is not kept: the next call tries again, so one outage does not fail this instance's sends for good.
    /// </summary>
    public async Task<QueueClient> QueueNamedAsync(string queueName, CancellationToken ct)
    {
        var entry = _queues.GetOrAdd(queueName, name => new Lazy<Task<QueueClient>>(async () =>
        {
            var q = _create(name);
            await q.CreateIfNotExistsAsync(cancellationToken: CancellationToken.None).ConfigureAwait(false);
            return q;
        }));
        try
        {
            return await entry.Value.WaitAsync(ct).ConfigureAwait(false);
        }
        catch when (entry.Value.IsFaulted || entry.Value.IsCanceled)
        {
            _queues.TryRemove(new KeyValuePair<string, Lazy<Task<QueueClient>>>(queueName, entry));
            throw;
        }
    }

    public async Task SendAsync(BuildTaskMessage message, CancellationToken ct)
    {
        var queue = await QueueAsync(message.Stage, ct).ConfigureAwait(false);
        await queue.SendMessageAsync(message.ToJson(), ct).ConfigureAwait(false);
    }
}
