using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Azure.Storage.Blobs;
using Spectre.Console;
using Squash.Cli.Builds;
using Squash.Core;
using Squash.Functions;
using Squash.Functions.Builds;
using Squash.Index.Attributes;
using Squash.Storage.Builds;

namespace Squash.Cli.Commands;

/// <summary>
/// <c>squash build --endpoint</c>: the build runs on the service, through its queue (docs/builds.md). The CLI uploads
/// local files into the service's store when given --vectors, submits the job (one Idempotency-Key per run, so a
/// retried submission never makes two jobs), follows it, and ends with the published version or the job's error.
/// </summary>
public static partial class BuildCommand
{
    /// <summary>The flag behind each field of a build request, so that a 400 names what the user typed.</summary>
    private static string? FlagOf(string field, IReadOnlyDictionary<string, string> uploaded) => field switch
    {
        "source.vectors" => uploaded.TryGetValue(field, out var v) ? $"--vectors (uploaded as blob '{v}')" : "--source",
        "source.attributes" or "source.calibrationQueries" => (field == "source.attributes" ? "--attributes" : "--calibration-queries")
            + (uploaded.TryGetValue(field, out var a) ? $" (uploaded as blob '{a}')" : ""),
        "source.calibrationFilters" => "--calibration-filters",
        _ when field.StartsWith("source.calibrationFilters[", StringComparison.Ordinal) =>
            "--calibration-filters" + (uploaded.TryGetValue(field, out var cf) ? $" (uploaded as blob '{cf}')" : $" (the {OrdinalOf(field)} one)"),
        "source.schema" => "--schema",
        _ when field.StartsWith("source.schema.", StringComparison.Ordinal) => $"--schema {field["source.schema.".Length..]}",
        "options.metric" => "--metric",
        "options.partitions" => "--partitions",
        "options.bitsPerDim" => "--bits-per-dim",
        "options.maxBits" => "--max-bits",
        "options.energy" => "--energy",
        "options.seed" => "--seed",
        "options.calibrate" => "--no-calibration",
        "options.chunkRows" => "--chunk-rows",
        "index" => "--index",
        "Idempotency-Key" => "--idempotency-key",
        _ => null,
    };

    private static async Task<int> RunThroughQueueAsync(ParseResult pr, Flags f, string url, CancellationToken ct)
    {
        var endpoint = EndpointFlags.ParseEndpoint(url);
        var key = EndpointFlags.Key(pr, f.FunctionKey);
        var index = pr.GetValue(f.Index)!;
        CliErrors.Require(IndexCatalog.IsValidName(index),
            $"--index: with --endpoint it names an index of the service (lower-case letters, digits and '-', at most 63 characters), got '{index}'");
        string? calibrationQueries = pr.GetValue(f.CalibrationQueries);
        string[] calibrationFilters = pr.GetValue(f.CalibrationFilters) ?? [];
        CliErrors.Require(calibrationQueries is null || !pr.GetValue(f.NoCalibration), "--calibration-queries cannot be combined with --no-calibration");
        CliErrors.Require(calibrationFilters.Length == 0 || calibrationQueries is not null, "--calibration-filters needs --calibration-queries (line i is the filter of query i)");
        CliErrors.Require(calibrationFilters.Length == 0 || pr.GetValue(f.Attributes) is not null, "--calibration-filters needs --attributes: the filters name attributes");
        RequireDistinctFamilyNames(calibrationFilters);
        var (metric, partitions, bits, maxBits, energy) = CheckedOptions(pr, f);
        int chunkRows = pr.GetValue(f.ChunkRows);
        CliErrors.Require(chunkRows >= 0, $"--chunk-rows must be ≥ 0 (0 picks about 32 MB of vectors per task), got {chunkRows}");
        string? vectors = pr.GetValue(f.Vectors), source = pr.GetValue(f.Source), attributes = pr.GetValue(f.Attributes);
        CliErrors.Require(vectors is not null || source is not null,
            "--endpoint needs --vectors FILE (uploaded into --store) or --source BLOB (a blob already in the service's store)");
        CliErrors.Require(vectors is null || source is null, "--vectors and --source cannot be combined: upload a file, or name a blob already in the store");
        CliErrors.Require(pr.GetValue(f.Schema) is null || attributes is not null, "--schema needs --attributes");
        JsonElement? schema = pr.GetValue(f.Schema) is { } schemaText ? SchemaObject(ParseSchema(schemaText)!) : null;
        var idempotencyKey = pr.GetValue(f.IdempotencyKey) ?? "squash-cli-" + Guid.NewGuid().ToString("N");
        CliErrors.Require(idempotencyKey.Length is >= 1 and <= BuildEndpoints.MaxIdempotencyKey && idempotencyKey.All(c => c is >= '!' and <= '~'),
            $"--idempotency-key must be 1 to {BuildEndpoints.MaxIdempotencyKey} visible ASCII characters");

        var storeSpec = pr.GetValue<string?>(IndexLocation.StoreFlag);
        var container = pr.GetValue<string>(IndexLocation.ContainerFlag) ?? IndexLocation.DefaultContainer;
        BlobContainerClient? uploads = null;
        if (vectors is not null)
        {
            CliErrors.RequireFile("--vectors", vectors);
            if (attributes is not null) CliErrors.RequireFile("--attributes", attributes);
            if (calibrationQueries is not null)
            {
                // Local files are checked as the in-process build checks them, before anything is uploaded; the service checks the dimensions.
                CliErrors.RequireFile("--calibration-queries", calibrationQueries);
                int queries = Squash.Cli.Datasets.VectorFile.Read(calibrationQueries).Count;
                foreach (var filterPath in calibrationFilters) ReadCalibrationFilterFile(filterPath, queries);
            }
            CliErrors.Require(storeSpec is not null,
                "--vectors with --endpoint needs --store: the service's blob store (azure:CONNECTION_STRING or azure:https://ACCOUNT.blob.core.windows.net) to upload the file into; or name a blob already there with --source");
            IndexLocation.OpenStore(storeSpec!, container);
            CliErrors.Require(storeSpec!.StartsWith("azure:", StringComparison.Ordinal),
                $"{IndexLocation.StoreFlag} must be the service's azure:… store to upload --vectors into: builds through the queue read their source from it (a dir: store has no queue)");
            uploads = SourceUpload.OpenContainer(storeSpec, container);
        }
        else
        {
            CliErrors.Require(storeSpec is null, "--store is only used to upload --vectors: with --source the service reads the blob from its own store");
        }

        using var api = new BuildsApi(endpoint, key, index);
        // Before any upload: the endpoint answers, takes the key, and can run builds (a folder store cannot).
        await api.ListAsync(retry: false, ct);

        var clock = Stopwatch.StartNew();
        // Request field → the blob a local file was uploaded as (with --source, the flags name blobs already in the store).
        var uploaded = new Dictionary<string, string>();
        if (uploads is not null)
        {
            uploaded["source.vectors"] = await UploadWithProgressAsync(uploads, index, vectors!, ct);
            if (attributes is not null) uploaded["source.attributes"] = await UploadWithProgressAsync(uploads, index, attributes, ct);
            if (calibrationQueries is not null) uploaded["source.calibrationQueries"] = await UploadWithProgressAsync(uploads, index, calibrationQueries, ct);
            for (int i = 0; i < calibrationFilters.Length; i++)
                uploaded[$"source.calibrationFilters[{i}]"] = await UploadWithProgressAsync(uploads, index, calibrationFilters[i], ct);
        }
        var request = new BuildRequest
        {
            Source = new BuildSourceRequest
            {
                Vectors = uploaded.GetValueOrDefault("source.vectors") ?? source,
                Attributes = uploaded.GetValueOrDefault("source.attributes") ?? attributes,
                Schema = schema,
                CalibrationQueries = uploaded.GetValueOrDefault("source.calibrationQueries") ?? calibrationQueries,
                CalibrationFilters = calibrationFilters.Length == 0 ? null
                    : calibrationFilters.Select((path, i) => uploaded.GetValueOrDefault($"source.calibrationFilters[{i}]") ?? path).ToArray(),
            },
            Options = new BuildOptionsRequest
            {
                Metric = MetricSpace.Name(metric), Partitions = partitions, BitsPerDim = bits, MaxBits = maxBits, Energy = energy,
                Seed = pr.GetValue(f.Seed), Calibrate = !pr.GetValue(f.NoCalibration), ChunkRows = chunkRows,
            },
        };
        BuildAccepted accepted;
        try
        {
            accepted = await api.SubmitAsync(request, idempotencyKey, ct);
        }
        catch (EndpointProblemException e) when (e.Errors is { Count: > 0 })
        {
            throw new UsageException(e.Describe(field => FlagOf(field, uploaded)));
        }
        var follow = $"squash builds show {accepted.BuildId} --endpoint {url} --index {index}";
        var cancel = $"squash builds cancel {accepted.BuildId} --endpoint {url} --index {index}";
        if (pr.GetValue(f.NoWait))
        {
            Console.Out.WriteLine(accepted.BuildId);
            Console.Error.WriteLine($"submitted build {accepted.BuildId} of index {index} ({accepted.Status}); follow it with: {follow}");
            return 0;
        }
        Console.Error.WriteLine($"submitted build {accepted.BuildId} of index {index} to {endpoint} ({accepted.Status}); following it (Ctrl+C stops following, not the build)");

        BuildView view;
        try
        {
            view = await BuildFollower.FollowWithProgressAsync(api, accepted.BuildId, ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // Ctrl+C: the build is the service's now, and stopping the CLI must not look like stopping the build.
            Console.Error.WriteLine($"error: stopped following build {accepted.BuildId}, which continues on the service; follow it with: {follow}; cancel it with: {cancel}");
            return 130;
        }
        catch (Exception e) when (e is not UsageException)
        {
            throw new UsageException($"{CliErrors.Describe(e, pr)}; build {accepted.BuildId} may still be running on the service (see: {follow})");
        }
        return Finish(view, clock.Elapsed);
    }

    /// <summary>"first", "second", … for <c>source.calibrationFilters[i]</c>: which --calibration-filters flag.</summary>
    private static string OrdinalOf(string field)
    {
        int i = int.TryParse(field["source.calibrationFilters[".Length..].TrimEnd(']'), out int n) ? n : -1;
        return i switch { 0 => "first", 1 => "second", 2 => "third", _ => $"#{i + 1}" };
    }

    /// <summary>Exit 0 with the published version, or 1 with the job's error naming the task.</summary>
    private static int Finish(BuildView view, TimeSpan elapsed)
    {
        switch (view.Status)
        {
            case BuildStatus.Succeeded:
                var current = view.Current == false ? "not current: a newer build was published meanwhile" : "current";
                Console.Out.WriteLine($"built {view.Index} version {view.Version} ({current}) through the queue: {view.Vectors.Total:N0} × {view.Vectors.Dimensions} vectors, " +
                    $"{view.Partitions:N0} partitions, build {view.BuildId}: {view.ElapsedSeconds ?? 0:F1} s on the service, {elapsed.TotalSeconds:F1} s with the upload");
                return 0;
            case BuildStatus.Failed:
                var error = view.Error;
                Console.Error.WriteLine($"error: build {view.BuildId} failed" + (error?.Task is { } task ? $" in {task}" : "") +
                    (error is null ? "" : $": {error.Code}: {error.Message}"));
                return 1;
            default:
                Console.Error.WriteLine($"error: build {view.BuildId} was {view.Status} on the service; nothing was published");
                return 1;
        }
    }

    /// <summary>Uploads one file (hash, then block upload) with a progress bar on a terminal; returns its blob name.</summary>
    private static async Task<string> UploadWithProgressAsync(BlobContainerClient container, string index, string path, CancellationToken ct)
    {
        long length = new FileInfo(path).Length;
        var clock = Stopwatch.StartNew();
        SourceUpload.Result result;
        if (!AnsiConsole.Profile.Capabilities.Interactive)
        {
            var sha = await SourceUpload.HashAsync(path, null, ct);
            var name = SourceUpload.BlobName(index, sha, path);
            result = await SourceUpload.UploadAsync(container, path, name, null, ct,
                starting: () => Console.Error.WriteLine($"uploading {path} ({length / 1048576.0:N1} MiB) as blob {name} ..."));
        }
        else
        {
            result = null!;
            await AnsiConsole.Progress().AutoClear(true)
                .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new DownloadedColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
                .StartAsync(async ctx =>
                {
                    var hashing = ctx.AddTask(Markup.Escape($"sha-256 {Path.GetFileName(path)}"), maxValue: Math.Max(1, length));
                    var sha = await SourceUpload.HashAsync(path, new SyncProgress<long>(done => hashing.Value = done), ct);
                    hashing.Value = hashing.MaxValue;
                    var sending = ctx.AddTask(Markup.Escape($"upload {Path.GetFileName(path)}"), maxValue: Math.Max(1, length));
                    result = await SourceUpload.UploadAsync(container, path, SourceUpload.BlobName(index, sha, path), new SyncProgress<long>(done => sending.Value = done), ct);
                    sending.Value = sending.MaxValue;
                });
        }
        Console.Error.WriteLine(result.Uploaded
            ? $"uploaded {path} as blob {result.BlobName}: {result.Bytes / 1048576.0:N1} MiB in {clock.Elapsed.TotalSeconds:F1} s"
            : $"{path} is already in the store as blob {result.BlobName} (same SHA-256): not uploaded again");
        return result.BlobName;
    }

    /// <summary>--schema as the API takes it: <c>{"price":"number","label":"integer"}</c>.</summary>
    private static JsonElement SchemaObject(AttributeSchema schema)
    {
        var types = schema.Attributes.ToDictionary(a => a.Name, a => AttributeSchema.TypeName(a.Type));
        return JsonSerializer.SerializeToElement(types);
    }
}
