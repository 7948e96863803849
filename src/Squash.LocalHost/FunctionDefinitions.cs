using System.Text.Json;

namespace Squash.LocalHost;

/// <summary>
/// What the Functions host learns from a function app's folder: each <c>&lt;name&gt;/function.json</c> (the function
/// name is the folder name) and the host-wide settings of <c>host.json</c>. The local host reads the same files the
/// deployment ships, so a binding that is wrong in them is wrong locally too.
/// </summary>
public sealed record FunctionDefinitions(IReadOnlyList<FunctionDefinition> Functions, HostSettings Host)
{
    /// <summary>Reads <paramref name="appFolder"/>; a malformed function.json or host.json is an error naming the file.</summary>
    public static FunctionDefinitions Load(string appFolder)
    {
        var functions = new List<FunctionDefinition>();
        foreach (var file in Directory.EnumerateFiles(appFolder, "function.json", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            // Only <app>/<name>/function.json is a function (the host does not look deeper).
            var folder = Path.GetDirectoryName(file)!;
            if (!string.Equals(Path.GetFullPath(Path.GetDirectoryName(folder)!), Path.GetFullPath(appFolder).TrimEnd('/'), StringComparison.Ordinal)) continue;
            functions.Add(FunctionDefinition.Parse(Path.GetFileName(folder), file));
        }
        var hostJson = Path.Combine(appFolder, "host.json");
        return new(functions, File.Exists(hostJson) ? HostSettings.Parse(hostJson) : new HostSettings());
    }

    public FunctionDefinition? Find(string name) => Functions.FirstOrDefault(f => f.Name == name);
}

/// <summary>One function: its trigger binding and any other bindings, as written in function.json.</summary>
public sealed record FunctionDefinition(string Name, FunctionBinding Trigger, IReadOnlyList<FunctionBinding> Bindings)
{
    public bool IsHttp => Trigger.Type == "httpTrigger";
    public bool IsQueue => Trigger.Type == "queueTrigger";

    public static FunctionDefinition Parse(string name, string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            if (!doc.RootElement.TryGetProperty("bindings", out var list) || list.ValueKind != JsonValueKind.Array)
                throw new InvalidDataException("no \"bindings\" array");
            var bindings = list.EnumerateArray().Select(FunctionBinding.Parse).ToList();
            var triggers = bindings.Where(b => b.Type.EndsWith("Trigger", StringComparison.Ordinal)).ToList();
            if (triggers.Count != 1) throw new InvalidDataException($"{triggers.Count} trigger bindings (a function has exactly one)");
            return new(name, triggers[0], bindings);
        }
        catch (Exception e) when (e is JsonException or InvalidDataException or InvalidOperationException or KeyNotFoundException)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
    }
}

/// <summary>One entry of a function.json "bindings" array (the properties the local host acts on).</summary>
public sealed record FunctionBinding(
    string Type, string Direction, string Name,
    string? AuthLevel = null, IReadOnlyList<string>? Methods = null, string? Route = null,
    string? QueueName = null, string? Connection = null)
{
    public static FunctionBinding Parse(JsonElement e)
    {
        string? Text(string property) => e.TryGetProperty(property, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
        var type = Text("type") ?? throw new InvalidDataException("a binding without \"type\"");
        var methods = e.TryGetProperty("methods", out var m) && m.ValueKind == JsonValueKind.Array
            ? m.EnumerateArray().Select(x => (x.GetString() ?? "").ToUpperInvariant()).ToList()
            : null;
        return new(type, Text("direction") ?? "in", Text("name") ?? throw new InvalidDataException($"a {type} binding without \"name\""),
            Text("authLevel"), methods, Text("route"), Text("queueName"), Text("connection"));
    }
}

/// <summary>The parts of host.json the local host follows (defaults are the Functions host's).</summary>
public sealed record HostSettings
{
    public string RoutePrefix { get; init; } = "api";
    public QueueSettings Queues { get; init; } = new();
    /// <summary>host.json <c>functionTimeout</c>: an invocation running longer fails (Flex Consumption's default: 30 minutes).</summary>
    public TimeSpan FunctionTimeout { get; init; } = TimeSpan.FromMinutes(30);

    public static HostSettings Parse(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            var settings = new HostSettings();
            if (doc.RootElement.TryGetProperty("functionTimeout", out var timeout) && timeout.ValueKind == JsonValueKind.String)
                settings = settings with { FunctionTimeout = TimeSpan.Parse(timeout.GetString()!, System.Globalization.CultureInfo.InvariantCulture) };
            if (!doc.RootElement.TryGetProperty("extensions", out var ext)) return settings;
            if (ext.TryGetProperty("http", out var http) && http.TryGetProperty("routePrefix", out var prefix))
                settings = settings with { RoutePrefix = prefix.GetString() ?? "" };
            if (ext.TryGetProperty("queues", out var q)) settings = settings with { Queues = QueueSettings.Parse(q) };
            return settings;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
    }
}

/// <summary>host.json <c>extensions.queues</c>, with the Functions host's defaults.</summary>
public sealed record QueueSettings
{
    public int BatchSize { get; init; } = 16;
    public int NewBatchThreshold { get; init; } = -1;
    public int MaxDequeueCount { get; init; } = 5;
    public TimeSpan VisibilityTimeout { get; init; } = TimeSpan.Zero;
    public TimeSpan MaxPollingInterval { get; init; } = TimeSpan.FromMinutes(1);
    public string MessageEncoding { get; init; } = "base64";

    public static QueueSettings Parse(JsonElement q)
    {
        var s = new QueueSettings();
        if (q.TryGetProperty("batchSize", out var b)) s = s with { BatchSize = b.GetInt32() };
        if (q.TryGetProperty("newBatchThreshold", out var t)) s = s with { NewBatchThreshold = t.GetInt32() };
        if (q.TryGetProperty("maxDequeueCount", out var d)) s = s with { MaxDequeueCount = d.GetInt32() };
        if (q.TryGetProperty("visibilityTimeout", out var v)) s = s with { VisibilityTimeout = TimeSpan.Parse(v.GetString()!, System.Globalization.CultureInfo.InvariantCulture) };
        if (q.TryGetProperty("maxPollingInterval", out var p)) s = s with { MaxPollingInterval = TimeSpan.Parse(p.GetString()!, System.Globalization.CultureInfo.InvariantCulture) };
        if (q.TryGetProperty("messageEncoding", out var e)) s = s with { MessageEncoding = e.GetString() ?? "base64" };
        return s;
    }
}
