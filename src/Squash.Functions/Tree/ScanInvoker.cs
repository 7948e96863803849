using System.Net.Http.Json;
using Microsoft.Extensions.Options;
using Squash.Functions.Api;

namespace Squash.Functions.Tree;

/// <summary>Calls a child tree node over HTTP (the scan function). Retries, timeouts and the circuit breaker come from the "scan" client's resilience pipeline.</summary>
public sealed class ScanInvoker(IHttpClientFactory clients, IOptions<FunctionSettings> settings)
{
    public const string ClientName = "scan";
    /// <summary>The header the Functions host reads a function key from (the other place is the <c>code</c> query parameter).</summary>
    public const string KeyHeader = "x-functions-key";

    /// <summary>A processor pool as a tree node calls it: base URL, and the function key to send (null: none).</summary>
    public sealed record PoolTarget(string Url, string? Key);

    /// <summary>The processor pools in pool order (empty: this app scans for itself): <see cref="FunctionSettings.Pools"/>, else ScanUrls / ScanUrl.</summary>
    public static PoolTarget[] PoolTargets(FunctionSettings settings)
    {
        if (settings.Pools.Count > 0)
            return settings.Pools.Select(p => new PoolTarget(p.Url.Trim(), string.IsNullOrWhiteSpace(p.Key) ? null : p.Key.Trim())).ToArray();
        var urls = settings.ScanUrls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (urls.Length == 0 && settings.ScanUrl is { Length: > 0 } single) urls = [single];
        return urls.Select(u => new PoolTarget(u, null)).ToArray();
    }

    /// <summary>The processor pools' base URLs (empty: this app scans for itself).</summary>
    public static string[] PoolUrls(FunctionSettings settings) => PoolTargets(settings).Select(p => p.Url).ToArray();

    /// <summary>
    /// What is wrong with the pool settings, in one line naming the setting (null: nothing). The app refuses to start
    /// with a wrong one rather than send every tree call to the wrong place. Never echoes a key.
    /// </summary>
    public static string? CheckPools(FunctionSettings settings)
    {
        if (settings.Pools.Count > 0 && (settings.ScanUrls.Trim().Length > 0 || settings.ScanUrl.Trim().Length > 0))
            return "Squash:Pools and Squash:ScanUrls (or ScanUrl) both name processor pools; set one of them";
        for (int i = 0; i < settings.Pools.Count; i++)
        {
            var pool = settings.Pools[i];
            if (!Uri.TryCreate(pool.Url.Trim(), UriKind.Absolute, out var url) || url.Scheme is not ("http" or "https"))
                return $"Squash:Pools:{i}:Url must be an absolute http(s) URL, got '{pool.Url}'";
            // On Azure a Key Vault reference the app could not resolve stays in the setting as written.
            if (pool.Key.TrimStart().StartsWith("@Microsoft.KeyVault(", StringComparison.OrdinalIgnoreCase))
                return $"Squash:Pools:{i}:Key is a Key Vault reference that was not resolved (can the app's identity read the vault?)";
        }
        return null;
    }

    /// <summary>
    /// Wakes every processor pool with a health call, without waiting: a cold coordinator does this as it starts,
    /// so the pools' cold starts overlap its own instead of following it when the first scan goes out.
    /// </summary>
    public static void WakePools(FunctionSettings settings, Action<string> report)
    {
        foreach (var url in PoolUrls(settings))
        {
            _ = Task.Run(async () =>
            {
                try
                {
                    using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
                    using var r = await http.GetAsync($"{url.TrimEnd('/')}/api/health").ConfigureAwait(false);
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
                {
                    report($"waking pool {url} failed ({e.Message}); it starts on the first scan instead");
                }
            });
        }
    }

    public async Task<ScanResponse> ScanAsync(string index, ScanRequest request, string? ownAddress, CancellationToken ct)
    {
        var client = clients.CreateClient(ClientName);
        var pools = PoolTargets(settings.Value);
        int poolIndex = pools.Length > 0 ? request.Node.Id % pools.Length : -1;
        var target = poolIndex >= 0 ? pools[poolIndex]
            : new PoolTarget(ownAddress ?? throw new InvalidOperationException("no scan URL configured and no own address known"), null);
        using var message = new HttpRequestMessage(HttpMethod.Post, $"{target.Url.TrimEnd('/')}/api/indexes/{index}/scan")
        {
            Content = JsonContent.Create(request, ApiJson.Default.ScanRequest),
        };
        if (target.Key is { } key) message.Headers.TryAddWithoutValidation(KeyHeader, key);
        // Carry the trace down the tree explicitly, whatever handler sits under the client.
        System.Diagnostics.DistributedContextPropagator.Current.Inject(System.Diagnostics.Activity.Current, message, static (carrier, key, value) =>
        {
            var m = (HttpRequestMessage)carrier!;
            m.Headers.Remove(key);
            m.Headers.TryAddWithoutValidation(key, value);
        });
        var attempts = ScanAttempts.Begin();
        using var response = await client.SendAsync(message, ct).ConfigureAwait(false);
        // The attempts other than the one whose response this is (a hedge that lost, a failed try) were dropped; one still
        // running was cancelled as this answer came back, so it ends now.
        var dropped = attempts.DroppedBesides(response, TimeProvider.System.GetTimestamp());
        if (response.StatusCode is System.Net.HttpStatusCode.RequestEntityTooLarge)
        {
            // Every body a coordinator sends fits the /scan limit its own settings give (a strong read's masked rows are
            // bounded by MaxMaskedRows before any node is called), so a 413 means the pool runs with smaller limits.
            throw new TreeNodeRefusedException($"tree node {request.Node.Id} ({(poolIndex >= 0 ? $"processor pool {poolIndex}" : "this app")}) refused the scan body as too large (413): "
                + "it takes less than this coordinator sends (a strong query's masked rows come on top of Squash:MaxRequestBytes, up to Squash:MaxMaskedRows rows); "
                + "give the coordinator and every processor pool the same Squash:MaxRequestBytes and Squash:MaxMaskedRows");
        }
        if (response.StatusCode is System.Net.HttpStatusCode.BadRequest)
        {
            // The child refused what this node sent: a bug here, not an outage there. Its problem text goes into the error.
            var problem = await response.Content.ReadAsStringAsync(ct).ConfigureAwait(false);
            throw new InvalidOperationException($"tree node {request.Node.Id} rejected the scan request ({(int)response.StatusCode}): {(problem.Length > 1000 ? problem[..1000] + "…" : problem)}");
        }
        if (response.StatusCode is System.Net.HttpStatusCode.Unauthorized or System.Net.HttpStatusCode.Forbidden)
        {
            // A configuration error, not an outage: a shorter answer marked incomplete would hide it on every query.
            throw new InvalidOperationException($"processor pool {poolIndex} ({target.Url}) refused the scan call ({(int)response.StatusCode}): " +
                (target.Key is null ? $"no function key is configured for it (Squash:Pools:{poolIndex}:Key)" : $"its key (Squash:Pools:{poolIndex}:Key) is not one of its keys"));
        }
        response.EnsureSuccessStatusCode();
        if (poolIndex >= 0) PoolActivity.Answered(poolIndex);
        var answer = await response.Content.ReadFromJsonAsync(ApiJson.Default.ScanResponse, ct).ConfigureAwait(false)
            ?? throw new InvalidOperationException("empty scan response");
        // An internal boundary, but what a child reports is merged into every answer and added into its cost: a wrong
        // shape or figure is a defect (a 500 naming the field in the log), not something to merge or pass on.
        if ((CheckShape(answer, request.Vectors.Length) ?? CheckCostFigures(answer)) is { } wrong)
            throw new InvalidOperationException($"tree node {request.Node.Id} answered with {wrong}");
        // The attempts whose answers were dropped were invocations too: their executions count, and their compute is
        // estimated (the caller never saw their billed time) as each one waking an instance (ScanAttempts.EstimatedBilledMilliseconds).
        return dropped.Attempts == 0 ? answer : answer with
        {
            Invocations = answer.Invocations + dropped.Attempts,
            DroppedAttempts = answer.DroppedAttempts + dropped.Attempts,
            DroppedBilledMilliseconds = answer.DroppedBilledMilliseconds + dropped.BilledMilliseconds,
        };
    }

    /// <summary>
    /// What is wrong with the shape of a child's answer to <paramref name="queries"/> queries, in words naming the field
    /// (null: nothing): one neighbour list and one stats entry per query (and one skipped bound when given), finite
    /// distances, partition numbers ≥ 0, level timings present, at least one invocation. The merge indexes them per query.
    /// </summary>
    public static string? CheckShape(ScanResponse answer, int queries)
    {
        if (answer.Neighbours is null || answer.Neighbours.Length != queries)
            return $"neighbours: {answer.Neighbours?.Length.ToString() ?? "null"} lists for {queries} queries";
        for (int q = 0; q < queries; q++)
        {
            if (answer.Neighbours[q] is not { } list) return $"neighbours[{q}]: null";
            for (int i = 0; i < list.Length; i++)
                if (list[i] is null) return $"neighbours[{q}][{i}]: null";
                else if (!float.IsFinite(list[i].D)) return $"neighbours[{q}][{i}]: distance {list[i].D}, must be a finite number";
        }
        if (answer.Stats is null || answer.Stats.Length != queries || answer.Stats.Any(x => x is null))
            return $"stats: {answer.Stats?.Count(x => x is not null).ToString() ?? "null"} entries for {queries} queries";
        if (answer.SkippedBounds is { } bounds && bounds.Length != queries)
            return $"skippedBounds: {bounds.Length} bounds for {queries} queries";
        if (answer.MissingPartitions is null || answer.MissingPartitions.Any(p => p < 0))
            return $"missingPartitions: {(answer.MissingPartitions is null ? "null" : "a negative partition number")}";
        if (answer.Levels is null || answer.Levels.Any(l => l is null))
            return $"levels: {(answer.Levels is null ? "null" : "a null level")}";
        if (answer.Invocations < 1) return $"invocations {answer.Invocations}: must be ≥ 1";
        return null;
    }

    /// <summary>The longest a dropped attempt is believed to have run: past this a child's figure is taken as wrong, not as cost.</summary>
    public static readonly TimeSpan LongestAttempt = TimeSpan.FromHours(1);

    /// <summary>
    /// What is wrong with the cost figures of a child's answer, in words naming the field (null: nothing). Each dropped
    /// attempt is one of the subtree's invocations (and at least one invocation answered), and is estimated at 1,000 ms
    /// to <see cref="LongestAttempt"/>.
    /// </summary>
    public static string? CheckCostFigures(ScanResponse answer)
    {
        if (!(double.IsFinite(answer.BilledMilliseconds) && answer.BilledMilliseconds >= 0))
            return $"billedMilliseconds {answer.BilledMilliseconds}: must be a finite number ≥ 0";
        if (answer.DroppedAttempts < 0 || answer.DroppedAttempts >= answer.Invocations)
            return $"droppedAttempts {answer.DroppedAttempts}: must be ≥ 0 and fewer than its invocations ({answer.Invocations})";
        double min = answer.DroppedAttempts * PriceTable.MinimumPeriodMs, max = answer.DroppedAttempts * LongestAttempt.TotalMilliseconds;
        if (!(answer.DroppedBilledMilliseconds >= min && answer.DroppedBilledMilliseconds <= max))
            return $"droppedBilledMilliseconds {answer.DroppedBilledMilliseconds}: for {answer.DroppedAttempts} dropped attempt(s) it must be within [{min}, {max}]";
        return null;
    }
}

/// <summary>
/// The HTTP attempts of one scan call (the hedging handler may send two or more): when each started and ended, and
/// which response it got, so that the attempts whose answers were dropped can be told from the one that answered.
/// </summary>
public static class ScanAttempts
{
    /// <summary>What a dropped attempt is estimated to have billed, and how many were dropped.</summary>
    public readonly record struct Dropped(int Attempts, double BilledMilliseconds);

    /// <summary>One attempt: timestamps of <see cref="TimeProvider.System"/>; Ended 0 while it runs.</summary>
    public sealed class Attempt
    {
        public long Started { get; internal set; }
        public long Ended { get; internal set; }
        public HttpResponseMessage? Response { get; internal set; }
    }

    public sealed class Tally
    {
        private readonly List<Attempt> _attempts = [];

        public int Count { get { lock (_attempts) return _attempts.Count; } }

        public Attempt Start(long timestamp)
        {
            var attempt = new Attempt { Started = timestamp };
            lock (_attempts) _attempts.Add(attempt);
            return attempt;
        }

        /// <summary>The attempt came back (<paramref name="response"/>) or failed or was cancelled (null).</summary>
        public void End(Attempt attempt, long timestamp, HttpResponseMessage? response)
        {
            lock (_attempts)
            {
                attempt.Ended = timestamp;
                attempt.Response = response;
            }
        }

        /// <summary>
        /// The attempts other than the one that returned <paramref name="answer"/>, each estimated by
        /// <see cref="EstimatedBilledMilliseconds"/> over its elapsed time (one still running ends at <paramref name="now"/>).
        /// If no attempt returned that response (not expected: the counter sits right under the hedging handler), the one
        /// that came back with a response last is taken as the answer's, so that the answer's own attempt is never counted.
        /// </summary>
        public Dropped DroppedBesides(HttpResponseMessage answer, long now)
        {
            lock (_attempts)
            {
                var winner = _attempts.FirstOrDefault(a => ReferenceEquals(a.Response, answer))
                    ?? _attempts.Where(a => a.Response is not null).MaxBy(a => a.Ended);
                int count = 0;
                double billed = 0;
                foreach (var a in _attempts)
                {
                    if (ReferenceEquals(a, winner)) continue;
                    long end = a.Ended == 0 || a.Ended > now ? now : a.Ended;
                    count++;
                    billed += EstimatedBilledMilliseconds(TimeProvider.System.GetElapsedTime(a.Started, Math.Max(end, a.Started)).TotalMilliseconds);
                }
                return new Dropped(count, billed);
            }
        }
    }

    /// <summary>
    /// A dropped attempt's compute, estimated as if it woke an instance: its elapsed time billed by the Flex rule (at least
    /// 1,000 ms, else rounded up to 100 ms). A hedge fires only past the hedging delay, which in practice means a cold start;
    /// a failed try may have landed on an instance already active, so the estimate leans to the upper bound (docs/cost.md).
    /// </summary>
    public static double EstimatedBilledMilliseconds(double elapsedMs) => PriceTable.BilledMilliseconds(Math.Max(0, elapsedMs));

    private static readonly AsyncLocal<Tally?> Current = new();

    /// <summary>A new tally for the scan call about to be sent (the attempts run in its execution context).</summary>
    public static Tally Begin() => Current.Value = new Tally();

    /// <summary>The per-attempt handler under the hedging handler: times each attempt and keeps its response.</summary>
    public sealed class Counter : DelegatingHandler
    {
        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var tally = Current.Value;
            var attempt = tally?.Start(TimeProvider.System.GetTimestamp());
            HttpResponseMessage? response = null;
            try
            {
                response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
                return response;
            }
            finally
            {
                if (attempt is not null) tally!.End(attempt, TimeProvider.System.GetTimestamp(), response);
            }
        }
    }
}

/// <summary>
/// A tree node refused a scan body as too large: its pool runs with smaller body limits than the coordinator (a
/// configuration error, not an outage). A 500 problem naming the settings, not a bare 500 or a shorter answer.
/// </summary>
public sealed class TreeNodeRefusedException(string message) : InvalidOperationException(message);
