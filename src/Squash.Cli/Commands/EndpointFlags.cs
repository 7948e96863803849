using System.CommandLine;

namespace Squash.Cli.Commands;

/// <summary>
/// What every command that talks to the HTTP API shares: the --endpoint URL and the function key. On Azure the
/// query, index-info and builds functions need a key (authLevel function); the local host checks keys only when it is
/// given some, so without one the header is simply not sent.
/// </summary>
public static class EndpointFlags
{
    public const string FunctionKeyFlag = "--function-key";
    public const string FunctionKeyVariable = "SQUASH_FUNCTION_KEY";
    public const string KeyHeader = "x-functions-key";

    public static Option<string?> FunctionKey() => new(FunctionKeyFlag)
    {
        Description = $"Function key for an endpoint that needs one (sent as the {KeyHeader} header). Default: the {FunctionKeyVariable} environment variable.",
    };

    /// <summary>The API's base address (with a trailing slash, so relative paths append), or a usage error naming --endpoint.</summary>
    public static Uri ParseEndpoint(string url)
    {
        CliErrors.Require(Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https", $"--endpoint must be an http(s) URL, got '{url}'");
        return new Uri(uri!.ToString().TrimEnd('/') + "/");
    }

    /// <summary>The key from the flag, else from the environment; null when neither is set.</summary>
    public static string? Key(ParseResult parse, Option<string?> flag)
    {
        var given = parse.GetValue(flag);
        var key = string.IsNullOrEmpty(given) ? Environment.GetEnvironmentVariable(FunctionKeyVariable) : given;
        if (string.IsNullOrEmpty(key)) return null;
        // A header value: a control character would end the header (and HttpClient refuses it with a FormatException).
        string source = string.IsNullOrEmpty(given) ? FunctionKeyVariable : FunctionKeyFlag;
        CliErrors.Require(key.All(c => c is >= '!' and <= '~'), $"{source} must be visible ASCII characters (a function key has no spaces or control characters)");
        return key;
    }

    /// <summary>An HTTP client for the API at <paramref name="endpoint"/>, sending the key with every request when there is one.</summary>
    public static HttpClient Client(Uri endpoint, string? key, TimeSpan timeout)
    {
        var http = new HttpClient { BaseAddress = endpoint, Timeout = timeout };
        if (key is not null) http.DefaultRequestHeaders.Add(KeyHeader, key);
        return http;
    }
}
