using System.Text.Json.Nodes;
using Squash.Index.Attributes;
using Squash.Index.Model;

namespace Squash.Functions.Api;

/// <summary>Turns one stored row's raw attribute values back into JSON for <c>include</c>.</summary>
public static class AttributeValues
{
    /// <summary>Attribute positions in the schema for the requested names; unknown names are -1.</summary>
    public static int[] Resolve(IndexAttributes? schema, IReadOnlyList<string> names) =>
        names.Select(n => schema?.IndexOf(n) ?? -1).ToArray();

    /// <summary>The requested attributes of one row; a missing value is left out of the object.</summary>
    public static JsonObject Read(IndexAttributes schema, PartitionAttributes partition, int row, IReadOnlyList<string> names)
    {
        var result = new JsonObject();
        foreach (var name in names)
        {
            int a = schema.IndexOf(name);
            if (a < 0) continue;
            var column = partition.Columns[a];
            if (!column.IsPresent(row)) continue;
            var info = schema.Attributes[a];
            result[name] = column.Type switch
            {
                AttributeType.Number => JsonValue.Create(column.Numbers![row]),
                AttributeType.Integer => JsonValue.Create(column.Integers![row]),
                AttributeType.Bool => JsonValue.Create(column.Codes![row] != 0),
                AttributeType.Category => JsonValue.Create(info.Values![column.Ids![row]]),
                AttributeType.Tags => new JsonArray(column.Tags(row).ToArray().Select(t => (JsonNode?)JsonValue.Create(info.Values![t])).ToArray()),
                _ => null,
            };
        }
        return result;
    }
}
