using System.Text.Json;
using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.Storage;
using Squash.Storage.Builds;

namespace Squash.Functions.Builds;

/// <summary>
/// Checks a build request before it is accepted: every field's range, the schema, and the sources themselves (the
/// blobs exist, their headers and dimensions read). Whatever can only be learnt by reading all the data (a NaN in
/// row 9,000,000, an attributes file with the wrong row count) fails the job later, naming the task.
/// </summary>
public static class BuildSubmission
{
    public const string NoQueueDetail = "builds need a queue (serve with --store azure:...)";
    public const int MaxNameLength = 1024;
    /// <summary>Largest chunk a task holds in memory as float32 (chunkRows × dimensions × 4 bytes).</summary>
    public const long MaxChunkBytes = 256L << 20;
    /// <summary>The default chunk: about this many bytes of float32 per assign task.</summary>
    public const long DefaultChunkBytes = 32L << 20;

    public static readonly string[] AttributeExtensions = [".jsonl", ".json", ".ndjson", ".csv"];
    /// <summary>Most calibration filter blobs (families) one build measures.</summary>
    public const int MaxCalibrationFilters = 16;
    /// <summary>Largest calibration filter blob: the train and publish tasks read each one whole.</summary>
    public const long MaxCalibrationFilterBytes = 64L << 20;
    /// <summary>What a request's absent option becomes (and what the OpenAPI document gives as its default).</summary>
    public static readonly BuildJobOptions Defaults = new();
    /// <summary>The metrics a build takes (options.metric).</summary>
    public static readonly string[] Metrics = ["l2", "cosine", "ip"];

    /// <summary>Field checks that need no I/O; errors by field name.</summary>
    public static Dictionary<string, string[]> ValidateFields(BuildRequest r, out string? schemaText)
    {
        var errors = new Dictionary<string, string[]>();
        void Add(string field, string message) => errors[field] = [.. errors.GetValueOrDefault(field, []), message];
        schemaText = null;

        if (r.Source is not { } s) Add("source", "is required: {\"vectors\": \"<blob name or prefix>\"}");
        else
        {
            if (s.Vectors is null) Add("source.vectors", "is required: the name of a vector blob (.fvecs, .bvecs, .npy) or a prefix");
            else if (NameProblem(s.Vectors, allowTrailingSlash: true) is { } p) Add("source.vectors", p);
            if (s.Attributes is { } a)
            {
                if (NameProblem(a, allowTrailingSlash: false) is { } p2) Add("source.attributes", p2);
                else if (!AttributeExtensions.Contains(Path.GetExtension(a).ToLowerInvariant()))
                    Add("source.attributes", $"'{a}' must be a .jsonl or .csv blob");
            }
            if (s.CalibrationQueries is { } q)
            {
                if (NameProblem(q, allowTrailingSlash: false) is { } p3) Add("source.calibrationQueries", p3);
                else if (Squash.Index.Build.Sources.VectorSourceFormat.FormatOf(q) is null) Add("source.calibrationQueries", $"'{q}' must be a vector blob (.fvecs, .bvecs or .npy)");
                if (r.Options?.Calibrate == false) Add("source.calibrationQueries", "cannot be combined with options.calibrate: false");
            }
            if (s.CalibrationFilters is { Count: > 0 } filters)
            {
                if (s.CalibrationQueries is null) Add("source.calibrationFilters", "needs source.calibrationQueries (line i is the filter of query i)");
                if (s.Attributes is null) Add("source.calibrationFilters", "needs source.attributes: the filters name attributes");
                if (filters.Count > MaxCalibrationFilters) Add("source.calibrationFilters", $"at most {MaxCalibrationFilters} blobs (one per kind of filter), got {filters.Count}");
                for (int i = 0; i < filters.Count; i++)
                    if (filters[i] is null) Add($"source.calibrationFilters[{i}]", "must be a blob name, got null");
                    else if (NameProblem(filters[i], allowTrailingSlash: false) is { } p4) Add($"source.calibrationFilters[{i}]", p4);
                if (filters.Where(f => f is not null).Distinct(StringComparer.Ordinal).Count() < filters.Count(f => f is not null))
                    Add("source.calibrationFilters", "names a blob twice (each blob is one family)");
                else if (filters.Where(f => f is not null).GroupBy(f => Path.GetFileName(f)).FirstOrDefault(g => g.Count() > 1) is { } same)
                    Add("source.calibrationFilters", $"'{same.First()}' and '{same.Skip(1).First()}' have the same file name, which names a family: rename one");
            }
            if (s.Schema is { } schema && schema.ValueKind != JsonValueKind.Null)
            {
                if (s.Attributes is null) Add("source.schema", "needs source.attributes");
                else if (schema.ValueKind != JsonValueKind.Object) Add("source.schema", "must be an object of attribute name to type, e.g. {\"price\":\"number\"}");
                else schemaText = SchemaText(schema, Add);
            }
        }
        if (r.Options is { } o)
        {
            if (o.Metric is { } m && !Metrics.Contains(m)) Add("options.metric", $"must be \"l2\", \"cosine\" or \"ip\", got \"{m}\"");
            if (o.Partitions is < 0) Add("options.partitions", $"must be ≥ 0 (0 picks clamp(N / 1000, 1, 4096)), got {o.Partitions}");
            // Codes hold at most a byte per dimension (BitAllocation.MaxBitsPerDimension).
            const int mostBits = Squash.Core.Quantization.BitAllocation.MaxBitsPerDimension;
            int maxBits = o.MaxBits ?? Defaults.MaxBits;
            if (o.MaxBits is { } mb && mb is < 1 or > mostBits) Add("options.maxBits", $"must be between 1 and {mostBits}, got {mb}");
            if (o.BitsPerDim is { } b && !(b > 0 && b <= mostBits)) Add("options.bitsPerDim", $"must be > 0 and ≤ {mostBits}, got {b}");
            else if (o.BitsPerDim is { } b2 && maxBits is >= 1 and <= mostBits && b2 > maxBits) Add("options.bitsPerDim", $"({b2}) cannot exceed maxBits ({maxBits})");
            if (o.Energy is { } e && !(e > 0 && e <= 1)) Add("options.energy", $"must be in (0, 1], got {e}");
            if (o.ChunkRows is < 0) Add("options.chunkRows", $"must be ≥ 0 (0 picks about 32 MB of vectors per task), got {o.ChunkRows}");
        }
        return errors;
    }

    /// <summary>The schema object in the CLI's text form (<c>price:number,label:integer</c>), checked type by type.</summary>
    private static string? SchemaText(JsonElement schema, Action<string, string> add)
    {
        var parts = new List<string>();
        bool ok = true;
        foreach (var p in schema.EnumerateObject())
        {
            var field = $"source.schema.{p.Name}";
            if (p.Name.Length == 0 || p.Name.IndexOfAny([',', ':']) >= 0) { add(field, "an attribute name must be non-empty and hold no ',' or ':'"); ok = false; continue; }
            if (p.Value.ValueKind != JsonValueKind.String) { add(field, "must be a type name: number, integer, bool, category or tags"); ok = false; continue; }
            var type = p.Value.GetString()!;
            try { AttributeSchema.ParseType(type); }
            catch (ArgumentException) { add(field, $"must be number, integer, bool, category or tags, got \"{type}\""); ok = false; continue; }
            parts.Add($"{p.Name}:{type}");
        }
        if (!ok) return null;
        if (parts.Count == 0) { add("source.schema", "declares no attribute"); return null; }
        var text = string.Join(',', parts);
        try { AttributeSchema.Parse(text); }
        catch (ArgumentException e) { add("source.schema", e.Message); return null; }
        return text;
    }

    private static string? NameProblem(string name, bool allowTrailingSlash)
    {
        var trimmed = allowTrailingSlash ? name.TrimEnd('/') : name;
        if (trimmed.Length == 0) return "must be a blob name, got an empty string";
        if (name.Length > MaxNameLength) return $"a blob name has at most {MaxNameLength} characters, got {name.Length}";
        if (trimmed.StartsWith('/') || trimmed.Split('/').Any(p => p is "" or "." or "..")) return $"'{name}' is not a valid blob name (no leading '/', no empty, '.' or '..' parts)";
        return null;
    }

    /// <summary>
    /// Reads the sources' headers and resolves defaults: the job to store, or errors by field (source.vectors,
    /// source.attributes, options.partitions, options.chunkRows).
    /// </summary>
    public static async Task<(BuildJob? Job, Dictionary<string, string[]> Errors)> ResolveAsync(
        IBlobStore blobs, string index, BuildRequest r, string? schemaText, string? idempotencyKey, DateTimeOffset now, CancellationToken ct)
    {
        var errors = new Dictionary<string, string[]>();
        IReadOnlyList<BuildSourceBlob> source;
        try
        {
            source = await BlobVectorSource.ResolveAsync(blobs, r.Source!.Vectors!, ct);
        }
        catch (BuildSourceException e)
        {
            errors[e.Field] = [e.Message];
            return (null, errors);
        }
        BuildAttributesBlob? attributes = null;
        if (r.Source!.Attributes is { } a)
        {
            var info = await blobs.GetInfoAsync(a, ct);
            if (info is null) errors["source.attributes"] = [$"no blob named '{a}' in the store"];
            else attributes = new BuildAttributesBlob(info.Name, info.ETag, info.Length);
        }
        long count = source.Sum(b => b.Rows);
        int dims = source[0].Dimensions;
        BuildSourceBlob? queries = null;
        if (r.Source.CalibrationQueries is { } q)
        {
            try
            {
                queries = await BlobVectorSource.ResolveOneAsync(blobs, q, "source.calibrationQueries", ct);
                if (queries.Dimensions != dims) errors["source.calibrationQueries"] = [$"'{q}' has {queries.Dimensions} dimensions; the vectors have {dims}"];
            }
            catch (BuildSourceException e)
            {
                errors[e.Field] = [e.Message];
            }
        }
        var filters = new List<BuildAttributesBlob>();
        for (int i = 0; i < (r.Source.CalibrationFilters?.Count ?? 0); i++)
        {
            var name = r.Source.CalibrationFilters![i];
            var info = await blobs.GetInfoAsync(name, ct);
            if (info is null) errors[$"source.calibrationFilters[{i}]"] = [$"no blob named '{name}' in the store"];
            else if (info.Length > MaxCalibrationFilterBytes)
                errors[$"source.calibrationFilters[{i}]"] = [$"'{name}' is {info.Length / 1048576.0:N1} MB; a filter blob holds at most {MaxCalibrationFilterBytes >> 20} MB (the build reads it whole)"];
            else filters.Add(new BuildAttributesBlob(info.Name, info.ETag, info.Length));
        }
        var o = r.Options ?? new BuildOptionsRequest();
        if (o.Partitions is { } p && p > count) errors["options.partitions"] = [$"({p}) cannot exceed the number of vectors ({count:N0})"];
        int chunkRows = o.ChunkRows is { } c and > 0 ? c : (int)Math.Max(1, DefaultChunkBytes / (dims * 4L));
        if ((long)chunkRows * dims * 4 > MaxChunkBytes)
            errors["options.chunkRows"] = [$"a chunk of {chunkRows:N0} rows × {dims} dimensions is {(long)chunkRows * dims * 4 >> 20:N0} MB of float32; at most {MaxChunkBytes >> 20} MB"];
        if (errors.Count > 0) return (null, errors);

        var options = new BuildJobOptions
        {
            Metric = o.Metric ?? Defaults.Metric,
            Partitions = o.Partitions ?? Defaults.Partitions,
            BitsPerDim = o.BitsPerDim ?? Defaults.BitsPerDim,
            MaxBits = o.MaxBits ?? Defaults.MaxBits,
            Energy = o.Energy ?? Defaults.Energy,
            Seed = o.Seed ?? Defaults.Seed,
            Calibrate = o.Calibrate ?? Defaults.Calibrate,
            ChunkRows = o.ChunkRows ?? Defaults.ChunkRows,
        };
        int partitions = options.Partitions > 0 ? options.Partitions : IndexBuildOptions.DefaultPartitions(count, dims);
        var job = new BuildJob
        {
            BuildId = BuildJobStore.NewBuildId(now),
            Index = index,
            Status = BuildStatus.Queued,
            CreatedUtc = now,
            IdempotencyKey = idempotencyKey,
            Version = VersionIds.New(now),
            Source = new BuildSourceSpec
            {
                Vectors = r.Source.Vectors!, Attributes = r.Source.Attributes, Schema = schemaText,
                CalibrationQueries = r.Source.CalibrationQueries, CalibrationFilters = filters.Count > 0 ? r.Source.CalibrationFilters : null,
            },
            Options = options,
            Blobs = source,
            AttributesBlob = attributes,
            CalibrationQueriesBlob = queries,
            CalibrationFilterBlobs = filters.Count > 0 ? filters : null,
            Count = count,
            Dimensions = dims,
            ChunkRows = chunkRows,
            Partitions = partitions,
            Stages = [],
        };
        job = job with
        {
            Stages =
            [
                new StageProgress(BuildStages.Train, 0, 1),
                new StageProgress(BuildStages.Assign, 0, job.Chunks),
                new StageProgress(BuildStages.Encode, 0, partitions),
                new StageProgress(BuildStages.Publish, 0, 1),
            ],
        };
        return (job, errors);
    }
}
