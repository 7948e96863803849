using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Serialization;
using Squash.Functions.Api;

namespace Squash.Functions.Writes;

/// <summary>
/// POST /api/indexes/{index}/vectors: upserts, deletes by id and a delete by filter, applied together at one sequence
/// (deleteWhere first, then deletes, then upserts).
/// </summary>
public sealed record WriteRequest
{
    public UpsertRequest[]? Upserts { get; init; }
    /// <summary>The user's ids of the vectors to delete (an id nothing has is not an error: deletes are idempotent).</summary>
    public string[]? Deletes { get; init; }
    /// <summary>A filter in the query filter language: every vector matching it at this sequence is deleted.</summary>
    public JsonElement? DeleteWhere { get; init; }
}

/// <summary>One vector to insert or replace: <see cref="Id"/> is the user's id (a string; an index built without ids names its rows "0", "1", …).</summary>
public sealed record UpsertRequest
{
    public string? Id { get; init; }
    /// <summary>An array of numbers, or a string: base64 of the vector's float32 values, little-endian (4 bytes a dimension).</summary>
    [JsonConverter(typeof(VectorJsonConverter))]
    public float[]? Vector { get; init; }
    /// <summary>Values for attributes of the index's schema (missing ones are absent, as a build leaves them).</summary>
    public JsonElement? Attributes { get; init; }
}

/// <summary>The write is durable in the log at <see cref="Sequence"/>; <see cref="Replayed"/> when an earlier request with the same Idempotency-Key already put it there.</summary>
public sealed record WriteAccepted(long Sequence, bool Replayed);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, NumberHandling = JsonNumberHandling.Strict)]
[JsonSerializable(typeof(WriteRequest))]
[JsonSerializable(typeof(WriteAccepted))]
public sealed partial class WriteApiJson : JsonSerializerContext;

/// <summary>
/// An upsert's vector: a JSON array of numbers, or base64 of little-endian float32 values (no number parsing, a third of
/// the bytes). Numbers are read straight into the vector; one JSON cannot hold as a float (1e39) reads as NaN, which the
/// validation names as not finite. Written back as an array (the hash earlier builds keyed requests by).
/// </summary>
public sealed class VectorJsonConverter : JsonConverter<float[]>
{
    [ThreadStatic] private static float[]? _scratch;

    public override float[] Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.String) return FromBase64(ref reader);
        if (reader.TokenType != JsonTokenType.StartArray)
            throw new JsonFieldException("must be an array of numbers or a base64 string of little-endian float32 values");
        var scratch = _scratch ??= new float[1024];
        int n = 0;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            // Anything but a number makes the body fail; JsonBody then names the element and what it holds.
            if (reader.TokenType != JsonTokenType.Number) throw new JsonException();
            if (n == scratch.Length) Array.Resize(ref scratch, 2 * n);
            scratch[n++] = reader.TryGetSingle(out float x) ? x : float.NaN;
        }
        _scratch = scratch;
        return scratch.AsSpan(0, n).ToArray();
    }

    private static float[] FromBase64(ref Utf8JsonReader reader)
    {
        if (reader.HasValueSequence || reader.ValueIsEscaped)
        {
            // Rare (a value split across buffers, or written with escapes): take the plain string.
            return Decode(System.Text.Encoding.UTF8.GetBytes(reader.GetString()!));
        }
        return Decode(reader.ValueSpan);
    }

    private static float[] Decode(ReadOnlySpan<byte> base64)
    {
        byte[] rented = ArrayPool<byte>.Shared.Rent(Base64MaxBytes(base64.Length));
        try
        {
            if (System.Buffers.Text.Base64.DecodeFromUtf8(base64, rented, out _, out int written) != OperationStatus.Done)
                throw new JsonFieldException("is a string but not base64 (RFC 4648, with padding) of little-endian float32 values");
            if (written % 4 != 0)
                throw new JsonFieldException($"decodes to {written} bytes, not a whole number of float32 values (4 bytes each, little-endian)");
            var values = new float[written / 4];
            if (BitConverter.IsLittleEndian) rented.AsSpan(0, written).CopyTo(MemoryMarshal.AsBytes(values.AsSpan()));
            else for (int i = 0; i < values.Length; i++) values[i] = BinaryPrimitives.ReadSingleLittleEndian(rented.AsSpan(4 * i));
            return values;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private static int Base64MaxBytes(int chars) => Math.Max(4, (chars + 3) / 4 * 3);

    public override void Write(Utf8JsonWriter writer, float[] value, JsonSerializerOptions options)
    {
        writer.WriteStartArray();
        foreach (float x in value) writer.WriteNumberValue(x);
        writer.WriteEndArray();
    }
}
