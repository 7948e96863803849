using System.Collections.Concurrent;
using System.Text.Json;
using System.Text.Json.Serialization;
using Squash.Functions.Builds;
using Squash.Search.Writes;
using Squash.Storage;

namespace Squash.Functions.Writes;

/// <summary>The ingest queue's message: which index has acknowledged writes waiting.</summary>
public sealed record IngestMessage(string Index)
{
    /// <summary>
    /// The index a message on <paramref name="queueName"/> names (the ingest and calibrate queues carry this form), or why it
    /// is dropped (named in the function's log line).
    /// </summary>
    public static (string? Index, string? Problem) Parse(string? text, string queueName)
    {
        if (text is null) return (null, "no message text");
        IngestMessage? message;
        try
        {
            message = JsonSerializer.Deserialize(text, IngestJson.Default.IngestMessage);
        }
        catch (JsonException e)
        {
            return (null, $"a message on {queueName} that is not JSON {{\"index\": …}}: {e.Message}");
        }
        if (message?.Index is not { } named || !IndexCatalog.IsValidName(named))
            return (null, $"a message on {queueName} that names no valid index: {text}");
        return (named, null);
    }
}

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
[JsonSerializable(typeof(IngestMessage))]
internal sealed partial class IngestJson : JsonSerializerContext;

/// <summary>
/// Asks for an ingest after an acknowledged write: one small message per index on <see cref="QueueName"/>, sent invisible for
/// <see cref="Delay"/>. While that message is still invisible, later writes on this instance send nothing: the ingest it
/// starts reads the log's end after it becomes visible, so it covers them. A failed send does not fail the write (it is
/// durable already); the next write asks again.
/// </summary>
public sealed class IngestTrigger(BuildServices builds, ILogger<IngestTrigger> log)
{
    public const string QueueName = "squash-ingest";
    public const string FunctionName = "ingest";
    /// <summary>How long a write waits for company before its ingest starts (batches of writes become one version).</summary>
    public static readonly TimeSpan Delay = TimeSpan.FromSeconds(1);
    /// <summary>Slack for the queue service's clock against this instance's.</summary>
    private static readonly TimeSpan ClockMargin = TimeSpan.FromMilliseconds(250);

    private readonly ConcurrentDictionary<string, DateTimeOffset> _invisibleUntil = new(StringComparer.Ordinal);

    /// <summary>Messages this instance sent (tests check the deduplication).</summary>
    public int Sent => _sent;
    private int _sent;

    public async Task RequestAsync(string index, CancellationToken ct)
    {
        if (builds.Queues is null) return; // a folder store has no queues: `squash ingest` applies the log by hand
        var now = DateTimeOffset.UtcNow;
        if (_invisibleUntil.TryGetValue(index, out var until) && now < until - ClockMargin) return;
        _invisibleUntil[index] = now + Delay;
        try
        {
            await SendAsync(builds.Queues, index, Delay, ct).ConfigureAwait(false);
            Interlocked.Increment(ref _sent);
        }
        catch (Exception e) when (!ct.IsCancellationRequested && StoreFailures.IsUnreachable(e))
        {
            _invisibleUntil.TryRemove(index, out _);
            log.LogWarning("could not queue an ingest of index {Index}: {Message}; the next write asks again", index, e.Message);
        }
    }

    internal static async Task SendAsync(Squash.Storage.Builds.StorageBuildQueues queues, string index, TimeSpan delay, CancellationToken ct)
    {
        var queue = await queues.QueueNamedAsync(QueueName, ct).ConfigureAwait(false);
        await queue.SendMessageAsync(JsonSerializer.Serialize(new IngestMessage(index), IngestJson.Default.IngestMessage), visibilityTimeout: delay, cancellationToken: ct).ConfigureAwait(false);
    }
}

/// <summary>The queue-triggered <c>ingest</c> function: a thin adapter over <see cref="LogIngest.RunLeasedAsync"/>.</summary>
public static class IngestEndpoints
{
    /// <summary>
    /// When another ingest holds the lease, the message comes back after the lease's length: the holder looks at the log
    /// again after releasing and triggers the next run itself, so this copy matters only when the holder died. (Coming back
    /// every few seconds instead, one message per write circulated while a long run held the lease: tens of invocations a
    /// second competing with the run for the same cores and storage.)
    /// </summary>
    public static readonly TimeSpan BusyRetry = LogIngest.DefaultLease;

    private static string RoundLine(string index, IngestResult r) =>
        $"ingest {index}: batches {r.FromSequence + 1}–{r.ToSequence} ({r.Upserts} upserts, {r.Deleted} rows removed) → version {r.Version}, " +
        $"{r.PartitionSummary}{(r.Published ? "" : ", not published: another version became current while it ran")} ({r.Timings}){r.SkippedSummary}";

    public static void MapIngest(this WebApplication app) =>
        app.MapPost("/" + IngestTrigger.FunctionName, Run).ExcludeFromDescription();

    private static async Task<IResult> Run(HttpContext http, IndexCatalog catalog, BuildServices builds, ILoggerFactory logs, CancellationToken ct)
    {
        var log = logs.CreateLogger("Squash.Ingest");
        var lines = new List<string>();
        IResult Answer(bool success, string line)
        {
            lines.Add(line);
            if (success) log.LogInformation("{Line}", line); else log.LogWarning("{Line}", line);
            return Results.Json(new InvocationResult([], lines, null), InvocationJson.Default.InvocationResult, statusCode: success ? 200 : 500);
        }

        var invocation = await QueueInvocation.ReadAsync(http.Request, "message", ct);
        if (invocation.MessageText is null) return Answer(true, $"dropped an invocation of ingest: {invocation.Problem}");
        var (parsed, problem) = IngestMessage.Parse(invocation.MessageText, IngestTrigger.QueueName);
        if (parsed is not { } index) return Answer(true, $"dropped {problem}");

        try
        {
            // A due recall calibration goes to the calibrate function (its own lease): this run and the next never wait for it.
            Func<CancellationToken, Task>? calibrate = builds.Queues is { } queues ? t => CalibrationEndpoints.SendAsync(queues, index, TimeSpan.Zero, t) : null;
            // Each round is logged as it lands as well: an invocation can run ten rounds and then write a rebuild's source,
            // and its answer (which carries the same lines) comes only at the end.
            var run = await LogIngest.RunLeasedAsync(catalog.StoreFor(index), WriteEndpoints.LogFor(catalog, index), ct: ct,
                rebuild: new RebuildSettings(builds.RebuildShare, builds.Jobs, builds.Queues), requestCalibration: calibrate,
                // A skipped batch is a write refused while a build of another shape was published: a warning, so it is seen.
                onRound: r => log.Log(r.Skipped.Count > 0 ? LogLevel.Warning : LogLevel.Information, "{Line}", RoundLine(index, r)),
                requestIngest: builds.Queues is { } q ? t => IngestTrigger.SendAsync(q, index, TimeSpan.Zero, t) : null);
            if (run.Rebuild is { } rebuild) lines.Add($"ingest {index}: {rebuild.Message}");
            if (run.Busy)
            {
                if (builds.Queues is not null) await IngestTrigger.SendAsync(builds.Queues, index, BusyRetry, ct);
                return Answer(true, $"ingest {index}: another ingest holds the lease and looks at the log again when it releases it; asked again in {BusyRetry.TotalSeconds:0} s in case it dies");
            }
            if (run.Requested) lines.Add($"ingest {index}: the log moved past what this run applied; asked again");
            if (run.Rounds.Count == 0) return Answer(true, $"ingest {index}: nothing past the watermark");
            foreach (var r in run.Rounds) lines.Add(RoundLine(index, r));
            return Answer(true, $"ingest {index}: watermark {run.Rounds[^1].ToSequence}");
        }
        catch (IndexNotFoundException e)
        {
            return Answer(true, $"ingest {index}: {e.Message}; nothing to apply the log to");
        }
        catch (Exception e) when (!ct.IsCancellationRequested)
        {
            // The host delivers the message again (and moves it to the poison queue after its dequeue limit).
            return Answer(false, $"ingest {index} failed: {e.GetType().Name}: {SecretRedaction.Redact(e.Message)}");
        }
    }
}
