using System.Text.Json;
using Squash.Functions.Api;
using Squash.Index.Attributes;
using Squash.Search;
using Squash.Search.Filters;
using Squash.Storage.Writes;

namespace Squash.Functions.Writes;

/// <summary>
/// Checks a write request against the index it goes to, item by item, so that one 400 names every bad item and nothing
/// is written: ids, dimensions, finite values, attributes against the schema (names and JSON types), the deleteWhere
/// filter compiled against the schema, and the batch bound.
/// </summary>
public static class WriteValidation
{
    /// <summary>Upserts plus deletes per request: a batch stays a small, quick blob (1,000 × 1,024 floats is about 10 MB of JSON at most).</summary>
    public const int MaxItems = 1000;
    public const int MaxIdLength = IdRules.MaxLength;

    public static Dictionary<string, string[]> Validate(WriteRequest r, OpenedIndex index)
    {
        var errors = new Dictionary<string, List<string>>();
        void Add(string field, string message)
        {
            if (errors.Count >= JsonBody.MaxErrors && !errors.ContainsKey(field)) return;
            (errors.TryGetValue(field, out var list) ? list : errors[field] = []).Add(message);
        }

        int upserts = r.Upserts?.Length ?? 0, deletes = r.Deletes?.Length ?? 0;
        if (upserts == 0 && deletes == 0 && r.DeleteWhere is null)
            Add("body", "names nothing to write: give upserts, deletes or deleteWhere");
        if (upserts + deletes > MaxItems)
            Add("body", $"at most {MaxItems:N0} items per request (upserts + deletes), got {upserts + deletes:N0}; split it into several requests");

        var manifest = index.Manifest;
        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < upserts && errors.Count < JsonBody.MaxErrors; i++)
        {
            var u = r.Upserts![i];
            var at = $"upserts[{i}]";
            if (u is null) { Add(at, "must be an object {\"id\", \"vector\", \"attributes\"}, got null"); continue; }
            if (CheckId(u.Id) is { } idProblem) Add(at + ".id", idProblem);
            else if (!seen.TryAdd(u.Id!, at + ".id")) Add(at + ".id", $"'{u.Id}' appears twice in this request (also {seen[u.Id!]})");
            else if (manifest.Attributes is not { HasIds: true } && !UpsertItem.IsRowNumber(u.Id!))
                Add(at + ".id", $"'{u.Id}' is not a row number; this index was built without ids, so its rows are named 0, 1, … (at most {MaxRowNumber:D})");
            if (u.Vector is null) Add(at + ".vector", "is required");
            else if (u.Vector.Length != manifest.Dimensions) Add(at + ".vector", $"has {u.Vector.Length} dimensions; the index has {manifest.Dimensions}");
            else if (Scan(u.Vector) is var (bad, squares) && bad >= 0) Add($"{at}.vector[{bad}]", "is not a finite number");
            else if (Api.RequestMapping.NormProblem(squares, manifest.Metric) is { } normProblem) Add(at + ".vector", normProblem);
            else if (manifest.Metric == "ip" && Math.Sqrt(squares) > manifest.MaxNorm * (1 + 1e-6))
                Add(at + ".vector", $"has norm {Math.Sqrt(squares):G6}, above the index's largest norm {manifest.MaxNorm:G6} (inner-product indexes store vectors up to the norm they were built with; rebuild with the longer vectors)");
            if (u.Attributes is { } attributes) CheckAttributes(attributes, manifest.Attributes, at + ".attributes", Add);
        }
        for (int i = 0; i < deletes && errors.Count < JsonBody.MaxErrors; i++)
        {
            var id = r.Deletes![i];
            var at = $"deletes[{i}]";
            if (CheckId(id) is { } idProblem) Add(at, idProblem);
            else if (!seen.TryAdd(id!, at)) Add(at, $"'{id}' appears twice in this request (also {seen[id!]})");
        }
        if (r.DeleteWhere is { } filter)
        {
            try
            {
                index.Filters.Compile(filter, FilterCompiler.MaxClauses);
            }
            catch (FilterException e)
            {
                Add(e.Path == "$" ? "deleteWhere" : "deleteWhere" + e.Path[1..], e.Detail);
            }
        }
        return errors.ToDictionary(e => e.Key, e => e.Value.ToArray());
    }

    /// <summary>The first value that is not finite (-1: none) and the sum of squares, in one pass (1,000 vectors a request).</summary>
    private static (int FirstNonFinite, double SumOfSquares) Scan(float[] vector)
    {
        double squares = 0;
        for (int i = 0; i < vector.Length; i++)
        {
            float x = vector[i];
            if (!float.IsFinite(x)) return (i, double.NaN);
            squares += (double)x * x;
        }
        return (-1, squares);
    }

    /// <summary>The largest row number an index without ids takes as an id (<see cref="UpsertItem.MaxRowNumber"/>).</summary>
    public const int MaxRowNumber = UpsertItem.MaxRowNumber;

    private static string? CheckId(string? id) => id switch
    {
        null => "is required (a string)",
        { Length: 0 } => "must not be empty",
        { Length: > MaxIdLength } => $"is {id.Length} characters; at most {MaxIdLength}",
        _ when id.Any(char.IsControl) => "must not contain control characters",
        _ => null,
    };

    /// <summary>An attribute value must have the JSON type its schema type is read from (null: the value is missing).</summary>
    private static void CheckAttributes(JsonElement attributes, IndexAttributes? schema, string at, Action<string, string> add)
    {
        if (attributes.ValueKind == JsonValueKind.Null) return;
        if (attributes.ValueKind != JsonValueKind.Object) { add(at, $"must be a JSON object of attribute values, got {Kind(attributes)}"); return; }
        foreach (var p in attributes.EnumerateObject())
        {
            var field = $"{at}.{p.Name}";
            int a = schema?.IndexOf(p.Name) ?? -1;
            if (a < 0)
            {
                add(field, schema is null
                    ? "the index has no attributes (it was built without a schema)"
                    : $"is not an attribute of the index (it has: {string.Join(", ", schema.Attributes.Select(x => x.Name))})");
                continue;
            }
            var v = p.Value;
            if (v.ValueKind == JsonValueKind.Null) continue;
            var type = schema!.Attributes[a].Type;
            string? problem = type switch
            {
                AttributeType.Number => v.ValueKind == JsonValueKind.Number && double.IsFinite(v.GetDouble()) ? null : $"must be a number (attribute type number), got {Kind(v)}",
                AttributeType.Integer => WholeNumber.TryRead(v, out _) ? null : $"must be a whole number (attribute type integer), got {Kind(v)}",
                AttributeType.Bool => v.ValueKind is JsonValueKind.True or JsonValueKind.False ? null : $"must be true or false (attribute type bool), got {Kind(v)}",
                AttributeType.Category => v.ValueKind == JsonValueKind.String ? null : $"must be a string (attribute type category), got {Kind(v)}",
                _ => v.ValueKind == JsonValueKind.Array && v.EnumerateArray().All(t => t.ValueKind == JsonValueKind.String) ? null
                    : $"must be an array of strings (attribute type tags), got {Kind(v)}",
            };
            if (problem is not null) add(field, problem);
        }
    }

    /// <summary>
    /// Valid attributes with every integer value written as digits (5.0 and 5e0 become 5): the log then holds one form, so
    /// strong reads, ingest and <c>include</c> read 5 whichever way it was sent. The same element when nothing needs it.
    /// </summary>
    public static JsonElement WithIntegersAsDigits(JsonElement attributes, IndexAttributes? schema)
    {
        if (schema is null || attributes.ValueKind != JsonValueKind.Object || !attributes.EnumerateObject().Any(p => WrittenOtherwise(p, schema, out _)))
            return attributes;
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            foreach (var p in attributes.EnumerateObject())
                if (WrittenOtherwise(p, schema, out long value)) w.WriteNumber(p.Name, value);
                else p.WriteTo(w);
            w.WriteEndObject();
        }
        using var doc = JsonDocument.Parse(buffer.WrittenMemory);
        return doc.RootElement.Clone();
    }

    /// <summary>An integer attribute's whole number written with a point or an exponent.</summary>
    private static bool WrittenOtherwise(JsonProperty p, IndexAttributes schema, out long value)
    {
        value = 0;
        int a = schema.IndexOf(p.Name);
        return a >= 0 && schema.Attributes[a].Type == AttributeType.Integer && !p.Value.TryGetInt64(out _) && WholeNumber.TryRead(p.Value, out value);
    }

    private static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => "a string",
        JsonValueKind.Number => $"the number {e.GetRawText()}",
        JsonValueKind.True or JsonValueKind.False => e.GetRawText(),
        JsonValueKind.Array => "an array" + (e.EnumerateArray().Any(t => t.ValueKind != JsonValueKind.String) ? " holding a value that is not a string" : ""),
        JsonValueKind.Object => "an object",
        _ => "null",
    };

    /// <summary>An Idempotency-Key header: 1 to <see cref="Builds.BuildEndpoints.MaxIdempotencyKey"/> visible ASCII characters (as for builds).</summary>
    public static string? CheckKey(string key) =>
        key.Length is 0 or > Builds.BuildEndpoints.MaxIdempotencyKey || key.Any(c => c is < '!' or > '~')
            ? $"must be 1 to {Builds.BuildEndpoints.MaxIdempotencyKey} visible ASCII characters" : null;
}
