using System.Buffers;
using System.Buffers.Text;

namespace Squash.Search.Writes;

/// <summary>
/// A set of row numbers as compact text, for the strong read's excluded rows on their way down the tree: ascending,
/// the first number and then each gap minus one as LEB128 varints, base64url without padding (RFC 4648 §5: JSON writers
/// escape the '+' of plain base64, six bytes each). Rows a tail masks are a few per partition
/// spread over the index, so most gaps fit in one or two bytes: 10⁴ rows of a 10⁵-row index take ~13 KB instead of
/// ~70 KB of JSON numbers, and decode without a JSON parser.
/// </summary>
public static class RowNumberCodec
{
    /// <summary>The text of <paramref name="ascending"/> (strictly ascending, non-negative).</summary>
    public static string Encode(ReadOnlySpan<long> ascending)
    {
        var bytes = new ArrayBufferWriter<byte>(ascending.Length * 2 + 16);
        long previous = -1;
        foreach (long row in ascending)
        {
            if (row <= previous) throw new ArgumentException($"row numbers must be strictly ascending and non-negative: {row} after {previous}", nameof(ascending));
            // The first value is written as itself (previous = −1 turns it into row + 1 − 1); each later one as gap − 1 ≥ 0.
            WriteVarint(bytes, (ulong)(row - previous - 1));
            previous = row;
        }
        return Base64Url.EncodeToString(bytes.WrittenSpan);
    }

    private static void WriteVarint(ArrayBufferWriter<byte> into, ulong value)
    {
        var span = into.GetSpan(10);
        int n = 0;
        while (value >= 0x80)
        {
            span[n++] = (byte)(value | 0x80);
            value >>= 7;
        }
        span[n++] = (byte)value;
        into.Advance(n);
    }

    /// <summary>
    /// The longest text a receiver takes for a set of at most <paramref name="rows"/> rows: 3 bytes a row, 4 characters
    /// after base64. A row takes one byte per 7 bits of its gap, and n rows below 2³¹ have a mean gap of at most 2³¹/n,
    /// so from 2¹⁷ rows on (where the text's size matters) they take about 3 bytes a row at most however the gaps fall
    /// (the byte count grows with the logarithm of the gap); a smaller set lies far below a bound sized for many more.
    /// </summary>
    public static long MaxTextLength(long rows) => 4 * rows;

    /// <summary>
    /// The rows <paramref name="text"/> holds, ascending; or null and <paramref name="problem"/> saying what is wrong
    /// (not base64url, a number cut off, a row number past 2⁶³ − 1, more than <paramref name="maxRows"/> rows), phrased to
    /// follow the field's name. Decoding stops at the first row past <paramref name="maxRows"/>, so a receiver's memory
    /// follows its bound, not the text.
    /// </summary>
    public static long[]? TryDecode(string text, out string? problem, long maxRows = long.MaxValue)
    {
        ArgumentNullException.ThrowIfNull(text);
        byte[] bytes;
        try
        {
            bytes = Base64Url.DecodeFromChars(text);
        }
        catch (FormatException)
        {
            problem = "is not base64url text";
            return null;
        }
        var rows = new List<long>((int)Math.Min(bytes.Length, maxRows));
        long previous = -1;
        int at = 0;
        while (at < bytes.Length)
        {
            if (rows.Count == maxRows)
            {
                problem = $"holds more than {maxRows:N0} rows";
                return null;
            }
            ulong value = 0;
            int shift = 0;
            int start = at;
            while (true)
            {
                if (at == bytes.Length)
                {
                    problem = $"ends inside the varint that starts at byte {start}";
                    return null;
                }
                byte b = bytes[at++];
                // The tenth byte may carry only the top bit of a 64-bit value.
                if (shift == 63 && b > 1)
                {
                    problem = $"holds a varint past 64 bits at byte {start}";
                    return null;
                }
                value |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) break;
                shift += 7;
                if (shift > 63)
                {
                    problem = $"holds a varint past 64 bits at byte {start}";
                    return null;
                }
            }
            // previous + 1 + value must stay a non-negative long (previous is −1 before the first row).
            ulong room = previous == long.MaxValue ? 0 : previous < 0 ? long.MaxValue : (ulong)(long.MaxValue - previous - 1);
            if (previous == long.MaxValue || value > room)
            {
                problem = $"holds a row number past {long.MaxValue} (row {rows.Count})";
                return null;
            }
            previous = previous + 1 + (long)value;
            rows.Add(previous);
        }
        problem = null;
        return [.. rows];
    }
}
