using System.Text.Json;
using Squash.Index.Attributes;
using Squash.Search.Filters;

namespace Squash.Search.Writes;

/// <summary>
/// Evaluates a filter (already checked by <see cref="Filters.FilterCompiler"/>) on the JSON attributes of a write in the
/// log tail. Tail rows have raw values, not codes, and may carry category values the index's dictionaries have never
/// seen, so they are matched on the values themselves, with the semantics of the compiled filter: an object's fields
/// AND, a bare value means $eq; a missing value matches $ne, $nin and $exists:false only; on tags $eq/$in mean "holds
/// one of" and $ne/$nin "holds none of"; $not is plain negation.
/// </summary>
public static class TailFilter
{
    public static bool Matches(JsonElement filter, JsonElement? attributes, IndexAttributes? schema)
    {
        foreach (var p in filter.EnumerateObject())
        {
            bool ok = p.Name switch
            {
                "$and" => p.Value.EnumerateArray().All(f => Matches(f, attributes, schema)),
                "$or" => p.Value.EnumerateArray().Any(f => Matches(f, attributes, schema)),
                "$not" => !Matches(p.Value, attributes, schema),
                _ => Field(p.Name, p.Value, attributes, schema),
            };
            if (!ok) return false;
        }
        return true;
    }

    private static bool Field(string name, JsonElement condition, JsonElement? attributes, IndexAttributes? schema)
    {
        int a = schema?.IndexOf(name) ?? -1;
        if (a < 0) return false; // the compiler refuses it; defensive
        var type = schema!.Attributes[a].Type;
        JsonElement? value = attributes is { ValueKind: JsonValueKind.Object } o && o.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;
        if (condition.ValueKind != JsonValueKind.Object) return Leaf("$eq", condition, value, type);
        foreach (var op in condition.EnumerateObject())
        {
            bool ok = op.Name == "$not" ? !Field(name, op.Value, attributes, schema) : Leaf(op.Name, op.Value, value, type);
            if (!ok) return false;
        }
        return true;
    }

    private static bool Leaf(string op, JsonElement operand, JsonElement? value, AttributeType type)
    {
        if (op == "$exists") return operand.GetBoolean() == value.HasValue;
        bool negate = op is "$ne" or "$nin";
        if (value is not { } x) return negate;
        var items = op is "$in" or "$nin" ? operand.EnumerateArray().ToArray() : [operand];
        if (type == AttributeType.Integer)
        {
            // The compiled filter's rule (Filters.RangeLeaf.IntegerInterval), so a row matches the same bounds once indexed.
            long xv = WholeNumber.TryRead(x, out long whole) ? whole : x.GetInt64();
            bool inList = items.Any(i => RangeLeaf.IntegerMatches(op is "$in" or "$nin" or "$ne" ? "$eq" : op, NumericOperand.Read(i), xv));
            return inList != negate;
        }
        // Number attributes compare as doubles, as the index holds them (RangeLeaf's NumericOperand.Double).
        switch (op)
        {
            case "$lt": return x.GetDouble() < operand.GetDouble();
            case "$lte": return x.GetDouble() <= operand.GetDouble();
            case "$gt": return x.GetDouble() > operand.GetDouble();
            case "$gte": return x.GetDouble() >= operand.GetDouble();
        }
        bool any = type == AttributeType.Tags
            ? x.EnumerateArray().Any(t => items.Any(i => i.GetString() == t.GetString()))
            : items.Any(i => EqualValues(x, i, type));
        return any != negate;
    }

    private static bool EqualValues(JsonElement x, JsonElement operand, AttributeType type) => type switch
    {
        AttributeType.Number => x.GetDouble() == operand.GetDouble(),
        AttributeType.Bool => x.GetBoolean() == operand.GetBoolean(),
        _ => x.GetString() == operand.GetString(),
    };
}
