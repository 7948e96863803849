using Squash.Index.Attributes;

namespace Squash.Index.Model;

/// <summary>
/// For one low-cardinality attribute (a category, or a number or integer with one cell per value): per partition and
/// value, the centroid of the partition's rows that hold the value (internal space). A filter on the attribute ranks partitions by where its matches lie inside them, not only
/// by the partition's centroid (bench/recall.md, "Where the anti-correlated family's misses lie"). Part of the routing data.
/// </summary>
/// <param name="Attribute">Position of the attribute in the manifest's schema.</param>
/// <param name="Values">Value slots covered, 0 … Values − 1: a category's dictionary codes (codes an ingest added later have
/// no centroid), a number's or integer's cells (each one value, see <see cref="Chosen"/>).</param>
/// <param name="Counts">Partitions × Values: rows behind each centroid; 0 where there is none (the partition centroid stands in).</param>
/// <param name="Centroids">Partitions × Values × InternalDimensions, row-major; zeros where Counts is 0.</param>
public sealed record ValueCentroids(int Attribute, int Values, int[] Counts, float[] Centroids)
{
    /// <summary>An attribute gets value centroids with at most this many values in its dictionary.</summary>
    public const int MaxValues = 64;

    /// <summary>The bytes all value centroids of an index may take (they are read with the routing data on every cold start).</summary>
    public const long MaxBytes = 16L << 20;

    /// <summary>
    /// The attributes a build keeps value centroids for: category attributes with 2 … <see cref="MaxValues"/> values, and
    /// number or integer attributes with 2 … <see cref="MaxValues"/> cells (a build gives one cell per distinct value up to
    /// 255 values, and 255 cells beyond, so such cells each hold one value), fewest values first, while their centroids fit
    /// in <see cref="MaxBytes"/> at <paramref name="partitions"/> partitions. Decided from the encoders and the planned
    /// partition count alone, so that every encode task decides the same.
    /// </summary>
    public static int[] Chosen(IndexAttributes? attributes, int partitions, int dimensions)
    {
        if (attributes is null) return [];
        var chosen = new List<int>();
        long bytes = 0;
        foreach (int a in Enumerable.Range(0, attributes.Attributes.Count)
                     .Where(a => SlotsOf(attributes.Attributes[a]) is >= 2 and <= MaxValues)
                     .OrderBy(a => SlotsOf(attributes.Attributes[a])).ThenBy(a => a))
        {
            long need = (long)partitions * SlotsOf(attributes.Attributes[a]) * dimensions * sizeof(float);
            if (bytes + need > MaxBytes) break;
            bytes += need;
            chosen.Add(a);
        }
        return [.. chosen.Order()];
    }

    /// <summary>Value slots of an attribute: a category's dictionary size, a number's or integer's cells; 0 for other types.</summary>
    public static int SlotsOf(AttributeInfo info) => info.Type switch
    {
        AttributeType.Category => info.Values?.Length ?? 0,
        AttributeType.Number or AttributeType.Integer => info.Boundaries is null ? 0 : info.Cells,
        _ => 0,
    };

    /// <summary>The slot of a stored value (a category's code, a number's or integer's value), or −1.</summary>
    public static int SlotOf(AttributeInfo info, double value) => info.Type switch
    {
        AttributeType.Category => (int)value,
        AttributeType.Number or AttributeType.Integer when info.Boundaries is not null => AttributeEncoding.Encode(info.Boundaries, value),
        _ => -1,
    };

    /// <summary>
    /// One partition's per-value means over its rows (<paramref name="x"/>, n × d internal space, in row order) for each of
    /// <paramref name="attributes"/>: counts (Σ values) and means (Σ values × d), in double then rounded once.
    /// </summary>
    public static (int[] Counts, float[] Means) Of(PartitionAttributes rows, float[] x, int d, IReadOnlyList<int> attributes, IReadOnlyList<int> values)
    {
        int total = values.Sum();
        var counts = new int[total];
        var sums = new double[(long)total * d];
        int at = 0;
        for (int i = 0; i < attributes.Count; i++)
        {
            var column = rows.Columns[attributes[i]];
            var ids = column.Ids;
            var cells = column.Codes;
            if (ids is null && cells is null) throw new ArgumentException($"attribute {attributes[i]} has neither codes nor cells");
            for (int row = 0; row < rows.Count; row++)
            {
                int v = ids is not null ? ids[row] : cells![row]; // a number's missing code (255) lies past every slot
                if (v < 0 || v >= values[i]) continue;
                int slot = at + v;
                counts[slot]++;
                var s = sums.AsSpan((int)((long)slot * d), d);
                var r = x.AsSpan(row * d, d);
                for (int j = 0; j < d; j++) s[j] += r[j];
            }
            at += values[i];
        }
        var means = new float[sums.Length];
        for (int slot = 0; slot < total; slot++)
            if (counts[slot] > 0)
                for (int j = 0; j < d; j++) means[(long)slot * d + j] = (float)(sums[(long)slot * d + j] / counts[slot]);
        return (counts, means);
    }

    /// <summary>Rows behind partition <paramref name="p"/>'s centroid for <paramref name="value"/> (0: none, or a code past <see cref="Values"/>).</summary>
    public int CountOf(int p, int value) => value >= 0 && value < Values ? Counts[p * Values + value] : 0;

    public ReadOnlySpan<float> CentroidOf(int p, int value, int d) => Centroids.AsSpan((int)(((long)p * Values + value) * d), d);

    /// <summary>
    /// The same centroids for an index whose partitions changed (an ingest): <paramref name="keep"/> maps each new
    /// partition to the old one whose centroids it keeps, or −1 for none (a split's parts: the partition centroid stands in).
    /// </summary>
    public ValueCentroids Carried(IReadOnlyList<int> keep, int d)
    {
        var counts = new int[keep.Count * Values];
        var centroids = new float[(long)keep.Count * Values * d];
        for (int p = 0; p < keep.Count; p++)
        {
            if (keep[p] < 0) continue;
            Counts.AsSpan(keep[p] * Values, Values).CopyTo(counts.AsSpan(p * Values, Values));
            Centroids.AsSpan((int)((long)keep[p] * Values * d), Values * d).CopyTo(centroids.AsSpan((int)((long)p * Values * d), Values * d));
        }
        return this with { Counts = counts, Centroids = centroids };
    }
}
