using System.Net.Http.Json;
using Microsoft.Extensions.Options;
using Squash.Functions.Api;

namespace Squash.Functions.Tree;

/// <summary>Calls a child tree node over HTTP (the scan function). Retries, timeouts and the circuit breaker come from the "scan" client's resilience pipeline.</summary>
public sealed class ScanInvoker(IHttpClientFactory clients, IOptions<FunctionSettings> settings)
{
    public const string ClientName = "scan";

    public async Task<ScanResponse> ScanAsync(string index, ScanRequest request, string? ownAddress, CancellationToken ct)
    {
        var client = clients.CreateClient(ClientName);
        var pools = settings.Value.ScanUrls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var baseUrl = pools.Length > 0 ? pools[request.Node.Id % pools.Length]
            : settings.Value.ScanUrl is { Length: > 0 } u ? u
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
        response.EnsureSuccessStatusCode();
        return await response.Content.ReadFromJsonAsync(ApiJson.Default.ScanResponse, ct).ConfigureAwait(false)
            ?? throw new InvalidOperationException("empty scan response");
    }
}
