using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization.Metadata;

namespace Squash.Functions.Api;

/// <summary>
/// Reads a bounded JSON request body. A body the serializer rejects is described field by field in JSON's own
/// terms — every unknown field, every value of the wrong type, every missing required field, each under its
/// JSON path (<c>k</c>, <c>options.rerankFactor</c>, <c>vectors[2]</c>) — never with .NET type names.
/// </summary>
public static class JsonBody
{
    /// <summary>At most this many fields are reported, so a huge bad body gets a short answer.</summary>
    public const int MaxErrors = 20;

    public static async Task<(T? Value, IResult? Error)> ReadAsync<T>(HttpRequest request, JsonTypeInfo<T> type, long maxBytes, CancellationToken ct) where T : class
    {
        if (request.ContentLength > maxBytes)
            return (null, Results.Problem(statusCode: 413, title: "Request too large", detail: $"the body is {request.ContentLength} bytes; at most {maxBytes} are accepted"));
        // Sized from Content-Length when it is given: a 1,000-vector write is ~0.7 MB, which growing by doubling copies twice over.
        using var buffer = new MemoryStream(request.ContentLength is long n and > 0 and < int.MaxValue ? (int)n + 1 : 0);
        var chunk = new byte[81920];
        int read;
        while ((read = await request.Body.ReadAsync(chunk, ct)) > 0)
        {
            buffer.Write(chunk, 0, read);
            if (buffer.Length > maxBytes)
                return (null, Results.Problem(statusCode: 413, title: "Request too large", detail: $"at most {maxBytes} bytes are accepted"));
        }
        var body = buffer.GetBuffer().AsMemory(0, (int)buffer.Length);
        try
        {
            var value = JsonSerializer.Deserialize(body.Span, type);
            return value is null
                ? (null, Invalid(new() { ["body"] = ["the body must be a JSON object"] }))
                : (value, null);
        }
        catch (JsonFieldException e)
        {
            return (null, Invalid(new() { [Field(e.Path) + e.Within] = [e.Detail] }));
        }
        catch (JsonException e)
        {
            return (null, Invalid(Describe(body, type, e)));
        }
    }

    private static IResult Invalid(Dictionary<string, string[]> errors) =>
        Results.ValidationProblem(errors, title: "The request body is not valid JSON for this endpoint.");

    /// <summary>What is wrong with a body the serializer rejected, by JSON path.</summary>
    public static Dictionary<string, string[]> Describe(ReadOnlyMemory<byte> body, JsonTypeInfo type, JsonException serializerError)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(body);
        }
        catch (JsonException malformed)
        {
            // Not JSON at all: the reader's message says where (line and byte), the serializer's path which field.
            return new() { [Field(serializerError.Path)] = [$"is not valid JSON: {malformed.Message}"] };
        }
        using (document)
        {
            var errors = new Dictionary<string, List<string>>();
            Check(document.RootElement, type, "", errors);
            if (errors.Count == 0) errors[Field(serializerError.Path)] = ["has a value this field cannot hold"];
            return errors.ToDictionary(e => e.Key.Length == 0 ? "body" : e.Key, e => e.Value.ToArray());
        }
    }

    public static string Field(string? path) => string.IsNullOrEmpty(path) || path == "$" ? "body" : path.TrimStart('$', '.');

    private static void Check(JsonElement e, JsonTypeInfo info, string path, Dictionary<string, List<string>> errors)
    {
        if (errors.Count >= MaxErrors) return;
        void Add(string message) => (errors.TryGetValue(path, out var list) ? list : errors[path] = []).Add(message);

        var nullable = Nullable.GetUnderlyingType(info.Type);
        var type = nullable ?? info.Type;
        if (e.ValueKind == JsonValueKind.Null)
        {
            if (info.Type.IsValueType && nullable is null) Add("must not be null");
            return;
        }
        if (type == typeof(JsonElement) || type == typeof(JsonNode) || type == typeof(JsonObject)) return;
        if (type == typeof(int) || type == typeof(long))
        {
            if (e.ValueKind != JsonValueKind.Number) Add($"must be a whole number, got {Describe(e)}");
            else if (type == typeof(int) ? !e.TryGetInt32(out _) : !e.TryGetInt64(out _))
            {
                // The reader takes whole numbers in digits only: say which rule the value broke (5.5 is not whole, 1e9 is
                // whole but written with an exponent, 1e10 does not fit).
                double min = type == typeof(int) ? int.MinValue : long.MinValue, max = type == typeof(int) ? int.MaxValue : long.MaxValue;
                Add(!e.TryGetDouble(out double value) || value != Math.Floor(value) ? $"must be a whole number, got {e.GetRawText()}"
                    : value < min || value > max ? $"must be a whole number between {min:0} and {max:0}, got {e.GetRawText()}"
                    : $"must be written in digits only, without an exponent or a decimal point (e.g. {value:0}), got {e.GetRawText()}");
            }
            return;
        }
        if (type == typeof(float) || type == typeof(double))
        {
            if (e.ValueKind != JsonValueKind.Number) Add($"must be a number, got {Describe(e)}");
            return;
        }
        if (type == typeof(bool))
        {
            if (e.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) Add($"must be true or false, got {Describe(e)}");
            return;
        }
        if (type == typeof(string))
        {
            if (e.ValueKind != JsonValueKind.String) Add($"must be a string, got {Describe(e)}");
            return;
        }
        switch (info.Kind)
        {
            case JsonTypeInfoKind.Enumerable when info.ElementType is { } elementType:
                if (e.ValueKind != JsonValueKind.Array) { Add($"must be an array, got {Describe(e)}"); return; }
                var element = TypeInfo(info, elementType);
                int i = 0;
                foreach (var item in e.EnumerateArray())
                {
                    if (element is not null) Check(item, element, $"{path}[{i}]", errors);
                    i++;
                }
                return;
            case JsonTypeInfoKind.Object:
                if (e.ValueKind != JsonValueKind.Object) { Add($"must be a JSON object, got {Describe(e)}"); return; }
                var seen = new HashSet<JsonPropertyInfo>();
                foreach (var property in e.EnumerateObject())
                {
                    // Web defaults: names match case-insensitively, as the serializer matches them.
                    var known = info.Properties.FirstOrDefault(p => string.Equals(p.Name, property.Name, StringComparison.OrdinalIgnoreCase));
                    var at = Join(path, known?.Name ?? property.Name);
                    if (known is null)
                    {
                        if (errors.Count < MaxErrors)
                            errors[at] = [$"is not a field {(path.Length == 0 ? "of this request" : "here")}; the fields are: {string.Join(", ", info.Properties.Select(p => p.Name))}"];
                        continue;
                    }
                    seen.Add(known);
                    // A field read by its own converter in more than one form (an upsert's base64 vector): the converter judged it.
                    if (known.CustomConverter is not null && property.Value.ValueKind == JsonValueKind.String) continue;
                    // A batch of such vectors (a query's "vectors"): its base64 items too; its arrays are checked as any vector.
                    if (known.CustomConverter is VectorListJsonConverter && property.Value.ValueKind == JsonValueKind.Array
                        && TypeInfo(info, typeof(float[])) is { } vectorInfo)
                    {
                        int item = 0;
                        foreach (var v in property.Value.EnumerateArray())
                        {
                            if (v.ValueKind != JsonValueKind.String) Check(v, vectorInfo, $"{at}[{item}]", errors);
                            item++;
                        }
                        continue;
                    }
                    if (TypeInfo(info, known.PropertyType) is { } propertyInfo) Check(property.Value, propertyInfo, at, errors);
                }
                foreach (var required in info.Properties.Where(p => p.IsRequired && !seen.Contains(p)))
                    if (errors.Count < MaxErrors) errors[Join(path, required.Name)] = ["is required"];
                return;
        }
    }

    private static JsonTypeInfo? TypeInfo(JsonTypeInfo parent, Type type) => parent.Options.TypeInfoResolver?.GetTypeInfo(type, parent.Options);

    private static string Join(string path, string name) => path.Length == 0 ? name : $"{path}.{name}";

    private static string Describe(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => $"the string {Truncate(e.GetRawText())}",
        JsonValueKind.Number => $"the number {Truncate(e.GetRawText())}",
        JsonValueKind.True or JsonValueKind.False => $"{e.GetRawText()}",
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        _ => "null",
    };

    private static string Truncate(string s) => s.Length <= 40 ? s : s[..37] + "…";
}

/// <summary>A converter's verdict on one field (what is wrong with it, in the API's words); the serializer adds the field's path.</summary>
public sealed class JsonFieldException(string detail) : JsonException(detail)
{
    public string Detail { get; } = detail;
    /// <summary>Where inside the field (e.g. <c>[2]</c>, an item of a list one converter reads whole), appended to its path.</summary>
    public string Within { get; init; } = "";
}
