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

    public required Klt GlobalTransform { get; init; }
    /// <summary>P × InternalDimensions, row-major, in the internal metric space.</summary>
    public required float[] Centroids { get; init; }
    /// <summary>Largest distance from a partition's centroid to one of its members: lets a query skip partitions safely.</summary>
    public required float[] Radii { get; init; }
    public required int[] PartitionSizes { get; init; }
    public int PartitionCount => Radii.Length;
    public int InternalDimensions => GlobalTransform.InputDims;

    public byte[] ToSegment()
    {
        var t = GlobalTransform;
        return SegmentFile.Write(SegmentKind.Routing, PartitionCount, t.InputDims,
        [
            (GlobalMeanSection, SegmentFile.Bytes(t.Mean)),
            (GlobalBasisSection, SegmentFile.Bytes(t.Basis)),
            (GlobalEigenSection, SegmentFile.Bytes(t.Eigenvalues)),
            (CentroidSection, SegmentFile.Bytes(this.Centroids)),
            (RadiusSection, SegmentFile.Bytes(this.Radii)),
            (SizeSection, SegmentFile.Bytes(PartitionSizes)),
        ]);
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
        };
    }
}
