using System.Text.Json;
using Squash.Functions.Builds;
using Squash.Search.Writes;
using Squash.Storage;

namespace Squash.Functions.Writes;

/// <summary>
/// The queue-triggered <c>calibrate</c> function: measures an index's recall calibration again once ingest has changed a
/// tenth of its rows (<see cref="LogIngest.RunCalibrationLeasedAsync"/>), under its own lease, so an ingest run never waits
/// for it. Ingest sends its message (<c>{"index":"…"}</c>, the ingest message's form) after a run that made the calibration due.
/// </summary>
public static class CalibrationEndpoints
{
    public const string QueueName = "squash-calibrate";
    public const string FunctionName = "calibrate";
    /// <summary>When the published calibration is due again already (writes kept coming while it measured), the next job starts this long after the lease's rest ends.</summary>
    public static readonly TimeSpan AgainDelay = TimeSpan.FromSeconds(1);

    public static void MapCalibrate(this WebApplication app) =>
        app.MapPost("/" + FunctionName, Run).ExcludeFromDescription();

    internal static async Task SendAsync(Squash.Storage.Builds.StorageBuildQueues queues, string index, TimeSpan delay, CancellationToken ct)
    {
        var queue = await queues.QueueNamedAsync(QueueName, ct).ConfigureAwait(false);
        await queue.SendMessageAsync(JsonSerializer.Serialize(new IngestMessage(index), IngestJson.Default.IngestMessage), visibilityTimeout: delay, cancellationToken: ct).ConfigureAwait(false);
    }

    /// <summary>Whether the index has a current pointer (a damaged one counts: the run reports it and backs off).</summary>
    private static async Task<bool> IsPublishedAsync(IndexStore store, CancellationToken ct)
    {
        try
        {
            return await store.GetCurrentAsync(ct) is not null;
        }
        catch (Squash.Index.Format.CorruptIndexException)
        {
            return true;
        }
    }

    /// <summary>The index a message names, or why the message is dropped (named in the function's log line).</summary>
    public static (string? Index, string? Problem) Parse(string? text) => IngestMessage.Parse(text, QueueName);

    private static async Task<IResult> Run(HttpContext http, IndexCatalog catalog, BuildServices builds, ILoggerFactory logs, CancellationToken ct)
    {
        var log = logs.CreateLogger("Squash.Calibrate");
        IResult Answer(bool success, string line, bool warn = false)
        {
            if (success && !warn) log.LogInformation("{Line}", line); else log.LogWarning("{Line}", line);
            return Results.Json(new InvocationResult([], [line], null), InvocationJson.Default.InvocationResult, statusCode: success ? 200 : 500);
        }

        var invocation = await QueueInvocation.ReadAsync(http.Request, "message", ct);
        if (invocation.MessageText is null) return Answer(true, $"dropped an invocation of calibrate: {invocation.Problem}");
        var (index, problem) = Parse(invocation.MessageText);
        if (index is null) return Answer(true, $"dropped {problem}");
        try
        {
            // A message naming no published index (sent by hand, or left from a deleted one) is dropped before the lease is
            // taken: the run would count it a failed calibration and ask again after its back-off, forever, writing a lease there.
            if (!await IsPublishedAsync(catalog.StoreFor(index), ct)) return Answer(true, $"calibrate {index}: no index named '{index}' is published; nothing to calibrate");
            var run = await LogIngest.RunCalibrationLeasedAsync(catalog.StoreFor(index), ct: ct);
            // A failure holds the lease for its back-off, a measurement for its rest: ask again once it has passed (the
            // message is not failed, so the queue does not deliver it again at once, nor move it to the poison queue). A run
            // that gave up (LogIngest.MaxCalibrationAttempts failures in a row: a damaged index) has no RetryAfter and is not sent again.
            var again = run.Status == CalibrationStatus.Failed ? run.RetryAfter : run.StillDue ? (run.RetryAfter ?? TimeSpan.Zero) + AgainDelay : null;
            if (again is { } delay && builds.Queues is not null) await SendAsync(builds.Queues, index, delay + TimeSpan.FromSeconds(1), ct);
            return Answer(true, $"calibrate {index}: {run.Summary}", warn: run.Status == CalibrationStatus.Failed);
        }
        catch (IndexNotFoundException e)
        {
            return Answer(true, $"calibrate {index}: {e.Message}; nothing to calibrate");
        }
        catch (Exception e) when (!ct.IsCancellationRequested)
        {
            return Answer(false, $"calibrate {index} failed: {e.GetType().Name}: {SecretRedaction.Redact(e.Message)}");
        }
    }
}
