using System.Collections.Concurrent;
using System.Text.Json;
using Squash.Index.Attributes;
using Squash.Storage.Writes;

namespace Squash.Search.Writes;

/// <summary>A write in the log tail that is still live: the user's id, the vector as sent, its attributes and where it was logged.</summary>
/// <summary>A version's dimension and whether it has string ids (else rows are named by number): what a log batch must fit.</summary>
public sealed record TailShape(int Dimensions, bool HasIds)
{
    public static TailShape Of(Squash.Index.Model.IndexManifest m) => new(m.Dimensions, m.Attributes is { HasIds: true });
}

public sealed record TailRow(string Id, float[] Vector, JsonElement? Attributes, long Sequence);

/// <summary>
/// What the log past a version's watermark changes, in sequence order: the live upserts (<see cref="Rows"/>), the ids
/// whose older rows the tail replaced or deleted (<see cref="TouchedIds"/>), and the deleteWhere filters, which delete
/// every indexed row they match (tail rows they matched are already gone from <see cref="Rows"/>). Immutable: a newer
/// tail is a copy with more batches applied.
/// </summary>
public sealed class LogTail
{
    private readonly Dictionary<string, TailRow> _rows;
    private readonly HashSet<string> _touched;
    private readonly List<JsonElement> _deleteWheres;

    private LogTail(long watermark, long to, int items, Dictionary<string, TailRow> rows, HashSet<string> touched, List<JsonElement> deleteWheres, TailShape? shape = null)
    {
        Shape = shape;
        Watermark = watermark;
        To = to;
        Items = items;
        _rows = rows;
        _touched = touched;
        _deleteWheres = deleteWheres;
    }

    public static LogTail Empty(long watermark, TailShape? shape = null) => new(watermark, watermark, 0, new(StringComparer.Ordinal), new(StringComparer.Ordinal), [], shape);

    /// <summary>The shape of the version the tail was read for: its batches that do not fit it are passed over (null: none are).</summary>
    public TailShape? Shape { get; }

    /// <summary>The version's watermark: the tail starts after it.</summary>
    public long Watermark { get; }
    /// <summary>The last sequence applied.</summary>
    public long To { get; }
    /// <summary>Items in the counted batches (upserts + deletes + deleteWheres): the tail a strong read had to look at.</summary>
    public int Items { get; }
    public IReadOnlyDictionary<string, TailRow> Rows => _rows;
    public IReadOnlySet<string> TouchedIds => _touched;
    public IReadOnlyList<JsonElement> DeleteWheres => _deleteWheres;

    private readonly object _gate = new();
    private Task<PreparedTail>? _prepared;

    /// <summary>
    /// This tail made ready for strong reads of <paramref name="index"/>: computed once per tail and version (the tail is
    /// immutable, and a warm instance hands every strong query the same tail until the log grows), recomputed for another version.
    /// </summary>
    public Task<PreparedTail> PrepareAsync(OpenedIndex index, CancellationToken ct = default)
    {
        lock (_gate)
        {
            if (_prepared is { IsFaulted: false, IsCanceled: false } held && (!held.IsCompletedSuccessfully || held.Result.Index == index))
            {
                if (held.IsCompletedSuccessfully) return held;
                return Wait(held, index, ct);
            }
            return _prepared = PreparedTail.CreateAsync(this, index, CancellationToken.None);
        }
    }

    // A preparation still running may be for another version: wait for it, then take it or prepare this one.
    private async Task<PreparedTail> Wait(Task<PreparedTail> running, OpenedIndex index, CancellationToken ct)
    {
        var done = await running.WaitAsync(ct).ConfigureAwait(false);
        return done.Index == index ? done : await PreparedTail.CreateAsync(this, index, ct).ConfigureAwait(false);
    }

    /// <summary>This tail with the given batches (ascending sequences, each after <see cref="To"/>, counted ones only) applied.</summary>
    public LogTail Apply(IEnumerable<(long Sequence, WriteBatch Batch)> batches, IndexAttributes? schema)
    {
        var rows = new Dictionary<string, TailRow>(_rows, StringComparer.Ordinal);
        var touched = new HashSet<string>(_touched, StringComparer.Ordinal);
        var deleteWheres = new List<JsonElement>(_deleteWheres);
        long to = To;
        int items = Items;
        foreach (var (sequence, batch) in batches)
        {
            if (sequence <= to) throw new ArgumentException($"batch {sequence} is not after {to}", nameof(batches));
            to = sequence;
            items += batch.ItemCount;
            if (batch.DeleteWhere is { } where)
            {
                deleteWheres.Add(where);
                foreach (var row in rows.Values.Where(r => TailFilter.Matches(where, r.Attributes, schema)).ToArray()) rows.Remove(row.Id);
            }
            foreach (var id in batch.Deletes ?? [])
            {
                rows.Remove(id);
                touched.Add(id);
            }
            foreach (var u in batch.Upserts ?? [])
            {
                rows[u.Id] = new TailRow(u.Id, u.Vector, u.Attributes, sequence);
                touched.Add(u.Id);
            }
        }
        return new LogTail(Watermark, to, items, rows, touched, deleteWheres, Shape);
    }
}

/// <summary>
/// Reads log tails for strong reads, cached for the life of an instance: batches are immutable, so a warm instance
/// reads each one once and, per query, only checks whether the log grew (one existence check past the last sequence it
/// has). The tail of each index is kept for the watermark it was read against; a newer version starts a new one from
/// the batches still held.
/// </summary>
public sealed class TailReader
{
    private readonly ConcurrentDictionary<string, LogTail> _tails = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<(string Index, long Sequence), WriteBatch?> _batches = new();
    /// <summary>Sequences read per window (see <see cref="ReadAsync"/>).</summary>
    private const int ReadWindow = 256;

    /// <summary>
    /// The tail of <paramref name="index"/> past <paramref name="watermark"/> as this instance last read it, without a request
    /// (null: none read yet for that watermark). It may miss batches acknowledged since: a strong read that starts its scan
    /// with it must still <see cref="ReadAsync"/> and run again if the log grew.
    /// </summary>
    public LogTail? Known(string index, long watermark, TailShape? shape = null) =>
        _tails.TryGetValue(index, out var held) && held.Watermark == watermark && held.Shape == shape ? held : null;

    /// <summary><see cref="ReadAsync(WriteLog, long, IndexAttributes?, TailShape?, CancellationToken)"/> passing over no batch.</summary>
    public Task<LogTail> ReadAsync(WriteLog log, long watermark, IndexAttributes? schema, CancellationToken ct = default) => ReadAsync(log, watermark, schema, null, ct);

    /// <summary>The tail of <paramref name="log"/> past <paramref name="watermark"/>, including every batch acknowledged before this call.</summary>
    /// <param name="shape">
    /// The version's dimension and id mode: a batch that does not fit it (<see cref="WriteLogConflict.Misfits"/>: the write API
    /// refused it, as a build of another shape was published while it was made) is passed over, as ingest passes it over.
    /// A tail is held per shape too: two builds from files both have watermark 0.
    /// </param>
    public async Task<LogTail> ReadAsync(WriteLog log, long watermark, IndexAttributes? schema, TailShape? shape, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(log);
        var tail = Known(log.Index, watermark, shape) ?? LogTail.Empty(watermark, shape);
        // The cached end exists, so the probe can start there without reading the hint.
        long latest = await log.LatestSequenceAsync(tail.To, readHint: tail.To == watermark, ct).ConfigureAwait(false);
        if (latest > tail.To)
        {
            // Read a window of sequences at a time (16 in flight), never a list of every sequence up to `latest`: what is
            // held grows with the batches actually read, and a batch missing below `latest` stops the read at its window.
            var counted = new List<(long Sequence, WriteBatch Batch)>();
            var read = new WriteBatch?[ReadWindow];
            var missing = new bool[ReadWindow];
            // A fresh tail of a build from files (watermark 0) starts at the log's oldest batch still there: gc may have
            // deleted the ones before it (WriteLog.TailStartsAfterAsync).
            long after = tail.To == 0 ? await log.TailStartsAfterAsync(0, ct).ConfigureAwait(false) : tail.To;
            for (long start = after + 1; start <= latest; start += ReadWindow)
            {
                int n = (int)Math.Min(ReadWindow, latest - start + 1);
                long first = start;
                Array.Clear(read);
                Array.Clear(missing);
                await Parallel.ForEachAsync(Enumerable.Range(0, n), new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = ct }, async (i, t) =>
                {
                    var (exists, batch) = await CountedBatchAsync(log, first + i, t).ConfigureAwait(false);
                    (missing[i], read[i]) = (!exists, batch);
                }).ConfigureAwait(false);
                // The lowest missing batch is the one to name, whichever read finished first.
                if (Array.IndexOf(missing, true, 0, n) is var gap and >= 0)
                    throw new InvalidDataException($"log batch {first + gap} ('{log.BatchName(first + gap)}') of index '{log.Index}' is missing although a later one exists");
                for (int i = 0; i < n; i++)
                {
                    if (read[i] is not { } batch) continue;
                    // Passed over as an empty batch: the tail still reaches the log's end, so a strong read does not run again for it.
                    bool fits = shape is null || WriteLogConflict.Misfits(batch, shape.Dimensions, shape.HasIds).Count == 0;
                    counted.Add((first + i, fits ? batch : batch with { DeleteWhere = null, Deletes = null, Upserts = null }));
                }
            }
            tail = tail.Apply(counted, schema);
            _tails.AddOrUpdate(log.Index, tail, (_, old) => old.Watermark != tail.Watermark || old.To < tail.To ? tail : old);
        }
        else
        {
            _tails.TryAdd(log.Index, tail);
        }
        // Batches at or below the watermark are in the version now; a reader never needs them again.
        foreach (var key in _batches.Keys)
            if (key.Index == log.Index && key.Sequence <= watermark) _batches.TryRemove(key, out _);
        return tail;
    }

    /// <summary>
    /// Whether the log has a batch at a sequence, and the batch if it counts (a keyed batch another attempt superseded
    /// does not: null).
    /// </summary>
    private async Task<(bool Exists, WriteBatch? Counted)> CountedBatchAsync(WriteLog log, long sequence, CancellationToken ct)
    {
        if (_batches.TryGetValue((log.Index, sequence), out var known)) return (true, known);
        if (await log.TryReadBatchAsync(sequence, ct).ConfigureAwait(false) is not { } batch) return (false, null);
        var counted = await log.CountsAsync(batch, sequence, ct).ConfigureAwait(false) ? batch : null;
        _batches[(log.Index, sequence)] = counted;
        return (true, counted);
    }
}
