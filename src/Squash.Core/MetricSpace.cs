namespace Squash.Core;

/// <summary>
/// Maps user vectors into the space where the index works (squared L2 everywhere) and maps
/// internal squared distances back to the distance the user asked for.
/// <list type="bullet">
/// <item>L2: identity; reported distance is the Euclidean distance.</item>
/// <item>Cosine: x / ‖x‖ for stored vectors and queries; ‖a−b‖² = 2 − 2cos, reported as 1 − cos.</item>
/// <item>InnerProduct: stored x ↦ [x, sqrt(M² − ‖x‖²)], query q ↦ [q, 0] with M the largest stored norm,
/// so ‖q'−x'‖² = ‖q‖² + M² − 2 q·x: the L2 order is the descending q·x order. Reported as −q·x.</item>
/// </list>
/// </summary>
public sealed class MetricSpace
{
    public MetricSpace(Metric metric, int inputDimensions, double maxNorm = 0)
    {
        if (inputDimensions < 1) throw new ArgumentOutOfRangeException(nameof(inputDimensions));
        if (metric == Metric.InnerProduct && !(maxNorm >= 0 && double.IsFinite(maxNorm)))
            throw new ArgumentOutOfRangeException(nameof(maxNorm));
        Metric = metric;
        InputDimensions = inputDimensions;
        MaxNorm = maxNorm;
    }

    public Metric Metric { get; }
    public int InputDimensions { get; }

    /// <summary>Largest norm of a stored vector (inner product only).</summary>
    public double MaxNorm { get; }

    /// <summary>
    /// The largest norm a query or a written vector may have (the API refuses longer ones). Distances are float32 squared
    /// L2 internally: two vectors of norm ≤ 10¹⁵ are at most 4·10³⁰ apart squared, far below float32's 3.4·10³⁸, so no
    /// distance, bound or code error overflows to +∞ (which JSON cannot carry: the nodes' answers failed to serialise).
    /// </summary>
    public const double MaxVectorNorm = 1e15;

    /// <summary>What stops a vector of finite values from being stored or searched under a metric.</summary>
    public enum NormProblem { None, TooLong, ZeroUnderCosine }

    /// <summary>
    /// The rule the API's validation and the build's input check share, from the vector's squared norm (summed in double:
    /// float32 squares overflow from 1.8·10¹⁹ on): longer than <see cref="MaxVectorNorm"/>, or all zeros under cosine.
    /// </summary>
    public static NormProblem CheckNorm(double squaredNorm, Metric metric) =>
        Math.Sqrt(squaredNorm) > MaxVectorNorm ? NormProblem.TooLong
        : metric == Metric.Cosine && squaredNorm == 0 ? NormProblem.ZeroUnderCosine
        : NormProblem.None;

    /// <summary>
    /// Why a build refuses row <paramref name="rowNumber"/> of its input (null: it takes it), in the words `squash build` and a
    /// queue build's train task both use.
    /// </summary>
    public static string? RowProblem(ReadOnlySpan<float> row, Metric metric, long rowNumber)
    {
        double squared = 0;
        foreach (float v in row) squared += (double)v * v;
        return CheckNorm(squared, metric) switch
        {
            NormProblem.TooLong => $"row {rowNumber} has norm {Math.Sqrt(squared).ToString("G3", System.Globalization.CultureInfo.InvariantCulture)}, "
                + "larger than the largest a vector may have (10^15): its float32 distances would overflow",
            NormProblem.ZeroUnderCosine => $"row {rowNumber} is all zeros: a zero vector has no direction, so it has no cosine distance",
            _ => null,
        };
    }

    /// <summary>Dimensions of the internal space (one more for inner product).</summary>
    public int InternalDimensions => Metric == Metric.InnerProduct ? InputDimensions + 1 : InputDimensions;

    /// <summary>Scans stored vectors for the inner-product augmentation constant.</summary>
    public static double MaxRowNorm(ReadOnlySpan<float> rows, int dims)
    {
        double max = 0;
        for (int i = 0; i + dims <= rows.Length; i += dims)
        {
            double s = 0;
            foreach (float v in rows.Slice(i, dims)) s += (double)v * v;
            max = Math.Max(max, s);
        }
        return Math.Sqrt(max);
    }

    /// <summary>Maps one stored vector; throws for a zero vector under cosine.</summary>
    public void MapStored(ReadOnlySpan<float> x, Span<float> output) => Map(x, output, stored: true);

    /// <summary>Maps one query vector.</summary>
    public void MapQuery(ReadOnlySpan<float> q, Span<float> output) => Map(q, output, stored: false);

    private void Map(ReadOnlySpan<float> x, Span<float> output, bool stored)
    {
        if (x.Length != InputDimensions) throw new ArgumentException($"expected {InputDimensions} dimensions, got {x.Length}", nameof(x));
        if (output.Length != InternalDimensions) throw new ArgumentException("output length", nameof(output));
        switch (Metric)
        {
            case Metric.L2:
                x.CopyTo(output);
                break;
            case Metric.Cosine:
            {
                double s = 0;
                foreach (float v in x) s += (double)v * v;
                if (s == 0) throw new ArgumentException("a zero vector has no direction, so it has no cosine distance", nameof(x));
                float inv = (float)(1 / Math.Sqrt(s));
                if (float.IsNormal(inv))
                    for (int i = 0; i < x.Length; i++) output[i] = x[i] * inv;
                else
                {
                    // A vector of subnormal values (1/‖x‖ past float32's range: +∞, and ∞ · 0 = NaN) or of norm past 10³⁸
                    // (1/‖x‖ subnormal, losing digits): divide in double instead.
                    double norm = Math.Sqrt(s);
                    for (int i = 0; i < x.Length; i++) output[i] = (float)(x[i] / norm);
                }
                break;
            }
            case Metric.InnerProduct:
            {
                x.CopyTo(output);
                if (stored)
                {
                    double s = 0;
                    foreach (float v in x) s += (double)v * v;
                    output[^1] = (float)Math.Sqrt(Math.Max(0, MaxNorm * MaxNorm - s));
                }
                else
                {
                    output[^1] = 0;
                }
                break;
            }
        }
    }

    /// <summary>
    /// Converts an internal squared L2 distance to the reported distance. For inner product the
    /// query's squared norm is needed: −q·x = (d² − ‖q‖² − M²)/2.
    /// </summary>
    public float ToReported(float squaredDistance, double querySquaredNorm) => Metric switch
    {
        Metric.L2 => MathF.Sqrt(Math.Max(0f, squaredDistance)),
        Metric.Cosine => squaredDistance / 2f,
        _ => (float)((squaredDistance - querySquaredNorm - MaxNorm * MaxNorm) / 2),
    };

    public static string Name(Metric m) => m switch { Metric.L2 => "l2", Metric.Cosine => "cosine", _ => "ip" };

    public static Metric Parse(string s) => s.ToLowerInvariant() switch
    {
        "l2" or "euclidean" => Metric.L2,
        "cosine" or "cos" => Metric.Cosine,
        "ip" or "dot" or "inner-product" => Metric.InnerProduct,
        _ => throw new ArgumentException($"unknown metric '{s}' (expected l2, cosine or ip)"),
    };
}
