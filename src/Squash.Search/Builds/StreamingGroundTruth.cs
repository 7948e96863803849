using Squash.Core;
using Squash.Core.Vectors;

namespace Squash.Search.Builds;

/// <summary>
/// Exact neighbours of the calibration queries over a base set seen one block of rows at a time: each block's
/// brute-force top-k (with distances) is merged by (distance, id) into the running answer, which is exactly
/// <see cref="GroundTruth.Compute"/> over all rows at once without holding them (memory: one block plus k per query).
/// Blocks can be searched apart (an assign task searches its own chunk: <see cref="BlockBest"/>) and merged later, in
/// any order: (distance, id) is a total order, so the merged top-k is the same.
/// </summary>
public sealed class StreamingGroundTruth(CalibrationQueries queries, int k, Metric metric)
{
    private readonly (float Distance, int Id)[][] _best = Enumerable.Range(0, queries.Count).Select(_ => Array.Empty<(float, int)>()).ToArray();

    /// <summary>Adds <paramref name="count"/> base rows (user space, row-major) whose ids start at <paramref name="firstId"/>.</summary>
    public void Add(float[] rows, int count, int firstId, CancellationToken ct = default) =>
        Merge(BlockBest(queries, k, metric, rows, count, firstId, ct));

    /// <summary>
    /// The top-k of one block of rows for each query (nearest first, ties by id; a base-sample query never finds
    /// itself): what <see cref="Add"/> merges, computed where the block is (an assign task) and merged elsewhere.
    /// </summary>
    public static (float Distance, int Id)[][] BlockBest(CalibrationQueries queries, int k, Metric metric, float[] rows, int count, int firstId,
        CancellationToken ct = default)
    {
        if (count == 0 || queries.Count == 0) return Enumerable.Range(0, queries.Count).Select(_ => Array.Empty<(float, int)>()).ToArray();
        var block = new VectorSet(rows.Length == count * queries.Dimensions ? rows : rows[..(count * queries.Dimensions)], count, queries.Dimensions);
        var self = queries.SelfIds;
        var (ids, distances) = GroundTruth.ComputeWithDistances(block, new VectorSet(queries.Data, queries.Count, queries.Dimensions), Math.Min(k, count), metric,
            accept: self is null ? null : (q, x) => firstId + x != self[q], cancellationToken: ct);
        var best = new (float Distance, int Id)[queries.Count][];
        for (int q = 0; q < queries.Count; q++)
        {
            var list = new List<(float Distance, int Id)>(ids[q].Length);
            for (int i = 0; i < ids[q].Length; i++)
                if (ids[q][i] >= 0) list.Add((distances[q][i], firstId + ids[q][i]));
            best[q] = list.ToArray();
        }
        return best;
    }

    /// <summary>Merges one block's top-k lists (from <see cref="BlockBest"/>) into the running answer.</summary>
    public void Merge((float Distance, int Id)[][] block)
    {
        if (block.Length != _best.Length) throw new ArgumentException($"{block.Length} lists for {_best.Length} queries");
        for (int q = 0; q < _best.Length; q++)
        {
            var merged = new List<(float Distance, int Id)>(_best[q]);
            merged.AddRange(block[q]);
            merged.Sort(static (a, b) => a.Distance != b.Distance ? a.Distance.CompareTo(b.Distance) : a.Id.CompareTo(b.Id));
            _best[q] = merged.Take(k).ToArray();
        }
    }

    /// <summary>k ids per query, nearest first, padded with −1 as <see cref="GroundTruth.Compute"/> pads.</summary>
    public int[][] Result() => _best.Select(b => Enumerable.Range(0, k).Select(i => i < b.Length ? b[i].Id : -1).ToArray()).ToArray();
}
