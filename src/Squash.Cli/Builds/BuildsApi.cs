using System.Text;
using System.Text.Json;
using Squash.Cli.Commands;
using Squash.Functions.Builds;

namespace Squash.Cli.Builds;

/// <summary>
/// The builds API of one index (<c>/api/indexes/{index}/builds</c>, docs/builds.md) as the CLI calls it, over
/// <see cref="EndpointClient"/> (deadlines, retries of the calls that may be repeated safely). The response models are
/// the function app's own, so the CLI and the API cannot disagree on a name.
/// </summary>
public sealed class BuildsApi(Uri endpoint, string? functionKey, string index, int maxRetries = 5, TimeSpan? firstRetryDelay = null) : IDisposable
{
    private readonly EndpointClient _client = new(endpoint, functionKey, "builds", maxRetries, firstRetryDelay);

    public string Index { get; } = index;

    private string BuildsPath => $"api/indexes/{Uri.EscapeDataString(Index)}/builds";

    /// <summary>The 50 most recent builds of the index, newest first.</summary>
    public Task<ApiAnswer<BuildList>> ListAsync(bool retry, CancellationToken ct) =>
        _client.SendAsync<BuildList>(() => new HttpRequestMessage(HttpMethod.Get, BuildsPath), retry, ct);

    public Task<ApiAnswer<BuildView>> ShowAsync(string buildId, bool retry, CancellationToken ct) =>
        _client.SendAsync<BuildView>(() => new HttpRequestMessage(HttpMethod.Get, $"{BuildsPath}/{Uri.EscapeDataString(buildId)}"), retry, ct);

    /// <summary>Cancels a build: sent once (a repeat of a cancel that landed would answer 409 "already cancelled").</summary>
    public Task<ApiAnswer<BuildView>> CancelAsync(string buildId, CancellationToken ct) =>
        _client.SendAsync<BuildView>(() => new HttpRequestMessage(HttpMethod.Delete, $"{BuildsPath}/{Uri.EscapeDataString(buildId)}"), retry: false, ct);

    /// <summary>Submits a build; retried with the same <paramref name="idempotencyKey"/>, so a retry never makes a second job.</summary>
    public async Task<BuildAccepted> SubmitAsync(BuildRequest request, string idempotencyKey, CancellationToken ct)
    {
        var body = JsonSerializer.Serialize(request, BuildApiJson.Default.BuildRequest);
        var answer = await _client.SendAsync<BuildAccepted>(() =>
        {
            var message = new HttpRequestMessage(HttpMethod.Post, BuildsPath) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            message.Headers.Add("Idempotency-Key", idempotencyKey);
            return message;
        }, retry: true, ct);
        return answer.Value;
    }

    public void Dispose() => _client.Dispose();
}
