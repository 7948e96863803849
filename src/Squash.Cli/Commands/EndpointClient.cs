using System.Net;
using System.Text.Json;
using Polly;
using Polly.Retry;
using Polly.Timeout;

namespace Squash.Cli.Commands;

/// <summary>An answer of the HTTP API: the value, and the JSON exactly as the endpoint sent it (for --json).</summary>
public sealed record ApiAnswer<T>(T Value, string Json);

/// <summary>
/// An error answer of the HTTP API, in its own words: the problem's title and detail, or, for a 400, each offending
/// field with its messages (<see cref="Errors"/>), which a command can name by its flags.
/// </summary>
public sealed class EndpointProblemException(int status, string message, IReadOnlyDictionary<string, string[]>? errors) : Exception(message)
{
    public int Status { get; } = status;
    public IReadOnlyDictionary<string, string[]>? Errors { get; } = errors;

    /// <summary>The validation errors with each field named by <paramref name="nameOf"/> (the field itself when it returns null); else the message.</summary>
    public string Describe(Func<string, string?> nameOf) =>
        Errors is { Count: > 0 } errors
            ? string.Join("; ", errors.Select(e => $"{nameOf(e.Key) ?? e.Key}: {string.Join(", ", e.Value)}"))
            : Message;
}

/// <summary>
/// How the CLI calls the service's HTTP API: every request has a deadline, and the calls that may be repeated safely
/// (GET, and a POST carrying its Idempotency-Key) are retried with jittered exponential back-off on dropped
/// connections, timeouts, 408, 429 and 5xx. Error answers become <see cref="EndpointProblemException"/>s in the API's words.
/// </summary>
public sealed class EndpointClient : IDisposable
{
    public static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(30);
    private static readonly JsonSerializerOptions Web = new(JsonSerializerDefaults.Web);

    private readonly HttpClient _http;
    private readonly string _api;
    private readonly ResiliencePipeline<HttpResponseMessage> _once;
    private readonly ResiliencePipeline<HttpResponseMessage> _retrying;

    /// <param name="api">The API's name in errors ("the builds API's answer").</param>
    public EndpointClient(Uri endpoint, string? functionKey, string api, int maxRetries = 5, TimeSpan? firstRetryDelay = null)
    {
        _api = api;
        // The deadline is the pipeline's, per attempt; the client's own would also cut the retries short.
        _http = EndpointFlags.Client(endpoint, functionKey, Timeout.InfiniteTimeSpan);
        _once = new ResiliencePipelineBuilder<HttpResponseMessage>().AddTimeout(RequestTimeout).Build();
        _retrying = new ResiliencePipelineBuilder<HttpResponseMessage>()
            .AddRetry(new RetryStrategyOptions<HttpResponseMessage>
            {
                ShouldHandle = new PredicateBuilder<HttpResponseMessage>()
                    .Handle<HttpRequestException>()
                    .Handle<TimeoutRejectedException>()
                    .HandleResult(r => IsTransient(r.StatusCode)),
                MaxRetryAttempts = maxRetries,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = firstRetryDelay ?? TimeSpan.FromMilliseconds(500),
                MaxDelay = TimeSpan.FromSeconds(8),
            })
            .AddTimeout(RequestTimeout)
            .Build();
    }

    private static bool IsTransient(HttpStatusCode status) => (int)status is 408 or 429 or 500 or 502 or 503 or 504;

    /// <summary>Sends the request <paramref name="create"/> makes (once per attempt) and reads the answer as <typeparamref name="T"/>.</summary>
    public async Task<ApiAnswer<T>> SendAsync<T>(Func<HttpRequestMessage> create, bool retry, CancellationToken ct)
    {
        HttpResponseMessage response;
        try
        {
            response = await (retry ? _retrying : _once).ExecuteAsync(async token =>
            {
                using var request = create();
                // Buffered (the default completion), so the body is read within the attempt's deadline.
                return await _http.SendAsync(request, token).ConfigureAwait(false);
            }, ct).ConfigureAwait(false);
        }
        catch (TimeoutRejectedException e)
        {
            throw new TimeoutException($"no answer within {RequestTimeout.TotalSeconds:0} s", e);
        }
        using (response)
        {
            var text = await response.Content.ReadAsStringAsync(ct).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode) throw Problem(response.StatusCode, response.ReasonPhrase, text);
            try
            {
                var value = JsonSerializer.Deserialize<T>(text, Web) ?? throw new JsonException("null");
                return new ApiAnswer<T>(value, text);
            }
            catch (JsonException e)
            {
                throw new EndpointProblemException((int)response.StatusCode,
                    $"the endpoint answered {(int)response.StatusCode} with something that is not the {_api} API's answer ({e.Message.Split('\n')[0]}): {Snippet(text)}", null);
            }
        }
    }

    /// <summary>An error answer as one line: the problem+json's title and detail (or each field's errors), else the status and the start of the body.</summary>
    public static EndpointProblemException Problem(HttpStatusCode status, string? reason, string body)
    {
        int code = (int)status;
        try
        {
            using var doc = JsonDocument.Parse(body);
            var root = doc.RootElement;
            if (root.ValueKind == JsonValueKind.Object && (root.TryGetProperty("title", out _) || root.TryGetProperty("detail", out _)))
            {
                string? title = root.TryGetProperty("title", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
                string? detail = root.TryGetProperty("detail", out var d) && d.ValueKind == JsonValueKind.String ? d.GetString() : null;
                Dictionary<string, string[]>? errors = null;
                if (root.TryGetProperty("errors", out var e) && e.ValueKind == JsonValueKind.Object)
                    errors = e.EnumerateObject().ToDictionary(p => p.Name,
                        p => p.Value.ValueKind == JsonValueKind.Array ? p.Value.EnumerateArray().Select(x => x.ToString()).ToArray() : [p.Value.ToString()]);
                string message = errors is { Count: > 0 }
                    ? string.Join("; ", errors.Select(x => $"{x.Key}: {string.Join(", ", x.Value)}"))
                    : $"{title ?? reason ?? "error"} ({code})" + (detail is null ? "" : ": " + detail);
                if (code == 401) message += $" (pass the key with {EndpointFlags.FunctionKeyFlag} or {EndpointFlags.FunctionKeyVariable})";
                return new EndpointProblemException(code, message, errors);
            }
        }
        catch (JsonException)
        {
        }
        return new EndpointProblemException(code, $"the endpoint answered {code} {reason}".TrimEnd() + (body.Length > 0 ? ": " + Snippet(body) : ""), null);
    }

    private static string Snippet(string body)
    {
        var line = body.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault() ?? "";
        return line.Length > 200 ? line[..200] + "…" : line;
    }

    public void Dispose() => _http.Dispose();
}
