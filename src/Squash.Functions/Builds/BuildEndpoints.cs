using System.Globalization;
using System.Text.Json;
using Squash.Storage;
using Squash.Storage.Builds;

namespace Squash.Functions.Builds;

/// <summary>The build pipeline's services in the function app: the job store, the stage queues and the task runner.</summary>
public sealed class BuildServices
{
    public BuildServices(IConfiguration configuration, IndexCatalog catalog, IBuildStageWork work)
    {
        Jobs = new BuildJobStore(catalog.StoreFor("").Blobs);
        Queues = StorageBuildQueues.FromSettings(key => configuration[key]);
        var queues = Queues;
        // A rebuild's version waits for ingest to publish it: ask for an ingest as soon as it is written.
        Runner = queues is null ? null : new BuildTaskRunner(Jobs, queues, work)
        {
            RebuildWritten = (job, ct) => Squash.Functions.Writes.IngestTrigger.SendAsync(queues, job.Index, TimeSpan.Zero, ct),
        };
        RebuildShare = RebuildShareSetting(configuration["Squash:RebuildShare"]);
        MaxDequeueCount = configuration.GetValue<int?>("Squash:MaxDequeueCount") ?? HostMaxDequeueCount();
    }

    public BuildJobStore Jobs { get; }
    /// <summary>Squash:RebuildShare: ingest queues a full rebuild once this share of the rows changed since the build (0 or "off": never).</summary>
    public double RebuildShare { get; }

    public static double RebuildShareSetting(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) return Squash.Search.Writes.RebuildSettings.DefaultShare;
        if (text.Trim().Equals("off", StringComparison.OrdinalIgnoreCase)) return 0;
        if (double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double share) && share is >= 0 and <= 1)
            return share;
        throw new InvalidOperationException($"Squash:RebuildShare must be a share of the rows between 0 and 1, or \"off\"; got '{text}'");
    }
    /// <summary>Null when the app has no queue account (a folder store): builds are then refused with 503.</summary>
    public StorageBuildQueues? Queues { get; }
    public BuildTaskRunner? Runner { get; }
    /// <summary>host.json's extensions.queues.maxDequeueCount (the Functions host's default, 5, when absent).</summary>
    public int MaxDequeueCount { get; }

    private static int HostMaxDequeueCount()
    {
        var path = Path.Combine(AppContext.BaseDirectory, "host.json");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            if (doc.RootElement.TryGetProperty("extensions", out var e) && e.TryGetProperty("queues", out var q)
                && q.TryGetProperty("maxDequeueCount", out var m) && m.TryGetInt32(out int n) && n > 0) return n;
        }
        catch (Exception x) when (x is IOException or JsonException or UnauthorizedAccessException) { }
        return 5;
    }
}

/// <summary>
/// The <c>builds</c> HTTP function (submit, list, show, cancel) and the four queue-triggered stage functions. A thin
/// adapter: requests and invocation payloads in, library calls, answers out.
/// </summary>
public static class BuildEndpoints
{
    public const int ListLimit = 50;
    public const int MaxIdempotencyKey = 200;

    public static IServiceCollection AddBuilds(this IServiceCollection services)
    {
        services.AddSingleton<BuildServices>();
        services.AddSingleton<IBuildStageWork, Squash.Search.Builds.QueueStageWork>();
        return services;
    }

    public static void MapBuilds(this WebApplication app)
    {
        app.MapPost("/api/indexes/{index}/builds", Submit).WithName("builds-submit").Accepts<BuildRequest>("application/json")
            .Produces<BuildAccepted>(202).ProducesValidationProblem().ProducesProblem(409).ProducesProblem(413).ProducesProblem(503);
        app.MapGet("/api/indexes/{index}/builds", List).WithName("builds-list").Produces<BuildList>().ProducesValidationProblem().ProducesProblem(503);
        app.MapGet("/api/indexes/{index}/builds/{buildId}", Show).WithName("builds-show").Produces<BuildView>()
            .ProducesValidationProblem().ProducesProblem(404).ProducesProblem(503);
        app.MapDelete("/api/indexes/{index}/builds/{buildId}", Cancel).WithName("builds-cancel").Produces<BuildView>()
            .ProducesValidationProblem().ProducesProblem(404).ProducesProblem(409).ProducesProblem(503);
        // Queue triggers: the Functions host POSTs /{functionName} (no route prefix) with the invocation payload.
        foreach (var stage in BuildStages.All)
            app.MapPost("/" + BuildStages.FunctionName(stage), (HttpContext http, BuildServices builds, ILoggerFactory logs, CancellationToken ct) =>
                RunTask(stage, http, builds, logs.CreateLogger("Squash.Builds"), ct)).ExcludeFromDescription();
    }

    private static IResult NoQueue() => Results.Problem(statusCode: 503, title: "Builds are not available", detail: BuildSubmission.NoQueueDetail);

    private static IResult? CheckNames(string index, string? buildId)
    {
        var errors = new Dictionary<string, string[]>();
        if (!IndexCatalog.IsValidName(index)) errors["index"] = [IndexCatalog.InvalidNameMessage(index)];
        if (buildId is not null && !BuildJobStore.IsValidBuildId(buildId)) errors["buildId"] = [$"'{buildId}' is not a build id (such as b20261203-121530123-3f9a1c0b7e2d)"];
        return errors.Count > 0 ? Results.ValidationProblem(errors) : null;
    }

    private static IResult BuildNotFound(string index, string buildId) =>
        Results.Problem(statusCode: 404, title: "Build not found", detail: $"index '{index}' has no build '{buildId}'");

    private static string Location(string index, string buildId) => $"/api/indexes/{index}/builds/{buildId}";

    private static async Task<IResult> Submit(string index, HttpContext http, BuildServices builds, Microsoft.Extensions.Options.IOptions<FunctionSettings> settings, CancellationToken ct)
    {
        if (builds.Queues is null) return NoQueue();
        if (CheckNames(index, null) is { } bad) return bad;
        string? key = null;
        if (http.Request.Headers.TryGetValue("Idempotency-Key", out var keys))
        {
            key = keys.ToString();
            if (key.Length is 0 or > MaxIdempotencyKey || key.Any(c => c is < '!' or > '~'))
                return Results.ValidationProblem(new Dictionary<string, string[]> { ["Idempotency-Key"] = [$"must be 1 to {MaxIdempotencyKey} visible ASCII characters"] });
        }
        var (request, error) = await Api.JsonBody.ReadAsync(http.Request, BuildApiJson.Default.BuildRequest, settings.Value.MaxRequestBytes, ct);
        if (error is not null) return error;
        var errors = BuildSubmission.ValidateFields(request!, out var schemaText);
        if (errors.Count > 0) return Results.ValidationProblem(errors, title: "The build request is not valid.");
        var (job, sourceErrors) = await BuildSubmission.ResolveAsync(builds.Jobs.Blobs, index, request!, schemaText, key, DateTimeOffset.UtcNow, ct);
        if (job is null) return Results.ValidationProblem(sourceErrors, title: "The build request is not valid.");

        var requestHash = BuildJobStore.Hash(index + "\n" + JsonSerializer.Serialize(request!, BuildApiJson.Default.BuildRequest));
        BuildJob stored;
        bool created;
        try
        {
            (stored, created) = await builds.Jobs.CreateAsync(job, key, requestHash, ct);
        }
        catch (IdempotencyConflictException e)
        {
            return Results.Problem(statusCode: 409, title: "Idempotency-Key reused", detail: $"{e.Message}; use a new key for a new request");
        }
        // A replay of a job still queued sends its first task again: the first request may have stopped before sending it,
        // and a second train message is a no-op once the first has run.
        if (created || stored.Status == BuildStatus.Queued)
            await builds.Queues.SendAsync(new BuildTaskMessage { Index = index, BuildId = stored.BuildId, Stage = BuildStages.Train, Task = 0 }, ct);
        http.Response.Headers.Location = Location(index, stored.BuildId);
        return Results.Json(new BuildAccepted(stored.BuildId, stored.Status), BuildApiJson.Default.BuildAccepted, statusCode: 202);
    }

    private static async Task<IResult> List(string index, BuildServices builds, CancellationToken ct)
    {
        if (builds.Queues is null) return NoQueue();
        if (CheckNames(index, null) is { } bad) return bad;
        var listed = await builds.Jobs.ListRecordsAsync(index, ListLimit, ct);
        var live = new List<BuildJob>(listed.Count);
        foreach (var j in listed)
            if (j.Job is not null) live.Add(await builds.Jobs.WithLiveProgressAsync(j.Job, ct));
        // A record that cannot be read is listed by name and reason; the other builds are still shown.
        var damaged = listed.Where(j => j.Damage is not null).Select(j => new DamagedBuild(j.BuildId, j.RecordName, j.Damage!.Message)).ToArray();
        var now = DateTimeOffset.UtcNow;
        return Results.Json(new BuildList(live.Select(j => BuildView.From(j, now)).ToArray(), damaged.Length > 0 ? damaged : null), BuildApiJson.Default.BuildList);
    }

    private static async Task<IResult> Show(string index, string buildId, BuildServices builds, CancellationToken ct)
    {
        if (builds.Queues is null) return NoQueue();
        if (CheckNames(index, buildId) is { } bad) return bad;
        var found = await builds.Jobs.GetAsync(index, buildId, ct);
        if (found is not { } f) return BuildNotFound(index, buildId);
        var job = await builds.Jobs.WithLiveProgressAsync(f.Job, ct);
        return Results.Json(BuildView.From(job, DateTimeOffset.UtcNow), BuildApiJson.Default.BuildView);
    }

    private static async Task<IResult> Cancel(string index, string buildId, BuildServices builds, CancellationToken ct)
    {
        if (builds.Queues is null || builds.Runner is null) return NoQueue();
        if (CheckNames(index, buildId) is { } bad) return bad;
        if (await builds.Jobs.GetAsync(index, buildId, ct) is null) return BuildNotFound(index, buildId);
        var (job, changed) = await builds.Jobs.UpdateAsync(index, buildId, j => BuildStatus.IsTerminal(j.Status) || j.PublishCommitted ? null
            : j with { Status = BuildStatus.Cancelled, FinishedUtc = DateTimeOffset.UtcNow }, ct);
        if (!changed)
            return Results.Problem(statusCode: 409, title: "The build cannot be cancelled",
                detail: job.PublishCommitted && !BuildStatus.IsTerminal(job.Status)
                    ? $"build {buildId} is publishing its version; it can no longer be cancelled"
                    : $"build {buildId} has already {(job.Status == BuildStatus.Cancelled ? "been cancelled" : job.Status)}");
        await builds.Runner.CleanUpAsync(job, ct);
        return Results.Json(BuildView.From(job, DateTimeOffset.UtcNow), BuildApiJson.Default.BuildView);
    }

    /// <summary>One queue-triggered invocation: parse the host's payload tolerantly, run the task, answer as the host expects.</summary>
    private static async Task<IResult> RunTask(string stage, HttpContext http, BuildServices builds, ILogger log, CancellationToken ct)
    {
        var logs = new List<string>();
        IResult Answer(bool success, string line)
        {
            logs.Add(line);
            if (success) log.LogInformation("{Line}", line); else log.LogWarning("{Line}", line);
            return Results.Json(new InvocationResult([], logs, null), InvocationJson.Default.InvocationResult, statusCode: success ? 200 : 500);
        }
        if (builds.Runner is null) return Answer(false, $"{BuildStages.FunctionName(stage)}: no queue account is configured (AzureWebJobsStorage)");

        // Dropped (2xx): the host sent something that is not an invocation, and no delivery of it can succeed.
        var invocation = await QueueInvocation.ReadAsync(http.Request, "task", ct);
        if (invocation.MessageText is null)
            return Answer(true, $"dropped an invocation of {BuildStages.FunctionName(stage)}: {invocation.Problem}");
        var (message, problem, named) = QueueInvocation.ParseMessage(invocation.MessageText, stage);
        if (message is null)
        {
            var queueName = BuildStages.QueueName(stage);
            if (named is { } n && await builds.Jobs.GetAsync(n.Index, n.BuildId, ct) is { } found)
            {
                await builds.Runner.FailAsync(found.Job, new BuildError("bad-message", $"a queue message on {queueName} is not valid: {problem}", $"{stage}[?]"), ct);
                return Answer(true, $"build {n.BuildId} failed: a queue message on {queueName} is not valid: {problem}");
            }
            return Answer(true, $"dropped a queue message on {queueName} (message id {invocation.MessageId ?? "unknown"}) that names no build: {problem}");
        }
        var outcome = await builds.Runner.RunAsync(message, invocation.DequeueCount, builds.MaxDequeueCount, ct);
        return Answer(outcome.Success, outcome.Log);
    }
}

/// <summary>Reads the custom-handler invocation payload of a queue trigger, accepting the shapes the host is known to send.</summary>
public static class QueueInvocation
{
    public sealed record Parsed(string? MessageText, int DequeueCount, string? MessageId, string? Problem);

    /// <summary>Most bytes a task message may have (a Storage queue message holds at most 64 KB).</summary>
    public const int MaxMessageBytes = 64 * 1024;

    /// <summary>Reads and parses an invocation's body; a body that is not JSON is a problem, as a payload of the wrong shape is.</summary>
    public static async Task<Parsed> ReadAsync(HttpRequest request, string bindingName, CancellationToken ct)
    {
        using var buffer = new MemoryStream();
        await request.Body.CopyToAsync(buffer, ct).ConfigureAwait(false);
        try
        {
            using var payload = JsonDocument.Parse(buffer.ToArray());
            return Parse(payload.RootElement, bindingName);
        }
        catch (JsonException e)
        {
            return new(null, 1, null, $"the body is not JSON: {e.Message}");
        }
    }

    public static Parsed Parse(JsonElement root, string bindingName)
    {
        if (root.ValueKind != JsonValueKind.Object) return new(null, 1, null, "the payload is not a JSON object");
        if (!TryGet(root, "Data", out var data) || data.ValueKind != JsonValueKind.Object) return new(null, 1, null, "the payload has no \"Data\" object");
        if (!TryGet(data, bindingName, out var value)) return new(null, 1, null, $"\"Data\" has no \"{bindingName}\" binding");
        // The host JSON-encodes a string message a second time ("\"{\\\"index\\\":…}\""): unwrap it. A string that is the
        // message itself, or an object or array given as JSON, is accepted too.
        string text = value.ValueKind == JsonValueKind.String ? value.GetString()! : value.GetRawText();
        if (text.Length >= 2 && text[0] == '"')
        {
            try { text = JsonSerializer.Deserialize(text, InvocationStringJson.Default.String) ?? text; }
            catch (JsonException) { }
        }
        int dequeue = 1;
        string? id = null;
        if (TryGet(root, "Metadata", out var meta) && meta.ValueKind == JsonValueKind.Object)
        {
            if (TryGet(meta, "DequeueCount", out var d) && Scalar(d) is { } count && int.TryParse(count, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) && n > 0)
                dequeue = n;
            if (TryGet(meta, "Id", out var i)) id = Scalar(i);
        }
        return new(text, dequeue, id, null);
    }

    /// <summary>A metadata primitive as text: a number, a string holding a number, or a string holding a quoted string.</summary>
    public static string? Scalar(JsonElement e)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Number: return e.GetRawText();
            case JsonValueKind.String:
                var s = e.GetString()!;
                if (s.Length >= 2 && s[0] == '"' && s[^1] == '"')
                {
                    try { return JsonSerializer.Deserialize(s, InvocationStringJson.Default.String); }
                    catch (JsonException) { return s[1..^1]; }
                }
                return s;
            default: return null;
        }
    }

    private static bool TryGet(JsonElement obj, string name, out JsonElement value)
    {
        foreach (var p in obj.EnumerateObject())
            if (string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase)) { value = p.Value; return true; }
        value = default;
        return false;
    }

    /// <summary>
    /// The task message, strictly: a JSON object with exactly index, buildId, stage (this function's) and task. On a
    /// problem, <c>Named</c> is the job the message names when it still names one (so the job can be failed with the reason).
    /// </summary>
    public static (BuildTaskMessage? Message, string? Problem, (string Index, string BuildId)? Named) ParseMessage(string text, string stage)
    {
        if (System.Text.Encoding.UTF8.GetByteCount(text) > MaxMessageBytes) return (null, $"the message has more than {MaxMessageBytes} bytes", null);
        (string, string)? named = null;
        try
        {
            using var doc = JsonDocument.Parse(text);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                return (null, $"it must be a JSON object {{\"index\",\"buildId\",\"stage\",\"task\"}}, got {(root.ValueKind == JsonValueKind.Array ? "an array" : root.ValueKind.ToString().ToLowerInvariant())}", null);
            if (TryGet(root, "index", out var i) && i.ValueKind == JsonValueKind.String && IndexCatalog.IsValidName(i.GetString()!)
                && TryGet(root, "buildId", out var b) && b.ValueKind == JsonValueKind.String && BuildJobStore.IsValidBuildId(b.GetString()))
                named = (i.GetString()!, b.GetString()!);
        }
        catch (JsonException e)
        {
            return (null, $"it is not JSON ({e.Message})", null);
        }
        BuildTaskMessage? m;
        try
        {
            m = JsonSerializer.Deserialize(text, BuildJson.Default.BuildTaskMessage);
        }
        catch (JsonException e)
        {
            // Described in JSON's terms, field by field, as request bodies are.
            var errors = Api.JsonBody.Describe(System.Text.Encoding.UTF8.GetBytes(text), BuildJson.Default.BuildTaskMessage, e);
            return (null, string.Join("; ", errors.Select(x => $"{x.Key}: {string.Join(", ", x.Value)}")), named);
        }
        if (m is null) return (null, "it is null", named);
        if (named is null) return (null, "its index or buildId is not a valid name", null);
        if (m.Stage != stage) return (null, $"it is for stage \"{m.Stage}\" but arrived at {BuildStages.FunctionName(stage)}", named);
        return (m, null, named);
    }
}

[System.Text.Json.Serialization.JsonSerializable(typeof(string))]
internal sealed partial class InvocationStringJson : System.Text.Json.Serialization.JsonSerializerContext;
