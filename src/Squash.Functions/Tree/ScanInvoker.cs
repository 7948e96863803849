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
        using var response = await client.PostAsJsonAsync($"{baseUrl.TrimEnd('/')}/api/indexes/{index}/scan", request, ApiJson.Default.ScanRequest, ct).ConfigureAwait(false);
        response.EnsureSuccessStatusCode();
        return await response.Content.ReadFromJsonAsync(ApiJson.Default.ScanResponse, ct).ConfigureAwait(false)
            ?? throw new InvalidOperationException("empty scan response");
    }
}
