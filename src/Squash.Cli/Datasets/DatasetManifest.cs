using System.Text.Json;
using Squash.Core;

namespace Squash.Cli.Datasets;

/// <summary>
/// dataset.json: what a prepared data set directory holds, so later commands (build, bench) need only the
/// directory. Written last by the dataset commands, so its presence means every listed file is complete.
/// </summary>
public sealed class DatasetManifest
{
    public const string FileName = "dataset.json";

    /// <summary>Well-known roles in <see cref="Files"/>.</summary>
    public static class Roles
    {
        public const string Base = "base";
        public const string Query = "query";
        public const string GroundTruth = "groundTruth";
        public const string BaseLabels = "baseLabels";
        public const string QueryLabels = "queryLabels";
        public const string BaseAttributes = "baseAttributes";
    }

    public required string Name { get; init; }

    public required Metric Metric { get; init; }

    public required int Dimensions { get; init; }

    public required int BaseCount { get; init; }

    public required int QueryCount { get; init; }

    /// <summary>Neighbours per query in the ground-truth file.</summary>
    public required int GroundTruthK { get; init; }

    /// <summary>Role → file name relative to the manifest's directory.</summary>
    public required IReadOnlyDictionary<string, string> Files { get; init; }

    /// <summary>How the data was made (seed, clusters, source directory...), for reproducing it.</summary>
    public IReadOnlyDictionary<string, string> Provenance { get; init; } = new Dictionary<string, string>();

    public static string MetricName(Metric metric) => metric switch
    {
        Metric.L2 => "l2",
        Metric.Cosine => "cosine",
        Metric.InnerProduct => "ip",
        _ => throw new ArgumentOutOfRangeException(nameof(metric), metric, "unknown metric."),
    };

    public static bool TryParseMetric(string? name, out Metric metric)
    {
        switch (name?.Trim().ToLowerInvariant())
        {
            case "l2" or "euclidean":
                metric = Metric.L2;
                return true;
            case "cosine" or "angular":
                metric = Metric.Cosine;
                return true;
            case "ip" or "dot" or "inner-product" or "innerproduct":
                metric = Metric.InnerProduct;
                return true;
            default:
                metric = default;
                return false;
        }
    }

    /// <summary>Absolute path of the file for <paramref name="role"/>, or null when the data set has none.</summary>
    public string? PathOf(string directory, string role) =>
        Files.TryGetValue(role, out string? name) ? Path.Combine(directory, name) : null;

    public void Write(string path) =>
        AtomicFile.Write(path, stream =>
        {
            using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            json.WriteStartObject();
            json.WriteString("name", Name);
            json.WriteString("metric", MetricName(Metric));
            json.WriteNumber("dimensions", Dimensions);
            json.WriteNumber("baseCount", BaseCount);
            json.WriteNumber("queryCount", QueryCount);
            json.WriteNumber("groundTruthK", GroundTruthK);
            WriteMap(json, "files", Files);
            WriteMap(json, "provenance", Provenance);
            json.WriteEndObject();
            json.Flush();
            stream.Write("\n"u8);
        });

    public static DatasetManifest Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw VectorFile.Bad(path, $"not valid JSON ({e.Message})");
        }

        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw VectorFile.Bad(path, "expected a JSON object");
            }

            string metricName = GetString(root, "metric", path);
            if (!TryParseMetric(metricName, out var metric))
            {
                throw VectorFile.Bad(path, $"unknown metric '{metricName}' (expected l2, cosine or ip)");
            }

            return new DatasetManifest
            {
                Name = GetString(root, "name", path),
                Metric = metric,
                Dimensions = GetPositiveInt(root, "dimensions", path),
                BaseCount = GetPositiveInt(root, "baseCount", path),
                QueryCount = GetPositiveInt(root, "queryCount", path),
                GroundTruthK = GetPositiveInt(root, "groundTruthK", path),
                Files = GetMap(root, "files", path),
                Provenance = root.TryGetProperty("provenance", out _) ? GetMap(root, "provenance", path) : new Dictionary<string, string>(),
            };
        }
    }

    private static void WriteMap(Utf8JsonWriter json, string name, IReadOnlyDictionary<string, string> map)
    {
        json.WriteStartObject(name);
        foreach (var (key, value) in map)
        {
            json.WriteString(key, value);
        }

        json.WriteEndObject();
    }

    private static string GetString(JsonElement root, string name, string path) =>
        root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String
            ? value.GetString()!
            : throw VectorFile.Bad(path, $"missing or non-string \"{name}\"");

    private static int GetPositiveInt(JsonElement root, string name, string path) =>
        root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out int n) && n > 0
            ? n
            : throw VectorFile.Bad(path, $"missing or invalid \"{name}\" (expected a positive integer)");

    private static Dictionary<string, string> GetMap(JsonElement root, string name, string path)
    {
        if (!root.TryGetProperty(name, out var value) || value.ValueKind != JsonValueKind.Object)
        {
            throw VectorFile.Bad(path, $"missing or non-object \"{name}\"");
        }

        var map = new Dictionary<string, string>();
        foreach (var property in value.EnumerateObject())
        {
            map[property.Name] = property.Value.ValueKind == JsonValueKind.String
                ? property.Value.GetString()!
                : throw VectorFile.Bad(path, $"\"{name}.{property.Name}\" must be a string");
        }

        return map;
    }
}
