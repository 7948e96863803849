namespace Squash.Index.Attributes;

/// <summary>
/// Ids as the write API takes them, so that a build never stores a row no upsert or delete could name: each id at most
/// once (an upsert or delete of it must find one row), at most <see cref="MaxLength"/> characters, no control characters.
/// The in-process build checks the file's ids in memory (<see cref="FirstProblem"/>); a queue build's scan of the
/// attributes blob checks them streaming (<see cref="AttributeReader.ScanAsync"/>), with the same messages.
/// </summary>
public static class IdRules
{
    /// <summary>Longest id the write API accepts.</summary>
    public const int MaxLength = 256;

    /// <summary>What the write API would refuse in this id, or null.</summary>
    public static string? Problem(string id) =>
        id.Length > MaxLength ? $"id is {id.Length:N0} characters; at most {MaxLength} (the write API could not name it)"
        : id.Any(char.IsControl) ? "id must not contain control characters"
        : null;

    /// <summary>The message for an id given to two rows (the first row it names, and the next one).</summary>
    public static IdProblem Duplicate(string id, long firstRow, long row) =>
        new(row, $"id '{id}' is given to rows {firstRow} and {row}; an id names one vector (an upsert or delete of it must find one row)", OfRow: false);

    /// <summary>
    /// The first id, in row order, that breaks a rule (rows are named by position: row 0 is the file's first row; a row
    /// without an id is not checked); null when there is none.
    /// </summary>
    public static IdProblem? FirstProblem(IReadOnlyList<string?>? ids)
    {
        if (ids is null) return null;
        var firstRow = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < ids.Count; i++)
        {
            if (ids[i] is not { } id) continue;
            if (Problem(id) is { } problem) return new IdProblem(i, problem, OfRow: true);
            if (!firstRow.TryAdd(id, i)) return Duplicate(id, firstRow[id], i);
        }
        return null;
    }
}

/// <summary>An id that breaks <see cref="IdRules"/>: at <paramref name="Row"/> (for a repeated id, its second row).</summary>
/// <param name="OfRow">True when the message is about the row's own id (it is then named "row N:"); false for a repeat,
/// whose message names both rows.</param>
public sealed record IdProblem(long Row, string Message, bool OfRow)
{
    /// <summary>The message with the file named as the caller names it (e.g. <c>'a.jsonl'</c>, or <c>the attributes blob 'x'</c>).</summary>
    public string Describe(string file) => OfRow ? $"{file} row {Row}: {Message}" : $"{file}: {Message}";
}
