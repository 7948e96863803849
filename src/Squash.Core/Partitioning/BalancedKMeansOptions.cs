namespace Squash.Core.Partitioning;

/// <summary>Tuning for <see cref="BalancedKMeans"/>.</summary>
public sealed record BalancedKMeansOptions
{
    /// <summary>Upper bound on Lloyd iterations over the sample (stops earlier once labels settle).</summary>
    public int MaxIterations { get; init; } = 25;

    /// <summary>Allowed relative deviation of partition sizes: each size lies in [floor((1−b)·N/P), ceil((1+b)·N/P)].</summary>
    public double Balance { get; init; } = 0.10;

    /// <summary>Rows used for seeding and Lloyd iterations; 0 → min(N, max(256·P, 20000)).</summary>
    public int SampleSize { get; init; }

    /// <summary>Degree of parallelism; 0 → Environment.ProcessorCount. Results do not depend on it.</summary>
    public int Threads { get; init; }
}
