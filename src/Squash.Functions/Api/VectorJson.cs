using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Squash.Functions.Api;

/// <summary>
/// A vector on the wire (an upsert's, a query's): a JSON array of numbers, or base64 of little-endian float32 values (no
/// number parsing, a third of the bytes). Numbers are read straight into the vector; one JSON cannot hold as a float (1e39) reads as NaN, which the
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
        while (ReadItem(ref reader, n) && reader.TokenType != JsonTokenType.EndArray)
        {
            // Anything but a number makes the body fail; JsonBody then names the element and what it holds.
            if (reader.TokenType != JsonTokenType.Number) throw new JsonException();
            if (n == scratch.Length) Array.Resize(ref scratch, 2 * n);
            scratch[n++] = reader.TryGetSingle(out float x) ? x : float.NaN;
        }
        _scratch = scratch;
        return scratch.AsSpan(0, n).ToArray();
    }

    /// <summary>
    /// <c>reader.Read()</c> inside an array this converter reads whole: a body that stops being JSON there is named by the
    /// item it broke in (<c>vector[2]</c>), as the serializer names the items of an array it reads itself.
    /// </summary>
    internal static bool ReadItem(ref Utf8JsonReader reader, int item)
    {
        try { return reader.Read(); }
        catch (JsonException e) when (e is not JsonFieldException)
        {
            throw new JsonFieldException($"is not valid JSON: {e.Message}") { Within = $"[{item}]" };
        }
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

/// <summary>
/// A batch of vectors (a query's <c>vectors</c>): an array whose items each take either form of <see cref="VectorJsonConverter"/>;
/// a bad base64 item is named by its place (<c>vectors[2]</c>).
/// </summary>
public sealed class VectorListJsonConverter : JsonConverter<float[][]>
{
    private static readonly VectorJsonConverter Vector = new();

    public override float[][] Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
            throw new JsonFieldException("must be an array of vectors, each an array of numbers or a base64 string of little-endian float32 values");
        var vectors = new List<float[]>();
        while (VectorJsonConverter.ReadItem(ref reader, vectors.Count) && reader.TokenType != JsonTokenType.EndArray)
        {
            // A null item reads as null, as it did without this converter: the query's check names it ("is null").
            if (reader.TokenType == JsonTokenType.Null) { vectors.Add(null!); continue; }
            try { vectors.Add(Vector.Read(ref reader, typeof(float[]), options)); }
            catch (JsonFieldException e) { throw new JsonFieldException(e.Detail) { Within = $"[{vectors.Count}]{e.Within}" }; }
        }
        return [.. vectors];
    }

    public override void Write(Utf8JsonWriter writer, float[][] value, JsonSerializerOptions options)
    {
        writer.WriteStartArray();
        foreach (var v in value)
            if (v is null) writer.WriteNullValue();
            else Vector.Write(writer, v, options);
        writer.WriteEndArray();
    }
}
