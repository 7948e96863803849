using System.Numerics.Tensors;
using Squash.Core;

namespace Squash.Search.Writes;

/// <summary>
/// A log tail made ready for the strong reads of one index version: the row numbers its writes mask, ascending and as a
/// set, and its live upserts in id order with their vectors mapped to the index's internal space in one block. A tail and
/// a version are both immutable, so every strong query on a warm instance between two writes shares one of these
/// (<see cref="LogTail.PrepareAsync"/>) instead of parsing ids, sorting and mapping 10⁴ rows per query.
/// </summary>
public sealed class PreparedTail
{
    private readonly float[] _vectors;
    private readonly int _width;
    private readonly MetricSpace _space;

    private PreparedTail(OpenedIndex index, HashSet<long> excluded, TailRow[] rows, bool deleteWheresExcluded)
    {
        Index = index;
        DeleteWheresExcluded = deleteWheresExcluded;
        Excluded = excluded;
        ExcludedText = RowNumberCodec.Encode([.. excluded.Order()]);
        Rows = rows;
        _space = index.Space;
        // Inner product ranks by the dot product with the vector as sent (its augmented form may not exist); the others by
        // the squared distance to the stored form (cosine: normalised), as the scans do.
        _width = _space.Metric == Metric.InnerProduct ? index.Manifest.Dimensions : _space.InternalDimensions;
        _vectors = new float[(long)rows.Length * _width];
        for (int i = 0; i < rows.Length; i++)
        {
            var target = _vectors.AsSpan(i * _width, _width);
            if (_space.Metric == Metric.InnerProduct) rows[i].Vector.CopyTo(target);
            else _space.MapStored(rows[i].Vector, target);
        }
    }

    public static async Task<PreparedTail> CreateAsync(LogTail tail, OpenedIndex index, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(tail);
        ArgumentNullException.ThrowIfNull(index);
        var excluded = await index.RowsOfAsync(tail.TouchedIds, ct).ConfigureAwait(false);
        // deleteWheres past the budget would make every node's filter (and its compile) as large as they are: the rows they
        // delete go with the excluded rows instead, found once per tail and version.
        bool resolve = DeleteWhereClauses(tail.DeleteWheres) > Filters.FilterCompiler.MaxTailClauses;
        if (resolve) excluded.UnionWith(await index.RowsMatchingAnyAsync(tail.DeleteWheres, ct).ConfigureAwait(false));
        var rows = tail.Rows.Values.OrderBy(r => r.Id, StringComparer.Ordinal).ToArray();
        return new PreparedTail(index, excluded, rows, resolve);
    }

    /// <summary>The clauses of the tail's deleteWheres together (counting stops past <see cref="Filters.FilterCompiler.MaxTailClauses"/>).</summary>
    private static int DeleteWhereClauses(IReadOnlyList<System.Text.Json.JsonElement> deleteWheres)
    {
        int total = 0;
        foreach (var where in deleteWheres)
        {
            total += Filters.FilterCompiler.CountClauses(where, Filters.FilterCompiler.MaxTailClauses);
            if (total > Filters.FilterCompiler.MaxTailClauses) break;
        }
        return total;
    }

    /// <summary>The version these rows were resolved against.</summary>
    public OpenedIndex Index { get; }
    /// <summary>
    /// True when the tail's deleteWheres hold more clauses than a scan's filter may carry for them
    /// (<see cref="Filters.FilterCompiler.MaxTailClauses"/>): the indexed rows they delete are then in <see cref="Excluded"/>,
    /// and the query's filter goes to the nodes as sent. False: <see cref="Excluded"/> holds only rows the tail replaced or
    /// deleted by id, and the caller adds the deleteWheres to the filter.
    /// </summary>
    public bool DeleteWheresExcluded { get; }
    /// <summary>Indexed rows the tail replaced or deleted (and, with <see cref="DeleteWheresExcluded"/>, those its deleteWheres match).</summary>
    public IReadOnlySet<long> Excluded { get; }
    /// <summary><see cref="Excluded"/> as the tree's nodes receive it (<see cref="RowNumberCodec"/>), encoded once per tail and version.</summary>
    public string ExcludedText { get; }
    /// <summary>The tail's live upserts, ordered by id (ordinal).</summary>
    public IReadOnlyList<TailRow> Rows { get; }

    /// <summary>
    /// The internal squared distance from <paramref name="query"/> to row <paramref name="i"/>, on the scale the index's
    /// scans report: squared L2 (cosine: of the normalised vectors); inner product ‖q‖² + M² − 2q·x with the version's M,
    /// which orders by −q·x even for a vector longer than M (its augmented form would not exist).
    /// <paramref name="scratch"/>: at least the internal dimensions.
    /// </summary>
    public float Distance(QueryContext query, int i, Span<float> scratch)
    {
        var row = _vectors.AsSpan(i * _width, _width);
        if (_space.Metric == Metric.InnerProduct)
        {
            double dot = TensorPrimitives.Dot(query.Internal.AsSpan(0, _width), row);
            return (float)Math.Max(0, query.InputSquaredNorm + _space.MaxNorm * _space.MaxNorm - 2 * dot);
        }
        var diff = scratch[.._width];
        TensorPrimitives.Subtract(query.Internal, row, diff);
        return TensorPrimitives.SumOfSquares<float>(diff);
    }

    public int ScratchLength => _width;
}
