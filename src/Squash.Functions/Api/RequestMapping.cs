using Squash.Search;
using Squash.Search.Filters;

namespace Squash.Functions.Api;

/// <summary>Checks a query request field by field; every problem is reported against the field's name.</summary>
public static class RequestMapping
{
    public static Dictionary<string, string[]> Validate(QueryRequest r, int dimensions, int maxBatch)
    {
        var errors = new Dictionary<string, string[]>();
        void Add(string field, string message) => errors[field] = [.. errors.GetValueOrDefault(field, []), message];

        if (r.Vector is null && r.Vectors is null) Add("vector", "a query needs 'vector' (one query) or 'vectors' (a batch)");
        if (r.Vector is not null && r.Vectors is not null) Add("vectors", "send either 'vector' or 'vectors', not both");
        if (r.Vector is not null) CheckVector("vector", r.Vector, dimensions, Add);
        if (r.Vectors is not null)
        {
            if (r.Vectors.Length == 0) Add("vectors", "the batch is empty");
            if (r.Vectors.Length > maxBatch) Add("vectors", $"a batch holds at most {maxBatch} vectors, got {r.Vectors.Length}");
            for (int i = 0; i < r.Vectors.Length && errors.Count < 20; i++)
                CheckVector($"vectors[{i}]", r.Vectors[i], dimensions, Add);
        }
        if (r.K is { } k && (k < 1 || k > SearchOptions.MaxK)) Add("k", $"k must be between 1 and {SearchOptions.MaxK}, got {k}");
        if (r.Options is { } o)
        {
            if (o.CentroidFactor is { } cf && !(cf >= 1 && double.IsFinite(cf))) Add("options.centroidFactor", $"must be a finite number ≥ 1, got {cf}");
            if (o.HammingKeepPercent is { } h && !(h > 0 && h <= 100)) Add("options.hammingKeepPercent", $"must be in (0, 100], got {h}");
            if (o.RerankFactor is { } rf && rf < 1) Add("options.rerankFactor", $"must be ≥ 1, got {rf}");
            if (o.Branching is { } b && b is < 1 or > 16) Add("options.branching", $"must be between 1 and 16, got {b}");
            if (o.Depth is { } l && l is < 0 or > 4) Add("options.depth", $"must be between 0 and 4, got {l}");
        }
        return errors;
    }

    /// <summary>
    /// The parts checked against the index's schema: every <c>include</c> name must exist, and the filter must
    /// compile (its errors are reported under <c>filter</c> plus the JSON path of the offending part).
    /// </summary>
    public static void ValidateAttributes(QueryRequest r, LoadedIndex index, Dictionary<string, string[]> errors)
    {
        if (r.Include is { } include)
        {
            if (include.Length > 64) errors["include"] = [$"at most 64 attributes can be included, got {include.Length}"];
            foreach (var (i, name) in AttributeValues.Unknown(index.Manifest.Attributes, include))
                errors[$"include[{i}]"] = [index.Manifest.Attributes is null
                    ? $"the index has no attributes, so '{name}' cannot be included"
                    : $"the index has no attribute '{name}' (it has: {string.Join(", ", index.Manifest.Attributes.Attributes.Select(a => a.Name))})"];
        }
        if (r.Filter is { } filter)
        {
            try { index.Filters.Compile(filter); }
            catch (FilterException e) { errors[FilterField(e.Path)] = [e.Detail]; }
        }
    }

    /// <summary>A filter's JSON path as a request field: <c>$.price.$lt</c> → <c>filter.price.$lt</c>.</summary>
    public static string FilterField(string path) => path == "$" ? "filter" : "filter" + path[1..];

    private static void CheckVector(string field, float[]? v, int dimensions, Action<string, string> add)
    {
        if (v is null) { add(field, "is null"); return; }
        if (v.Length != dimensions) add(field, $"has {v.Length} dimensions; the index has {dimensions}");
        else if (v.Any(x => !float.IsFinite(x))) add(field, "contains a value that is not a finite number");
    }

    public static SearchOptions ToSearchOptions(int k, QueryOptions? o)
    {
        var d = new SearchOptions();
        return new SearchOptions
        {
            K = k,
            Exact = o?.Exact ?? false,
            CentroidFactor = o?.CentroidFactor ?? d.CentroidFactor,
            HammingKeepPercent = o?.HammingKeepPercent ?? d.HammingKeepPercent,
            RerankFactor = o?.RerankFactor ?? d.RerankFactor,
        };
    }
}
