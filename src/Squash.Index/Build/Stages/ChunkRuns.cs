using Squash.Index.Format;

namespace Squash.Index.Build.Stages;

/// <summary>
/// What one assign task writes for its chunk: one blob holding its rows grouped by trained partition — one
/// <see cref="PartitionRun"/> segment per partition some row chose, in ascending partition order, back to back — and a
/// small index of where each run lies (<see cref="ChunkRunIndex"/>). One write per chunk instead of one per (chunk,
/// partition), and an encode task reads the runs of consecutive partitions with one ranged read per chunk.
/// </summary>
public static class ChunkRuns
{
    /// <summary>The runs blob and its index; <paramref name="runs"/> must be in ascending partition order.</summary>
    public static (byte[] Runs, ChunkRunIndex Index) Write(IReadOnlyList<(int Partition, PartitionRun Run)> runs)
    {
        var parts = runs.Select(r => r.Run.ToBytes()).ToArray();
        var offsets = new long[parts.Length + 1];
        for (int i = 0; i < parts.Length; i++)
        {
            if (i > 0 && runs[i].Partition <= runs[i - 1].Partition) throw new ArgumentException("runs must be in ascending partition order", nameof(runs));
            offsets[i + 1] = offsets[i] + parts[i].LongLength;
        }
        var blob = new byte[offsets[^1]];
        for (int i = 0; i < parts.Length; i++) parts[i].CopyTo(blob, offsets[i]);
        return (blob, new ChunkRunIndex(runs.Select(r => r.Partition).ToArray(), runs.Select(r => r.Run.Count).ToArray(), offsets));
    }

    /// <summary>
    /// The runs inside <paramref name="bytes"/>, a ranged read starting at byte <paramref name="start"/> of a runs blob: each
    /// (offset, length) must lie inside it. Every run is checked (checksum, dimensions) as it is parsed.
    /// </summary>
    public static PartitionRun Slice(byte[] bytes, long start, long offset, long length, int dimensions, string name)
    {
        if (offset < start || offset + length > start + bytes.LongLength)
            throw new ArgumentOutOfRangeException(nameof(offset), $"run at {offset}+{length} of '{name}' lies outside the range read ({start}+{bytes.LongLength})");
        var run = PartitionRun.FromBytes(bytes.AsSpan((int)(offset - start), (int)length).ToArray(), $"{name} at byte {offset}");
        if (run.Count > 0 && run.Dimensions != dimensions)
            throw new Squash.Index.Format.CorruptIndexException($"run at byte {offset} of '{name}' has {run.Dimensions} dimensions; the build has {dimensions}");
        return run;
    }
}

/// <summary>Where each partition's run lies in a chunk's runs blob: partition, rows, and byte offsets (one more than runs: the end).</summary>
public sealed record ChunkRunIndex(int[] Partitions, int[] Counts, long[] Offsets)
{
    private const uint PartitionSection = 1, CountSection = 2, OffsetSection = 3;

    public int Runs => Partitions.Length;

    public byte[] ToBytes() => SegmentFile.Write(SegmentKind.BuildRun, Partitions.Length, 0,
        [(PartitionSection, SegmentFile.Bytes(Partitions)), (CountSection, SegmentFile.Bytes(Counts)), (OffsetSection, SegmentFile.Bytes(Offsets))]);

    public static ChunkRunIndex FromBytes(byte[] bytes, string name)
    {
        var view = SegmentFile.Open(bytes, name, SegmentKind.BuildRun);
        int n = checked((int)view.Rows);
        var index = new ChunkRunIndex(view.Array<int>(PartitionSection, n), view.Array<int>(CountSection, n), view.Array<long>(OffsetSection, n + 1));
        for (int i = 0; i < n; i++)
            if (index.Offsets[i + 1] <= index.Offsets[i] || (i > 0 && index.Partitions[i] <= index.Partitions[i - 1]) || index.Counts[i] < 0)
                throw new CorruptIndexException($"'{name}' is not a valid run index (entry {i})");
        return index;
    }
}

/// <summary>
/// One encode task's share: consecutive kept partitions (<see cref="First"/> onwards, trained as <see cref="Trained"/>) and,
/// for each of them and each chunk, where its run lies in that chunk's runs blob (length 0: no row of the chunk chose it).
/// The runs of consecutive partitions are consecutive in a runs blob, so a task reads one range per chunk.
/// </summary>
public sealed record EncodeTaskLayout(int First, int[] Trained, int Chunks, long[] Offsets, long[] Lengths)
{
    private const uint HeadSection = 1, TrainedSection = 2, OffsetSection = 3, LengthSection = 4;

    public int Partitions => Trained.Length;

    /// <summary>The run of the task's i-th partition in chunk c.</summary>
    public (long Offset, long Length) Run(int i, int chunk) => (Offsets[(long)i * Chunks + chunk], Lengths[(long)i * Chunks + chunk]);

    /// <summary>The byte range of chunk c's runs blob that holds every run of this task (Length 0: none).</summary>
    public (long Offset, long Length) Range(int chunk)
    {
        long start = long.MaxValue, end = 0;
        for (int i = 0; i < Partitions; i++)
        {
            var (o, l) = Run(i, chunk);
            if (l == 0) continue;
            start = Math.Min(start, o);
            end = Math.Max(end, o + l);
        }
        return end == 0 ? (0, 0) : (start, end - start);
    }

    public byte[] ToBytes() => SegmentFile.Write(SegmentKind.BuildRun, Trained.Length, Chunks,
    [
        (HeadSection, SegmentFile.Bytes(new long[] { First })), (TrainedSection, SegmentFile.Bytes(Trained)),
        (OffsetSection, SegmentFile.Bytes(Offsets)), (LengthSection, SegmentFile.Bytes(Lengths)),
    ]);

    public static EncodeTaskLayout FromBytes(byte[] bytes, string name)
    {
        var view = SegmentFile.Open(bytes, name, SegmentKind.BuildRun);
        int n = checked((int)view.Rows), chunks = view.Columns;
        return new EncodeTaskLayout((int)view.Array<long>(HeadSection, 1)[0], view.Array<int>(TrainedSection, n), chunks,
            view.Array<long>(OffsetSection, (long)n * chunks), view.Array<long>(LengthSection, (long)n * chunks));
    }

    /// <summary>
    /// Splits the kept partitions (their run bytes, in order) into tasks of consecutive partitions: about
    /// <paramref name="targetBytes"/> each, at least one partition each. Returns each task's first partition and count.
    /// </summary>
    public static IReadOnlyList<(int First, int Count)> Group(IReadOnlyList<long> bytes, long targetBytes)
    {
        var groups = new List<(int, int)>();
        int first = 0;
        long size = 0;
        for (int t = 0; t < bytes.Count; t++)
        {
            if (t > first && size + bytes[t] > targetBytes)
            {
                groups.Add((first, t - first));
                first = t;
                size = 0;
            }
            size += bytes[t];
        }
        if (bytes.Count > first) groups.Add((first, bytes.Count - first));
        return groups;
    }
}
