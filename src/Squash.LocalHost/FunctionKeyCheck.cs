using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Routing.Template;

namespace Squash.LocalHost;

/// <summary>
/// Function keys as the Functions host checks them, for the local host: each app (pool) has one key, standing for its
/// default host key; an HTTP function whose function.json says <c>authLevel</c> function (or admin) answers 401 unless
/// the call carries that app's key in the <c>x-functions-key</c> header or the <c>code</c> query parameter; anonymous
/// functions stay open. With keys on, a route under the prefix that no function serves is a 404, as on Azure.
/// </summary>
public sealed class FunctionKeyCheck
{
    public const string KeyHeader = "x-functions-key";
    public const string KeyQuery = "code";

    private readonly string _prefix;
    private readonly (FunctionDefinition Function, TemplateMatcher Route)[] _functions;
    private readonly IReadOnlyDictionary<string, string> _keys;

    private FunctionKeyCheck(FunctionDefinitions definitions, IReadOnlyDictionary<string, string> keys)
    {
        _prefix = definitions.Host.RoutePrefix.Trim('/');
        _functions = definitions.Functions.Where(f => f.IsHttp)
            .Select(f => (f, new TemplateMatcher(TemplateParser.Parse(f.Trigger.Route ?? f.Name), new RouteValueDictionary())))
            .ToArray();
        _keys = keys;
    }

    /// <summary>
    /// The check for <paramref name="options"/> (null when it sets no keys): the function definitions come from the app's
    /// folder. Every app in <paramref name="apps"/> must have a key.
    /// </summary>
    public static FunctionKeyCheck? Create(LocalHostOptions options, string appPath, IEnumerable<string> apps)
    {
        if (options.FunctionKeys is not { } keys) return null;
        foreach (var app in apps)
            if (!keys.TryGetValue(app, out var key) || string.IsNullOrWhiteSpace(key))
                throw new ArgumentException($"LocalHostOptions.FunctionKeys has no key for app '{app}' (each of coordinator, p0, p1, … needs one)");
        return new FunctionKeyCheck(FunctionDefinitions.Load(Path.GetDirectoryName(appPath)!), keys);
    }

    /// <summary>
    /// With keys on, the instances call processor pool i with pool i's key: the pools go to them as
    /// Squash__Pools__i__Url/Key in place of Squash__ScanUrls (the form the function app reads keys from).
    /// </summary>
    public static void UsePoolKeys(Dictionary<string, string> environment, LocalHostOptions options)
    {
        if (options.FunctionKeys is not { } keys || !environment.Remove("Squash__ScanUrls", out var scanUrls)) return;
        var urls = scanUrls.Split(';', StringSplitOptions.RemoveEmptyEntries);
        for (int i = 0; i < urls.Length; i++)
        {
            environment[$"Squash__Pools__{i}__Url"] = urls[i];
            environment[$"Squash__Pools__{i}__Key"] = keys[$"p{i}"];
        }
    }

    /// <summary>Null when the call may go on to <paramref name="app"/>; else the answer the Functions host would give (401 or 404).</summary>
    public IResult? Check(HttpContext http, string app, string path)
    {
        var relative = path.TrimStart('/');
        if (_prefix.Length > 0)
        {
            // Only routes under the prefix are functions (the handler's own root probe "/" is not checked).
            if (!relative.StartsWith(_prefix, StringComparison.OrdinalIgnoreCase)) return null;
            if (relative.Length > _prefix.Length && relative[_prefix.Length] != '/') return null;
            relative = relative[_prefix.Length..].TrimStart('/');
        }
        var function = Match(http.Request.Method, "/" + relative);
        if (function is null)
            return Results.Problem(statusCode: StatusCodes.Status404NotFound, title: "No function",
                detail: $"no HTTP function of app '{app}' serves {http.Request.Method} {path}");
        if (string.Equals(function.Trigger.AuthLevel, "anonymous", StringComparison.OrdinalIgnoreCase)) return null;

        string? given = http.Request.Headers[KeyHeader].FirstOrDefault() ?? http.Request.Query[KeyQuery].FirstOrDefault();
        if (string.IsNullOrEmpty(given))
            return Results.Problem(statusCode: StatusCodes.Status401Unauthorized, title: "Function key required",
                detail: $"function '{function.Name}' of app '{app}' needs a key: send it in the {KeyHeader} header or the {KeyQuery} query parameter");
        // An app without a key of its own (one the host runs only for queue triggers) accepts no key.
        if (!_keys.TryGetValue(app, out var key) || !Same(given, key))
            return Results.Problem(statusCode: StatusCodes.Status401Unauthorized, title: "Function key required",
                detail: $"the key sent to function '{function.Name}' is not a key of app '{app}'");
        return null;
    }

    private FunctionDefinition? Match(string method, string relativePath)
    {
        foreach (var (function, route) in _functions)
        {
            if (function.Trigger.Methods is { Count: > 0 } methods && !methods.Contains(method.ToUpperInvariant())) continue;
            if (route.TryMatch(relativePath, new RouteValueDictionary())) return function;
        }
        return null;
    }

    /// <summary>Compared in constant time, so that the time of a refusal says nothing about how much of a key was right.</summary>
    private static bool Same(string given, string key) =>
        CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(given)), SHA256.HashData(Encoding.UTF8.GetBytes(key)));
}
