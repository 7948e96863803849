using System.Text.Json;

namespace Squash.Index.Attributes;

/// <summary>
/// An integer attribute's value however it is written: 5, 5.0 and 5e0 are all 5 (filters already read them so); 5.5, and
/// whole numbers past the 64-bit range, are not integers.
/// </summary>
public static class WholeNumber
{
    /// <summary>A JSON number that is a whole number in the 64-bit range, as that integer.</summary>
    public static bool TryRead(JsonElement e, out long value)
    {
        value = 0;
        if (e.ValueKind != JsonValueKind.Number) return false;
        if (e.TryGetInt64(out value)) return true;
        // Digits with a point or an exponent: decimal holds every whole number of the 64-bit range exactly.
        return e.TryGetDecimal(out decimal m) && TryFrom(m, out value);
    }

    /// <summary>A decimal that is a whole number in the 64-bit range, as that integer.</summary>
    public static bool TryFrom(decimal m, out long value)
    {
        value = 0;
        if (m != decimal.Truncate(m) || m < long.MinValue || m > long.MaxValue) return false;
        value = (long)m;
        return true;
    }
}
