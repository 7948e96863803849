using Squash.Core.Quantization;

namespace Squash.Core.Tests.Quantization;

public class LloydBoundariesTests
{
    private static readonly string[] DataSetNames =
    [
        "gaussian", "uniform", "positive", "negative", "pixels", "fewDistinct", "constant", "zeros",
        "single", "tiny", "offset", "signedZeros",
    ];

    public static IEnumerable<object[]> Cases()
    {
        foreach (string name in DataSetNames)
        {
            for (int bits = 0; bits <= 8; bits++)
            {
                yield return [name, bits, false];
                if (bits > 0)
                {
                    yield return [name, bits, true];
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void BoundariesEncloseAndPartitionTheTrainingValues(string dataSet, int bits, bool pinZero)
    {
        float[] values = DataSet(dataSet);
        float[] b = LloydBoundaries.Fit(values, bits, pinZero);
        int cells = 1 << bits;

        Assert.Equal(cells + 1, b.Length);
        // None of these data sets is ulp-pathological, so every boundary must be distinct.
        for (int j = 1; j <= cells; j++)
        {
            Assert.True(b[j - 1] < b[j], $"b[{j - 1}] = {b[j - 1]} ≥ b[{j}] = {b[j]}");
        }

        foreach (float v in values)
        {
            Assert.True(b[0] <= v && v < b[cells], $"{v} outside [{b[0]}, {b[cells]})");
            int code = LloydBoundaries.Encode(b, v);
            Assert.InRange(code, 0, cells - 1);
            Assert.True(b[code] <= v && v < b[code + 1], $"{v} encoded to cell {code} = [{b[code]}, {b[code + 1]})");
        }

        if (pinZero)
        {
            Assert.Equal(0, BitConverter.SingleToInt32Bits(b[cells / 2]));
            Assert.True(b[0] < 0 && b[cells] > 0);
            foreach (float v in values)
            {
                int code = LloydBoundaries.Encode(b, v);
                Assert.Equal(v >= 0 ? 1 : 0, code >> (bits - 1));
            }
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void LloydNeverEndsWorseThanTheQuantileInitialisation(string dataSet, int bits, bool pinZero)
    {
        float[] values = DataSet(dataSet);
        double initial = Distortion(values, LloydBoundaries.Fit(values, bits, pinZero, maxIterations: 0));
        double fitted = Distortion(values, LloydBoundaries.Fit(values, bits, pinZero));
        Assert.True(fitted <= (initial * (1 + 1e-9)) + 1e-12, $"{fitted} > {initial}");
    }

    [Theory]
    [InlineData("gaussian", 2)]
    [InlineData("gaussian", 4)]
    [InlineData("positive", 3)]
    [InlineData("uniform", 5)]
    public void LloydImprovesOnSkewedOrPeakedData(string dataSet, int bits)
    {
        float[] values = DataSet(dataSet);
        double initial = Distortion(values, LloydBoundaries.Fit(values, bits, false, maxIterations: 0));
        double fitted = Distortion(values, LloydBoundaries.Fit(values, bits, false));
        Assert.True(fitted < initial * 0.999, $"{fitted} vs {initial}");
    }

    [Theory]
    [InlineData(40, 1, false)]
    [InlineData(40, 2, true)]
    [InlineData(97, 3, false)]
    [InlineData(150, 3, true)]
    [InlineData(200, 4, false)]
    [InlineData(200, 4, true)]
    [InlineData(64, 5, false)]
    public void PrefixSumLloydEqualsNaiveLloyd(int n, int bits, bool pinZero)
    {
        const int Iterations = 30;
        var random = new Random(n * 31 + bits);
        for (int trial = 0; trial < 5; trial++)
        {
            var values = new float[n];
            for (int i = 0; i < n; i++)
            {
                // Skewed, so that Lloyd has real work to do.
                double g = Gaussian(random);
                values[i] = (float)(trial % 2 == 0 ? g : (g * g) - 0.5);
            }

            Array.Sort(values);
            float[] init = LloydBoundaries.Fit(values, bits, pinZero, maxIterations: 0);
            float[] expected = NaiveLloyd(values, init, pinZero, Iterations);
            float[] actual = LloydBoundaries.Fit(values, bits, pinZero, tolerance: 0, maxIterations: Iterations);
            double scale = values[^1] - values[0];
            for (int j = 0; j < expected.Length; j++)
            {
                Assert.True(Math.Abs(expected[j] - actual[j]) <= 1e-4 * scale, $"trial {trial}, b[{j}]: naive {expected[j]}, fast {actual[j]}");
            }
        }
    }

    [Fact]
    public void ZeroBitsGivesOneEnclosingCell()
    {
        float[] b = LloydBoundaries.Fit([-2f, 1f, 5f], 0, false);
        Assert.Equal(2, b.Length);
        Assert.True(b[0] < -2f && b[1] > 5f);
        Assert.Equal(0, LloydBoundaries.Encode(b, 100f));
    }

    [Fact]
    public void EncodeClampsAndUsesHalfOpenCells()
    {
        float[] b = [0f, 1f, 1f, 2f, 3f];
        Assert.Equal(0, LloydBoundaries.Encode(b, -5f));
        Assert.Equal(0, LloydBoundaries.Encode(b, 0.5f));
        Assert.Equal(2, LloydBoundaries.Encode(b, 1f)); // [1, 1) is empty; 1 belongs to [1, 2)
        Assert.Equal(3, LloydBoundaries.Encode(b, 2f));
        Assert.Equal(3, LloydBoundaries.Encode(b, 3f));
        Assert.Equal(3, LloydBoundaries.Encode(b, 1e9f));
    }

    [Fact]
    public void EncodeAgreesWithLinearScan()
    {
        var random = new Random(5);
        for (int bits = 0; bits <= 8; bits++)
        {
            float[] values = DataSet("gaussian");
            float[] b = LloydBoundaries.Fit(values, bits, false);
            for (int t = 0; t < 500; t++)
            {
                float v = (float)(Gaussian(random) * 3);
                Assert.Equal(LinearEncode(b, v), LloydBoundaries.Encode(b, v));
            }
        }
    }

    [Fact]
    public void InvalidArgumentsNameTheParameter()
    {
        float[] ok = [1f, 2f];
        Assert.Equal("bits", Assert.ThrowsAny<ArgumentException>(() => LloydBoundaries.Fit(ok, 9, false)).ParamName);
        Assert.Equal("bits", Assert.ThrowsAny<ArgumentException>(() => LloydBoundaries.Fit(ok, -1, false)).ParamName);
        Assert.Equal("pinZero", Assert.ThrowsAny<ArgumentException>(() => LloydBoundaries.Fit(ok, 0, true)).ParamName);
        Assert.Equal("sortedValues", Assert.ThrowsAny<ArgumentException>(() => LloydBoundaries.Fit([2f, 1f], 1, false)).ParamName);
        Assert.Equal("sortedValues", Assert.ThrowsAny<ArgumentException>(() => LloydBoundaries.Fit([1f, float.NaN], 1, false)).ParamName);
        Assert.Equal("sortedValues", Assert.ThrowsAny<ArgumentException>(() => LloydBoundaries.Fit([], 1, false)).ParamName);
        Assert.Equal("tolerance", Assert.ThrowsAny<ArgumentException>(() => LloydBoundaries.Fit(ok, 1, false, -1)).ParamName);
        Assert.Equal("maxIterations", Assert.ThrowsAny<ArgumentException>(() => LloydBoundaries.Fit(ok, 1, false, 0.1, -1)).ParamName);
        Assert.Equal("boundaries", Assert.ThrowsAny<ArgumentException>(() => LloydBoundaries.Encode([1f], 0f)).ParamName);
    }

    private static float[] DataSet(string name)
    {
        var random = new Random(name.Length * 7919 + name[0]);
        float[] values = name switch
        {
            "gaussian" => Generate(500, () => Gaussian(random)),
            "uniform" => Generate(300, () => (random.NextDouble() * 8) - 3),
            "positive" => Generate(400, () => -Math.Log(1 - random.NextDouble())),
            "negative" => Generate(400, () => Math.Log(1 - random.NextDouble()) - 1e-3),
            // MNIST-like: integers, mostly zero.
            "pixels" => Generate(600, () => random.NextDouble() < 0.7 ? 0 : random.Next(1, 256)),
            "fewDistinct" => Generate(50, () => random.Next(3) switch { 0 => -1, 1 => 0, _ => 2 }),
            "constant" => Generate(20, () => 3.5),
            "zeros" => Generate(10, () => 0),
            "single" => [1.25f],
            "tiny" => [-0.5f, 0.1f, 0.7f],
            "offset" => Generate(300, () => 1000 + (Gaussian(random) * 0.01)),
            "signedZeros" => [-1f, -0f, 0f, -0f, 0f, 0.25f, 2f],
            _ => throw new ArgumentOutOfRangeException(nameof(name)),
        };
        Array.Sort(values);
        return values;
    }

    private static float[] Generate(int n, Func<double> next)
    {
        var values = new float[n];
        for (int i = 0; i < n; i++)
        {
            values[i] = (float)next();
        }

        return values;
    }

    private static double Gaussian(Random random)
    {
        double u = 1 - random.NextDouble();
        double v = random.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u)) * Math.Cos(2 * Math.PI * v);
    }

    private static int LinearEncode(float[] b, float v)
    {
        int cells = b.Length - 1;
        int j = 0;
        for (int k = 1; k < cells; k++)
        {
            if (b[k] <= v)
            {
                j = k;
            }
        }

        return j;
    }

    /// <summary>Σ (v − mean of v's cell)², cells assigned by Encode: the quantity Lloyd minimises.</summary>
    private static double Distortion(float[] values, float[] b)
    {
        int cells = b.Length - 1;
        var sums = new double[cells];
        var counts = new int[cells];
        foreach (float v in values)
        {
            int j = LloydBoundaries.Encode(b, v);
            sums[j] += v;
            counts[j]++;
        }

        double total = 0;
        foreach (float v in values)
        {
            int j = LloydBoundaries.Encode(b, v);
            double d = v - (sums[j] / counts[j]);
            total += d * d;
        }

        return total;
    }

    /// <summary>
    /// Textbook O(c·n) Lloyd from the same initialisation: assign by linear scan, means by direct summation,
    /// empty cell → midpoint, boundaries = midpoints of representatives, keep the best, stop on merged boundaries.
    /// </summary>
    private static float[] NaiveLloyd(float[] values, float[] init, bool pinZero, int iterations)
    {
        float[] b = (float[])init.Clone();
        int cells = b.Length - 1;
        if (pinZero)
        {
            NaiveLloydRange(values.Where(v => v < 0).ToArray(), b.AsSpan(0, (cells / 2) + 1), iterations);
            NaiveLloydRange(values.Where(v => v >= 0).ToArray(), b.AsSpan(cells / 2), iterations);
        }
        else
        {
            NaiveLloydRange(values, b, iterations);
        }

        return b;
    }

    private static void NaiveLloydRange(float[] values, Span<float> b, int iterations)
    {
        int cells = b.Length - 1;
        if (cells == 1)
        {
            return;
        }

        var reps = new double[cells];
        double distortion = NaiveStats(values, b, reps);
        double best = distortion;
        float[] bestB = b.ToArray();
        var next = b.ToArray();
        for (int it = 0; it < iterations && distortion > 0; it++)
        {
            bool increasing = true;
            for (int j = 1; j < cells; j++)
            {
                next[j] = (float)((reps[j - 1] + reps[j]) / 2);
                increasing &= next[j] > next[j - 1];
            }

            if (!increasing || !(next[cells] > next[cells - 1]))
            {
                break;
            }

            next.CopyTo(b);
            distortion = NaiveStats(values, b, reps);
            if (distortion < best)
            {
                best = distortion;
                bestB = b.ToArray();
            }
        }

        bestB.CopyTo(b);
    }

    private static double NaiveStats(float[] values, Span<float> b, double[] reps)
    {
        int cells = b.Length - 1;
        double total = 0;
        for (int j = 0; j < cells; j++)
        {
            double sum = 0;
            int count = 0;
            foreach (float v in values)
            {
                if (b[j] <= v && (v < b[j + 1]))
                {
                    sum += v;
                    count++;
                }
            }

            if (count == 0)
            {
                reps[j] = ((double)b[j] + b[j + 1]) / 2;
                continue;
            }

            reps[j] = sum / count;
            foreach (float v in values)
            {
                if (b[j] <= v && v < b[j + 1])
                {
                    total += (v - reps[j]) * (v - reps[j]);
                }
            }
        }

        return total;
    }
}
