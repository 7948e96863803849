using Squash.Core;
using Squash.Index.Attributes;

namespace Squash.Index.Build;

public sealed record IndexBuildOptions
{
    public Metric Metric { get; init; } = Metric.L2;
    /// <summary>0 picks <see cref="DefaultPartitions"/>.</summary>
    public int Partitions { get; init; }
    /// <summary>Average OSQ bits per kept KLT dimension (sign bits included); the budget is this × kept dimensions.</summary>
    public double BitsPerDimension { get; init; } = 4;
    public int MaxBitsPerDimension { get; init; } = Squash.Core.Quantization.BitAllocation.MaxBitsPerDimension;
    public int Seed { get; init; } = 42;
    public double Balance { get; init; } = 0.10;
    public int KMeansIterations { get; init; } = 25;
    /// <summary>
    /// Fraction of the variance inside partitions (each vector's offset from its partition's mean) that the codes'
    /// global subspace keeps; the rest goes to each vector's residual norm. Within-partition variance is what tells
    /// neighbours apart, so the same fraction keeps the same share of it whatever the spread between clusters; fewer
    /// kept components make every query's rotations cheaper (m × d once, m_p × m per partition).
    /// </summary>
    public double EnergyKept { get; init; } = 0.90;
    /// <summary>Fraction of the total variance kept by the space k-means clusters in (the axes that separate partitions).</summary>
    public const double ClusteringEnergy = 0.95;
    /// <summary>Attributes of every vector (row i describes vector i), or null.</summary>
    public AttributeTable? Attributes { get; init; }
    /// <summary>
    /// Rows the partitioning is fitted without and that join their nearest partition afterwards, as a vector that
    /// arrives after the build would: the recall calibration's queries, so that they are as new to the partitions
    /// as real queries are (distinct row numbers; null: none).
    /// </summary>
    public int[]? HeldOutRows { get; init; }

    /// <summary>
    /// Default partition count: P = clamp(N / 1,000, 1, 4,096). A partition is the unit of work a function
    /// invocation scans; about a thousand vectors keeps its segments small (tens of KB of codes) while the
    /// per-partition query rotation (m_p × m multiply-adds) stays a small share of the scan.
    /// Fashion-MNIST (60,000) gets 60 partitions; 1,000,000 vectors get 1,000.
    /// </summary>
    public static int DefaultPartitions(long count, int dims) => (int)Math.Clamp(count / 1000, 1, 4096);

    public void Validate(long count, int dims)
    {
        if (count < 1) throw new ArgumentException("the vector file holds no vectors");
        if (dims is < 1 or > 4096) throw new ArgumentException($"vectors have {dims} dimensions; 1 to 4,096 are supported");
        if (Partitions < 0 || Partitions > count) throw new ArgumentException($"--partitions must be between 1 and the vector count ({count}), got {Partitions}");
        if (!(BitsPerDimension > 0 && BitsPerDimension <= MaxBitsPerDimension)) throw new ArgumentException($"--bits-per-dim must be > 0 and ≤ {MaxBitsPerDimension}, got {BitsPerDimension}");
        if (MaxBitsPerDimension is < 1 or > Squash.Core.Quantization.BitAllocation.MaxBitsPerDimension)
            throw new ArgumentException($"max bits per dimension must be 1..{Squash.Core.Quantization.BitAllocation.MaxBitsPerDimension}");
        if (Balance is <= 0 or >= 1) throw new ArgumentException("balance must be in (0, 1)");
        if (!(EnergyKept > 0 && EnergyKept <= 1)) throw new ArgumentException($"the kept energy fraction must be in (0, 1], got {EnergyKept}");
        if (Attributes is not null && Attributes.Count != count)
            throw new ArgumentException($"the attributes file has {Attributes.Count:N0} rows but there are {count:N0} vectors (rows are matched by position)");
        if (KMeansIterations < 1) throw new ArgumentException("k-means iterations must be ≥ 1");
        if (HeldOutRows is { } held)
        {
            if (held.Any(r => r < 0 || r >= count) || held.Distinct().Count() != held.Length)
                throw new ArgumentException("held-out rows must be distinct row numbers of the vectors");
            if (count - held.Length < Math.Max(1, Partitions)) throw new ArgumentException("too many held-out rows: fewer rows than partitions are left to fit");
        }
    }
}

/// <summary>Build progress: a stage name and how far it is (0..1).</summary>
public readonly record struct BuildProgress(string Stage, double Fraction);

/// <summary>Where a build writes its segments (a blob store in production, memory in tests).</summary>
public interface ISegmentSink
{
    Task WriteAsync(string name, ReadOnlyMemory<byte> data, CancellationToken cancellationToken);
}
