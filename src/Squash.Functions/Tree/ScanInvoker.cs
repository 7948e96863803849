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
        if (response.StatusCode is System.Net.HttpStatusCode.BadRequest or System.Net.HttpStatusCode.RequestEntityTooLarge)
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
        // The attempts whose answers were dropped (a hedge that lost, a failed try) were invocations too: their executions
        // count; their compute is known only to the host's meter (the caller never saw their answers).
        int dropped = Math.Max(0, attempts.Count - 1);
        return dropped == 0 ? answer : answer with { Invocations = answer.Invocations + dropped };
    }
}

/// <summary>Counts the HTTP attempts of one scan call (the hedging handler may send two or more).</summary>
public static class ScanAttempts
{
    public sealed class Tally
    {
        private int _count;
        public int Count => Volatile.Read(ref _count);
        internal void Add() => Interlocked.Increment(ref _count);
    }

    private static readonly AsyncLocal<Tally?> Current = new();

    /// <summary>A new tally for the scan call about to be sent (the attempts run in its execution context).</summary>
    public static Tally Begin() => Current.Value = new Tally();

    /// <summary>The per-attempt handler under the hedging handler.</summary>
    public sealed class Counter : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Current.Value?.Add();
            return base.SendAsync(request, cancellationToken);
        }
    }
}
