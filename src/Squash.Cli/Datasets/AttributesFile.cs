using System.Globalization;

namespace Squash.Cli.Datasets;

/// <summary>
/// JSON Lines attribute files: one object per base vector, <c>{"id":"&lt;index&gt;","attributes":{...}}</c>,
/// the form the filtered-search tools ingest.
/// </summary>
public static class AttributesFile
{
    /// <summary>Writes one line per label with a single integer attribute named <paramref name="attribute"/>.</summary>
    public static void WriteIntAttribute(string path, IReadOnlyList<int> values, string attribute = "label")
    {
        ArgumentNullException.ThrowIfNull(values);
        ArgumentException.ThrowIfNullOrEmpty(attribute);
        // Serialise the key once with JSON escaping; the rest is digits and fixed punctuation.
        string key = "\"" + System.Text.Json.JsonEncodedText.Encode(attribute) + "\"";
        AtomicFile.WriteText(path, writer =>
        {
            for (int i = 0; i < values.Count; i++)
            {
                writer.Write("{\"id\":\"");
                writer.Write(i.ToString(CultureInfo.InvariantCulture));
                writer.Write("\",\"attributes\":{");
                writer.Write(key);
                writer.Write(':');
                writer.Write(values[i].ToString(CultureInfo.InvariantCulture));
                writer.Write("}}\n");
            }
        });
    }
}
