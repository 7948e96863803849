using System.Text.RegularExpressions;
using Azure;
using Azure.Storage.Queues;
using Azure.Storage.Queues.Models;

namespace Squash.LocalHost;

/// <summary>
/// Runs the app's queue-triggered functions as Azure Functions does, on their own pool of instances ("builder", the
/// builder function app on Azure). Two parts, as on Azure:
/// <list type="bullet">
/// <item>a scale controller that reads the queues' lengths and adds instances while they are long
/// (target-based scaling: one instance per <c>batchSize</c> messages, at most 4 added at a time, up to the pool's cap);</item>
/// <item>on every instance, one listener per queue function (the Functions host's queue listener, see
/// <see cref="QueueTriggerListener"/>), which receives, invokes, deletes, retries and poisons.</item>
/// </list>
/// An instance whose queues stay empty for the keep-alive is recycled; with every queue empty, no instance runs.
/// </summary>
public sealed partial class QueueTriggerHost : IAsyncDisposable
{
    /// <summary>The Functions host's shortest polling delay (it backs off from here to maxPollingInterval).</summary>
    internal static readonly TimeSpan MinimumPollingInterval = TimeSpan.FromMilliseconds(100);
    /// <summary>Instances target-based scaling adds in one decision.</summary>
    private const int MaxScaleOutStep = 4;

    private readonly List<QueueFunction> _functions;
    private readonly Dictionary<FunctionInstance, InstanceSession> _sessions = new();
    private readonly object _gate = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly HttpClient _http;
    private readonly Action<string> _report;
    private readonly InstanceLog? _log;
    private Task? _scaler;

    /// <summary>Every request the listeners and the scale controller send to the queues (billed as queue operations).</summary>
    public Squash.Storage.QueueRequestCountingPolicy QueueRequests { get; } = new();

    public QueueTriggerHost(FunctionDefinitions definitions, string connectionString, string appPath, IReadOnlyDictionary<string, string> environment,
        LocalHostOptions options, InstanceLog? log, Action<string> report, string appFolder)
    {
        Settings = Validate(definitions.Host.Queues, Path.Combine(appFolder, "host.json"));
        FunctionTimeout = definitions.Host.FunctionTimeout;
        Lease = options.QueueMessageLease;
        MaxPollingInterval = options.QueueMaxPollingInterval is { } poll && poll < Settings.MaxPollingInterval ? poll : Settings.MaxPollingInterval;
        if (MaxPollingInterval < MinimumPollingInterval) MaxPollingInterval = MinimumPollingInterval;
        var clientOptions = new QueueClientOptions(QueueClientOptions.ServiceVersion.V2026_06_06)
        {
            MessageEncoding = Settings.MessageEncoding == "none" ? QueueMessageEncoding.None : QueueMessageEncoding.Base64,
        };
        clientOptions.Retry.MaxRetries = 2;
        clientOptions.AddPolicy(QueueRequests, Azure.Core.HttpPipelinePosition.PerRetry);
        clientOptions.Retry.NetworkTimeout = TimeSpan.FromSeconds(30);
        // A message that is not valid base64 is not the app's: the host moves it to the poison queue untouched.
        clientOptions.MessageDecodingFailed += OnMessageDecodingFailedAsync;
        var service = new QueueServiceClient(connectionString, clientOptions);
        _functions = definitions.Functions.Where(f => f.IsQueue).Select(f =>
        {
            var name = ResolveQueueName(f, environment, appFolder);
            return new QueueFunction(f.Name, f.Trigger.Name, name, service.GetQueueClient(name),
                name.EndsWith("-poison", StringComparison.Ordinal) || name.Length > 63 - "-poison".Length ? null : service.GetQueueClient(name + "-poison"));
        }).ToList();
        Pool = new InstancePool("builder", appPath, environment, options with { MaxInstancesPerPool = options.MaxBuilderInstances }, log)
        {
            CanRecycle = TryRetire,
        };
        _log = log;
        _report = report;
        // One connection per invocation at most: long invocations must not share (and wait on) a pooled connection.
        _http = new HttpClient(new SocketsHttpHandler { UseProxy = false, PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30) }) { Timeout = Timeout.InfiniteTimeSpan };
    }

    public InstancePool Pool { get; }
    public QueueSettings Settings { get; }
    public TimeSpan FunctionTimeout { get; }
    /// <summary>How long a received message stays invisible; renewed at half-time while its invocation runs.</summary>
    public TimeSpan Lease { get; }
    public TimeSpan MaxPollingInterval { get; }
    /// <summary>host.json newBatchThreshold, or the host's default (half a batch per core; an instance is given one core).</summary>
    public int NewBatchThreshold => Settings.NewBatchThreshold >= 0 ? Settings.NewBatchThreshold : Settings.BatchSize / 2;
    /// <summary>(function, queue) for each queue-triggered function.</summary>
    public IReadOnlyList<(string Function, string Queue)> Queues => _functions.Select(f => (f.Function, f.QueueName)).ToList();

    internal IReadOnlyList<QueueFunction> Functions => _functions;
    internal HttpClient Http => _http;
    internal CancellationToken Stopping => _stop.Token;

    public void Start() => _scaler = Task.Run(() => ScaleAsync(_stop.Token));

    /// <summary>The connection string of an <c>azure:CONNECTION_STRING</c> store; null for a folder or an account URL (identity) store.</summary>
    public static string? ConnectionStringOf(string store)
    {
        if (!store.StartsWith("azure:", StringComparison.Ordinal)) return null;
        var target = store["azure:".Length..];
        return target.Length == 0 || target.StartsWith("https://", StringComparison.OrdinalIgnoreCase) || target.StartsWith("http://", StringComparison.OrdinalIgnoreCase)
            ? null : target;
    }

    /// <summary>
    /// The scale controller: adds instances while the queues hold more than the running ones take. It backs off up to
    /// maxPollingInterval while no instance runs and the queues are empty (running instances poll by themselves).
    /// </summary>
    private async Task ScaleAsync(CancellationToken ct)
    {
        var backoff = MinimumPollingInterval;
        while (!ct.IsCancellationRequested)
        {
            long wanted = 0;
            try
            {
                foreach (var f in _functions)
                    wanted += (await LengthAsync(f.Queue, ct).ConfigureAwait(false) + Settings.BatchSize - 1) / Settings.BatchSize;
                // The pool refuses starts past its cap; a start counts at once, so the next round does not repeat it.
                long start = Math.Min(wanted - Pool.Allocated, MaxScaleOutStep);
                for (long i = 0; i < start; i++) _ = StartInstanceAsync();
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested) { return; }
            catch (Exception e) when (e is RequestFailedException or HttpRequestException or AggregateException)
            {
                Report($"queue triggers: cannot read the queues' lengths ({e.Message.Split('\n')[0]}); retrying");
            }
            // Idle (nothing queued, nothing running): back off, as the host's own polling does; otherwise look again soon.
            TimeSpan delay;
            if (wanted == 0 && Pool.Allocated == 0)
            {
                delay = backoff;
                backoff = TimeSpan.FromTicks(Math.Min(MaxPollingInterval.Ticks, backoff.Ticks * 2));
            }
            else
            {
                delay = TimeSpan.FromTicks(Math.Min(MaxPollingInterval.Ticks, TimeSpan.TicksPerSecond));
                backoff = MinimumPollingInterval;
            }
            try { await Task.Delay(delay, ct).ConfigureAwait(false); } catch (OperationCanceledException) { return; }
        }
    }

    private static async Task<long> LengthAsync(QueueClient queue, CancellationToken ct)
    {
        try
        {
            return (await queue.GetPropertiesAsync(ct).ConfigureAwait(false)).Value.ApproximateMessagesCount;
        }
        catch (RequestFailedException e) when (e.Status == 404)
        {
            return 0; // the queue does not exist yet: nothing to do (the host does not create trigger queues)
        }
    }

    private async Task StartInstanceAsync()
    {
        FunctionInstance? instance;
        try
        {
            instance = await Pool.TryStartAsync().ConfigureAwait(false);
        }
        catch (Exception e)
        {
            // Reported, not thrown: the scaler tries again on its next look while messages wait.
            Report($"queue triggers: a builder instance could not start: {e.Message}");
            return;
        }
        if (instance is null) return;
        var session = new InstanceSession(instance, CancellationTokenSource.CreateLinkedTokenSource(_stop.Token));
        lock (_gate)
        {
            if (_stop.IsCancellationRequested) return;
            _sessions[instance] = session;
        }
        session.Listeners = _functions.Select(f => Task.Run(() => new QueueTriggerListener(this, f, session).RunAsync())).ToArray();
    }

    /// <summary>The pool may stop an idle instance only when none of its listeners is between receiving and invoking.</summary>
    private bool TryRetire(FunctionInstance instance)
    {
        InstanceSession? session;
        lock (_gate) _sessions.TryGetValue(instance, out session);
        if (session is null) return true;
        if (!session.TryRetire()) return false;
        lock (_gate) _sessions.Remove(instance);
        return true;
    }

    /// <summary>An instance failed (died, or an invocation timed out): the pool drops it; the scaler starts another if work remains.</summary>
    internal void Discard(InstanceSession session, string reason)
    {
        session.Retire();
        lock (_gate) _sessions.Remove(session.Instance);
        Pool.Discard(session.Instance, reason);
    }

    internal void Report(string line)
    {
        _report(line);
        _log?.Write(Environment.ProcessId, "host", line);
    }

    internal void LogInvocation(FunctionInstance instance, string line) => _log?.Write(instance.ProcessId, "host", line);

    private async Task OnMessageDecodingFailedAsync(QueueMessageDecodingFailedEventArgs args)
    {
        if (args.ReceivedMessage is not { } message) return;
        var function = _functions.FirstOrDefault(f => f.Queue.Name == args.Queue.Name);
        if (function is null) return;
        try
        {
            await MoveToPoisonAsync(function, message.Body, message.MessageId, message.PopReceipt, CancellationToken.None).ConfigureAwait(false);
            Report($"queue {function.QueueName}: message {message.MessageId} is not valid {Settings.MessageEncoding} (host.json messageEncoding); moved to {function.PoisonName ?? "nowhere (no poison queue)"} without invoking {function.Function}");
        }
        catch (RequestFailedException e)
        {
            Report($"queue {function.QueueName}: could not move undecodable message {message.MessageId} to its poison queue: {e.Message.Split('\n')[0]}");
        }
    }

    /// <summary>As the host: the message's body goes to "&lt;queue&gt;-poison" (created if absent), then leaves its queue.</summary>
    internal static async Task MoveToPoisonAsync(QueueFunction f, BinaryData body, string id, string popReceipt, CancellationToken ct)
    {
        if (f.Poison is { } poison)
        {
            await poison.CreateIfNotExistsAsync(cancellationToken: ct).ConfigureAwait(false);
            await poison.SendMessageAsync(body, cancellationToken: ct).ConfigureAwait(false);
        }
        await DeleteAsync(f.Queue, id, popReceipt, ct).ConfigureAwait(false);
    }

    /// <summary>Deletes a message; one already gone, or taken over by another receiver (pop receipt mismatch), is left alone as the host does.</summary>
    internal static async Task DeleteAsync(QueueClient queue, string id, string popReceipt, CancellationToken ct)
    {
        try
        {
            await queue.DeleteMessageAsync(id, popReceipt, ct).ConfigureAwait(false);
        }
        catch (RequestFailedException e) when (e.Status == 404 || e.ErrorCode == "PopReceiptMismatch") { }
    }

    private static QueueSettings Validate(QueueSettings s, string hostJson)
    {
        string? problem = s.BatchSize is < 1 or > 32 ? $"extensions.queues.batchSize must be 1..32, got {s.BatchSize}"
            : s.MaxDequeueCount < 1 ? $"extensions.queues.maxDequeueCount must be ≥ 1, got {s.MaxDequeueCount}"
            : s.NewBatchThreshold < -1 ? $"extensions.queues.newBatchThreshold must be ≥ 0, got {s.NewBatchThreshold}"
            : s.VisibilityTimeout < TimeSpan.Zero ? $"extensions.queues.visibilityTimeout must not be negative, got {s.VisibilityTimeout}"
            : s.MessageEncoding is not ("base64" or "none") ? $"extensions.queues.messageEncoding must be base64 or none, got '{s.MessageEncoding}'"
            : null;
        if (problem is not null) throw new InvalidDataException($"{hostJson}: {problem}");
        return s;
    }

    /// <summary>
    /// The function.json queueName, with %SETTING% taken from the app settings (the instances' environment, then this
    /// process's) as the host resolves binding expressions; lower-cased and checked against Azure's queue-name rules.
    /// </summary>
    public static string ResolveQueueName(FunctionDefinition f, IReadOnlyDictionary<string, string> appSettings, string appFolder)
    {
        var file = Path.Combine(appFolder, f.Name, "function.json");
        var raw = f.Trigger.QueueName ?? throw new InvalidDataException($"{file}: the queueTrigger binding has no \"queueName\"");
        var name = SettingReference().Replace(raw, m =>
        {
            var key = m.Groups[1].Value;
            return appSettings.TryGetValue(key, out var v) ? v
                : Environment.GetEnvironmentVariable(key) ?? throw new InvalidDataException($"{file}: queueName refers to the app setting {key}, which is not set");
        }).ToLowerInvariant();
        if (!QueueNameRule().IsMatch(name) || name.Contains("--", StringComparison.Ordinal))
            throw new InvalidDataException($"{file}: queueName '{name}' is not a valid queue name (3-63 lower-case letters, digits and single hyphens)");
        return name;
    }

    [GeneratedRegex("%([^%]+)%")]
    private static partial Regex SettingReference();

    [GeneratedRegex("^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")]
    private static partial Regex QueueNameRule();

    public async ValueTask DisposeAsync()
    {
        InstanceSession[] sessions;
        lock (_gate)
        {
            _stop.Cancel();
            sessions = _sessions.Values.ToArray();
            _sessions.Clear();
        }
        foreach (var s in sessions) s.Retire();
        // Listeners give their in-flight messages back (visible at once) before the instances are stopped.
        var listeners = sessions.SelectMany(s => s.Listeners).Append(_scaler ?? Task.CompletedTask);
        try { await Task.WhenAll(listeners).WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false); }
        catch (TimeoutException) { }
        // The pool itself is disposed by its owner (LocalFunctionHost disposes every pool).
        _http.Dispose();
        _stop.Dispose();
    }
}

/// <summary>A queue-triggered function: its trigger binding's name, its queue and poison queue (none for a queue already named *-poison).</summary>
internal sealed record QueueFunction(string Function, string BindingName, string QueueName, QueueClient Queue, QueueClient? Poison)
{
    public string? PoisonName => Poison?.Name;
}

/// <summary>
/// One builder instance as its listeners see it. A listener counts itself in <see cref="BeginReceive"/> from taking messages
/// until their invocations hold the instance; the pool may retire the instance only while no listener is in there and
/// no invocation runs, so a recycle never lands between the two.
/// </summary>
internal sealed class InstanceSession(FunctionInstance instance, CancellationTokenSource stop)
{
    private readonly object _gate = new();
    private int _receiving;
    private bool _retired;

    public FunctionInstance Instance { get; } = instance;
    public CancellationToken Stopping => stop.Token;
    public Task[] Listeners { get; set; } = [];

    public bool BeginReceive()
    {
        lock (_gate)
        {
            if (_retired || Instance.HasExited) return false;
            _receiving++;
            return true;
        }
    }

    public void EndReceive()
    {
        lock (_gate) _receiving--;
    }

    public bool TryRetire()
    {
        lock (_gate)
        {
            if (_receiving > 0 || Instance.Active > 0) return false;
            _retired = true;
        }
        stop.Cancel();
        return true;
    }

    public void Retire()
    {
        lock (_gate) _retired = true;
        try { stop.Cancel(); } catch (ObjectDisposedException) { }
    }
}
