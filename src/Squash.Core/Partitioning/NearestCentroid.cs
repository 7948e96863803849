namespace Squash.Core.Partitioning;

/// <summary>
/// Assigns rows to their nearest centroid (squared L2, ties to the lower index). Each row's answer depends only on
/// that row and the centroids, whatever the thread count or how the rows are split into chunks, so a build that
/// assigns its source chunk by chunk on several workers labels every row as a single pass over all rows would.
/// </summary>
public static class NearestCentroid
{
    /// <summary>Labels <paramref name="count"/> row-major rows of <paramref name="dims"/> floats into <paramref name="labels"/>.</summary>
    public static unsafe void Assign(ReadOnlySpan<float> rows, int count, int dims, ReadOnlySpan<float> centroids, int partitions,
        Span<int> labels, int threads = 0)
    {
        if (count < 0 || dims < 1 || partitions < 1) throw new ArgumentException("count ≥ 0, dims ≥ 1 and partitions ≥ 1 are required");
        if (rows.Length < (long)count * dims) throw new ArgumentException($"rows holds {rows.Length} values, fewer than {count} × {dims}", nameof(rows));
        if (centroids.Length < (long)partitions * dims) throw new ArgumentException($"centroids hold {centroids.Length} values, fewer than {partitions} × {dims}", nameof(centroids));
        if (labels.Length < count) throw new ArgumentException("labels is shorter than the row count", nameof(labels));
        if (count == 0) return;
        var table = new CentroidTable(centroids[..(partitions * dims)], partitions, dims);
        var nearest = new int[count];
        var distance = new float[count];
        var options = new ParallelOptions { MaxDegreeOfParallelism = threads > 0 ? threads : Environment.ProcessorCount };
        fixed (float* data = rows)
            table.Nearest(data, null, count, 1, nearest, distance, options);
        nearest.AsSpan().CopyTo(labels);
    }
}
