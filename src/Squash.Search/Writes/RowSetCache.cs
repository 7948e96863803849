namespace Squash.Search.Writes;

/// <summary>
/// Excluded-row sets by their <see cref="RowNumberCodec"/> text, for tree nodes: every strong query between two writes
/// sends the same text, so a warm node decodes and hashes it once instead of per query. A few recent sets are kept (one
/// per index and tail in use); a set is found by comparing the text itself, so a hit is exactly the set it names.
/// The sets kept hold at most <c>maxRows</c> rows together (a set of 2²² rows is ~100 MB of hash set): per set, eight
/// sets of a tail that masks millions of rows would hold most of an instance's memory.
/// </summary>
public sealed class RowSetCache(int capacity = 8, long maxRows = RowSetCache.DefaultMaxRows)
{
    /// <summary>The rows the shared cache keeps together, and the most a strong read ships to a tree node by default.</summary>
    public const int DefaultMaxRows = 1 << 22;

    public static RowSetCache Shared { get; } = new();

    private readonly object _gate = new();
    // Most recently used first.
    private readonly LinkedList<(string Text, IReadOnlySet<long> Rows)> _recent = new();
    private long _rowsKept;

    /// <summary>Rows held by the sets kept now (at most the cache's bound).</summary>
    public long RowsKept { get { lock (_gate) return _rowsKept; } }

    /// <summary>
    /// The rows <paramref name="text"/> names, decoded once per text; null with <paramref name="problem"/> when it is
    /// malformed or holds more than <paramref name="maxRows"/> rows (decoding stops there).
    /// </summary>
    public IReadOnlySet<long>? Get(string text, out string? problem, long maxRows = long.MaxValue)
    {
        ArgumentNullException.ThrowIfNull(text);
        lock (_gate)
        {
            for (var node = _recent.First; node is not null; node = node.Next)
            {
                if (!string.Equals(node.Value.Text, text, StringComparison.Ordinal)) continue;
                if (node.Value.Rows.Count > maxRows)
                {
                    problem = $"holds more than {maxRows:N0} rows";
                    return null;
                }
                _recent.Remove(node);
                _recent.AddFirst(node);
                problem = null;
                return node.Value.Rows;
            }
        }
        var rows = RowNumberCodec.TryDecode(text, out problem, maxRows);
        if (rows is null) return null;
        var set = rows.ToHashSet();
        Remember(text, set);
        return set;
    }

    /// <summary>Keeps a set its owner already holds (the coordinator's prepared tail) under its text; one larger than the bound is not kept.</summary>
    public void Remember(string text, IReadOnlySet<long> rows)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(rows);
        if (rows.Count > maxRows) return;
        lock (_gate)
        {
            for (var node = _recent.First; node is not null; node = node.Next)
                if (string.Equals(node.Value.Text, text, StringComparison.Ordinal))
                {
                    _recent.Remove(node);
                    _rowsKept -= node.Value.Rows.Count;
                    break;
                }
            _recent.AddFirst((text, rows));
            _rowsKept += rows.Count;
            while (_recent.Count > capacity || _rowsKept > maxRows)
            {
                _rowsKept -= _recent.Last!.Value.Rows.Count;
                _recent.RemoveLast();
            }
        }
    }
}
