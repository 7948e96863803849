using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Http.Resilience;
using Microsoft.Extensions.Options;
using Squash.Core.Collections;
using Squash.Functions;
using Squash.Functions.Api;
using Squash.Functions.Builds;
using Squash.Functions.Tree;
using Squash.Functions.Writes;
using Squash.Search;
using OpenTelemetry.Trace;
using Azure.Monitor.OpenTelemetry.Exporter;

// No file watchers on configuration: setting them up over the app folder is a large share of a cold start
// (bench/serverless.md), and a function instance never edits its settings in place.
var builder = WebApplication.CreateSlimBuilder([.. args, "--hostBuilder:reloadConfigOnChange=false"]);

// Under the Azure Functions host the handler must listen on the port the host hands it (loopback only);
// locally --urls or ASPNETCORE_URLS apply.
var handlerPort = Environment.GetEnvironmentVariable("FUNCTIONS_CUSTOMHANDLER_PORT");
if (!string.IsNullOrEmpty(handlerPort)) builder.WebHost.UseUrls($"http://127.0.0.1:{handlerPort}");

builder.Services.Configure<FunctionSettings>(builder.Configuration.GetSection("Squash"));
builder.Services.ConfigureHttpJsonOptions(o =>
{
    o.SerializerOptions.TypeInfoResolverChain.Insert(0, ApiJson.Default);
    o.SerializerOptions.TypeInfoResolverChain.Insert(1, WriteApiJson.Default);
    // The OpenAPI document describes every type an endpoint accepts or produces through these options: the app runs with
    // reflection-based JSON off (Native AOT), so a context missing here makes GET /api/openapi.json a 500.
    o.SerializerOptions.TypeInfoResolverChain.Insert(2, BuildApiJson.Default);
    // As the contexts read request bodies ("k":"5" is a 400): the OpenAPI document takes its number types from these options.
    o.SerializerOptions.NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.Strict;
});
builder.Services.AddProblemDetails();
builder.Services.AddExceptionHandler<IndexUnavailableHandler>();
builder.Services.AddExceptionHandler<TreeNodeRefusedHandler>();
builder.Services.AddExceptionHandler<Squash.Functions.Builds.BuildRecordDamagedHandler>();
builder.Services.AddOpenApi(OpenApiDescription.Configure);

// One query is one trace: spans for the coordinator, every tree node and every child call; the trace
// context travels down the tree in the traceparent header. Console export with Squash__TraceConsole=true,
// OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING is
// (on Azure: sent with the app's managed identity, as APPLICATIONINSIGHTS_AUTHENTICATION_STRING says).
builder.Services.AddOpenTelemetry().WithTracing(t =>
{
    t.AddSource(Telemetry.SourceName).AddAspNetCoreInstrumentation().AddHttpClientInstrumentation();
    if (builder.Configuration.GetValue<bool>("Squash:TraceConsole")) t.AddConsoleExporter();
    if (!string.IsNullOrEmpty(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"])) t.AddOtlpExporter();
    if (builder.Configuration["APPLICATIONINSIGHTS_CONNECTION_STRING"] is { Length: > 0 } appInsights)
        t.AddAzureMonitorTraceExporter(o =>
        {
            o.ConnectionString = appInsights;
            o.Credential = Telemetry.AppInsightsCredential(builder.Configuration["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]);
        });
});
builder.Services.AddSingleton<IndexCatalog>();
builder.Services.AddSingleton<ScanInvoker>();
builder.Services.AddSingleton<NodeExecutor>();
builder.Services.AddSingleton<InstanceActivity>();
builder.Services.AddSingleton(ShapeCalibration.Shared);
builder.Services.AddSingleton<QueryCoordinator>();
builder.Services.AddSingleton<Squash.Search.Writes.TailReader>();
builder.Services.AddBuilds();
builder.Services.AddSingleton<Squash.Functions.Writes.IngestTrigger>();
var tree = builder.Configuration.GetSection("Squash").Get<FunctionSettings>() ?? new FunctionSettings();
if ((ScanInvoker.CheckPools(tree) ?? ShapePlanner.Check(tree) ?? FunctionSettings.CheckMaskedRows(tree)) is { } poolProblem)
{
    Console.Error.WriteLine($"error: {poolProblem}");
    Environment.Exit(1);
}
// Each endpoint bounds its own body (JsonBody); Kestrel's own limit (30 MB by default) must not cut /scan's shorter.
builder.WebHost.ConfigureKestrel(k =>
{
    if (k.Limits.MaxRequestBodySize is long limit) k.Limits.MaxRequestBodySize = Math.Max(limit, FunctionSettings.MaxScanBytes(tree) + 1);
});
// On Azure (WEBSITE_SITE_NAME is set there) a tree without pools never leaves the instance that got the query.
if (tree.Depth > 0 && ScanInvoker.PoolTargets(tree).Length == 0 && Environment.GetEnvironmentVariable("WEBSITE_SITE_NAME") is { Length: > 0 })
    Console.Error.WriteLine("warning: no processor pools configured (Squash__Pools__<i>__Url/Key or Squash__ScanUrls): tree calls go back to this instance");
// As early as possible: a cold coordinator wakes the processor pools now, so their start-up overlaps its own.
if (tree.WakePoolsOnStart)
    ScanInvoker.WakePools(tree, message => Console.Error.WriteLine(message));
var scanClient = builder.Services.AddHttpClient(ScanInvoker.ClientName);
scanClient.AddStandardHedgingHandler().Configure(o =>
    {
        // Scans are read-only, so a slow child is raced by a second call after HedgingDelay; failed calls
        // are re-sent the same way (the hedging strategy doubles as the retry), each attempt has its own
        // timeout, and a circuit breaker per target stops hammering a dead pool.
        o.Hedging.MaxHedgedAttempts = 2;
        o.Hedging.Delay = tree.HedgingDelay;
        o.Endpoint.Timeout.Timeout = tree.ChildTimeout;
        o.TotalRequestTimeout.Timeout = tree.ChildTimeout * 3;
        o.Endpoint.CircuitBreaker.SamplingDuration = tree.ChildTimeout * 2 + TimeSpan.FromSeconds(1);
    });
// Below the hedging handler, so once per attempt: a hedge that lost its race, or a retry, is an execution billed too, and
// its start and end give the estimate of its compute (ScanAttempts).
scanClient.AddHttpMessageHandler(() => new ScanAttempts.Counter());

var app = builder.Build();

// Started by the local function host: exit when that host is gone, so no instance is ever orphaned.
if (int.TryParse(Environment.GetEnvironmentVariable("SQUASH_PARENT_PID"), out int parentPid))
{
    _ = Task.Run(async () =>
    {
        while (true)
        {
            await Task.Delay(TimeSpan.FromSeconds(1));
            bool alive;
            try { using var parent = Process.GetProcessById(parentPid); alive = !parent.HasExited; }
            catch (ArgumentException) { alive = false; }
            if (!alive) Environment.Exit(0);
        }
    });
}
// Cold starts: open the configured indexes (pointer, manifest, routing) in the background while the
// server starts, so the first query finds them open or half-way there instead of starting from nothing.
foreach (var name in tree.Preload.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
{
    var catalog = app.Services.GetRequiredService<IndexCatalog>();
    _ = Task.Run(async () =>
    {
        try { await catalog.OpenCurrentAsync(name, CancellationToken.None); }
        catch (Exception e) { app.Logger.LogWarning(e, "preloading index {Index} failed; it opens on first use", name); }
    });
}
app.UseExceptionHandler();
app.UseStatusCodePages();
// Every invocation is activity of this instance (what Flex bills) and gets its own storage-operation counter; what it
// counted goes back in a header, which the local host's meter reads (Azure's front end ignores it).
var activity = app.Services.GetRequiredService<InstanceActivity>();
app.Use(async (http, next) =>
{
    var ops = new Squash.Storage.StorageOperationCounter();
    Squash.Storage.StorageOperationCounter.Current = ops;
    activity.Begin();
    http.Response.OnStarting(() =>
    {
        http.Response.Headers[StorageOperationsHeader.Name] = ops.Read().ToHeader();
        return Task.CompletedTask;
    });
    try { await next(http); }
    finally { activity.End(); }
});

// The API description, generated from the endpoints below (kept true by a test against functions/*/function.json).
app.MapOpenApi("/api/openapi.json");

// The Functions host probes the handler's root until it answers.
app.MapGet("/", () => Results.Ok("squash function app"));
app.MapGet("/api/health", () => Results.Json(new Dictionary<string, string> { ["status"] = "ok" }, ApiJson.Default.DictionaryStringString))
    .WithName("health").Produces<Dictionary<string, string>>();

app.MapGet("/api/indexes/{index}", async Task<IResult> (string index, IndexCatalog catalog, CancellationToken ct) =>
{
    if (!IndexCatalog.IsValidName(index)) return BadName(index);
    var loaded = await catalog.OpenCurrentAsync(index, ct);
    if (loaded is null) return NotFound(index);
    var m = loaded.Manifest;
    // The log's end and the age of its oldest batch not yet indexed: what a reader of the eventual version is missing.
    var log = WriteEndpoints.LogFor(catalog, index);
    long latest = await log.LatestSequenceAsync(m.IndexedSequence, ct);
    // What waits starts past the watermark, or, for a build from files over a log gc trimmed, at its oldest batch left.
    long waitsAfter = latest > m.IndexedSequence ? await log.TailStartsAfterAsync(m.IndexedSequence, ct) : m.IndexedSequence;
    double? lagSeconds = null;
    if (latest > waitsAfter && await log.WrittenAtAsync(waitsAfter + 1, ct) is { } oldest)
        lagSeconds = Math.Round(Math.Max(0, (DateTimeOffset.UtcNow - oldest).TotalSeconds), 3);
    var rebuild = await Squash.Functions.Writes.RebuildReporting.InfoAsync(catalog.StoreFor(index), ct);
    return Results.Json(new IndexInfo(index, m.Version, m.Dimensions, m.Metric, m.Count, m.Partitions.Count, m.CreatedUtc,
        m.IndexedSequence, latest, Math.Max(0, latest - waitsAfter), lagSeconds, rebuild), ApiJson.Default.IndexInfo);
}).WithName("index-info").Produces<IndexInfo>().ProducesProblem(404).ProducesValidationProblem().ProducesProblem(500).ProducesProblem(503);

app.MapPost("/api/indexes/{index}/query", async Task<IResult> (string index, HttpContext http, IndexCatalog catalog, QueryCoordinator coordinator,
    Squash.Search.Writes.TailReader tails, IOptions<FunctionSettings> settings, IServer server, CancellationToken ct) =>
{
    var clock = Stopwatch.StartNew();
    using var span = Telemetry.Source.StartActivity("squash.query");
    span?.SetTag("squash.index", index);
    if (!IndexCatalog.IsValidName(index)) return BadName(index);
    var (request, error) = await JsonBody.ReadAsync(http.Request, ApiJson.Default.QueryRequest, settings.Value.MaxRequestBytes, ct);
    if (error is not null) return error;
    var loaded = await catalog.OpenCurrentAsync(index, ct);
    if (loaded is null) return NotFound(index);
    var errors = RequestMapping.Validate(request!, loaded.Manifest.Dimensions, settings.Value, loaded.Manifest.Metric);
    // The filter is compiled once, here, and goes on compiled.
    var filter = RequestMapping.ValidateAttributes(request!, loaded, errors);
    if (errors.Count > 0) return Results.ValidationProblem(errors, title: "The query is not valid.");

    int k = request!.K ?? SearchOptions.DefaultK;
    var vectors = request.Vectors ?? [request.Vector!];
    var s = settings.Value;
    int branching = request.Options?.Branching ?? s.Branching, depth = request.Options?.Depth ?? s.Depth;
    // Fixed shapes stay overrides: the planner chooses only when the request names neither branching nor depth.
    bool plan = s.Objective.Length > 0 && request.Options?.Branching is null && request.Options?.Depth is null;
    int pools = ScanInvoker.PoolTargets(s).Length;
    Func<int, TreeShapeChoice>? chooseShape = plan ? partitions => ShapePlanner.Choose(s, partitions, pools, PoolActivity.IsActive, ShapeCalibration.Shared.Current(s)) : null;
    var chosenBy = request.Options?.Branching is not null || request.Options?.Depth is not null ? "request" : "settings";
    // Strong: the version plus every batch acknowledged before this point (read-your-writes).
    Squash.Search.Writes.LogTail? tail = null;
    CoordinatedAnswer run;
    if (request.Options?.Consistency == RequestMapping.StrongConsistency)
        (run, tail) = await coordinator.RunStrongAsync(tails, WriteEndpoints.LogFor(catalog, index), index, loaded, vectors, k, request.Options,
            request.Filter, filter, request.Include, branching, depth, OwnAddress(server, http), ct, chooseShape);
    else
        run = await coordinator.RunAsync(index, loaded, vectors, k, request.Options, request.Filter, filter, request.Include,
            branching, depth, OwnAddress(server, http), ct, chooseShape: chooseShape);
    var shape = run.Shape ?? new TreeShapeChoice(branching, depth, chosenBy);

    // Storage operations of this invocation that no tree node reported (opening the index, reading the log tail; a strong
    // read's check of the log that overlaps this instance's own node is counted by that node instead, never twice).
    var outsideTree = Squash.Storage.StorageOperationCounter.Current is { } counted ? counted.Read() - counted.Reported : default;
    var answers = new List<QueryAnswer>();
    for (int q = 0; q < vectors.Length; q++)
    {
        var one = run.Queries[q];
        answers.Add(new QueryAnswer
        {
            Results = one.Results.Select(n => new Hit(
                // A tail row of an index without ids is named by its row number, as its indexed rows are (a number, not a string).
                n.Key is { } key
                    ? (loaded.Manifest.Attributes is not { HasIds: true } && long.TryParse(key, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long named)
                        ? JsonValue.Create(named) : JsonValue.Create(key))
                    : JsonValue.Create(n.Id), n.Id < 0 ? -1 : n.Id,
                loaded.Space.ToReported(n.D, one.InputSquaredNorm)) { Attributes = n.Attributes }).ToArray(),
            Complete = one.MissingPartitions.Length == 0,
            MissingPartitions = one.MissingPartitions,
            IndexedSequence = loaded.Manifest.IndexedSequence,
            TailItems = tail?.Items,
            Stats = AnswerStats.From(one.Stats, run.Totals, run.TreeNodes, s.InstanceMemoryMb, clock.Elapsed.TotalMilliseconds, outsideTree, shape,
                storageBilled: !s.Store.StartsWith("dir:", StringComparison.Ordinal)),
        });
    }
    return request.Vectors is null
        ? Results.Json(answers[0], ApiJson.Default.QueryAnswer)
        : Results.Json(new BatchAnswer(answers), ApiJson.Default.BatchAnswer);
}).WithName("query").Accepts<QueryRequest>("application/json").Produces<QueryAnswer>().Produces<BatchAnswer>()
  .ProducesValidationProblem().ProducesProblem(404).ProducesProblem(413).ProducesProblem(500).ProducesProblem(503);

app.MapPost("/api/indexes/{index}/scan", async Task<IResult> (string index, HttpContext http, IndexCatalog catalog, NodeExecutor executor,
    IOptions<FunctionSettings> settings, IServer server, CancellationToken ct) =>
{
    if (!IndexCatalog.IsValidName(index)) return BadName(index);
    // A strong read's masked rows come on top of what a query may send (excludedRows, bounded by Squash:MaxMaskedRows).
    var (request, error) = await JsonBody.ReadAsync(http.Request, ApiJson.Default.ScanRequest, FunctionSettings.MaxScanBytes(settings.Value), ct);
    if (error is not null) return error;
    if (request!.Version is not { } version || !IndexCatalog.IsValidVersion(version))
        return Results.ValidationProblem(new Dictionary<string, string[]> { ["version"] = [$"must be a version id such as v20261203-121530123-3f9a1c0b7e2d (or v000042), got {(request.Version is null ? "null" : $"'{request.Version}'")}"] });
    // Only a version that exists is opened (and then kept): an unknown one is a 404 and leaves nothing behind.
    var loaded = await catalog.OpenAsync(index, version, ct);
    if (loaded is null) return Results.Problem(statusCode: 404, title: "Index version not found", detail: $"index '{index}' has no version '{version}'");
    // The node scans with the filter the check compiled: near MaxScanClauses a compile is most of a cold node's work.
    var errors = RequestMapping.ValidateScan(request, loaded, settings.Value, out var filter);
    if (errors.Count > 0) return Results.ValidationProblem(errors, title: "The scan request is not valid.");
    var response = await executor.ExecuteAsync(index, loaded, request, filter, OwnAddress(server, http), ct);
    return Results.Json(response, ApiJson.Default.ScanResponse);
}).WithName("scan").Accepts<ScanRequest>("application/json").Produces<ScanResponse>().ProducesValidationProblem()
  .ProducesProblem(404).ProducesProblem(413).ProducesProblem(500).ProducesProblem(503);

app.MapBuilds();
app.MapWrites();
app.MapIngest();
app.MapCalibrate();

// Cold-start figure for the logs: process start to listening.
app.Lifetime.ApplicationStarted.Register(() => app.Logger.LogInformation("listening {Ms:F0} ms after the process started",
    (DateTime.Now - Process.GetCurrentProcess().StartTime).TotalMilliseconds));
app.Run();

static string? OwnAddress(IServer server, HttpContext http)
{
    var addresses = server.Features.Get<IServerAddressesFeature>()?.Addresses;
    return addresses?.FirstOrDefault() ?? $"{http.Request.Scheme}://{http.Request.Host}";
}

static IResult BadName(string index) => Results.ValidationProblem(
    new Dictionary<string, string[]> { ["index"] = [IndexCatalog.InvalidNameMessage(index)] });

static IResult NotFound(string index) => Results.Problem(statusCode: 404, title: "Index not found", detail: $"no index named '{index}' is published");

/// <summary>Entry point type, public for WebApplicationFactory in tests.</summary>
public partial class Program;
