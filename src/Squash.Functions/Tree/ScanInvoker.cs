using System.Net.Http.Json;
using Microsoft.Extensions.Options;
using Squash.Functions.Api;

namespace Squash.Functions.Tree;

/// <summary>Calls a child tree node over HTTP (the scan function). Retries, timeouts and the circuit breaker come from the "scan" client's resilience pipeline.</summary>
public sealed class ScanInvoker(IHttpClientFactory clients, IOptions<FunctionSettings> settings)
{
    public const string ClientName = "scan";

    /// <summary>The processor pools' base URLs (empty: this app scans for itself).</summary>
    public static string[] PoolUrls(FunctionSettings settings)
    {
        var pools = settings.ScanUrls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return pools.Length > 0 ? pools : settings.ScanUrl is { Length: > 0 } u ? [u] : [];
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
        var pools = PoolUrls(settings.Value);
        var baseUrl = pools.Length > 0 ? pools[request.Node.Id % pools.Length]
            : ownAddress ?? throw new InvalidOperationException("no scan URL configured and no own address known");
        using var message = new HttpRequestMessage(HttpMethod.Post, $"{baseUrl.TrimEnd('/')}/api/indexes/{index}/scan")
        {
            Content = JsonContent.Create(request, ApiJson.Default.ScanRequest),
        };
        // Carry the trace down the tree explicitly, whatever handler sits under the client.
        System.Diagnostics.DistributedContextPropagator.Current.Inject(System.Diagnostics.Activity.Current, message, static (carrier, key, value) =>
        {
            var m = (HttpRequestMessage)carrier!;
            m.Headers.Remove(key);
            m.Headers.TryAddWithoutValidation(key, value);
        });
        using var response = await client.SendAsync(message, ct).ConfigureAwait(false);
        if (response.StatusCode is System.Net.HttpStatusCode.BadRequest or System.Net.HttpStatusCode.RequestEntityTooLarge)
        {
            // The child refused what this node sent: a bug here, not an outage there. Its problem text goes into the error.
            var problem = await response.Content.ReadAsStringAsync(ct).ConfigureAwait(false);
            throw new InvalidOperationException($"tree node {request.Node.Id} rejected the scan request ({(int)response.StatusCode}): {(problem.Length > 1000 ? problem[..1000] + "…" : problem)}");
        }
        response.EnsureSuccessStatusCode();
        return await response.Content.ReadFromJsonAsync(ApiJson.Default.ScanResponse, ct).ConfigureAwait(false)
            ?? throw new InvalidOperationException("empty scan response");
    }
}
