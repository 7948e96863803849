using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Squash.Index.Attributes;

/// <summary>
/// What a streaming scan learns of an attributes file (<see cref="AttributeReader.ScanAsync"/>) and what reading a range
/// of its rows needs (<see cref="AttributeReader.ReadChunk"/>): the encoders (boundaries and dictionaries, without the
/// per-cell figures), the CSV header, and where each chunk of rows starts in the file.
/// </summary>
public sealed record AttributeLayout
{
    public required bool Csv { get; init; }
    /// <summary>The CSV header's columns (null for JSON lines).</summary>
    public string[]? CsvColumns { get; init; }
    public required long Rows { get; init; }
    public required long ChunkRows { get; init; }
    /// <summary>Byte offset of each chunk's first row, then the file's length (chunks + 1 entries).</summary>
    public required long[] ChunkOffsets { get; init; }
    public required IndexAttributes Encoders { get; init; }
    /// <summary>
    /// The first id, in row order, that <see cref="IdRules"/> refuses (null: none): the scan's finding, not part of what the
    /// chunk reads need, so not written out. Reported by the caller after the row count, as the in-process build reports it.
    /// </summary>
    [JsonIgnore]
    public IdProblem? IdProblem { get; init; }

    public int Chunks => ChunkOffsets.Length - 1;

    /// <summary>The bytes of chunk <paramref name="chunk"/>'s rows (the last chunk's range runs to the end of the file).</summary>
    public (long Offset, long Length) ChunkRange(int chunk) => (ChunkOffsets[chunk], ChunkOffsets[chunk + 1] - ChunkOffsets[chunk]);

    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, AttributeLayoutJson.Default.AttributeLayout);

    public static AttributeLayout FromJson(byte[] json, string name)
    {
        try
        {
            return JsonSerializer.Deserialize(json, AttributeLayoutJson.Default.AttributeLayout) ?? throw new InvalidDataException($"'{name}' is empty");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{name}' is not valid: {e.Message}");
        }
    }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(AttributeLayout))]
internal sealed partial class AttributeLayoutJson : JsonSerializerContext;

public static partial class AttributeReader
{
    /// <summary>Bytes one ranged read of a scan fetches.</summary>
    private const int ScanBlock = 4 << 20;

    /// <summary>Id hashes one pass of a scan holds at most (8 bytes each: 64 MB), so that the check for repeated ids needs
    /// no memory per row of a larger file, only more passes (one more per this many rows).</summary>
    public const int IdHashesPerPass = 1 << 23;

    /// <summary>
    /// Reads an attributes file (<c>.csv</c> by extension, else JSON lines) as <see cref="ReadJsonLines"/> and
    /// <see cref="ReadCsv"/> do — the same schema, dictionaries, checks and messages — but streaming, in two passes of
    /// ranged reads, holding neither the file nor its rows: the first pass checks every line and infers the schema, the
    /// second fits the encoders (<see cref="AttributeEncoding.FitEncoders"/>: dictionaries and <see cref="NumericCellFit"/>)
    /// and notes where every <paramref name="chunkRows"/>-th row starts. Memory: the dictionaries and the numeric samples.
    /// Ids are checked against <see cref="IdRules"/> too (<see cref="AttributeLayout.IdProblem"/>): each one as the first
    /// pass reads it, and for repeats the second pass hashes them (<see cref="RepeatedIds"/>; a file of more than
    /// <paramref name="idHashesPerPass"/> rows takes a pass more per that many rows), and only when two hashes agree does
    /// one more pass find the rows and compare the ids themselves.
    /// </summary>
    public static async Task<AttributeLayout> ScanAsync(string name, long length, Func<long, int, CancellationToken, Task<byte[]>> readRange,
        AttributeSchema? declared, long chunkRows, CancellationToken cancellationToken = default, int blockBytes = ScanBlock,
        int idHashesPerPass = IdHashesPerPass)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkRows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(idHashesPerPass, 1);
        bool csv = Path.GetExtension(name).Equals(".csv", StringComparison.OrdinalIgnoreCase);
        async Task ForEachLineAsync(Action<string, long> onLine, Func<bool>? done = null)
        {
            var splitter = new LineSplitter(0);
            for (long at = 0; at < length; at += blockBytes)
            {
                if (done?.Invoke() == true) return; // the rest is not read (a line cut short by the block is not handed on)
                var block = await readRange(at, (int)Math.Min(blockBytes, length - at), cancellationToken).ConfigureAwait(false);
                splitter.Feed(block, onLine);
            }
            splitter.Finish(onLine);
        }

        // Pass 1: every line parses; the schema (declared, or inferred as the in-memory reader infers it); the row count; each id's own checks.
        var pass = csv ? (ScanPass)new CsvInference(name, declared) : new JsonInference(name, declared);
        await ForEachLineAsync(pass.Line).ConfigureAwait(false);
        var schema = pass.Finish();
        var csvColumns = (pass as CsvInference)?.Columns;

        // Pass 2: the values against the schema, the dictionaries and numeric fits, and where each chunk starts; the first share of the id hashes.
        var repeats = pass.HasIds ? new RepeatedIds(pass.Rows, idHashesPerPass) : null;
        var fitting = new Fitting(name, schema, pass.Rows, chunkRows, csvColumns, repeats is null ? null : (_, id) => repeats.Add(id));
        await ForEachLineAsync(fitting.Line).ConfigureAwait(false);
        var encoders = fitting.Finish(pass.HasIds);
        var idProblem = pass.FirstIdProblem;
        if (repeats is not null)
        {
            repeats.EndPass();
            while (!repeats.Done)
            {
                await ForEachLineAsync(new IdLines(name, pass.Rows, csvColumns, (_, id) => repeats.Add(id)).Line).ConfigureAwait(false);
                repeats.EndPass();
            }
            if (repeats.Suspects.Count > 0)
            {
                // Two ids hash alike: find the first row, in row order, whose id an earlier row has (before any row with its own problem).
                var firstRow = new Dictionary<string, long>(StringComparer.Ordinal);
                long stop = idProblem?.Row ?? long.MaxValue;
                IdProblem? repeat = null;
                await ForEachLineAsync(new IdLines(name, pass.Rows, csvColumns, (row, id) =>
                {
                    if (repeat is not null || row >= stop || !repeats.Suspects.Contains(RepeatedIds.Hash(id))) return;
                    if (!firstRow.TryAdd(id, row)) repeat = IdRules.Duplicate(id, firstRow[id], row);
                }).Line, () => repeat is not null).ConfigureAwait(false);
                idProblem = repeat ?? idProblem;
            }
        }
        return new AttributeLayout
        {
            Csv = csv,
            CsvColumns = csvColumns?.ToArray(),
            Rows = pass.Rows,
            ChunkRows = chunkRows,
            ChunkOffsets = [.. fitting.ChunkStarts, length],
            Encoders = encoders,
            IdProblem = idProblem,
        };
    }

    /// <summary>
    /// Repeated ids, found streaming in bounded memory: each id's 64-bit hash, the hashes sorted, equal neighbours noted as
    /// suspects. A pass keeps only the hashes of one bucket (hash mod buckets), so a file of N rows takes
    /// ⌈N / hashesPerPass⌉ passes of at most about hashesPerPass hashes each. Equal hashes of different ids are possible
    /// (about N² / 2⁶⁵ pairs), so a suspect is only a reason to compare the ids themselves.
    /// </summary>
    private sealed class RepeatedIds
    {
        /// <summary>Suspect hashes kept at most: enough to name the first repeat of any file but one that repeats more than
        /// this many different ids (which is refused all the same, naming one of its repeats, not always the first).</summary>
        private const int MaxSuspects = 4096;
        private readonly int _buckets;
        private int _bucket;
        private ulong[] _hashes;
        private int _count;

        public RepeatedIds(long rows, int hashesPerPass)
        {
            _buckets = checked((int)Math.Max(1, (rows + hashesPerPass - 1) / hashesPerPass));
            long perBucket = rows / _buckets;
            _hashes = new ulong[Math.Min(perBucket + perBucket / 8 + 16, Array.MaxLength)];
        }

        public HashSet<ulong> Suspects { get; } = [];
        /// <summary>Every bucket has had its pass.</summary>
        public bool Done => _bucket >= _buckets;

        public static ulong Hash(string id) => System.IO.Hashing.XxHash3.HashToUInt64(System.Runtime.InteropServices.MemoryMarshal.AsBytes(id.AsSpan()));

        public void Add(string id)
        {
            ulong hash = Hash(id);
            if (hash % (ulong)_buckets != (ulong)_bucket) return;
            if (_count == _hashes.Length) Array.Resize(ref _hashes, (int)Math.Min(2L * _count, Array.MaxLength));
            _hashes[_count++] = hash;
        }

        public void EndPass()
        {
            Array.Sort(_hashes, 0, _count);
            for (int i = 1; i < _count && Suspects.Count < MaxSuspects; i++)
                if (_hashes[i] == _hashes[i - 1]) Suspects.Add(_hashes[i]);
            _count = 0;
            _bucket++;
            if (Done) _hashes = [];
        }
    }

    /// <summary>A pass that reads only the ids: each row's number and id (rows without an id are skipped), as the second pass counts rows.</summary>
    private sealed class IdLines(string name, long rows, List<string>? csvColumns, Action<long, string> onId)
    {
        private readonly int _idColumn = csvColumns?.IndexOf("id") ?? -1;
        private long _row;
        private int _lineNo;

        public void Line(string text, long start)
        {
            _lineNo++;
            if (_row >= rows || (csvColumns is not null && _lineNo == 1) || (csvColumns is null && string.IsNullOrWhiteSpace(text))) return;
            string? id = csvColumns is not null
                ? (SplitCsv(text, name, _lineNo) is var fields && _idColumn >= 0 && fields[_idColumn].Length > 0 ? fields[_idColumn] : null)
                : ParseJsonRow(text, name, _lineNo, null).Id;
            if (id is not null) onId(_row, id);
            _row++;
        }
    }

    /// <summary>
    /// Rows [<paramref name="firstRow"/>, <paramref name="firstRow"/> + <paramref name="count"/>) of a scanned file, from
    /// <paramref name="bytes"/> = the file from the byte where <paramref name="firstRow"/> starts: a table of those rows
    /// (row 0 = <paramref name="firstRow"/>) with the scan's dictionary ids, as the whole file's table holds them.
    /// </summary>
    public static AttributeTable ReadChunk(byte[] bytes, string name, AttributeLayout layout, long firstRow, int count)
    {
        var definitions = layout.Encoders.Attributes.Select(a => new AttributeDefinition(a.Name, a.Type)).ToArray();
        var schema = new AttributeSchema(definitions);
        var builders = layout.Encoders.Attributes.Select(a => new ColumnBuilder(new AttributeDefinition(a.Name, a.Type), a.Values)).ToArray();
        int[]? csvMap = layout.CsvColumns is { } columns ? definitions.Select(d => Array.IndexOf(columns, d.Name)).ToArray() : null;
        int idColumn = layout.CsvColumns is { } cols ? Array.IndexOf(cols, "id") : -1;
        var ids = layout.Encoders.HasIds ? new string?[count] : null;
        int row = 0;
        var splitter = new LineSplitter(0);
        void OnLine(string text, long start)
        {
            if (row >= count) return;
            int lineNo = checked((int)(firstRow + row + (layout.Csv ? 2 : 1)));
            if (layout.Csv)
            {
                var fields = SplitCsv(text, name, lineNo);
                if (fields.Count != layout.CsvColumns!.Length) throw new AttributeFormatException($"{name} line {lineNo}: {fields.Count} fields where the header has {layout.CsvColumns.Length}");
                for (int s = 0; s < builders.Length; s++)
                {
                    string? cell = csvMap![s] >= 0 && fields[csvMap[s]].Length > 0 ? fields[csvMap[s]] : null;
                    builders[s].Add(cell is null ? null : FromCsv(cell, definitions[s].Type, name, lineNo, definitions[s].Name), name, lineNo);
                }
                if (ids is not null && idColumn >= 0 && fields[idColumn].Length > 0) ids[row] = fields[idColumn];
            }
            else
            {
                if (string.IsNullOrWhiteSpace(text)) throw new AttributeFormatException($"{name} line {lineNo}: blank line inside the file (rows are matched to vectors by position)");
                var (id, attributes) = ParseJsonRow(text, name, lineNo, null);
                var values = new Dictionary<string, Raw>(StringComparer.Ordinal);
                foreach (var (attribute, value) in attributes) values[attribute] = value;
                for (int s = 0; s < builders.Length; s++) builders[s].Add(values.TryGetValue(definitions[s].Name, out var v) ? v : null, name, lineNo);
                if (ids is not null) ids[row] = id;
            }
            row++;
        }
        splitter.Feed(bytes, OnLine);
        splitter.Finish(OnLine);
        if (row < count) throw new AttributeFormatException($"{name}: {row:N0} rows from row {firstRow:N0} where {count:N0} were expected (has the file changed?)");
        foreach (var b in builders)
            if (b.FirstError is { } error) throw new AttributeFormatException(error);
        return new AttributeTable { Schema = schema, Count = count, Columns = builders.Select(b => b.Build()).ToArray(), Ids = ids };
    }

    /// <summary>
    /// Splits bytes into lines as <see cref="TextReader.ReadLine"/> does (\n, \r or \r\n; no empty line after a final
    /// break; a UTF-8 byte-order mark at the start skipped), handing each line's text and the byte offset where it starts.
    /// </summary>
    private sealed class LineSplitter(long start)
    {
        private readonly MemoryStream _line = new();
        private long _at = start, _lineStart = start;
        private bool _afterCr, _started;

        public void Feed(ReadOnlySpan<byte> bytes, Action<string, long> onLine)
        {
            if (!_started && _at == 0 && bytes.StartsWith("\uFEFF"u8)) { bytes = bytes[3..]; _at = _lineStart = 3; }
            _started = true;
            while (!bytes.IsEmpty)
            {
                if (_afterCr)
                {
                    _afterCr = false;
                    if (bytes[0] == (byte)'\n') { bytes = bytes[1..]; _at++; _lineStart = _at; continue; }
                }
                int end = bytes.IndexOfAny((byte)'\n', (byte)'\r');
                if (end < 0) { _line.Write(bytes); _at += bytes.Length; return; }
                _line.Write(bytes[..end]);
                onLine(Encoding.UTF8.GetString(_line.GetBuffer(), 0, (int)_line.Length), _lineStart);
                _line.SetLength(0);
                _afterCr = bytes[end] == (byte)'\r';
                bytes = bytes[(end + 1)..];
                _at += end + 1;
                _lineStart = _at;
            }
        }

        public void Finish(Action<string, long> onLine)
        {
            if (_line.Length > 0) onLine(Encoding.UTF8.GetString(_line.GetBuffer(), 0, (int)_line.Length), _lineStart);
            _line.SetLength(0);
        }
    }

    /// <summary>The first pass of a scan: every line parsed, the schema inferred, the rows counted.</summary>
    private abstract class ScanPass
    {
        public long Rows { get; protected set; }
        public bool HasIds { get; protected set; }
        /// <summary>The first row whose id breaks a rule of its own (length, control characters); repeats are found later.</summary>
        public IdProblem? FirstIdProblem { get; private set; }

        /// <summary>Checks the id of the row about to be counted (row <see cref="Rows"/>).</summary>
        protected void CheckId(string? id)
        {
            if (id is not null && FirstIdProblem is null && IdRules.Problem(id) is { } problem) FirstIdProblem = new IdProblem(Rows, problem, OfRow: true);
        }

        public abstract void Line(string text, long start);
        public abstract AttributeSchema Finish();
    }

    private sealed class JsonInference(string name, AttributeSchema? declared) : ScanPass
    {
        private readonly List<string> _names = [];
        private readonly Dictionary<string, int> _index = new(StringComparer.Ordinal);
        private readonly List<(Kind Kind, int FirstLine, bool AllIntegral, string? Mismatch)> _kinds = [];
        private int _lineNo, _blankRun;

        public override void Line(string text, long start)
        {
            _lineNo++;
            if (string.IsNullOrWhiteSpace(text)) { _blankRun++; return; }
            if (_blankRun > 0) throw new AttributeFormatException($"{name} line {_lineNo - 1}: blank line inside the file (rows are matched to vectors by position)");
            var (id, attributes) = ParseJsonRow(text, name, _lineNo, declared);
            HasIds |= id is not null;
            CheckId(id);
            Rows++;
            var row = new Dictionary<int, Raw>();
            foreach (var (attribute, value) in attributes)
            {
                if (!_index.TryGetValue(attribute, out int ai))
                {
                    ai = _index[attribute] = _names.Count;
                    _names.Add(attribute);
                    _kinds.Add((Kind.Missing, 0, true, null));
                }
                row[ai] = value;
            }
            // Inference as the in-memory reader's: the first value fixes the kind; numbers stay integer while every value is.
            foreach (var (ai, v) in row)
            {
                if (v.Kind == Kind.Missing) continue;
                var k = _kinds[ai];
                if (k.Kind == Kind.Missing) k = (v.Kind, _lineNo, k.AllIntegral, k.Mismatch);
                else if (v.Kind != k.Kind)
                    k.Mismatch ??= $"{name} line {_lineNo}, attribute '{_names[ai]}': {KindName(v.Kind)} where line {k.FirstLine} has {KindName(k.Kind)}";
                if (v.Kind == Kind.Number) k.AllIntegral &= v.Integral;
                _kinds[ai] = k;
            }
        }

        public override AttributeSchema Finish()
        {
            if (declared is not null) return declared;
            foreach (var k in _kinds) if (k.Mismatch is { } error) throw new AttributeFormatException(error);
            return new AttributeSchema(_names.Select((n, a) => new AttributeDefinition(n, _kinds[a].Kind switch
            {
                Kind.Number => _kinds[a].AllIntegral ? AttributeType.Integer : AttributeType.Number,
                Kind.Bool => AttributeType.Bool,
                Kind.Strings => AttributeType.Tags,
                _ => AttributeType.Category,
            })).ToList());
        }
    }

    private sealed class CsvInference(string name, AttributeSchema? declared) : ScanPass
    {
        public List<string> Columns { get; private set; } = [];
        private int[] _map = [];
        private int _idColumn = -1;
        private List<string> _names = [];
        private CsvTypeSeen[] _seen = [];
        private int _lineNo;
        private bool _pendingEmpty;

        public override void Line(string text, long start)
        {
            _lineNo++;
            if (_lineNo == 1) { Header(text); return; }
            // An empty last line ends the file; an empty line before others is a row.
            if (_pendingEmpty) { _pendingEmpty = false; Row("", _lineNo - 1); }
            if (text.Length == 0) { _pendingEmpty = true; return; }
            Row(text, _lineNo);
        }

        private void Header(string header)
        {
            (Columns, _idColumn, _names, _, _map) = CsvHeader(header, name, declared);
            HasIds = _idColumn >= 0;
            _seen = new CsvTypeSeen[_names.Count];
        }

        private void Row(string text, int lineNo)
        {
            var fields = SplitCsv(text, name, lineNo);
            if (fields.Count != Columns.Count) throw new AttributeFormatException($"{name} line {lineNo}: {fields.Count} fields where the header has {Columns.Count}");
            if (_idColumn >= 0 && fields[_idColumn].Length > 0) CheckId(fields[_idColumn]);
            Rows++;
            for (int c = 0; c < fields.Count; c++)
            {
                if (_map[c] < 0 || fields[c].Length == 0) continue;
                _seen[_map[c]].Observe(fields[c]);
            }
        }

        public override AttributeSchema Finish()
        {
            if (_lineNo == 0) throw new AttributeFormatException($"{name} is empty (a CSV file needs a header row)");
            return declared ?? new AttributeSchema(_names.Select((n, a) => new AttributeDefinition(n, _seen[a].Type)).ToList());
        }
    }

    /// <summary>The second pass of a scan: every value against the schema, the dictionaries, the numeric fits, the chunk starts.</summary>
    private sealed class Fitting(string name, AttributeSchema schema, long rows, long chunkRows, List<string>? csvColumns, Action<long, string>? onId)
    {
        private readonly int _idColumn = csvColumns?.IndexOf("id") ?? -1;
        private readonly ColumnBuilder[] _columns = schema.Attributes.Select(d => new ColumnBuilder(d, null, store: false)).ToArray();
        private readonly NumericCellFit?[] _fits = schema.Attributes.Select(d => d.Type is AttributeType.Number or AttributeType.Integer
            ? new NumericCellFit(rows, d.Type == AttributeType.Integer) : null).ToArray();
        private readonly int[]? _csvMap = csvColumns is null ? null : schema.Attributes.Select(d => csvColumns.IndexOf(d.Name)).ToArray();
        public List<long> ChunkStarts { get; } = [];
        private long _row;
        private int _lineNo;

        public void Line(string text, long start)
        {
            _lineNo++;
            if (_row >= rows || (_csvMap is not null && _lineNo == 1) || (_csvMap is null && string.IsNullOrWhiteSpace(text))) return;
            if (_row % chunkRows == 0) ChunkStarts.Add(start);
            if (_csvMap is not null) CsvRow(text);
            else JsonRow(text);
            _row++;
        }

        private void CsvRow(string text)
        {
            var fields = SplitCsv(text, name, _lineNo);
            if (onId is not null && _idColumn >= 0 && fields[_idColumn].Length > 0) onId(_row, fields[_idColumn]);
            for (int s = 0; s < _columns.Length; s++)
            {
                string? cell = _csvMap![s] >= 0 && fields[_csvMap[s]].Length > 0 ? fields[_csvMap[s]] : null;
                Add(s, cell is null ? null : FromCsv(cell, schema.Attributes[s].Type, name, _lineNo, schema.Attributes[s].Name));
            }
        }

        private void JsonRow(string text)
        {
            var (id, attributes) = ParseJsonRow(text, name, _lineNo, null);
            if (onId is not null && id is not null) onId(_row, id);
            var values = new Dictionary<string, Raw>(StringComparer.Ordinal);
            foreach (var (attribute, value) in attributes) values[attribute] = value;
            for (int s = 0; s < _columns.Length; s++) Add(s, values.TryGetValue(schema.Attributes[s].Name, out var v) ? v : null);
        }

        private void Add(int s, Raw? v)
        {
            if (_columns[s].Add(v, name, _lineNo) && _fits[s] is { } fit) fit.Add(_row, v!.Value.Kind == Kind.Number && schema.Attributes[s].Type == AttributeType.Integer ? v.Value.Long : v.Value.Number);
        }

        public IndexAttributes Finish(bool hasIds)
        {
            // The in-memory reader checks column by column: the first column with a value of the wrong type is reported.
            foreach (var c in _columns)
                if (c.FirstError is { } error) throw new AttributeFormatException(error);
            var infos = new AttributeInfo[_columns.Length];
            for (int s = 0; s < infos.Length; s++)
            {
                var def = schema.Attributes[s];
                infos[s] = _fits[s] is { } fit
                    ? new AttributeInfo { Name = def.Name, Type = def.Type, Boundaries = fit.Boundaries(), Lossy = fit.Lossy }
                    : new AttributeInfo { Name = def.Name, Type = def.Type, Values = _columns[s].Dictionary };
            }
            return new IndexAttributes { Attributes = infos, HasIds = hasIds };
        }
    }

    /// <summary>
    /// One column's values row by row, checked against its type: kept (to build a chunk's column), or only checked and
    /// their strings interned (a scan). With a fixed dictionary (a chunk read after a scan) every string must be in it.
    /// </summary>
    private sealed class ColumnBuilder
    {
        private readonly AttributeDefinition _def;
        private readonly bool _store, _fixed;
        private readonly Dictionary<string, int> _dict = new(StringComparer.Ordinal);
        private readonly List<string> _words = [];
        private readonly List<byte> _present = [];
        private readonly List<double> _numbers = [];
        private readonly List<long> _integers = [];
        private readonly List<int> _ids = [];
        private readonly List<int> _offsets = [];
        private readonly List<int> _tagIds = [];

        public ColumnBuilder(AttributeDefinition def, string[]? dictionary, bool store = true)
        {
            _def = def;
            _store = store;
            _fixed = dictionary is not null;
            foreach (var word in dictionary ?? []) Intern(word, 0, "");
        }

        /// <summary>The first value of the wrong type (reported once the rows are read, as the in-memory reader does).</summary>
        public string? FirstError { get; private set; }

        public string[]? Dictionary => _def.Type is AttributeType.Category or AttributeType.Tags ? _words.ToArray() : null;

        /// <summary>Adds the next row's value (null: none); true when it is a value of the column's type.</summary>
        public bool Add(Raw? value, string file, int line)
        {
            bool present = value is { Kind: not Kind.Missing } v && Fits(v, _def.Type);
            if (value is { Kind: not Kind.Missing } wrong && !present)
                FirstError ??= $"{file} line {line}, attribute '{_def.Name}': {KindName(wrong.Kind)}{(wrong.Kind == Kind.Number ? (wrong.Whole ? "" : " (not an integer)") : "")} where the schema says {AttributeSchema.TypeName(_def.Type)}";
            var x = present ? value!.Value : default;
            if (_def.Type == AttributeType.Category && present) { int id = Intern(x.Text!, line, file); if (_store) _ids.Add(id); }
            else if (_def.Type == AttributeType.Tags)
            {
                if (_store) _offsets.Add(_tagIds.Count);
                if (present)
                {
                    var set = new SortedSet<int>();
                    foreach (var t in x.Texts!) set.Add(Intern(t, line, file));
                    if (_store) _tagIds.AddRange(set);
                }
            }
            if (!_store) return present;
            _present.Add(present ? (byte)1 : (byte)0);
            switch (_def.Type)
            {
                case AttributeType.Number: _numbers.Add(present ? x.Number : 0); break;
                case AttributeType.Integer: _integers.Add(present ? x.Long : 0); break;
                case AttributeType.Bool: _ids.Add(present ? (x.Bool ? 1 : 0) : -1); break;
                case AttributeType.Category: if (!present) _ids.Add(-1); break;
            }
            return present;
        }

        private int Intern(string s, int line, string file)
        {
            if (_dict.TryGetValue(s, out int id)) return id;
            if (_fixed && line > 0) throw new AttributeFormatException($"{file} line {line}, attribute '{_def.Name}': '{s}' was not in the file when it was scanned (has it changed?)");
            _dict[s] = _words.Count;
            _words.Add(s);
            return _words.Count - 1;
        }

        public AttributeColumn Build()
        {
            if (_def.Type == AttributeType.Tags) _offsets.Add(_tagIds.Count);
            return new AttributeColumn
            {
                Definition = _def,
                Present = _present.ToArray(),
                Numbers = _def.Type == AttributeType.Number ? _numbers.ToArray() : null,
                Integers = _def.Type == AttributeType.Integer ? _integers.ToArray() : null,
                Ids = _def.Type is AttributeType.Bool or AttributeType.Category ? _ids.ToArray() : null,
                TagOffsets = _def.Type == AttributeType.Tags ? _offsets.ToArray() : null,
                TagIds = _def.Type == AttributeType.Tags ? _tagIds.ToArray() : null,
                Dictionary = Dictionary,
            };
        }
    }
}
