using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Microsoft.OpenApi;
using Squash.Functions.Builds;
using Squash.Functions.Writes;
using Squash.Search;

namespace Squash.Functions.Api;

/// <summary>
/// What the generated OpenAPI document cannot learn from the endpoints' metadata, written into it: the query's answer is
/// one of two shapes, an upsert's and a query's vectors may be base64 text, a result's id a string or a number, and the write and build
/// submissions take an Idempotency-Key header; and every range, length and default the validators enforce
/// (<see cref="RequestMapping"/>, <see cref="WriteValidation"/>, <see cref="BuildSubmission"/>), taken from the constants and
/// settings they check against, so the document cannot drift from them. No <c>servers</c> entry: behind the Functions host the handler sees its own
/// loopback port, which a client cannot reach; without one, paths resolve against the host the document was fetched from.
/// </summary>
public static class OpenApiDescription
{
    public static void Configure(OpenApiOptions options) => options.AddDocumentTransformer((doc, context, _) =>
    {
        doc.Servers?.Clear();
        Describe(doc);
        DescribeLimits(doc, context.ApplicationServices.GetRequiredService<IOptions<FunctionSettings>>().Value);
        return Task.CompletedTask;
    });

    /// <summary>The validators' ranges, lengths and defaults, from their own constants (and this app's settings).</summary>
    private static void DescribeLimits(OpenApiDocument doc, FunctionSettings settings)
    {
        var schemas = doc.Components?.Schemas;
        if (Schema(schemas, "QueryRequest") is { Properties: { } query })
        {
            Limit(query, "k", min: 1, max: SearchOptions.MaxK, byDefault: SearchOptions.DefaultK);
            if (Schema(query, "vectors") is { } batch) (batch.MinItems, batch.MaxItems) = (1, settings.MaxBatch);
        }
        // The internal /scan is checked like a query (RequestMapping.ValidateScan); its k is required, so it has no default.
        if (Schema(schemas, "ScanRequest") is { Properties: { } scan })
        {
            Limit(scan, "k", min: 1, max: SearchOptions.MaxK);
            if (Schema(scan, "vectors") is { } batch) (batch.MinItems, batch.MaxItems) = (1, settings.MaxBatch);
        }
        if (Schema(schemas, "QueryOptions") is { Properties: { } options })
        {
            Limit(options, "recall", above: 0, max: 1, byDefault: SearchOptions.DefaultRecall);
            Limit(options, "centroidFactor", min: 1, max: SearchOptions.MaxCentroidFactor);
            Limit(options, "rerankFactor", min: 1, max: SearchOptions.MaxRerankFactor);
            Limit(options, "maxPartitions", min: 1);
            Limit(options, "hammingKeepPercent", above: 0, max: SearchOptions.MaxHammingKeepPercent, byDefault: new SearchOptions().HammingKeepPercent);
            // Without an objective the app's own tree is the default; with one, the planner picks a shape per query.
            bool fixedShape = settings.Objective.Length == 0;
            Limit(options, "branching", min: 1, max: RequestMapping.MaxBranching, byDefault: fixedShape ? settings.Branching : null);
            Limit(options, "depth", min: 0, max: RequestMapping.MaxDepth, byDefault: fixedShape ? settings.Depth : null);
            if (Schema(options, "consistency") is { } consistency)
            {
                // null too: the field is optional, and null means the default (an enum without it would refuse null).
                consistency.Enum = [RequestMapping.EventualConsistency, RequestMapping.StrongConsistency, null!];
                consistency.Default = RequestMapping.EventualConsistency;
            }
        }
        if (Schema(schemas, "WriteRequest") is { Properties: { } write })
        {
            // Upserts and deletes together hold at most MaxItems: each list alone, too.
            if (Schema(write, "upserts") is { } upserts) upserts.MaxItems = WriteValidation.MaxItems;
            if (Schema(write, "deletes") is { } deletes)
            {
                deletes.MaxItems = WriteValidation.MaxItems;
                if (deletes.Items is OpenApiSchema id) id.MaxLength = WriteValidation.MaxIdLength;
            }
        }
        if (Schema(schemas, "UpsertRequest") is { Properties: { } upsert } && Schema(upsert, "id") is { } upsertId)
            upsertId.MaxLength = WriteValidation.MaxIdLength;
        if (Schema(schemas, "BuildSourceRequest") is { Properties: { } source })
        {
            foreach (var name in new[] { "vectors", "attributes", "calibrationQueries" })
                if (Schema(source, name) is { } blob) blob.MaxLength = BuildSubmission.MaxNameLength;
            if (Schema(source, "calibrationFilters") is { } filters)
            {
                filters.MaxItems = BuildSubmission.MaxCalibrationFilters;
                if (filters.Items is OpenApiSchema blob) blob.MaxLength = BuildSubmission.MaxNameLength;
            }
        }
        if (Schema(schemas, "BuildOptionsRequest") is { Properties: { } build })
        {
            var d = BuildSubmission.Defaults;
            const int mostBits = Squash.Core.Quantization.BitAllocation.MaxBitsPerDimension;
            if (Schema(build, "metric") is { } metric)
            {
                metric.Enum = [.. BuildSubmission.Metrics.Select(m => (JsonNode)m), null!];
                metric.Default = d.Metric;
            }
            Limit(build, "partitions", min: 0, byDefault: d.Partitions);
            Limit(build, "bitsPerDim", above: 0, max: mostBits, byDefault: d.BitsPerDim);
            Limit(build, "maxBits", min: 1, max: mostBits, byDefault: d.MaxBits);
            Limit(build, "energy", above: 0, max: 1, byDefault: d.Energy);
            Limit(build, "seed", byDefault: d.Seed);
            Limit(build, "chunkRows", min: 0, byDefault: d.ChunkRows);
            if (Schema(build, "calibrate") is { } calibrate) calibrate.Default = d.Calibrate;
        }
    }

    /// <summary>A number's bounds (<paramref name="above"/>: exclusive) and default, as JSON Schema 2020-12 writes them.</summary>
    private static void Limit(IDictionary<string, IOpenApiSchema> properties, string name, double? min = null, double? above = null, double? max = null, double? byDefault = null)
    {
        if (Schema(properties, name) is not { } s) return;
        if (min is { } lo) s.Minimum = Number(lo);
        if (above is { } bound) s.ExclusiveMinimum = Number(bound);
        if (max is { } hi) s.Maximum = Number(hi);
        if (byDefault is { } value) s.Default = value == Math.Floor(value) && Math.Abs(value) < 1e15 ? JsonValue.Create((long)value) : JsonValue.Create(value);
    }

    private static string Number(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    private static void Describe(OpenApiDocument doc)
    {
        var schemas = doc.Components?.Schemas;
        const string base64Vector = "An array of numbers, or a string: base64 (RFC 4648, with padding) of the vector's float32 values, little-endian (4 bytes a dimension).";
        if (Schema(schemas, "UpsertRequest") is { } upsert && Schema(upsert.Properties, "vector") is { } vector)
        {
            vector.Type |= JsonSchemaType.String;
            vector.Description = base64Vector;
        }
        if (Schema(schemas, "QueryRequest") is { } query)
        {
            if (Schema(query.Properties, "vector") is { } one)
            {
                one.Type |= JsonSchemaType.String;
                one.Description = base64Vector;
            }
            if (Schema(query.Properties, "vectors") is { Items: OpenApiSchema item } batch)
            {
                item.Type |= JsonSchemaType.String;
                batch.Description = "A batch of vectors, each in either form of 'vector': " + base64Vector;
            }
        }
        if (Schema(schemas, "Hit") is { Properties: { } hitProperties })
            hitProperties["id"] = new OpenApiSchema
            {
                Type = JsonSchemaType.String | JsonSchemaType.Integer,
                Description = "The id given at build time (a string), or the row number for an index built without ids.",
            };

        foreach (var operation in doc.Paths.Values.SelectMany(p => p.Operations?.Values ?? Enumerable.Empty<OpenApiOperation>()))
        {
            // Every {index} is checked against the name rule (a 400 naming 'index'), so the document gives the rule.
            foreach (var parameter in operation.Parameters ?? [])
                if (parameter is { Name: "index", In: ParameterLocation.Path, Schema: OpenApiSchema name })
                    name.Pattern = IndexCatalog.NamePatternText;
            switch (operation.OperationId)
            {
                case "query":
                    // One vector gets an answer, "vectors" a batch of them: the 200 is either.
                    if (operation.Responses?.TryGetValue("200", out var ok) == true && ok.Content?.TryGetValue("application/json", out var answer) == true)
                        answer.Schema = new OpenApiSchema { OneOf = [new OpenApiSchemaReference("QueryAnswer", doc), new OpenApiSchemaReference("BatchAnswer", doc)] };
                    break;
                case "vectors":
                case "builds-submit":
                    (operation.Parameters ??= []).Add(new OpenApiParameter
                    {
                        Name = "Idempotency-Key",
                        In = ParameterLocation.Header,
                        Description = $"1 to {BuildEndpoints.MaxIdempotencyKey} visible ASCII characters: a retry with the same key and request returns the first answer; the key with a different request is a 409.",
                        Schema = new OpenApiSchema { Type = JsonSchemaType.String, MinLength = 1, MaxLength = BuildEndpoints.MaxIdempotencyKey },
                    });
                    break;
            }
        }
    }

    private static OpenApiSchema? Schema(IDictionary<string, IOpenApiSchema>? schemas, string name) =>
        schemas is not null && schemas.TryGetValue(name, out var schema) ? schema as OpenApiSchema : null;
}
