namespace Squash.Search.Writes;

/// <summary>
/// Excluded-row sets by their <see cref="RowNumberCodec"/> text, for tree nodes: every strong query between two writes
/// sends the same text, so a warm node decodes and hashes it once instead of per query. A few recent sets are kept (one
/// per index and tail in use); a set is found by comparing the text itself, so a hit is exactly the set it names.
/// </summary>
public sealed class RowSetCache(int capacity = 8, long maxRows = 1 << 22)
{
    public static RowSetCache Shared { get; } = new();

    private readonly object _gate = new();
    // Most recently used first.
    private readonly LinkedList<(string Text, IReadOnlySet<long> Rows)> _recent = new();

    /// <summary>The rows <paramref name="text"/> names, decoded once per text; null with <paramref name="problem"/> when it is malformed.</summary>
    public IReadOnlySet<long>? Get(string text, out string? problem)
    {
        ArgumentNullException.ThrowIfNull(text);
        lock (_gate)
        {
            for (var node = _recent.First; node is not null; node = node.Next)
            {
                if (!string.Equals(node.Value.Text, text, StringComparison.Ordinal)) continue;
                _recent.Remove(node);
                _recent.AddFirst(node);
                problem = null;
                return node.Value.Rows;
            }
        }
        var rows = RowNumberCodec.TryDecode(text, out problem);
        if (rows is null) return null;
        var set = rows.ToHashSet();
        Remember(text, set);
        return set;
    }

    /// <summary>Keeps a set its owner already holds (the coordinator's prepared tail) under its text.</summary>
    public void Remember(string text, IReadOnlySet<long> rows)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(rows);
        if (rows.Count > maxRows) return;
        lock (_gate)
        {
            for (var node = _recent.First; node is not null; node = node.Next)
                if (string.Equals(node.Value.Text, text, StringComparison.Ordinal)) { _recent.Remove(node); break; }
            _recent.AddFirst((text, rows));
            while (_recent.Count > capacity) _recent.RemoveLast();
        }
    }
}
