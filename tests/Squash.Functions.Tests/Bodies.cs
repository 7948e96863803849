using System.Globalization;
using System.Text;

namespace Squash.Functions.Tests;

/// <summary>Request bodies written by hand, so tests send exactly the JSON a client would.</summary>
internal static class Bodies
{
    public static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    /// <summary>A vector as a JSON array, round-trippable floats.</summary>
    public static string Vector(float[] v) => "[" + string.Join(',', v.Select(x => x.ToString("R", CultureInfo.InvariantCulture))) + "]";

    /// <summary>A vector as base64 of its little-endian float32 values, the API's other form of a vector (without the quotes).</summary>
    public static string Base64(params float[] v) => Convert.ToBase64String(System.Runtime.InteropServices.MemoryMarshal.AsBytes(v.AsSpan()));
}
