using System.Text.Json;
using Squash.Index.Attributes;
using Squash.Index.Model;

namespace Squash.Search.Filters;

/// <summary>A filter that cannot be compiled; <see cref="Path"/> is the JSON path of the offending part (e.g. <c>$.price.$lt</c>).</summary>
public sealed class FilterException(string path, string detail) : Exception($"filter {path}: {detail}")
{
    public string Path { get; } = path;
    public string Detail { get; } = detail;
}

/// <summary>
/// Compiles filters in the Pinecone / S3-Vectors JSON convention against an index's schema, once per query:
/// <code>
/// {"category": {"$in": ["shoes", "bags"]}, "price": {"$lt": 100}, "$or": [{...}, {...}]}
/// </code>
/// Operators: $eq $ne $lt $lte $gt $gte $in $nin $exists on a field; $and $or (arrays of filters) and $not
/// (a filter, or a field's operator object) anywhere. An object's fields combine with AND; a bare value means
/// $eq. On tags, $eq/$in mean "holds one of", $ne/$nin "holds none of".
/// Missing values: a vector without the attribute matches $exists:false, $ne and $nin, and every comparison,
/// $eq and $in on it is false; $not is plain negation, so $not of a false clause matches it.
/// The per-index dictionaries (string → id) are built once here and shared by every query.
/// </summary>
public sealed class FilterCompiler
{
    public const int MaxDepth = 32;

    /// <summary>
    /// Most clauses a filter sent to the API may hold (<see cref="TooManyClauses"/>): compiling costs ~40 µs and 3 KB a
    /// clause, on the coordinator and again on every tree node, so a 4 MB body of 100,000 $or clauses took seconds and
    /// ~300 MB per compile and left a query incomplete when its nodes timed out. An $in list is one clause however long.
    /// </summary>
    public const int MaxClauses = 10_000;

    /// <summary>
    /// Most clauses of a strong read's log-tail deleteWhere filters that travel to the tree's nodes inside the query's filter
    /// (as AND NOT any of them). A tail whose deleteWheres hold more is resolved by the coordinator into excluded rows instead
    /// (<see cref="Writes.PreparedTail"/>): every deleteWhere was bounded when it was written, but a tail may hold any number.
    /// </summary>
    public const int MaxTailClauses = MaxClauses;

    /// <summary>
    /// Most clauses the filter of a scan-node request (<c>/scan</c>) may hold: what a coordinator can send, the query's
    /// filter (<see cref="MaxClauses"/>) joined to the tail's deleteWheres (<see cref="MaxTailClauses"/>) by $and, $not and $or.
    /// </summary>
    public const int MaxScanClauses = MaxClauses + MaxTailClauses + 3;

    /// <summary>
    /// Null, or why <paramref name="filter"/> holds too many clauses: every attribute name, operator and $and/$or/$not
    /// counts once, the values of an $in or $nin list do not. Counting stops past <paramref name="max"/>, so a huge filter
    /// costs no more to refuse than a legal one to count. The filter itself is not checked here (<see cref="Compile(JsonElement)"/> does).
    /// </summary>
    public static FilterException? TooManyClauses(JsonElement filter, int max = MaxClauses) =>
        CountClauses(filter, max) > max
            ? new FilterException("$", $"holds more than {max:N0} clauses (each attribute, operator, $and, $or and $not counts once; the values of an $in list count as one): use $in for a long list of values, or split the request")
            : null;

    /// <summary>The clauses of <paramref name="filter"/> as <see cref="TooManyClauses"/> counts them, up to <paramref name="max"/> + 1 (counting stops there).</summary>
    public static int CountClauses(JsonElement filter, int max = int.MaxValue - 1)
    {
        int clauses = 0;
        Count(filter);
        return clauses;

        void Count(JsonElement e)
        {
            if (clauses > max) return;
            if (e.ValueKind == JsonValueKind.Object)
                foreach (var p in e.EnumerateObject())
                {
                    if (++clauses > max) return;
                    Count(p.Value);
                }
            else if (e.ValueKind == JsonValueKind.Array)
                foreach (var item in e.EnumerateArray())
                {
                    // Filters inside $and/$or count; an $in list's values do not.
                    if (item.ValueKind == JsonValueKind.Object) Count(item);
                    if (clauses > max) return;
                }
        }
    }

    private readonly IndexAttributes? _attributes;
    private readonly Dictionary<string, int>?[] _dictionaries;
    private long _compilations;

    /// <summary>
    /// Filters compiled by this compiler so far (successfully or not). A compile costs ~40 µs and 3 KB a clause, so a request
    /// compiles its filter once and hands the result on; the tests hold the endpoints to that with this count.
    /// </summary>
    public long Compilations => Interlocked.Read(ref _compilations);

    public FilterCompiler(IndexAttributes? attributes)
    {
        _attributes = attributes;
        int count = attributes?.Attributes.Count ?? 0;
        _dictionaries = new Dictionary<string, int>?[count];
        for (int a = 0; a < count; a++)
        {
            var values = attributes!.Attributes[a].Values;
            if (values is null) continue;
            var d = new Dictionary<string, int>(values.Length, StringComparer.Ordinal);
            for (int i = 0; i < values.Length; i++) d.TryAdd(values[i], i);
            _dictionaries[a] = d;
        }
    }

    public CompiledFilter Compile(string json)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 256 }); }
        catch (JsonException e) { throw new FilterException("$", $"not valid JSON: {e.Message}"); }
        using (doc) return Compile(doc.RootElement);
    }

    /// <summary>Compiles a filter that may hold at most <paramref name="maxClauses"/> clauses (<see cref="TooManyClauses"/>).</summary>
    public CompiledFilter Compile(JsonElement filter, int maxClauses)
    {
        if (filter.ValueKind == JsonValueKind.Object && maxClauses < int.MaxValue && TooManyClauses(filter, maxClauses) is { } tooMany) throw tooMany;
        return Compile(filter);
    }

    public CompiledFilter Compile(JsonElement filter)
    {
        Interlocked.Increment(ref _compilations);
        if (filter.ValueKind != JsonValueKind.Object) throw new FilterException("$", $"a filter must be a JSON object, got {Kind(filter)}");
        var root = ParseFilter(filter, "$", 1);
        return new CompiledFilter(root, root is AndNode { Children.Length: 0 },
            System.IO.Hashing.XxHash3.HashToUInt64(System.Text.Encoding.UTF8.GetBytes(filter.GetRawText())));
    }

    private FilterNode ParseFilter(JsonElement obj, string path, int depth)
    {
        CheckDepth(path, depth);
        var parts = new List<FilterNode>();
        foreach (var prop in obj.EnumerateObject())
        {
            var p = path + "." + prop.Name;
            switch (prop.Name)
            {
                case "$and":
                case "$or":
                {
                    if (prop.Value.ValueKind != JsonValueKind.Array || prop.Value.GetArrayLength() == 0)
                        throw new FilterException(p, $"{prop.Name} expects a non-empty array of filters");
                    var children = new List<FilterNode>();
                    int i = 0;
                    foreach (var e in prop.Value.EnumerateArray())
                    {
                        var ep = $"{p}[{i++}]";
                        if (e.ValueKind != JsonValueKind.Object) throw new FilterException(ep, $"expected a filter object, got {Kind(e)}");
                        children.Add(ParseFilter(e, ep, depth + 2));
                    }
                    parts.Add(prop.Name == "$and" ? All(children) : new OrNode(children.ToArray()));
                    break;
                }
                case "$not":
                    if (prop.Value.ValueKind != JsonValueKind.Object) throw new FilterException(p, $"$not expects a filter object, got {Kind(prop.Value)}");
                    parts.Add(new NotNode(ParseFilter(prop.Value, p, depth + 1)));
                    break;
                default:
                    if (prop.Name.StartsWith('$')) throw new FilterException(p, $"unknown operator '{prop.Name}' (expected $and, $or, $not or an attribute name)");
                    parts.Add(ParseField(prop.Name, prop.Value, p, depth));
                    break;
            }
        }
        return All(parts);
    }

    /// <summary>
    /// The AND of some parts, with every interval on one attribute merged into one (so the planner estimates the
    /// range, not the product of its two ends, and the value index finds it with one pair of binary searches).
    /// </summary>
    private static FilterNode All(List<FilterNode> parts)
    {
        var merged = new List<FilterNode>(parts.Count);
        foreach (var part in parts)
        {
            int same = part is RangeLeaf r ? merged.FindIndex(m => m is RangeLeaf o && o.Attribute == r.Attribute) : -1;
            if (same >= 0) merged[same] = ((RangeLeaf)merged[same]).Intersect((RangeLeaf)part);
            else merged.Add(part);
        }
        return merged.Count == 1 ? merged[0] : new AndNode(merged.ToArray());
    }

    private FilterNode ParseField(string name, JsonElement value, string path, int depth)
    {
        CheckDepth(path, depth);
        int a = _attributes?.IndexOf(name) ?? -1;
        if (a < 0)
            throw new FilterException(path, _attributes is null ? $"unknown attribute '{name}': the index has no attributes" : $"unknown attribute '{name}'");
        if (value.ValueKind != JsonValueKind.Object) return Leaf(a, "$eq", value, path);
        CheckDepth(path, depth + 1);
        var parts = new List<FilterNode>();
        foreach (var op in value.EnumerateObject())
        {
            var p = path + "." + op.Name;
            if (op.Name == "$not")
            {
                // A bare value under $not means "not equal"; an array is ambiguous ($nin says it).
                if (op.Value.ValueKind == JsonValueKind.Array) throw new FilterException(p, "$not expects an operator object or a single value, got an array");
                parts.Add(new NotNode(ParseField(name, op.Value, p, depth + 1)));
            }
            else
            {
                parts.Add(Leaf(a, op.Name, op.Value, p));
            }
        }
        if (parts.Count == 0) throw new FilterException(path, "expected at least one operator");
        return All(parts);
    }

    private static void CheckDepth(string path, int depth)
    {
        if (depth > MaxDepth) throw new FilterException(path, $"filter is nested deeper than {MaxDepth} levels");
    }

    private FilterNode Leaf(int a, string op, JsonElement v, string path)
    {
        var info = _attributes!.Attributes[a];
        string typeName = AttributeSchema.TypeName(info.Type);
        if (op == "$exists")
        {
            if (v.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw new FilterException(path, $"$exists expects true or false, got {Kind(v)}");
            return new ExistsLeaf(a, v.GetBoolean());
        }
        bool list = op is "$in" or "$nin";
        if (op is not ("$eq" or "$ne" or "$lt" or "$lte" or "$gt" or "$gte" or "$in" or "$nin"))
            throw new FilterException(path, $"unknown operator '{op}' (expected $eq, $ne, $lt, $lte, $gt, $gte, $in, $nin, $exists or $not)");
        if (list && v.ValueKind != JsonValueKind.Array) throw new FilterException(path, $"{op} expects an array, got {Kind(v)}");
        if (!list && v.ValueKind == JsonValueKind.Array)
            throw new FilterException(path, op == "$eq" ? "an array needs $in or $nin" : $"{op} expects a single value, got an array");
        bool compare = op is "$lt" or "$lte" or "$gt" or "$gte";
        if (compare && info.Type is not (AttributeType.Number or AttributeType.Integer))
            throw new FilterException(path, $"{op} is not defined for {typeName} attribute '{info.Name}'");
        var items = list ? v.EnumerateArray().ToArray() : [v];

        switch (info.Type)
        {
            case AttributeType.Number:
            case AttributeType.Integer:
            {
                var operands = new NumericOperand[items.Length];
                for (int i = 0; i < items.Length; i++)
                {
                    var e = items[i];
                    if (e.ValueKind != JsonValueKind.Number)
                        throw new FilterException(list ? $"{path}[{i}]" : path, $"expected a number for {typeName} attribute '{info.Name}', got {Kind(e)}");
                    operands[i] = NumericOperand.Read(e);
                }
                return NumericLeaf.Create(a, info, op, operands);
            }
            case AttributeType.Bool:
            {
                var set = new bool[2];
                for (int i = 0; i < items.Length; i++)
                {
                    var e = items[i];
                    if (e.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
                        throw new FilterException(list ? $"{path}[{i}]" : path, $"expected true or false for bool attribute '{info.Name}', got {Kind(e)}");
                    set[e.GetBoolean() ? 1 : 0] = true;
                }
                bool negate = op is "$ne" or "$nin";
                var table = new byte[256];
                table[0] = set[0] != negate ? FilterNode.True : FilterNode.False;
                table[1] = set[1] != negate ? FilterNode.True : FilterNode.False;
                table[AttributeEncoding.MissingCode] = negate ? FilterNode.True : FilterNode.False;
                return new ByteTableLeaf(a, table, null);
            }
            default:
            {
                var dict = _dictionaries[a]!;
                var ids = new List<int>(items.Length);
                for (int i = 0; i < items.Length; i++)
                {
                    var e = items[i];
                    if (e.ValueKind != JsonValueKind.String)
                        throw new FilterException(list ? $"{path}[{i}]" : path, $"expected a string for {typeName} attribute '{info.Name}', got {Kind(e)}");
                    // A value the index has never seen matches nothing (and is no error: data changes).
                    if (dict.TryGetValue(e.GetString()!, out int id)) ids.Add(id);
                }
                var idSet = new IdSet(ids, dict.Count);
                bool negate = op is "$ne" or "$nin";
                var distinct = ids.Distinct().Order().ToArray();
                return info.Type == AttributeType.Category ? new CategoryLeaf(a, idSet, distinct, negate) : new TagsLeaf(a, idSet, distinct, negate);
            }
        }
    }

    private static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        _ => "null",
    };
}

/// <summary>Number and integer leaves: a per-cell table from the manifest's cell ranges, and an exact comparison on raw values.</summary>
internal static class NumericLeaf
{
    public static FilterNode Create(int a, AttributeInfo info, string op, NumericOperand[] operands)
    {
        if (op is "$eq" or "$lt" or "$lte" or "$gt" or "$gte") return RangeLeaf.Create(a, info, op, operands[0]);
        // Left: $ne, $in, $nin — membership in a list of values (one for $ne), negated for $ne and $nin.
        bool negate = op is "$ne" or "$nin";
        bool integer = info.Type == AttributeType.Integer;
        // An integer equals an operand only when the operand is that whole number as written (3, 3.0, 3e0; never
        // 2.9999999999999999999, which a double would round to 3): the $eq rule of RangeLeaf, which the log tail uses too.
        var ints = new HashSet<long>();
        if (integer)
            foreach (var o in operands)
                if (RangeLeaf.IntegerInterval("$eq", o) is (long whole, _, false)) ints.Add(whole);
        // Sorted, so a cell's [min, max] is checked with one binary search; for integers only the whole values, so that the
        // cells decide exactly what the recheck would.
        var sorted = integer ? ints.Select(v => (double)v).ToArray() : operands.Select(o => o.Double).ToArray();
        Array.Sort(sorted);
        var table = new byte[256];
        for (int c = 0; c < info.Cells; c++)
        {
            byte t;
            if (info.CellCounts![c] == 0) t = FilterNode.False;
            else
            {
                t = InRange(sorted, info.CellMin![c], info.CellMax![c]);
                // Past ±2^53 doubles merge integers, so only the exact recheck may decide.
                if (info.Lossy) t = FilterNode.Maybe;
                if (negate) t = (byte)(FilterNode.True - t);
            }
            table[c] = t;
        }
        table[AttributeEncoding.MissingCode] = negate ? FilterNode.True : FilterNode.False;

        Func<PartitionAttributeColumn, int, bool> exact = integer
            ? (col, r) => ints.Contains(col.Integers![r])
            : (col, r) => Array.BinarySearch(sorted, col.Numbers![r]) >= 0;
        if (negate)
        {
            var inner = exact;
            exact = (col, r) => !inner(col, r);
        }
        return new ByteTableLeaf(a, table, exact);
    }

    private static byte InRange(double[] sorted, double min, double max)
    {
        int i = Array.BinarySearch(sorted, min);
        if (i < 0) i = ~i;
        if (i >= sorted.Length || sorted[i] > max) return FilterNode.False;
        return min == max ? FilterNode.True : FilterNode.Maybe;
    }
}

/// <summary>A filter compiled against one index: code-level evaluation, exact recheck and planner estimates.</summary>
public sealed class CompiledFilter
{
    private readonly FilterNode _root;

    internal CompiledFilter(FilterNode root, bool matchesAll, ulong key = 0)
    {
        _root = root;
        MatchesAll = matchesAll;
        Key = key;
    }

    /// <summary>A hash of the filter's JSON text as sent: with the query vector it picks the plan of a mixed recall target (<see cref="RecallPlanner.Draw"/>).</summary>
    public ulong Key { get; }

    /// <summary>True for the empty filter <c>{}</c>.</summary>
    public bool MatchesAll { get; }

    /// <summary>Per row: 0 = cannot match, 1 = may match (recheck), 2 = matches. Never 0 for a matching row.</summary>
    public void EvaluateCodes(PartitionAttributes attributes, Span<byte> result)
    {
        if (result.Length != attributes.Count) throw new ArgumentException("result length must equal the partition size");
        _root.EvaluateCodes(attributes, result);
    }

    /// <summary>The exact predicate on raw values.</summary>
    public bool Matches(PartitionAttributes attributes, int row) => _root.Matches(attributes, row);

    /// <summary>
    /// The category values every match holds, on an attribute <paramref name="usable"/> accepts (an $eq/$in on it, alone or
    /// as one part of an AND): the filtered planner ranks partitions by where those values' rows lie. Null when there is none.
    /// </summary>
    public (int Attribute, int[] Ids)? ValueTerm(Func<int, bool> usable)
    {
        ArgumentNullException.ThrowIfNull(usable);
        return MatchesAll ? null : _root.ValueTerm(usable);
    }

    /// <summary>
    /// <see cref="Estimate(PartitionEntry)"/> for every partition of an index at once (what the planner needs), from
    /// the manifest's statistics rearranged cell-major on first use: a range costs O(1) per partition.
    /// </summary>
    public void EstimateAll(IReadOnlyList<PartitionEntry> partitions, Span<double> estimates, Span<long> upper)
    {
        int n = partitions.Count;
        if (MatchesAll || n == 0 || partitions[0].AttributeStats is null)
        {
            for (int p = 0; p < n; p++) estimates[p] = upper[p] = MatchesAll ? partitions[p].Count : 0;
            return;
        }
        var counts = PlannerCounts.For(partitions);
        var lower = new long[n];
        _root.EstimateAll(partitions, counts, estimates, lower, upper);
        for (int p = 0; p < n; p++)
        {
            int size = partitions[p].Count;
            estimates[p] = Math.Clamp(estimates[p], 0, 1) * size;
            upper[p] = Math.Clamp(upper[p], 0, size);
        }
    }

    /// <summary>
    /// Whether <see cref="TryCandidates"/> can answer from the partitions' value indexes: ranges and equalities on
    /// numbers and integers, $eq/$in on categories and tags (up to <see cref="FilterNode.MaxIndexedValues"/> values),
    /// an AND with one such part, an OR of such parts. Negations and $exists cannot.
    /// </summary>
    public bool Indexable => !MatchesAll && _root.Indexable;

    /// <summary>Whether <see cref="TryCandidates"/> gives exactly the matches (a range, or $eq/$in on a category or tags, or an OR of such): no recheck needed.</summary>
    public bool IndexedExactly => Indexable && _root.IndexedExactly;

    /// <summary>
    /// The rows of one partition that may match, from its value indexes (binary searches, no pass over the rows):
    /// a superset of the matches, ascending, without repeats, in <paramref name="rows"/>[0..count). Every one still
    /// needs <see cref="Matches"/>. False (and nothing written) when the filter is not <see cref="Indexable"/> or
    /// more than <paramref name="limit"/> rows would come back: evaluating the codes is then cheaper.
    /// With <paramref name="ascending"/> false the rows may come in any order (still without repeats), which saves a sort
    /// where the value index gives each row once.
    /// </summary>
    public bool TryCandidates(PartitionAttributes attributes, ref int[] rows, out int count, int limit = int.MaxValue, bool ascending = true)
    {
        count = 0;
        if (!Indexable) return false;
        if (!_root.AddIndexed(attributes, ref rows, ref count, limit)) { count = 0; return false; }
        if (count > 1 && (ascending || !_root.IndexedDistinct))
        {
            var span = rows.AsSpan(0, count);
            span.Sort();
            int unique = 1;
            for (int i = 1; i < span.Length; i++) if (span[i] != span[unique - 1]) span[unique++] = span[i];
            count = unique;
        }
        return true;
    }

    /// <summary>
    /// From the partition's manifest statistics: the estimated number of matches (attributes assumed
    /// independent), and an upper bound on the rows the code-level filter can pass (0: skip safely).
    /// </summary>
    public (double Estimate, long Upper) Estimate(PartitionEntry partition)
    {
        if (MatchesAll) return (partition.Count, partition.Count);
        if (partition.AttributeStats is null) return (0, 0);
        var (f, _, hi) = _root.Estimate(partition.AttributeStats, partition.Count);
        return (Math.Clamp(f, 0, 1) * partition.Count, Math.Clamp(hi, 0, partition.Count));
    }
}
