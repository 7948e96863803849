using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Squash.Core.Quantization;

/// <summary>
/// 1-bit-per-dimension sign codes for Hamming pre-pruning: bit j is 1 iff z[j] ≥ 0 (the same rule for data and
/// queries, so −0 counts as non-negative and NaN as negative). Bit j lives in word j / 64 at position j % 64;
/// bits past the last dimension are zero, so they never add to a distance.
/// </summary>
public static class SignCodes
{
    /// <summary>Words needed for <paramref name="bits"/> dimensions: ceil(bits / 64).</summary>
    public static int WordsFor(int bits)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bits);
        return (int)(((long)bits + 63) >> 6);
    }

    /// <summary>Writes the sign code of <paramref name="z"/> into the first WordsFor(z.Length) words.</summary>
    public static void Encode(ReadOnlySpan<float> z, Span<ulong> words)
    {
        int wordCount = WordsFor(z.Length);
        if (words.Length < wordCount)
        {
            throw new ArgumentException("Destination is shorter than WordsFor(z.Length).", nameof(words));
        }

        ref float src = ref MemoryMarshal.GetReference(z);
        for (int w = 0; w < wordCount; w++)
        {
            int start = w * 64;
            int length = Math.Min(64, z.Length - start);
            ulong word = 0;
            int j = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                // Compare (not the raw sign bit) so that −0 maps to 1 like the scalar rule.
                for (; j + 8 <= length; j += 8)
                {
                    Vector256<float> v = Vector256.LoadUnsafe(ref src, (nuint)(start + j));
                    word |= (ulong)Vector256.GreaterThanOrEqual(v, Vector256<float>.Zero).ExtractMostSignificantBits() << j;
                }
            }

            for (; j < length; j++)
            {
                if (Unsafe.Add(ref src, start + j) >= 0f)
                {
                    word |= 1UL << j;
                }
            }

            words[w] = word;
        }
    }

    /// <summary>Number of differing bits between two codes of the same length.</summary>
    public static int Hamming(ReadOnlySpan<ulong> a, ReadOnlySpan<ulong> b)
    {
        if (a.Length != b.Length)
        {
            throw new ArgumentException("Codes must have the same number of words.", nameof(b));
        }

        int distance = 0;
        for (int w = 0; w < a.Length; w++)
        {
            distance += BitOperations.PopCount(a[w] ^ b[w]);
        }

        return distance;
    }

    /// <summary>
    /// distances[i] = Hamming(query, codes row i) for the first <paramref name="count"/> rows of
    /// <paramref name="codes"/> (count × query.Length words, row-major).
    /// </summary>
    public static void HammingMany(ReadOnlySpan<ulong> query, ReadOnlySpan<ulong> codes, int count, Span<ushort> distances)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        int words = query.Length;
        CheckWords(words);
        if (codes.Length < (long)count * words)
        {
            throw new ArgumentException("Codes span is shorter than count × query.Length.", nameof(codes));
        }

        if (distances.Length < count)
        {
            throw new ArgumentException("Distances span is shorter than count.", nameof(distances));
        }

        ref ulong q = ref MemoryMarshal.GetReference(query);
        ref ulong c = ref MemoryMarshal.GetReference(codes);
        ref ushort dst = ref MemoryMarshal.GetReference(distances);
        switch (words)
        {
            case 0:
                distances[..count].Clear();
                break;
            case 1:
                Many1(q, ref c, count, ref dst);
                break;
            case 2:
                Many2(ref q, ref c, count, ref dst);
                break;
            case 4:
                Many4(ref q, ref c, count, ref dst);
                break;
            case 13:
                Many13(ref q, ref c, count, ref dst);
                break;
            default:
                for (int i = 0; i < count; i++)
                {
                    Unsafe.Add(ref dst, i) = (ushort)Row(ref q, ref Unsafe.Add(ref c, (nint)i * words), words);
                }

                break;
        }
    }

    /// <summary>
    /// distances[k] = Hamming(query, codes row rows[k]) where <paramref name="codes"/> holds rows of
    /// query.Length words each.
    /// </summary>
    public static void HammingSubset(ReadOnlySpan<ulong> query, ReadOnlySpan<ulong> codes, ReadOnlySpan<int> rows, Span<ushort> distances)
    {
        int words = query.Length;
        CheckWords(words);
        if (distances.Length < rows.Length)
        {
            throw new ArgumentException("Distances span is shorter than rows.", nameof(distances));
        }

        if (words == 0)
        {
            distances[..rows.Length].Clear();
            return;
        }

        int rowCount = codes.Length / words;
        ref ulong q = ref MemoryMarshal.GetReference(query);
        ref ulong c = ref MemoryMarshal.GetReference(codes);
        for (int k = 0; k < rows.Length; k++)
        {
            int row = rows[k];
            if ((uint)row >= (uint)rowCount)
            {
                throw new ArgumentOutOfRangeException(nameof(rows), row, "Row index out of range.");
            }

            distances[k] = (ushort)Row(ref q, ref Unsafe.Add(ref c, (nint)row * words), words);
        }
    }

    // A distance is at most 64 · words and must fit the ushort result.
    private static void CheckWords(int words)
    {
        if (words > ushort.MaxValue / 64)
        {
            throw new ArgumentException($"At most {ushort.MaxValue / 64} words per code.", "query");
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Row(ref ulong q, ref ulong c, int words)
    {
        if (words == 13)
        {
            return Distance13(ref q, ref c);
        }

        int distance = 0;
        int w = 0;
        for (; w + 4 <= words; w += 4)
        {
            distance += BitOperations.PopCount(Unsafe.Add(ref q, w) ^ Unsafe.Add(ref c, w))
                + BitOperations.PopCount(Unsafe.Add(ref q, w + 1) ^ Unsafe.Add(ref c, w + 1))
                + BitOperations.PopCount(Unsafe.Add(ref q, w + 2) ^ Unsafe.Add(ref c, w + 2))
                + BitOperations.PopCount(Unsafe.Add(ref q, w + 3) ^ Unsafe.Add(ref c, w + 3));
        }

        for (; w < words; w++)
        {
            distance += BitOperations.PopCount(Unsafe.Add(ref q, w) ^ Unsafe.Add(ref c, w));
        }

        return distance;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Distance13(ref ulong q, ref ulong c)
    {
        // 784 bits (MNIST, Fashion-MNIST): 13 words, unrolled into independent popcounts.
        int a = BitOperations.PopCount(q ^ c)
            + BitOperations.PopCount(Unsafe.Add(ref q, 1) ^ Unsafe.Add(ref c, 1))
            + BitOperations.PopCount(Unsafe.Add(ref q, 2) ^ Unsafe.Add(ref c, 2))
            + BitOperations.PopCount(Unsafe.Add(ref q, 3) ^ Unsafe.Add(ref c, 3));
        int b = BitOperations.PopCount(Unsafe.Add(ref q, 4) ^ Unsafe.Add(ref c, 4))
            + BitOperations.PopCount(Unsafe.Add(ref q, 5) ^ Unsafe.Add(ref c, 5))
            + BitOperations.PopCount(Unsafe.Add(ref q, 6) ^ Unsafe.Add(ref c, 6))
            + BitOperations.PopCount(Unsafe.Add(ref q, 7) ^ Unsafe.Add(ref c, 7));
        int d = BitOperations.PopCount(Unsafe.Add(ref q, 8) ^ Unsafe.Add(ref c, 8))
            + BitOperations.PopCount(Unsafe.Add(ref q, 9) ^ Unsafe.Add(ref c, 9))
            + BitOperations.PopCount(Unsafe.Add(ref q, 10) ^ Unsafe.Add(ref c, 10))
            + BitOperations.PopCount(Unsafe.Add(ref q, 11) ^ Unsafe.Add(ref c, 11))
            + BitOperations.PopCount(Unsafe.Add(ref q, 12) ^ Unsafe.Add(ref c, 12));
        return a + b + d;
    }

    private static void Many1(ulong q0, ref ulong c, int count, ref ushort dst)
    {
        int i = 0;
        for (; i + 4 <= count; i += 4)
        {
            Unsafe.Add(ref dst, i) = (ushort)BitOperations.PopCount(q0 ^ Unsafe.Add(ref c, i));
            Unsafe.Add(ref dst, i + 1) = (ushort)BitOperations.PopCount(q0 ^ Unsafe.Add(ref c, i + 1));
            Unsafe.Add(ref dst, i + 2) = (ushort)BitOperations.PopCount(q0 ^ Unsafe.Add(ref c, i + 2));
            Unsafe.Add(ref dst, i + 3) = (ushort)BitOperations.PopCount(q0 ^ Unsafe.Add(ref c, i + 3));
        }

        for (; i < count; i++)
        {
            Unsafe.Add(ref dst, i) = (ushort)BitOperations.PopCount(q0 ^ Unsafe.Add(ref c, i));
        }
    }

    private static void Many2(ref ulong q, ref ulong c, int count, ref ushort dst)
    {
        ulong q0 = q, q1 = Unsafe.Add(ref q, 1);
        for (int i = 0; i < count; i++)
        {
            ref ulong row = ref Unsafe.Add(ref c, (nint)i * 2);
            Unsafe.Add(ref dst, i) = (ushort)(BitOperations.PopCount(q0 ^ row) + BitOperations.PopCount(q1 ^ Unsafe.Add(ref row, 1)));
        }
    }

    private static void Many4(ref ulong q, ref ulong c, int count, ref ushort dst)
    {
        ulong q0 = q, q1 = Unsafe.Add(ref q, 1), q2 = Unsafe.Add(ref q, 2), q3 = Unsafe.Add(ref q, 3);
        for (int i = 0; i < count; i++)
        {
            ref ulong row = ref Unsafe.Add(ref c, (nint)i * 4);
            Unsafe.Add(ref dst, i) = (ushort)(BitOperations.PopCount(q0 ^ row)
                + BitOperations.PopCount(q1 ^ Unsafe.Add(ref row, 1))
                + BitOperations.PopCount(q2 ^ Unsafe.Add(ref row, 2))
                + BitOperations.PopCount(q3 ^ Unsafe.Add(ref row, 3)));
        }
    }

    private static void Many13(ref ulong q, ref ulong c, int count, ref ushort dst)
    {
        for (int i = 0; i < count; i++)
        {
            Unsafe.Add(ref dst, i) = (ushort)Distance13(ref q, ref Unsafe.Add(ref c, (nint)i * 13));
        }
    }
}
