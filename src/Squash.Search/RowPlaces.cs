namespace Squash.Search;

/// <summary>
/// Where each stored row of a version lies (partition, position in it), looked up by row number. Row numbers pass the row
/// count once writes delete rows and, on an index without ids, an upsert may name any row number up to 2,147,483,646:
/// one write of row 2,147,483,600 into a 3,000-row index made every structure sized by the largest number ask for two
/// arrays of 2³¹ ints (an OutOfMemoryException on every later ingest and calibration). So while the row numbers stay
/// below <see cref="DenseFactor"/> × the rows + <see cref="DenseSlack"/> the places are two arrays by row number (no
/// hashing per row: most of an ingest's "apply" phase at 10⁶ rows before), and past that a dictionary: memory follows the
/// rows held, never the largest number.
/// </summary>
public sealed class RowPlaces
{
    /// <summary>Row numbers up to this many times the row count (plus <see cref="DenseSlack"/>) are kept in arrays.</summary>
    public const int DenseFactor = 4;
    public const int DenseSlack = 1 << 16;

    private readonly int[]? _partition, _position;
    private readonly Dictionary<int, (int P, int Pos)>? _sparse;

    /// <summary>Whether row numbers below <paramref name="rowLimit"/> for <paramref name="rows"/> rows are kept by arrays.</summary>
    public static bool IsDense(long rowLimit, long rows) => rowLimit <= DenseFactor * rows + DenseSlack;

    /// <param name="idsByPartition">Each partition's row numbers, by position.</param>
    public RowPlaces(IReadOnlyList<int[]> idsByPartition)
    {
        ArgumentNullException.ThrowIfNull(idsByPartition);
        long rows = 0;
        int limit = 0;
        foreach (var ids in idsByPartition)
        {
            rows += ids.Length;
            foreach (int id in ids)
            {
                if (id < 0) throw new ArgumentException($"row number {id} is negative", nameof(idsByPartition));
                limit = Math.Max(limit, id + 1);
            }
        }
        Count = rows;
        RowLimit = limit;
        if (IsDense(limit, rows))
        {
            _partition = new int[limit];
            _position = new int[limit];
            Array.Fill(_partition, -1);
            for (int p = 0; p < idsByPartition.Count; p++)
            {
                var ids = idsByPartition[p];
                for (int i = 0; i < ids.Length; i++) { _partition[ids[i]] = p; _position[ids[i]] = i; }
            }
        }
        else
        {
            _sparse = new Dictionary<int, (int P, int Pos)>((int)Math.Min(rows, int.MaxValue / 2));
            for (int p = 0; p < idsByPartition.Count; p++)
            {
                var ids = idsByPartition[p];
                for (int i = 0; i < ids.Length; i++) _sparse[ids[i]] = (p, i);
            }
        }
    }

    /// <summary>Rows the version stores (when built; <see cref="Remove"/> does not change it).</summary>
    public long Count { get; }
    /// <summary>One past the largest row number stored.</summary>
    public int RowLimit { get; }
    /// <summary>Whether the places are kept in arrays by row number (see <see cref="IsDense"/>).</summary>
    public bool Dense => _partition is not null;

    /// <summary>The partition and position of a row, when it is (still) here.</summary>
    public bool TryGet(long row, out int partition, out int position)
    {
        if (_partition is not null)
        {
            if (row >= 0 && row < _partition.Length && _partition[row] >= 0)
            {
                (partition, position) = (_partition[row], _position![row]);
                return true;
            }
        }
        else if (row is >= 0 and <= int.MaxValue && _sparse!.TryGetValue((int)row, out var at))
        {
            (partition, position) = at;
            return true;
        }
        (partition, position) = (-1, -1);
        return false;
    }

    /// <summary>The partition of a row, or −1.</summary>
    public int PartitionOf(long row) => TryGet(row, out int p, out _) ? p : -1;

    /// <summary>Forgets a row; false when it was not here.</summary>
    public bool Remove(long row)
    {
        if (_partition is not null)
        {
            if (row < 0 || row >= _partition.Length || _partition[row] < 0) return false;
            _partition[row] = -1;
            return true;
        }
        return row is >= 0 and <= int.MaxValue && _sparse!.Remove((int)row);
    }

    /// <summary>Forgets every row (partition, position) matches, telling <paramref name="removed"/> of each.</summary>
    public void RemoveWhere(Func<int, int, bool> match, Action<int, int> removed)
    {
        if (_partition is not null)
        {
            for (int row = 0; row < _partition.Length; row++)
            {
                int p = _partition[row];
                if (p < 0 || !match(p, _position![row])) continue;
                _partition[row] = -1;
                removed(p, _position[row]);
            }
            return;
        }
        var sparse = _sparse!;
        foreach (var (row, at) in sparse.ToArray())
            if (match(at.P, at.Pos)) { sparse.Remove(row); removed(at.P, at.Pos); }
    }

    /// <summary>The partition of every row number below <see cref="RowLimit"/> (−1: none), when kept in arrays; else null.</summary>
    public int[]? DensePartitions => _partition;
}
