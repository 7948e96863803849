using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Squash.Index.Attributes;

/// <summary>
/// Reads attributes that sit beside a vector file, matched by position (line i describes vector i):
/// JSON lines (<c>{"id": "...", "attributes": {...}}</c>, id optional) or CSV (header row, an optional
/// <c>id</c> column, an empty cell is a missing value); a JSON row with another key, or a key twice, is refused. The schema is the declared one or inferred:
/// JSON numbers → integer when every value is integral, else number; true/false → bool; string →
/// category; array of strings → tags. CSV cells: all true/false → bool, all integers → integer, all
/// numbers → number, otherwise category (tags only when declared; values separated by '|').
/// </summary>
public static partial class AttributeReader
{
    private enum Kind : byte { Missing, Number, Bool, String, Strings }

    private readonly struct Raw
    {
        public Kind Kind { get; init; }
        public double Number { get; init; }
        /// <summary>Written as an integer (digits only): what schema inference calls an integer column.</summary>
        public bool Integral { get; init; }
        /// <summary>A whole number however written (5, 5.0, 5e0), in <see cref="Long"/>: what a declared integer attribute takes.</summary>
        public bool Whole { get; init; }
        public long Long { get; init; }
        public bool Bool { get; init; }
        public string? Text { get; init; }
        public string[]? Texts { get; init; }
    }

    /// <summary>Reads a .jsonl/.json or .csv file (chosen by extension).</summary>
    public static AttributeTable ReadFile(string path, AttributeSchema? declared = null)
    {
        var ext = Path.GetExtension(path).ToLowerInvariant();
        using var reader = new StreamReader(path, Encoding.UTF8);
        var name = Path.GetFileName(path);
        return ext switch
        {
            ".csv" => ReadCsv(reader, name, declared),
            ".jsonl" or ".json" or ".ndjson" => ReadJsonLines(reader, name, declared),
            _ => throw new AttributeFormatException($"attributes file '{name}' must be .jsonl or .csv"),
        };
    }

    public static AttributeTable ReadJsonLines(TextReader reader, string name, AttributeSchema? declared = null)
    {
        var names = new List<string>();
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        var rows = new List<Dictionary<int, Raw>>();
        var ids = new List<string?>();
        var lines = new List<int>();
        bool anyId = false;
        string? text;
        int lineNo = 0, blankRun = 0;
        while ((text = reader.ReadLine()) is not null)
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(text)) { blankRun++; continue; }
            // Rows are matched to vectors by position, so a blank line in the middle would shift every later row.
            if (blankRun > 0) throw new AttributeFormatException($"{name} line {lineNo - 1}: blank line inside the file (rows are matched to vectors by position)");
            var (id, attributes) = ParseJsonRow(text, name, lineNo, declared);
            var row = new Dictionary<int, Raw>();
            foreach (var (attribute, value) in attributes)
            {
                if (!index.TryGetValue(attribute, out int ai))
                {
                    ai = index[attribute] = names.Count;
                    names.Add(attribute);
                }
                row[ai] = value;
            }
            anyId |= id is not null;
            rows.Add(row);
            ids.Add(id);
            lines.Add(lineNo);
        }
        return Build(name, names, index, rows, anyId ? ids.ToArray() : null, lines, declared);
    }

    /// <summary>One JSON line: its id (null: none) and its attributes in the order written.</summary>
    private static (string? Id, List<(string Name, Raw Value)> Attributes) ParseJsonRow(string text, string name, int lineNo, AttributeSchema? declared)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(text); }
        catch (JsonException e) { throw new AttributeFormatException($"{name} line {lineNo}: not valid JSON: {e.Message}"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new AttributeFormatException($"{name} line {lineNo}: expected a JSON object");
            string? id = null;
            var attributes = new List<(string, Raw)>();
            bool seenId = false, seenAttributes = false;
            foreach (var prop in root.EnumerateObject())
            {
                // A row holds "id" and "attributes" once each: anything else is a typo or a misplaced attribute that
                // would otherwise vanish silently, and a repeated key would silently keep only its last value.
                if (prop.Name == "id")
                {
                    if (seenId) throw new AttributeFormatException($"{name} line {lineNo}: key \"id\" appears twice");
                    seenId = true;
                    if (prop.Value.ValueKind == JsonValueKind.Null) continue;
                    if (prop.Value.ValueKind != JsonValueKind.String) throw new AttributeFormatException($"{name} line {lineNo}: \"id\" must be a string");
                    id = prop.Value.GetString();
                }
                else if (prop.Name == "attributes")
                {
                    if (seenAttributes) throw new AttributeFormatException($"{name} line {lineNo}: key \"attributes\" appears twice");
                    seenAttributes = true;
                    if (prop.Value.ValueKind == JsonValueKind.Null) continue;
                    if (prop.Value.ValueKind != JsonValueKind.Object) throw new AttributeFormatException($"{name} line {lineNo}: \"attributes\" must be an object");
                    foreach (var a in prop.Value.EnumerateObject())
                    {
                        // The row's own list holds the names seen so far: no set allocated per row on the build's hot path.
                        for (int seen = 0; seen < attributes.Count; seen++)
                            if (attributes[seen].Item1 == a.Name) throw new AttributeFormatException($"{name} line {lineNo}, attribute '{a.Name}': appears twice");
                        if (declared is not null && declared.IndexOf(a.Name) < 0)
                            throw new AttributeFormatException($"{name} line {lineNo}, attribute '{a.Name}': not in the declared schema");
                        attributes.Add((a.Name, FromJson(a.Value, name, lineNo, a.Name)));
                    }
                }
                else
                {
                    throw new AttributeFormatException($"{name} line {lineNo}: unknown key \"{prop.Name}\" (a row holds \"id\" and \"attributes\"; attributes go inside \"attributes\")");
                }
            }
            return (id, attributes);
        }
    }

    private static Raw FromJson(JsonElement v, string file, int line, string attr)
    {
        switch (v.ValueKind)
        {
            case JsonValueKind.Null: return new Raw { Kind = Kind.Missing };
            case JsonValueKind.True: return new Raw { Kind = Kind.Bool, Bool = true };
            case JsonValueKind.False: return new Raw { Kind = Kind.Bool, Bool = false };
            case JsonValueKind.String: return new Raw { Kind = Kind.String, Text = v.GetString() };
            case JsonValueKind.Number:
                bool integral = v.TryGetInt64(out long l);
                bool whole = integral || WholeNumber.TryRead(v, out l);
                return new Raw { Kind = Kind.Number, Number = v.GetDouble(), Integral = integral, Whole = whole, Long = l };
            case JsonValueKind.Array:
                var list = new List<string>();
                foreach (var e in v.EnumerateArray())
                {
                    if (e.ValueKind != JsonValueKind.String) throw new AttributeFormatException($"{file} line {line}, attribute '{attr}': arrays must hold strings only (tags)");
                    list.Add(e.GetString()!);
                }
                return new Raw { Kind = Kind.Strings, Texts = list.ToArray() };
            default:
                throw new AttributeFormatException($"{file} line {line}, attribute '{attr}': objects are not supported as attribute values");
        }
    }

    public static AttributeTable ReadCsv(TextReader reader, string name, AttributeSchema? declared = null)
    {
        var header = reader.ReadLine() ?? throw new AttributeFormatException($"{name} is empty (a CSV file needs a header row)");
        var (columns, idColumn, names, index, map) = CsvHeader(header, name, declared);
        var cells = new List<string?[]>();
        var ids = new List<string?>();
        var lines = new List<int>();
        string? text;
        int lineNo = 1;
        while ((text = reader.ReadLine()) is not null)
        {
            lineNo++;
            if (text.Length == 0 && reader.Peek() < 0) break;
            var fields = SplitCsv(text, name, lineNo);
            if (fields.Count != columns.Count) throw new AttributeFormatException($"{name} line {lineNo}: {fields.Count} fields where the header has {columns.Count}");
            var row = new string?[names.Count];
            string? id = null;
            for (int c = 0; c < fields.Count; c++)
            {
                if (map[c] < 0) id = fields[c].Length == 0 ? null : fields[c];
                else row[map[c]] = fields[c].Length == 0 ? null : fields[c];
            }
            cells.Add(row);
            ids.Add(id);
            lines.Add(lineNo);
        }

        // CSV cells are text: pick each column's type (declared, or the narrowest that every value fits).
        var types = new AttributeType[names.Count];
        for (int a = 0; a < names.Count; a++)
            types[a] = declared is not null ? declared.Attributes[declared.IndexOf(names[a])].Type : InferCsv(cells, a);
        var rows = new List<Dictionary<int, Raw>>(cells.Count);
        for (int r = 0; r < cells.Count; r++)
        {
            var row = new Dictionary<int, Raw>();
            for (int a = 0; a < names.Count; a++)
            {
                var s = cells[r][a];
                if (s is null) continue;
                row[a] = FromCsv(s, types[a], name, lines[r], names[a]);
            }
            rows.Add(row);
        }
        var schema = declared ?? new AttributeSchema(names.Select((n, a) => new AttributeDefinition(n, types[a])).ToList());
        return Build(name, names, index, rows, idColumn >= 0 ? ids.ToArray() : null, lines, schema);
    }

    /// <summary>
    /// A CSV header: its columns, the id column (−1 when none), the attribute names in column order, their positions and each
    /// column's attribute (−1 for the id). Checks every name against <paramref name="declared"/>.
    /// </summary>
    private static (List<string> Columns, int IdColumn, List<string> Names, Dictionary<string, int> Index, int[] Map) CsvHeader(
        string header, string name, AttributeSchema? declared)
    {
        var columns = SplitCsv(header, name, 1);
        int idColumn = columns.IndexOf("id");
        var names = new List<string>();
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        var map = new int[columns.Count];
        for (int c = 0; c < columns.Count; c++)
        {
            if (c == idColumn) { map[c] = -1; continue; }
            if (columns[c].Length == 0) throw new AttributeFormatException($"{name} line 1: column {c + 1} has no name");
            if (declared is not null && declared.IndexOf(columns[c]) < 0) throw new AttributeFormatException($"{name} line 1, attribute '{columns[c]}': not in the declared schema");
            if (!index.TryAdd(columns[c], names.Count)) throw new AttributeFormatException($"{name} line 1: column '{columns[c]}' appears twice");
            map[c] = names.Count;
            names.Add(columns[c]);
        }
        return (columns, idColumn, names, index, map);
    }

    private static AttributeType InferCsv(List<string?[]> cells, int a)
    {
        var seen = new CsvTypeSeen();
        foreach (var row in cells)
            if (row[a] is { } s) seen.Observe(s);
        return seen.Type;
    }

    /// <summary>CSV cells are text: the narrowest type every value of a column seen so far fits (bool, integer, number, else category).</summary>
    private struct CsvTypeSeen
    {
        private bool _notBool, _notLong, _notNumber, _any;

        public void Observe(string s)
        {
            _any = true;
            _notBool |= !(s.Equals("true", StringComparison.OrdinalIgnoreCase) || s.Equals("false", StringComparison.OrdinalIgnoreCase));
            _notLong |= !long.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _);
            _notNumber |= !(double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && double.IsFinite(d));
        }

        public readonly AttributeType Type => !_any ? AttributeType.Category
            : !_notBool ? AttributeType.Bool : !_notLong ? AttributeType.Integer : !_notNumber ? AttributeType.Number : AttributeType.Category;
    }

    private static Raw FromCsv(string s, AttributeType type, string file, int line, string attr)
    {
        switch (type)
        {
            case AttributeType.Bool:
                if (s.Equals("true", StringComparison.OrdinalIgnoreCase)) return new Raw { Kind = Kind.Bool, Bool = true };
                if (s.Equals("false", StringComparison.OrdinalIgnoreCase)) return new Raw { Kind = Kind.Bool, Bool = false };
                break;
            case AttributeType.Integer:
            case AttributeType.Number:
                if (double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && double.IsFinite(d))
                {
                    bool integral = long.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l);
                    bool whole = integral || decimal.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out decimal m) && WholeNumber.TryFrom(m, out l);
                    return new Raw { Kind = Kind.Number, Number = d, Integral = integral, Whole = whole, Long = l };
                }
                break;
            case AttributeType.Category: return new Raw { Kind = Kind.String, Text = s };
            case AttributeType.Tags: return new Raw { Kind = Kind.Strings, Texts = s.Split('|', StringSplitOptions.RemoveEmptyEntries) };
        }
        throw new AttributeFormatException($"{file} line {line}, attribute '{attr}': '{s}' is not a valid {AttributeSchema.TypeName(type)}");
    }

    /// <summary>Splits one CSV record: commas, double-quoted fields with "" escapes; no line breaks inside quotes.</summary>
    private static List<string> SplitCsv(string line, string file, int lineNo)
    {
        var fields = new List<string>();
        var sb = new StringBuilder();
        int i = 0;
        while (true)
        {
            sb.Clear();
            if (i < line.Length && line[i] == '"')
            {
                i++;
                while (true)
                {
                    if (i >= line.Length) throw new AttributeFormatException($"{file} line {lineNo}: unterminated quoted field");
                    if (line[i] == '"')
                    {
                        if (i + 1 < line.Length && line[i + 1] == '"') { sb.Append('"'); i += 2; continue; }
                        i++;
                        break;
                    }
                    sb.Append(line[i++]);
                }
                if (i < line.Length && line[i] != ',') throw new AttributeFormatException($"{file} line {lineNo}: text after a closing quote");
            }
            else
            {
                while (i < line.Length && line[i] != ',') sb.Append(line[i++]);
            }
            fields.Add(sb.ToString().Trim());
            if (i >= line.Length) return fields;
            i++; // the comma
        }
    }

    private static string KindName(Kind k) => k switch
    {
        Kind.Number => "a number",
        Kind.Bool => "a boolean",
        Kind.String => "a string",
        Kind.Strings => "an array of strings",
        _ => "null",
    };

    private static bool Fits(Raw v, AttributeType t) => t switch
    {
        AttributeType.Number => v.Kind == Kind.Number,
        AttributeType.Integer => v.Kind == Kind.Number && v.Whole,
        AttributeType.Bool => v.Kind == Kind.Bool,
        AttributeType.Category => v.Kind == Kind.String,
        _ => v.Kind == Kind.Strings,
    };

    private static AttributeTable Build(string file, List<string> names, Dictionary<string, int> index, List<Dictionary<int, Raw>> rows,
        string?[]? ids, List<int> lines, AttributeSchema? declared)
    {
        int n = rows.Count;
        AttributeSchema schema;
        if (declared is not null)
        {
            schema = declared;
        }
        else
        {
            // Inference: the first value fixes the kind; numbers stay integer only while every value is integral.
            var defs = new List<AttributeDefinition>();
            for (int a = 0; a < names.Count; a++)
            {
                Kind kind = Kind.Missing;
                int firstLine = 0;
                bool allIntegral = true;
                for (int r = 0; r < n; r++)
                {
                    if (!rows[r].TryGetValue(a, out var v) || v.Kind == Kind.Missing) continue;
                    if (kind == Kind.Missing) { kind = v.Kind; firstLine = lines[r]; }
                    else if (v.Kind != kind)
                        throw new AttributeFormatException($"{file} line {lines[r]}, attribute '{names[a]}': {KindName(v.Kind)} where line {firstLine} has {KindName(kind)}");
                    if (v.Kind == Kind.Number) allIntegral &= v.Integral;
                }
                var type = kind switch
                {
                    Kind.Number => allIntegral ? AttributeType.Integer : AttributeType.Number,
                    Kind.Bool => AttributeType.Bool,
                    Kind.Strings => AttributeType.Tags,
                    _ => AttributeType.Category,
                };
                defs.Add(new AttributeDefinition(names[a], type));
            }
            schema = new AttributeSchema(defs);
        }

        var columns = new AttributeColumn[schema.Count];
        for (int s = 0; s < schema.Count; s++)
        {
            var def = schema.Attributes[s];
            int a = index.TryGetValue(def.Name, out int ai) ? ai : -1;
            var present = new byte[n];
            double[]? numbers = def.Type == AttributeType.Number ? new double[n] : null;
            long[]? integers = def.Type == AttributeType.Integer ? new long[n] : null;
            int[]? idsCol = def.Type is AttributeType.Bool or AttributeType.Category ? new int[n] : null;
            int[]? offsets = def.Type == AttributeType.Tags ? new int[n + 1] : null;
            var tagIds = new List<int>();
            var dict = new Dictionary<string, int>(StringComparer.Ordinal);
            var words = new List<string>();
            if (idsCol is not null) Array.Fill(idsCol, -1);
            for (int r = 0; r < n; r++)
            {
                if (offsets is not null) offsets[r] = tagIds.Count;
                if (a < 0 || !rows[r].TryGetValue(a, out var v) || v.Kind == Kind.Missing) continue;
                if (!Fits(v, def.Type))
                    throw new AttributeFormatException($"{file} line {lines[r]}, attribute '{def.Name}': {KindName(v.Kind)}{(v.Kind == Kind.Number ? (v.Whole ? "" : " (not an integer)") : "")} where the schema says {AttributeSchema.TypeName(def.Type)}");
                present[r] = 1;
                switch (def.Type)
                {
                    case AttributeType.Number: numbers![r] = v.Number; break;
                    case AttributeType.Integer: integers![r] = v.Long; break;
                    case AttributeType.Bool: idsCol![r] = v.Bool ? 1 : 0; break;
                    case AttributeType.Category: idsCol![r] = Intern(dict, words, v.Text!); break;
                    case AttributeType.Tags:
                        var set = new SortedSet<int>();
                        foreach (var t in v.Texts!) set.Add(Intern(dict, words, t));
                        tagIds.AddRange(set);
                        break;
                }
            }
            if (offsets is not null) offsets[n] = tagIds.Count;
            columns[s] = new AttributeColumn
            {
                Definition = def,
                Present = present,
                Numbers = numbers,
                Integers = integers,
                Ids = idsCol,
                TagOffsets = offsets,
                TagIds = offsets is null ? null : tagIds.ToArray(),
                Dictionary = def.Type is AttributeType.Category or AttributeType.Tags ? words.ToArray() : null,
            };
        }
        return new AttributeTable { Schema = schema, Count = n, Columns = columns, Ids = ids };
    }

    private static int Intern(Dictionary<string, int> dict, List<string> words, string s)
    {
        if (!dict.TryGetValue(s, out int id))
        {
            id = dict[s] = words.Count;
            words.Add(s);
        }
        return id;
    }
}
