namespace Squash.Core.Partitioning;

/// <summary>Result of a partitioning: centroids, the partition of every row and the partition sizes.</summary>
public sealed class PartitionAssignment
{
    /// <summary>Number of partitions P.</summary>
    public int Partitions;

    /// <summary>Dimensionality d of rows and centroids.</summary>
    public int Dimensions;

    /// <summary>P × d row-major; centroid p is the mean of its members (kept from the last fit if it has none).</summary>
    public float[] Centroids = [];

    /// <summary>Partition of each input row.</summary>
    public int[] Labels = [];

    /// <summary>Number of rows in each partition; sums to the row count.</summary>
    public int[] Sizes = [];
}
