using System.Numerics;
using Squash.Core.Quantization;

namespace Squash.Core.Tests.Quantization;

public class SignCodesTests
{
    [Theory]
    [InlineData(0, 0)]
    [InlineData(1, 1)]
    [InlineData(63, 1)]
    [InlineData(64, 1)]
    [InlineData(65, 2)]
    [InlineData(784, 13)]
    public void WordsForRoundsUp(int bits, int words) => Assert.Equal(words, SignCodes.WordsFor(bits));

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(63)]
    [InlineData(64)]
    [InlineData(65)]
    [InlineData(129)]
    [InlineData(784)]
    public void EncodeSetsBitJIffZjIsNonNegative(int dims)
    {
        var random = new Random(dims);
        float[] z = RandomVector(dims, random);
        var words = new ulong[SignCodes.WordsFor(dims) + 1];
        words.AsSpan().Fill(ulong.MaxValue);
        SignCodes.Encode(z, words);

        for (int j = 0; j < dims; j++)
        {
            Assert.Equal(z[j] >= 0 ? 1UL : 0UL, (words[j / 64] >> (j % 64)) & 1);
        }

        // Padding bits of the last word are zero; words past the code are untouched.
        int used = dims % 64;
        if (used != 0)
        {
            Assert.Equal(0UL, words[(dims - 1) / 64] >> used);
        }

        Assert.Equal(ulong.MaxValue, words[^1]);
    }

    [Fact]
    public void SignedZerosAndNaNFollowTheComparisonRule()
    {
        var words = new ulong[1];
        SignCodes.Encode([-0f, 0f, float.NaN, -1f, float.PositiveInfinity, float.NegativeInfinity, float.Epsilon, -float.Epsilon, 5f], words);
        Assert.Equal(0b1_0101_0011UL, words[0]);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(63)]
    [InlineData(64)]
    [InlineData(65)]
    [InlineData(128)]
    [InlineData(200)]
    [InlineData(256)]
    [InlineData(320)]
    [InlineData(784)]
    [InlineData(1100)]
    public void HammingVariantsMatchABitByBitCount(int dims)
    {
        var random = new Random(100 + dims);
        int words = SignCodes.WordsFor(dims);
        const int Count = 97;
        var vectors = new float[Count][];
        var codes = new ulong[Count * words];
        for (int i = 0; i < Count; i++)
        {
            vectors[i] = RandomVector(dims, random);
            SignCodes.Encode(vectors[i], codes.AsSpan(i * words, words));
        }

        float[] queryVector = RandomVector(dims, random);
        var query = new ulong[words];
        SignCodes.Encode(queryVector, query);

        var many = new ushort[Count];
        SignCodes.HammingMany(query, codes, Count, many);
        int[] rows = Enumerable.Range(0, 40).Select(_ => random.Next(Count)).ToArray();
        var subset = new ushort[rows.Length];
        SignCodes.HammingSubset(query, codes, rows, subset);

        for (int i = 0; i < Count; i++)
        {
            int naive = 0;
            for (int j = 0; j < dims; j++)
            {
                naive += (queryVector[j] >= 0) != (vectors[i][j] >= 0) ? 1 : 0;
            }

            Assert.Equal(naive, SignCodes.Hamming(query, codes.AsSpan(i * words, words)));
            Assert.Equal(naive, many[i]);
        }

        for (int k = 0; k < rows.Length; k++)
        {
            Assert.Equal(many[rows[k]], subset[k]);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(13)]
    [InlineData(17)]
    public void HammingManyHandlesEveryCountAroundTheUnrolling(int words)
    {
        var random = new Random(words);
        for (int count = 0; count <= 9; count++)
        {
            var codes = new ulong[(count * words) + 3]; // longer than needed: only count rows are read
            for (int k = 0; k < codes.Length; k++)
            {
                codes[k] = (ulong)random.NextInt64() ^ ((ulong)random.Next() << 40);
            }

            var query = Enumerable.Range(0, words).Select(_ => (ulong)random.NextInt64()).ToArray();
            var distances = new ushort[count + 1];
            distances[^1] = 12345;
            SignCodes.HammingMany(query, codes, count, distances);
            for (int i = 0; i < count; i++)
            {
                int expected = 0;
                for (int w = 0; w < words; w++)
                {
                    expected += BitOperations.PopCount(query[w] ^ codes[(i * words) + w]);
                }

                Assert.Equal(expected, distances[i]);
            }

            Assert.Equal(12345, distances[^1]);
        }
    }

    [Fact]
    public void InvalidArgumentsAreRejected()
    {
        Assert.Equal("b", Assert.Throws<ArgumentException>(() => SignCodes.Hamming(new ulong[2], new ulong[1])).ParamName);
        Assert.Equal("words", Assert.Throws<ArgumentException>(() => SignCodes.Encode(new float[65], new ulong[1])).ParamName);
        Assert.Equal("codes", Assert.Throws<ArgumentException>(() => SignCodes.HammingMany(new ulong[2], new ulong[3], 2, new ushort[2])).ParamName);
        Assert.Equal("distances", Assert.Throws<ArgumentException>(() => SignCodes.HammingMany(new ulong[1], new ulong[3], 3, new ushort[2])).ParamName);
        Assert.Equal("rows", Assert.ThrowsAny<ArgumentException>(() => SignCodes.HammingSubset(new ulong[1], new ulong[3], [3], new ushort[1])).ParamName);
    }

    private static float[] RandomVector(int dims, Random random)
    {
        var z = new float[dims];
        for (int j = 0; j < dims; j++)
        {
            z[j] = random.Next(10) switch
            {
                0 => 0f,
                1 => -0f,
                _ => (float)(random.NextDouble() - 0.5),
            };
        }

        return z;
    }
}
