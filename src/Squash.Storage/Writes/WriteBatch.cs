using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Squash.Storage.Writes;

/// <summary>
/// One acknowledged write request as the log keeps it: immutable once written, applied at its sequence number in
/// this order — <see cref="DeleteWhere"/>, then <see cref="Deletes"/>, then <see cref="Upserts"/> — so that one batch
/// can clear a category and refill it.
/// <para>Stored in the binary format of <see cref="ToBinary"/> (a 1,000 × 128 batch is ~0.5 MB copied, where JSON was
/// ~1.4 MB of floats printed and parsed again); batches written as JSON by earlier builds are still read.</para>
/// </summary>
public sealed record WriteBatch
{
    /// <summary>SHA-256 of the request's Idempotency-Key (null without one): readers check the key's record to apply it once.</summary>
    public string? KeyHash { get; init; }
    public DateTimeOffset CreatedUtc { get; init; }
    /// <summary>A filter (the query filter language) deleting every row that matches it at this sequence.</summary>
    public JsonElement? DeleteWhere { get; init; }
    public IReadOnlyList<string>? Deletes { get; init; }
    public IReadOnlyList<UpsertItem>? Upserts { get; init; }

    /// <summary>Items the batch names (upserts + deletes; a deleteWhere counts as one).</summary>
    [JsonIgnore]
    public int ItemCount => (Upserts?.Count ?? 0) + (Deletes?.Count ?? 0) + (DeleteWhere is null ? 0 : 1);

    /// <summary>The JSON form earlier builds wrote (still read by <see cref="Parse"/>).</summary>
    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, WriteLogJson.Default.WriteBatch);

    /// <summary>The first bytes of a binary batch ("SQWB"); a JSON batch starts with '{'.</summary>
    public static ReadOnlySpan<byte> Magic => "SQWB"u8;
    public const ushort FormatVersion = 1;
    private const int HeaderSize = 16;
    private const int TrailerSize = 8;

    /// <summary>
    /// The binary form, all little-endian:
    /// <code>
    /// 0  "SQWB"   4  u16 format version (1)   6  u16 0   8  i64 CreatedUtc in UTC ticks
    /// 16 keyHash: string     deleteWhere: string (its JSON)     deletes: i32 count (-1: none), each a string
    ///    upserts: i32 count (-1: none), each: string id, i32 dimensions, that many float32
    ///    attributes: i32 byte length (-1: no upsert has any), then one JSON array of an object or null per upsert
    /// end: u64 XxHash3 of every byte before it
    /// </code>
    /// A string is an i32 byte length (-1: null) and its UTF-8. JSON values are written compact, so two requests that
    /// differ only in spacing encode alike (<see cref="ContentHash"/> relies on it).
    /// </summary>
    public byte[] ToBinary()
    {
        byte[]? deleteWhere = DeleteWhere is { } filter ? Compact(filter) : null;
        byte[]? attributes = null;
        if (Upserts?.Any(u => u.Attributes is not null) == true)
        {
            using var stream = new MemoryStream();
            using (var w = new Utf8JsonWriter(stream))
            {
                w.WriteStartArray();
                foreach (var u in Upserts)
                    if (u.Attributes is { } a) a.WriteTo(w); else w.WriteNullValue();
                w.WriteEndArray();
            }
            attributes = stream.ToArray();
        }

        long size = HeaderSize + StringSize(KeyHash) + 4 + (deleteWhere?.Length ?? 0) + 4 + 4 + 4 + (attributes?.Length ?? 0) + TrailerSize;
        foreach (var d in Deletes ?? []) size += StringSize(d);
        foreach (var u in Upserts ?? []) size += StringSize(u.Id) + 4 + 4L * u.Vector.Length;
        if (size > Array.MaxLength) throw new InvalidOperationException($"a log batch of {size:N0} bytes is too large to write");

        var bytes = new byte[size];
        var span = bytes.AsSpan();
        Magic.CopyTo(span);
        BinaryPrimitives.WriteUInt16LittleEndian(span[4..], FormatVersion);
        BinaryPrimitives.WriteInt64LittleEndian(span[8..], CreatedUtc.UtcTicks);
        int at = HeaderSize;
        WriteString(span, ref at, KeyHash);
        WriteBytes(span, ref at, deleteWhere);
        WriteInt(span, ref at, Deletes?.Count ?? -1);
        foreach (var d in Deletes ?? []) WriteString(span, ref at, d);
        WriteInt(span, ref at, Upserts?.Count ?? -1);
        foreach (var u in Upserts ?? [])
        {
            WriteString(span, ref at, u.Id);
            WriteInt(span, ref at, u.Vector.Length);
            var target = span.Slice(at, 4 * u.Vector.Length);
            if (BitConverter.IsLittleEndian) MemoryMarshal.AsBytes(u.Vector.AsSpan()).CopyTo(target);
            else for (int i = 0; i < u.Vector.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(target[(4 * i)..], u.Vector[i]);
            at += target.Length;
        }
        WriteBytes(span, ref at, attributes);
        BinaryPrimitives.WriteUInt64LittleEndian(span[at..], XxHash3.HashToUInt64(span[..at]));
        return bytes;
    }

    /// <summary>
    /// What the request asks, hashed for its Idempotency-Key's record: SHA-256 of the binary form without the time and the
    /// key. Prefixed "b1:" so that a record written by an earlier build (a bare hash of the request's JSON) is told apart.
    /// </summary>
    public string ContentHash() =>
        ContentHashPrefix + Convert.ToHexStringLower(SHA256.HashData((this with { CreatedUtc = default, KeyHash = null }).ToBinary()));

    public const string ContentHashPrefix = "b1:";

    /// <summary>Reads a batch in either form; anything else (damaged, cut short, an unknown format) is an <see cref="InvalidDataException"/> naming the blob.</summary>
    public static WriteBatch Parse(ReadOnlySpan<byte> bytes, string name)
    {
        if (bytes.Length >= Magic.Length ? bytes.StartsWith(Magic) : bytes.Length > 0 && Magic.StartsWith(bytes))
            return ParseBinary(bytes, name);
        try
        {
            return JsonSerializer.Deserialize(bytes, WriteLogJson.Default.WriteBatch) ?? throw new InvalidDataException($"log batch '{name}' is empty");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"log batch '{name}' is neither a binary batch nor valid JSON: {e.Message}", e);
        }
    }

    private static WriteBatch ParseBinary(ReadOnlySpan<byte> bytes, string name)
    {
        if (bytes.Length < HeaderSize + TrailerSize)
            throw new InvalidDataException($"log batch '{name}' is cut short: {bytes.Length} bytes, fewer than a binary batch's header and checksum");
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(bytes[4..]);
        if (version != FormatVersion)
            throw new InvalidDataException($"log batch '{name}' has binary format version {version}; this build reads version {FormatVersion} (and JSON batches)");
        int end = bytes.Length - TrailerSize;
        if (BinaryPrimitives.ReadUInt64LittleEndian(bytes[end..]) != XxHash3.HashToUInt64(bytes[..end]))
            throw new InvalidDataException($"log batch '{name}' fails its checksum: the blob is damaged or cut short ({bytes.Length} bytes)");

        var r = new Reader(bytes[..end], name) { At = HeaderSize };
        long ticks = BinaryPrimitives.ReadInt64LittleEndian(bytes[8..]);
        if (ticks < DateTimeOffset.MinValue.UtcTicks || ticks > DateTimeOffset.MaxValue.UtcTicks) r.Fail(8, $"a time of {ticks} ticks");
        var keyHash = r.String("the key hash");
        var deleteWhere = r.Json("deleteWhere");
        int deleteCount = r.Count("deletes", 4);
        string[]? deletes = deleteCount < 0 ? null : new string[deleteCount];
        for (int i = 0; i < deleteCount; i++) deletes![i] = r.String($"deletes[{i}]") ?? r.Fail<string>($"a null deletes[{i}]");
        int upsertCount = r.Count("upserts", 8);
        var upserts = upsertCount < 0 ? null : new UpsertItem[upsertCount];
        var ids = new string[Math.Max(0, upsertCount)];
        var vectors = new float[Math.Max(0, upsertCount)][];
        for (int i = 0; i < upsertCount; i++)
        {
            ids[i] = r.String($"upserts[{i}].id") ?? r.Fail<string>($"a null upserts[{i}].id");
            vectors[i] = r.Floats($"upserts[{i}].vector");
        }
        int attributesAt = r.At;
        var attributeList = r.Json("attributes");
        // Enumerated once: indexing an array of objects walks it from the start each time.
        var attributes = attributeList is { ValueKind: JsonValueKind.Array } list ? list.EnumerateArray().ToArray() : null;
        if (attributeList is not null && (attributes is null || attributes.Length != upsertCount
            || attributes.Any(a => a.ValueKind is not (JsonValueKind.Object or JsonValueKind.Null))))
            r.Fail(attributesAt, $"attributes that are not an array of {upsertCount} objects or nulls");
        if (r.At != end) r.Fail(r.At, $"{end - r.At} bytes after the last section");
        for (int i = 0; i < upsertCount; i++)
            upserts![i] = new UpsertItem(ids[i], vectors[i], attributes?[i] is { ValueKind: JsonValueKind.Object } a ? a : null);
        return new WriteBatch
        {
            KeyHash = keyHash,
            CreatedUtc = new DateTimeOffset(ticks, TimeSpan.Zero),
            DeleteWhere = deleteWhere,
            Deletes = deletes,
            Upserts = upserts,
        };
    }

    /// <summary>Bounds-checked reads of a binary batch whose checksum held (a foreign or buggy writer still gets a named error, never an overrun).</summary>
    private ref struct Reader(ReadOnlySpan<byte> bytes, string name)
    {
        private readonly ReadOnlySpan<byte> _bytes = bytes;
        public int At;

        public readonly void Fail(int at, string what) =>
            throw new InvalidDataException($"log batch '{name}' is malformed: {what} at byte {at} of {_bytes.Length + TrailerSize}");

        public readonly T Fail<T>(string what) { Fail(At, what); return default!; }

        private int Length(string what)
        {
            if (_bytes.Length - At < 4) Fail(At, $"{what} cut short");
            int n = BinaryPrimitives.ReadInt32LittleEndian(_bytes[At..]);
            At += 4;
            return n;
        }

        /// <summary>A count of items of at least <paramref name="minItemBytes"/> each (-1: none), checked against the bytes left.</summary>
        public int Count(string what, int minItemBytes)
        {
            int n = Length(what);
            if (n < -1 || (n > 0 && n > (_bytes.Length - At) / minItemBytes)) Fail(At - 4, $"a count of {n} {what}");
            return n;
        }

        /// <summary>A length-prefixed run of bytes; false for the null marker (-1).</summary>
        private bool TryBytes(string what, out ReadOnlySpan<byte> slice)
        {
            int n = Length(what);
            if (n < -1 || n > _bytes.Length - At) Fail(At - 4, $"a length of {n} for {what}");
            slice = n < 0 ? default : _bytes.Slice(At, n);
            At += Math.Max(0, n);
            return n >= 0;
        }

        public string? String(string what)
        {
            int start = At;
            if (!TryBytes(what, out var b)) return null;
            try
            {
                return StrictUtf8.GetString(b);
            }
            catch (DecoderFallbackException)
            {
                Fail(start, $"{what} that is not UTF-8");
                return null;
            }
        }

        public JsonElement? Json(string what)
        {
            int start = At;
            if (!TryBytes(what, out var b)) return null;
            try
            {
                using var doc = JsonDocument.Parse(b.ToArray());
                return doc.RootElement.Clone();
            }
            catch (JsonException e)
            {
                Fail(start, $"{what} that is not JSON ({e.Message})");
                return null;
            }
        }

        public float[] Floats(string what)
        {
            int n = Count(what, 4);
            if (n < 0) Fail(At - 4, $"no {what}");
            var values = new float[n];
            var source = _bytes.Slice(At, 4 * n);
            if (BitConverter.IsLittleEndian) source.CopyTo(MemoryMarshal.AsBytes(values.AsSpan()));
            else for (int i = 0; i < n; i++) values[i] = BinaryPrimitives.ReadSingleLittleEndian(source[(4 * i)..]);
            At += source.Length;
            return values;
        }
    }

    /// <summary>UTF-8 that throws on invalid bytes instead of replacing them.</summary>
    private static readonly UTF8Encoding StrictUtf8 = new(false, true);

    private static byte[] Compact(JsonElement e)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream)) e.WriteTo(w);
        return stream.ToArray();
    }

    private static long StringSize(string? s) => 4 + (s is null ? 0 : Encoding.UTF8.GetByteCount(s));

    private static void WriteInt(Span<byte> span, ref int at, int value)
    {
        BinaryPrimitives.WriteInt32LittleEndian(span[at..], value);
        at += 4;
    }

    private static void WriteString(Span<byte> span, ref int at, string? s)
    {
        if (s is null) { WriteInt(span, ref at, -1); return; }
        int n = Encoding.UTF8.GetBytes(s, span[(at + 4)..]);
        WriteInt(span, ref at, n);
        at += n;
    }

    private static void WriteBytes(Span<byte> span, ref int at, byte[]? b)
    {
        WriteInt(span, ref at, b?.Length ?? -1);
        if (b is null) return;
        b.CopyTo(span[at..]);
        at += b.Length;
    }
}

/// <summary>A vector with the user's id and attributes (a JSON object checked against the index's schema before it was logged).</summary>
public sealed record UpsertItem(string Id, float[] Vector, JsonElement? Attributes = null)
{
    /// <summary>The largest row number an index without ids takes as an id (row numbers are int).</summary>
    public const int MaxRowNumber = int.MaxValue - 1;

    /// <summary>A canonical decimal row number ("17", not "017" or "+17"): how an index built without ids names its rows.</summary>
    public static bool IsRowNumber(string id) =>
        int.TryParse(id, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int row)
        && row <= MaxRowNumber && row.ToString(System.Globalization.CultureInfo.InvariantCulture) == id;
}

/// <summary>
/// The Idempotency-Key's record: which request used the key, and which sequence carries it once known. Created before the
/// batch is written; <see cref="Sequence"/> is set once (compare-and-swap) by the writer or by the first reader that meets
/// the batch in sequence order, and never changes after.
/// </summary>
/// <param name="From">Every batch carrying this key has a higher sequence: where a retry's search for an earlier attempt starts.</param>
public sealed record KeyRecord(string RequestHash, long From, long? Sequence, DateTimeOffset CreatedUtc);

internal sealed record HeadHint(long Sequence);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(WriteBatch))]
[JsonSerializable(typeof(KeyRecord))]
[JsonSerializable(typeof(HeadHint))]
internal sealed partial class WriteLogJson : JsonSerializerContext;
