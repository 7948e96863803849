using System.Text.Json.Serialization;

namespace Squash.Index.Attributes;

/// <summary>The value types an attribute can have.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<AttributeType>))]
public enum AttributeType
{
    /// <summary>A double; filtered through Lloyd cells, rechecked exactly.</summary>
    Number,
    /// <summary>A 64-bit integer; filtered through Lloyd cells, rechecked exactly.</summary>
    Integer,
    Bool,
    /// <summary>One string per vector, dictionary-encoded (exact at the code level).</summary>
    Category,
    /// <summary>A set of strings per vector, dictionary-encoded (exact at the code level).</summary>
    Tags,
}

public sealed record AttributeDefinition(string Name, AttributeType Type);

/// <summary>Thrown for unreadable attribute input; the message names the file, the 1-based line and the attribute.</summary>
public sealed class AttributeFormatException(string message) : Exception(message);

/// <summary>An ordered list of attributes; declared by the user or inferred from the data.</summary>
public sealed class AttributeSchema
{
    private readonly Dictionary<string, int> _byName;

    public AttributeSchema(IReadOnlyList<AttributeDefinition> attributes)
    {
        Attributes = attributes;
        _byName = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < attributes.Count; i++)
            if (!_byName.TryAdd(attributes[i].Name, i)) throw new ArgumentException($"attribute '{attributes[i].Name}' is declared twice");
    }

    public IReadOnlyList<AttributeDefinition> Attributes { get; }
    public int Count => Attributes.Count;

    public int IndexOf(string name) => _byName.TryGetValue(name, out int i) ? i : -1;

    /// <summary>Parses "name:type,name:type" (types: number, integer, bool, category, tags).</summary>
    public static AttributeSchema Parse(string text)
    {
        var list = new List<AttributeDefinition>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int colon = part.LastIndexOf(':');
            if (colon <= 0) throw new ArgumentException($"schema entry '{part}' must be name:type");
            var name = part[..colon].Trim();
            list.Add(new AttributeDefinition(name, ParseType(part[(colon + 1)..].Trim())));
        }
        return new AttributeSchema(list);
    }

    public static AttributeType ParseType(string s) => s.ToLowerInvariant() switch
    {
        "number" or "float" or "double" => AttributeType.Number,
        "integer" or "int" => AttributeType.Integer,
        "bool" or "boolean" => AttributeType.Bool,
        "category" or "string" => AttributeType.Category,
        "tags" => AttributeType.Tags,
        _ => throw new ArgumentException($"unknown attribute type '{s}' (number, integer, bool, category or tags)"),
    };

    public static string TypeName(AttributeType t) => t.ToString().ToLowerInvariant();
}
