using Squash.Index.Format;

namespace Squash.Search.Builds;

/// <summary>
/// What one assign task contributes to the recall calibration, from the chunk it already holds: each calibration query's
/// nearest rows of the chunk (<see cref="StreamingGroundTruth.BlockBest"/>), the trained partition of each of those rows,
/// and the calibration queries that are rows of this chunk, as stored (internal space) with their partitions. The publish
/// task merges these instead of reading the source again, and never needs a row-to-partition map of the whole index.
/// </summary>
public sealed record CalibrationPartial(
    (float Distance, int Id)[][] Best,
    int[] LabelIds, int[] Labels,
    int[] HeldIds, int[] HeldLabels, float[] HeldStored, int Dimensions)
{
    private const uint HeadSection = 1, CountSection = 2, IdSection = 3, DistanceSection = 4, LabelIdSection = 5, LabelSection = 6,
        HeldIdSection = 7, HeldLabelSection = 8, HeldStoredSection = 9;

    public byte[] ToBytes()
    {
        var counts = Best.Select(b => b.Length).ToArray();
        var ids = Best.SelectMany(b => b.Select(x => x.Id)).ToArray();
        var distances = Best.SelectMany(b => b.Select(x => x.Distance)).ToArray();
        long[] head = [Best.Length, ids.Length, LabelIds.Length, HeldIds.Length];
        return SegmentFile.Write(SegmentKind.BuildRun, Best.Length, Dimensions,
        [
            (HeadSection, SegmentFile.Bytes(head)), (CountSection, SegmentFile.Bytes(counts)), (IdSection, SegmentFile.Bytes(ids)),
            (DistanceSection, SegmentFile.Bytes(distances)), (LabelIdSection, SegmentFile.Bytes(LabelIds)), (LabelSection, SegmentFile.Bytes(Labels)),
            (HeldIdSection, SegmentFile.Bytes(HeldIds)), (HeldLabelSection, SegmentFile.Bytes(HeldLabels)), (HeldStoredSection, SegmentFile.Bytes(HeldStored)),
        ]);
    }

    public static CalibrationPartial FromBytes(byte[] bytes, string name)
    {
        var view = SegmentFile.Open(bytes, name, SegmentKind.BuildRun);
        var head = view.Array<long>(HeadSection, 4);
        int queries = checked((int)head[0]), total = checked((int)head[1]), labels = checked((int)head[2]), held = checked((int)head[3]), d = view.Columns;
        var counts = view.Array<int>(CountSection, queries);
        var ids = view.Array<int>(IdSection, total);
        var distances = view.Array<float>(DistanceSection, total);
        if (counts.Any(c => c < 0) || counts.Sum(c => (long)c) != total) throw new CorruptIndexException($"'{name}' has inconsistent neighbour counts");
        var best = new (float, int)[queries][];
        int at = 0;
        for (int q = 0; q < queries; q++)
        {
            best[q] = new (float, int)[counts[q]];
            for (int i = 0; i < counts[q]; i++, at++) best[q][i] = (distances[at], ids[at]);
        }
        return new CalibrationPartial(best, view.Array<int>(LabelIdSection, labels), view.Array<int>(LabelSection, labels),
            view.Array<int>(HeldIdSection, held), view.Array<int>(HeldLabelSection, held), view.Array<float>(HeldStoredSection, (long)held * d), d);
    }
}
