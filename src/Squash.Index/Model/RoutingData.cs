using Squash.Core.Linalg;
using Squash.Index.Format;

namespace Squash.Index.Model;

/// <summary>
/// Index-wide data a coordinator needs before it touches any partition: the global KLT
/// (truncated to the dimensions that carry bits), partition centroids and radii. Small, cached.
/// </summary>
public sealed class RoutingData
{
    private const uint GlobalMeanSection = 1, GlobalBasisSection = 2, GlobalEigenSection = 3, CentroidSection = 4, RadiusSection = 5, SizeSection = 6;
    // Optional (an index without them is read as before, and a reader that predates them ignores them): per attribute
    // (attribute, values) pairs, then every attribute's counts and centroids one after the other.
    private const uint ValueHeadSection = 7, ValueCountSection = 8, ValueCentroidSection = 9;

    public required Klt GlobalTransform { get; init; }
    /// <summary>P × InternalDimensions, row-major, in the internal metric space.</summary>
    public required float[] Centroids { get; init; }
    /// <summary>Largest distance from a partition's centroid to one of its members: lets a query skip partitions safely.</summary>
    public required float[] Radii { get; init; }
    public required int[] PartitionSizes { get; init; }
    /// <summary>Per-partition, per-value centroids of the attributes a build chose (<see cref="Model.ValueCentroids.Chosen"/>); empty for none.</summary>
    public IReadOnlyList<ValueCentroids> ValueCentroids { get; init; } = [];

    /// <summary>The value centroids of attribute <paramref name="attribute"/>, or null.</summary>
    public ValueCentroids? ValueCentroidsOf(int attribute)
    {
        foreach (var v in ValueCentroids) if (v.Attribute == attribute) return v;
        return null;
    }
    public int PartitionCount => Radii.Length;
    public int InternalDimensions => GlobalTransform.InputDims;

    public byte[] ToSegment()
    {
        var t = GlobalTransform;
        var sections = new List<(uint, ReadOnlyMemory<byte>)>
        {
            (GlobalMeanSection, SegmentFile.Bytes(t.Mean)),
            (GlobalBasisSection, SegmentFile.Bytes(t.Basis)),
            (GlobalEigenSection, SegmentFile.Bytes(t.Eigenvalues)),
            (CentroidSection, SegmentFile.Bytes(this.Centroids)),
            (RadiusSection, SegmentFile.Bytes(this.Radii)),
            (SizeSection, SegmentFile.Bytes(PartitionSizes)),
        };
        if (ValueCentroids.Count > 0)
        {
            sections.Add((ValueHeadSection, SegmentFile.Bytes(ValueCentroids.SelectMany(v => new[] { v.Attribute, v.Values }).ToArray())));
            sections.Add((ValueCountSection, SegmentFile.Bytes(ValueCentroids.SelectMany(v => v.Counts).ToArray())));
            sections.Add((ValueCentroidSection, SegmentFile.Bytes(ValueCentroids.SelectMany(v => v.Centroids).ToArray())));
        }
        return SegmentFile.Write(SegmentKind.Routing, PartitionCount, t.InputDims, sections);
    }

    public static RoutingData FromSegment(byte[] file, string name, IndexManifest manifest)
    {
        var v = SegmentFile.Open(file, name, SegmentKind.Routing);
        int d = manifest.InternalDimensions, m = manifest.GlobalDimensions, p = manifest.Partitions.Count;
        if (v.Columns != d || v.Rows != p) throw new CorruptIndexException($"segment '{name}' does not match its manifest (dimensions or partition count)");
        var klt = Klt.FromParts(v.Array<float>(GlobalMeanSection, d), v.Array<float>(GlobalBasisSection, (long)m * d), v.Array<double>(GlobalEigenSection, d), d, m);
        return new RoutingData
        {
            GlobalTransform = klt,
            Centroids = v.Array<float>(CentroidSection, (long)p * d),
            Radii = v.Array<float>(RadiusSection, p),
            PartitionSizes = v.Array<int>(SizeSection, p),
            ValueCentroids = v.HasSection(ValueHeadSection) ? ReadValueCentroids(v, name, manifest, p, d) : [],
        };
    }

    private static ValueCentroids[] ReadValueCentroids(SegmentView v, string name, IndexManifest manifest, int p, int d)
    {
        var head = v.Section(ValueHeadSection);
        if (head.Length % 8 != 0) throw new CorruptIndexException($"segment '{name}' has a value-centroid head of {head.Length} bytes");
        var pairs = v.Array<int>(ValueHeadSection, head.Length / 4);
        long slots = 0;
        var schema = manifest.Attributes?.Attributes;
        for (int i = 0; i < pairs.Length; i += 2)
        {
            int a = pairs[i], values = pairs[i + 1];
            if (schema is null || a < 0 || a >= schema.Count || schema[a].Type is not (Attributes.AttributeType.Category or Attributes.AttributeType.Number or Attributes.AttributeType.Integer)
                || values < 1 || values > Model.ValueCentroids.MaxValues
                || (i > 0 && a <= pairs[i - 2]))
                throw new CorruptIndexException($"segment '{name}' has value centroids for attribute {a} ({values} values), which its manifest does not allow");
            slots += (long)p * values;
        }
        var counts = v.Array<int>(ValueCountSection, slots);
        var centroids = v.Array<float>(ValueCentroidSection, slots * d);
        var result = new ValueCentroids[pairs.Length / 2];
        long at = 0;
        for (int i = 0; i < result.Length; i++)
        {
            int values = pairs[2 * i + 1], n = p * values;
            var c = counts.AsSpan((int)at, n).ToArray();
            if (c.Any(x => x < 0)) throw new CorruptIndexException($"segment '{name}' has a negative value-centroid count");
            result[i] = new ValueCentroids(pairs[2 * i], values, c, centroids.AsSpan((int)(at * d), n * d).ToArray());
            at += n;
        }
        return result;
    }
}
