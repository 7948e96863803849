using System.Text.Json;
using System.Text.Json.Nodes;

// Listens where the Functions host (here: the local host) says, as every custom handler must.
var builder = WebApplication.CreateSlimBuilder(args);
builder.WebHost.UseUrls($"http://127.0.0.1:{Environment.GetEnvironmentVariable("FUNCTIONS_CUSTOMHANDLER_PORT")}");
builder.Logging.ClearProviders();
var app = builder.Build();
var records = Environment.GetEnvironmentVariable("PROBE_RECORDS") ?? throw new InvalidOperationException("PROBE_RECORDS is not set");
Directory.CreateDirectory(records);

app.MapGet("/", () => "probe");

// A queue invocation: record exactly what arrived (path, headers, raw body), then do what the message says.
app.MapPost("/{function}", async (HttpContext http, string function) =>
{
    string raw;
    using (var reader = new StreamReader(http.Request.Body)) raw = await reader.ReadToEndAsync();
    var payload = JsonNode.Parse(raw)!;
    // The trigger value arrives JSON-encoded twice: a JSON string whose text is the message's JSON.
    var message = JsonNode.Parse(Unquote(payload["Data"]!["task"]!.GetValue<string>()))!;
    int dequeueCount = int.Parse(Unquote(payload["Metadata"]!["DequeueCount"]!.ToString()));
    var id = message["id"]!.GetValue<string>();
    var mode = message["mode"]?.GetValue<string>() ?? "ok";
    int ms = message["ms"]?.GetValue<int>() ?? 0;
    var stem = Path.Combine(records, $"{id}.{dequeueCount}.{Environment.ProcessId}.{Guid.NewGuid():N}");
    var record = new JsonObject
    {
        ["pid"] = Environment.ProcessId,
        ["function"] = function,
        ["method"] = http.Request.Method,
        ["path"] = http.Request.Path.Value,
        ["contentType"] = http.Request.ContentType,
        ["invocationId"] = http.Request.Headers["X-Azure-Functions-InvocationId"].ToString(),
        ["hostVersion"] = http.Request.Headers["X-Azure-Functions-HostVersion"].ToString(),
        ["userAgent"] = http.Request.Headers.UserAgent.ToString(),
        ["body"] = raw,
        ["startedUtc"] = DateTime.UtcNow.ToString("O"),
    };
    await File.WriteAllTextAsync(stem + ".tmp", record.ToJsonString());
    File.Move(stem + ".tmp", stem + ".json"); // a reader never sees half a record

    bool first = dequeueCount == 1;
    if (mode == "slow" || (mode == "slowFirst" && first)) await Task.Delay(ms);
    bool fail = mode == "fail" || (mode == "failFirst" && first);
    await File.WriteAllTextAsync(stem + ".done", fail ? "failed" : "succeeded");
    http.Response.ContentType = "application/json";
    if (fail)
    {
        http.Response.StatusCode = 500;
        await http.Response.WriteAsync("""{"Outputs":{},"Logs":["probe: failing as asked"],"ReturnValue":null}""");
        return;
    }
    await http.Response.WriteAsync("""{"Outputs":{},"Logs":["probe: done"],"ReturnValue":null}""");
});

app.Run();

// Metadata primitives come as their JSON text, and Data strings JSON-encoded again: unwrap one level of quoting.
static string Unquote(string s) => s.StartsWith('"') ? JsonSerializer.Deserialize<string>(s)! : s;
