using Squash.Core.Partitioning;
using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.Index.Model;

namespace Squash.Search.Writes;

public static partial class LogIngest
{
    /// <summary>
    /// A partition that ingest grows past this many times the index's partition target is split in two (local rebalancing,
    /// as SPFresh does): a partition far above the others' size costs every query that visits it a scan of rows mostly far
    /// from the query, and its quantizer, fitted to the rows it was built with, fits the new ones less well.
    /// </summary>
    public const int SplitFactor = 2;

    /// <summary>
    /// The partition size this index was built around (rows ÷ partitions at build time). Older manifests do not record it:
    /// the first ingest takes the mean size of the version it starts from and records it, so that uniform growth, too,
    /// ends in splits instead of moving the bound along with the sizes.
    /// </summary>
    /// 0 while unknown (an empty index built before it was recorded): nothing is split then.
    internal static int PartitionTarget(IndexManifest m) =>
        m.Build.PartitionTarget > 0 ? m.Build.PartitionTarget : (int)((m.Count + m.Partitions.Count - 1) / Math.Max(1, m.Partitions.Count));

    /// <summary>Whether a partition holding <paramref name="rows"/> live rows after this run is split.</summary>
    internal static bool ShouldSplit(IndexManifest m, long rows) => PartitionTarget(m) is > 0 and var target && rows > (long)SplitFactor * target;

    /// <summary>One part of a split partition: its segments' contents, its routing centroid and radius.</summary>
    private sealed record SplitPart(Rewritten Rows, float[] Centroid, float Radius);

    /// <summary>Parts a partition of <paramref name="rows"/> rows is split into: as many as make parts of about the target size (at least 2).</summary>
    internal static int SplitParts(IndexManifest m, int rows) => Math.Max(2, (int)Math.Round(rows / (double)PartitionTarget(m)));

    /// <summary>
    /// Splits a rewritten partition into <see cref="SplitParts"/> parts (a large batch can grow one partition many times over,
    /// and halves of it would still be too large): balanced k-means over its rows in the internal space, as the build's,
    /// then each part encoded from scratch as a build encodes a partition (its own KLT, bit allocation and Lloyd cells: the
    /// parts are new partitions, not the old quantizer stretched). Rows stay in ascending row number within each part;
    /// attributes are copied as they are. The first part keeps the partition's id, part i gets <paramref name="firstNewId"/> + i − 1.
    /// </summary>
    private static SplitPart[] Split(IndexManifest m, RoutingData routing, Rewritten whole, int firstNewId, IndexAttributes? attributeInfo)
    {
        int d = m.InternalDimensions, n = whole.Codes.Count, parts = SplitParts(m, n);
        var x = whole.Vectors.Data;
        var fit = BalancedKMeans.Fit(x, n, d, parts, m.Build.Seed ^ whole.Codes.Id,
            new BalancedKMeansOptions { MaxIterations = m.Build.KMeansIterations, Balance = m.Build.Balance });
        var split = new SplitPart[parts];
        for (int h = 0; h < parts; h++)
        {
            var members = Enumerable.Range(0, n).Where(i => fit.Labels[i] == h).ToArray();
            if (members.Length == 0) throw new InvalidOperationException($"splitting partition {whole.Codes.Id} left part {h} of {parts} empty");
            split[h] = EncodeFresh(m, routing, h == 0 ? whole.Codes.Id : firstNewId + h - 1, whole, members, attributeInfo);
        }
        return split;
    }
}
