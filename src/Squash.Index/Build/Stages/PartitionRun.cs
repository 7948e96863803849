using Squash.Index.Format;

namespace Squash.Index.Build.Stages;

/// <summary>
/// What an assign task hands an encode task: the rows of one source chunk that belong to one partition, as row
/// numbers (ascending) and their vectors in the internal metric space. A segment file, so it is checksummed like
/// every other blob the build writes.
/// </summary>
/// <remarks><see cref="Attributes"/>: the rows' attributes as a <see cref="Model.PartitionAttributes"/> segment, when the index has them.</remarks>
public sealed record PartitionRun(int[] Ids, float[] Vectors, int Dimensions, byte[]? Attributes = null)
{
    private const uint IdsSection = 1, VectorsSection = 2, AttributesSection = 3;

    public int Count => Ids.Length;

    public byte[] ToBytes() => SegmentFile.Write(SegmentKind.BuildRun, Ids.Length, Dimensions, Attributes is null
        ? [(IdsSection, SegmentFile.Bytes(Ids)), (VectorsSection, SegmentFile.Bytes(Vectors))]
        : [(IdsSection, SegmentFile.Bytes(Ids)), (VectorsSection, SegmentFile.Bytes(Vectors)), (AttributesSection, (ReadOnlyMemory<byte>)Attributes)]);

    public static PartitionRun FromBytes(byte[] bytes, string name)
    {
        var view = SegmentFile.Open(bytes, name, SegmentKind.BuildRun);
        int n = checked((int)view.Rows), d = view.Columns;
        return new PartitionRun(view.Array<int>(IdsSection, n), view.Array<float>(VectorsSection, (long)n * d), d,
            view.HasSection(AttributesSection) ? view.Section(AttributesSection).ToArray() : null);
    }
}
