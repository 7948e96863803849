using System.Globalization;
using System.Text;
using System.Text.Json;
using Squash.Index.Attributes;

namespace Squash.Search.Tests.Filters;

/// <summary>Generated attributes of every type (with missing values), random filters over them, and a reference evaluator.</summary>
public static class FilterTestData
{
    public static readonly string[] Colours = ["red", "green", "blue", "black", "white"];
    public static readonly string[] TagWords = ["a", "b", "c", "d", "e", "f"];

    /// <summary>price: number (many distinct → Lloyd cells), label: integer 0..9, qty: integer (many distinct), ok: bool, colour: category, tags.</summary>
    public static AttributeTable Table(int n, int seed, out string jsonl)
    {
        var rng = new Random(seed);
        var sb = new StringBuilder();
        for (int i = 0; i < n; i++)
        {
            var parts = new List<string>();
            if (rng.Next(12) > 0) parts.Add("\"price\":" + Math.Round(rng.NextDouble() * 500, 2).ToString("R", CultureInfo.InvariantCulture));
            if (rng.Next(12) > 0) parts.Add("\"label\":" + rng.Next(10));
            if (rng.Next(12) > 0) parts.Add("\"qty\":" + (rng.Next(2000) - 1000));
            if (rng.Next(12) > 0) parts.Add("\"ok\":" + (rng.Next(2) == 0 ? "true" : "false"));
            if (rng.Next(12) > 0) parts.Add($"\"colour\":\"{Colours[rng.Next(Colours.Length)]}\"");
            if (rng.Next(12) > 0) parts.Add("\"tags\":[" + string.Join(',', Enumerable.Range(0, rng.Next(4)).Select(_ => $"\"{TagWords[rng.Next(TagWords.Length)]}\"")) + "]");
            sb.Append($"{{\"id\":\"v{i}\",\"attributes\":{{{string.Join(',', parts)}}}}}\n");
        }
        jsonl = sb.ToString();
        return AttributeReader.ReadJsonLines(new StringReader(jsonl), "gen.jsonl");
    }

    /// <summary>A random leaf on one attribute, with operands drawn from near the data.</summary>
    public static string Leaf(Random rng, string? attribute = null, string? op = null)
    {
        attribute ??= new[] { "price", "label", "qty", "ok", "colour", "tags" }[rng.Next(6)];
        string[] ops = attribute switch
        {
            "price" or "label" or "qty" => ["$eq", "$ne", "$lt", "$lte", "$gt", "$gte", "$in", "$nin", "$exists", "bare"],
            _ => ["$eq", "$ne", "$in", "$nin", "$exists", "bare"],
        };
        op ??= ops[rng.Next(ops.Length)];
        string Value() => attribute switch
        {
            "price" => Math.Round(rng.NextDouble() * 520 - 10, rng.Next(3)).ToString("R", CultureInfo.InvariantCulture),
            "label" => (rng.Next(12) - 1).ToString(CultureInfo.InvariantCulture),
            "qty" => (rng.Next(2100) - 1050).ToString(CultureInfo.InvariantCulture),
            "ok" => rng.Next(2) == 0 ? "true" : "false",
            "colour" => $"\"{(rng.Next(8) == 0 ? "purple" : Colours[rng.Next(Colours.Length)])}\"",
            _ => $"\"{(rng.Next(8) == 0 ? "zz" : TagWords[rng.Next(TagWords.Length)])}\"",
        };
        return op switch
        {
            "bare" => $"{{\"{attribute}\":{Value()}}}",
            "$exists" => $"{{\"{attribute}\":{{\"$exists\":{(rng.Next(2) == 0 ? "true" : "false")}}}}}",
            "$in" or "$nin" => $"{{\"{attribute}\":{{\"{op}\":[{string.Join(',', Enumerable.Range(0, rng.Next(5)).Select(_ => Value()))}]}}}}",
            _ => $"{{\"{attribute}\":{{\"{op}\":{Value()}}}}}",
        };
    }

    /// <summary>A random nested filter ($and/$or/$not, field-level $not, implicit AND) up to <paramref name="depth"/>.</summary>
    public static string Nested(Random rng, int depth)
    {
        if (depth == 0 || rng.Next(3) == 0) return Leaf(rng);
        switch (rng.Next(5))
        {
            case 0: return $"{{\"$and\":[{string.Join(',', Enumerable.Range(0, 1 + rng.Next(3)).Select(_ => Nested(rng, depth - 1)))}]}}";
            case 1: return $"{{\"$or\":[{string.Join(',', Enumerable.Range(0, 1 + rng.Next(3)).Select(_ => Nested(rng, depth - 1)))}]}}";
            case 2: return $"{{\"$not\":{Nested(rng, depth - 1)}}}";
            case 3:
            {
                // Implicit AND of two different fields (one may carry a field-level $not).
                var a = Leaf(rng, "price", "$gte");
                var b = Leaf(rng, "colour");
                var inner = b[1..^1];
                if (rng.Next(2) == 0) inner = inner.Replace("\"colour\":", "\"colour\":{\"$not\":") + "}";
                return a[..^1] + "," + inner + "}";
            }
            default: return $"{{\"label\":{{\"$gte\":{rng.Next(10)},\"$lt\":{rng.Next(10)}}}}}";
        }
    }

    /// <summary>Reference semantics, written independently of the compiler: evaluates the filter JSON on one row's raw values.</summary>
    public static bool Reference(JsonElement filter, AttributeTable t, int row)
    {
        foreach (var p in filter.EnumerateObject())
        {
            bool ok = p.Name switch
            {
                "$and" => p.Value.EnumerateArray().All(e => Reference(e, t, row)),
                "$or" => p.Value.EnumerateArray().Any(e => Reference(e, t, row)),
                "$not" => !Reference(p.Value, t, row),
                _ => Field(p.Name, p.Value, t, row),
            };
            if (!ok) return false;
        }
        return true;
    }

    private static bool Field(string name, JsonElement spec, AttributeTable t, int row)
    {
        if (spec.ValueKind != JsonValueKind.Object) return Op(name, "$eq", spec, t, row);
        foreach (var op in spec.EnumerateObject())
        {
            bool ok = op.Name == "$not" ? !Field(name, op.Value, t, row) : Op(name, op.Name, op.Value, t, row);
            if (!ok) return false;
        }
        return true;
    }

    private static bool Op(string name, string op, JsonElement v, AttributeTable t, int row)
    {
        var col = t.Columns[t.Schema.IndexOf(name)];
        bool present = col.IsPresent(row);
        if (op == "$exists") return present == v.GetBoolean();
        if (!present) return op is "$ne" or "$nin";
        switch (col.Definition.Type)
        {
            case AttributeType.Number:
            case AttributeType.Integer:
            {
                decimal x = col.Numbers is not null ? (decimal)col.Numbers[row] : col.Integers![row];
                bool Eq(JsonElement e) => (decimal)e.GetDouble() == x;
                return op switch
                {
                    "$eq" => Eq(v),
                    "$ne" => !Eq(v),
                    "$lt" => x < (decimal)v.GetDouble(),
                    "$lte" => x <= (decimal)v.GetDouble(),
                    "$gt" => x > (decimal)v.GetDouble(),
                    "$gte" => x >= (decimal)v.GetDouble(),
                    "$in" => v.EnumerateArray().Any(Eq),
                    _ => !v.EnumerateArray().Any(Eq),
                };
            }
            case AttributeType.Bool:
            {
                bool b = col.Ids![row] == 1;
                return op switch
                {
                    "$eq" => v.GetBoolean() == b,
                    "$ne" => v.GetBoolean() != b,
                    "$in" => v.EnumerateArray().Any(e => e.GetBoolean() == b),
                    _ => !v.EnumerateArray().Any(e => e.GetBoolean() == b),
                };
            }
            default:
            {
                var have = col.Definition.Type == AttributeType.Category
                    ? new HashSet<string> { col.Dictionary![col.Ids![row]] }
                    : col.Tags(row).ToArray().Select(id => col.Dictionary![id]).ToHashSet();
                return op switch
                {
                    "$eq" => have.Contains(v.GetString()!),
                    "$ne" => !have.Contains(v.GetString()!),
                    "$in" => v.EnumerateArray().Any(e => have.Contains(e.GetString()!)),
                    _ => !v.EnumerateArray().Any(e => have.Contains(e.GetString()!)),
                };
            }
        }
    }
}
