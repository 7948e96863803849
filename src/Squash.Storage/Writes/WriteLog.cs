using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Squash.Storage.Writes;

/// <summary>
/// An index's write-ahead log: immutable, sequence-numbered batch blobs beside the index.
/// <code>
/// {index}/log/batches/{sequence:D12}        one acknowledged request, a WriteBatch in binary (create-only; sequences start at 1)
/// {index}/log/head                          a hint: a sequence that exists (overwritten after each append; only a lower bound)
/// {index}/log/keys/{sha256(key)}            an Idempotency-Key's record (created before its batch; its sequence set once)
/// </code>
/// <para>Sequences are dense: a writer claims n + 1 only after seeing n exist (listing the hint, probing, losing the
/// create-only race for n, or having written n itself earlier in this process), so batch n + 1 exists only once batch n does, and the end of the log is found by probing
/// forward from any sequence known to exist. Concurrent writers never overwrite each other: the loser of a race for n
/// tries n + 1.</para>
/// <para>Idempotency: a request with a key first creates the key's record (create-only) holding the request's hash and
/// a sequence below every batch it may write (<see cref="KeyRecord.From"/>); its batch carries the key's hash; then the
/// record's sequence is set by compare-and-swap. A retry reads the record: a sequence there is the answer; a record
/// still without one means an earlier attempt stopped (or is still running) somewhere between — the retry searches
/// only the batches after <see cref="KeyRecord.From"/> (not the whole log) for one carrying the key, and appends only
/// if there is none. Should two attempts both land, the record decides: a keyed batch counts only when the record
/// names its sequence, and a reader meeting a keyed batch whose record names none yet sets it to that batch (readers
/// go in sequence order, so the first landed attempt wins). Either way the request is applied exactly once.</para>
/// </summary>
public sealed class WriteLog
{
    public const int SequenceDigits = 12;
    /// <summary>How often an append retries after losing the race for a sequence before giving up.</summary>
    private const int MaxClaimAttempts = 1000;

    public WriteLog(IBlobStore blobs, string index)
    {
        Blobs = blobs;
        Index = index;
        Root = index + "/log/";
    }

    public IBlobStore Blobs { get; }
    public string Index { get; }
    private string Root { get; }
    private string HeadName => Root + "head";
    public string BatchPrefix => Root + "batches/";
    public string KeyPrefix => Root + "keys/";

    public string BatchName(long sequence) => BatchPrefix + sequence.ToString("D" + SequenceDigits, CultureInfo.InvariantCulture);

    public static string HashKey(string key) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)));

    public string KeyName(string keyHash) => KeyPrefix + keyHash;

    /// <summary>The sequence a batch blob's name carries, or null for a name that is not a batch.</summary>
    public long? SequenceOf(string blobName) =>
        blobName.StartsWith(BatchPrefix, StringComparison.Ordinal) && blobName.Length == BatchPrefix.Length + SequenceDigits
        && long.TryParse(blobName.AsSpan(BatchPrefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out long s) ? s : null;

    /// <summary>What an append did: the sequence that carries the request, and whether an earlier attempt with the same key had already put it there.</summary>
    public sealed record AppendResult(long Sequence, bool Replayed);

    /// <summary>
    /// Appends a batch and returns once it is durable (the create-only write has succeeded). With an idempotency key,
    /// a request already logged under that key returns its sequence instead (see the class comment); a key used for a
    /// different request (another <paramref name="requestHash"/>) is a <see cref="WriteKeyConflictException"/>.
    /// </summary>
    /// <param name="knownSequence">A sequence known to exist or to have been garbage-collected (the index's watermark): the end of the log is searched above it.</param>
    /// <param name="earlierHashMatches">Whether a record's hash, unequal to <paramref name="requestHash"/>, is this request's as an earlier build hashed it (so a retry across an upgrade is still a retry).</param>
    public async Task<AppendResult> AppendAsync(WriteBatch batch, string? idempotencyKey, string requestHash, long knownSequence, CancellationToken ct = default,
        Func<string, bool>? earlierHashMatches = null)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (idempotencyKey is null) return new AppendResult(await ClaimAsync(batch with { KeyHash = null }, knownSequence, ct).ConfigureAwait(false), false);

        string hash = HashKey(idempotencyKey);
        var keyName = KeyName(hash);
        while (true)
        {
            var record = await ReadKeyAsync(hash, ct).ConfigureAwait(false);
            bool createdNow = false;
            if (record is null)
            {
                long from = await LatestSequenceAsync(knownSequence, ct).ConfigureAwait(false);
                var fresh = new KeyRecord(requestHash, from, null, DateTimeOffset.UtcNow);
                try
                {
                    var created = await Blobs.WriteAsync(keyName, JsonSerializer.SerializeToUtf8Bytes(fresh, WriteLogJson.Default.KeyRecord), WriteCondition.IfNotExists, ct).ConfigureAwait(false);
                    record = (fresh, created.ETag);
                    createdNow = true;
                }
                catch (BlobConditionFailedException)
                {
                    continue; // a concurrent attempt with the same key created it: decide on its record
                }
            }
            var rec = record.Value.Record;
            if (rec.RequestHash != requestHash && earlierHashMatches?.Invoke(rec.RequestHash) != true) throw new WriteKeyConflictException(idempotencyKey, rec.Sequence);
            if (rec.Sequence is { } done) return new AppendResult(done, true);

            // An earlier attempt may have landed its batch without recording it (it stopped, or is still running).
            long? landed = createdNow ? null : await FindKeyedBatchAsync(hash, rec.From, knownSequence, ct).ConfigureAwait(false);
            long sequence = landed ?? await ClaimAsync(batch with { KeyHash = hash }, Math.Max(knownSequence, rec.From), ct).ConfigureAwait(false);
            long settled = await SettleKeyAsync(hash, sequence, ct).ConfigureAwait(false);
            return new AppendResult(settled, landed is not null || settled != sequence);
        }
    }

    /// <summary>
    /// Sets the key's record to <paramref name="sequence"/> unless it already names one; returns the sequence the record
    /// names afterwards (the one that counts). Writers call it after their batch landed; readers for a keyed batch they
    /// meet in sequence order.
    /// </summary>
    public async Task<long> SettleKeyAsync(string keyHash, long sequence, CancellationToken ct = default)
    {
        for (int attempt = 0; ; attempt++)
        {
            var record = await ReadKeyAsync(keyHash, ct).ConfigureAwait(false);
            // No record: removed by gc long after its batch was indexed (or never written by a foreign tool); the batch stands.
            if (record is null) return sequence;
            var (rec, etag) = record.Value;
            if (rec.Sequence is { } named) return named;
            try
            {
                await Blobs.WriteAsync(KeyName(keyHash), JsonSerializer.SerializeToUtf8Bytes(rec with { Sequence = sequence }, WriteLogJson.Default.KeyRecord),
                    WriteCondition.IfMatch(etag), ct).ConfigureAwait(false);
                return sequence;
            }
            catch (BlobConditionFailedException) when (attempt < 20)
            {
                // Another attempt or a reader settled it first: read what it chose.
            }
        }
    }

    /// <summary>Whether a batch read at <paramref name="sequence"/> counts (unkeyed batches always do; see the class comment).</summary>
    public async Task<bool> CountsAsync(WriteBatch batch, long sequence, CancellationToken ct = default) =>
        batch.KeyHash is not { } hash || await SettleKeyAsync(hash, sequence, ct).ConfigureAwait(false) == sequence;

    public async Task<(KeyRecord Record, string ETag)?> ReadKeyAsync(string keyHash, CancellationToken ct)
    {
        var name = KeyName(keyHash);
        var info = await Blobs.GetInfoAsync(name, ct).ConfigureAwait(false);
        if (info is null) return null;
        byte[] bytes;
        try
        {
            bytes = await Blobs.ReadAllAsync(name, ct).ConfigureAwait(false);
        }
        catch (BlobNotFoundException)
        {
            return null;
        }
        // The ETag read before the content may be older than it; a compare-and-swap against it then fails and is retried.
        var rec = JsonSerializer.Deserialize(bytes, WriteLogJson.Default.KeyRecord) ?? throw new InvalidDataException($"'{name}' is empty");
        return (rec, info.ETag);
    }

    /// <summary>The first batch above <paramref name="from"/> that carries the key, or null.</summary>
    private async Task<long?> FindKeyedBatchAsync(string keyHash, long from, long knownSequence, CancellationToken ct)
    {
        long latest = await LatestSequenceAsync(Math.Max(from, knownSequence), ct).ConfigureAwait(false);
        for (long s = from + 1; s <= latest; s++)
        {
            var batch = await TryReadBatchAsync(s, ct).ConfigureAwait(false);
            if (batch?.KeyHash == keyHash) return s;
        }
        return null;
    }

    /// <summary>
    /// This process's claims on one index through one store object: one at a time, starting just past the newest sequence
    /// this process saw exist. Concurrent requests in one instance would otherwise all probe the same end and race for the
    /// same sequence, and a lost create-only write costs the store as much as a won one (the body is sent and stored before
    /// the condition fails; Azurite even hashes it): at 4 requests in flight, about as many lost writes as won ones. The
    /// create-only write still decides: another instance's writer may take a sequence first, and the loser probes on.
    /// </summary>
    private sealed class ClaimState
    {
        public readonly SemaphoreSlim Gate = new(1, 1);
        /// <summary>A sequence this process saw exist (it wrote it, or lost the race for it); 0: none yet.</summary>
        public long Known;
    }

    private static readonly ConditionalWeakTable<IBlobStore, ConcurrentDictionary<string, ClaimState>> Claims = new();

    private ClaimState ClaimStateFor() => Claims.GetValue(Blobs, _ => new ConcurrentDictionary<string, ClaimState>(StringComparer.Ordinal)).GetOrAdd(Index, _ => new ClaimState());

    /// <summary>Writes the batch at the first free sequence above the end of the log (create-only) and moves the hint.</summary>
    private async Task<long> ClaimAsync(WriteBatch batch, long knownSequence, CancellationToken ct)
    {
        var bytes = (batch.CreatedUtc == default ? batch with { CreatedUtc = DateTimeOffset.UtcNow } : batch).ToBinary();
        var state = ClaimStateFor();
        long claimed = 0;
        await state.Gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            // Past a sequence this process saw exist, the first try needs no probe (sequences are dense, so it is free or just taken).
            long next = (state.Known > 0 ? Math.Max(state.Known, knownSequence) : await LatestSequenceAsync(knownSequence, ct).ConfigureAwait(false)) + 1;
            for (int attempt = 0; attempt < MaxClaimAttempts; attempt++)
            {
                try
                {
                    await Blobs.WriteAsync(BatchName(next), bytes, WriteCondition.IfNotExists, ct).ConfigureAwait(false);
                    claimed = next;
                    break;
                }
                catch (BlobConditionFailedException)
                {
                    // Another writer has n: it exists now, so the end is at or past it; one probe skips every sequence taken meanwhile.
                    next = await LatestSequenceAsync(next, readHint: false, ct).ConfigureAwait(false) + 1;
                }
            }
            if (claimed > 0) state.Known = Math.Max(state.Known, claimed);
            else state.Known = Math.Max(state.Known, next - 1);
        }
        finally
        {
            state.Gate.Release();
        }
        if (claimed == 0) throw new InvalidOperationException($"could not claim a log sequence for index '{Index}' after {MaxClaimAttempts} attempts");
        await MoveHintAsync(claimed, ct).ConfigureAwait(false);
        return claimed;
    }

    /// <summary>Best effort: the hint is only a lower bound, so a lost or out-of-order write is harmless (the end is probed).</summary>
    private async Task MoveHintAsync(long sequence, CancellationToken ct)
    {
        try
        {
            await Blobs.WriteAsync(HeadName, JsonSerializer.SerializeToUtf8Bytes(new HeadHint(sequence), WriteLogJson.Default.HeadHint), WriteCondition.Overwrite, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // The batch is durable; the next writer probes a little further.
        }
    }

    private async Task<long> ReadHintAsync(CancellationToken ct)
    {
        try
        {
            var hint = JsonSerializer.Deserialize(await Blobs.ReadAllAsync(HeadName, ct).ConfigureAwait(false), WriteLogJson.Default.HeadHint);
            return Math.Max(0, hint?.Sequence ?? 0);
        }
        catch (BlobNotFoundException)
        {
            return 0;
        }
        catch (JsonException)
        {
            return 0; // a damaged hint costs a longer probe, nothing else
        }
    }

    /// <summary>
    /// The newest sequence in the log (0: empty). Probes forward from the larger of the hint and
    /// <paramref name="knownSequence"/> (both exist or were collected, and every sequence above the end is free),
    /// doubling the step and then halving it: a few existence checks however long the log. A hint past
    /// <paramref name="knownSequence"/> is trusted only once its batch is seen to exist: the hint is a plain overwritable
    /// blob, and one past the real end (damaged, or written by hand: <c>{"sequence":999999999}</c>) made strong reads
    /// read a tail of 10⁹ sequences and the next append take sequence 10⁹, leaving a gap ingest could never pass. A
    /// hint whose batch is not there is ignored and the end is found from the newest batch listed under
    /// <see cref="BatchPrefix"/> instead (not by probing from 0: gc may have removed the oldest batches).
    /// </summary>
    public Task<long> LatestSequenceAsync(long knownSequence = 0, CancellationToken ct = default) => LatestSequenceAsync(knownSequence, readHint: true, ct);

    /// <summary>As above; without <paramref name="readHint"/> the probe starts at <paramref name="knownSequence"/> alone (one check when nothing was appended since).</summary>
    public async Task<long> LatestSequenceAsync(long knownSequence, bool readHint, CancellationToken ct = default)
    {
        long low = knownSequence; // exists (or 0)
        if (readHint && await ReadHintAsync(ct).ConfigureAwait(false) is var hint && hint > low)
            low = await Blobs.GetInfoAsync(BatchName(hint), ct).ConfigureAwait(false) is not null ? hint : await NewestListedAsync(low, ct).ConfigureAwait(false);
        long step = 1;
        long high;
        while (true)
        {
            long probe = low + step;
            if (await Blobs.GetInfoAsync(BatchName(probe), ct).ConfigureAwait(false) is null) { high = probe; break; }
            low = probe;
            step *= 2;
        }
        // low exists, high does not; sequences are dense in between.
        while (high - low > 1)
        {
            long mid = low + (high - low) / 2;
            if (await Blobs.GetInfoAsync(BatchName(mid), ct).ConfigureAwait(false) is null) high = mid; else low = mid;
        }
        return low;
    }

    /// <summary>The newest batch listed under <see cref="BatchPrefix"/>, or <paramref name="atLeast"/> when it is newer.</summary>
    private async Task<long> NewestListedAsync(long atLeast, CancellationToken ct)
    {
        long newest = atLeast;
        await foreach (var b in Blobs.ListAsync(BatchPrefix, ct).ConfigureAwait(false))
            if (SequenceOf(b.Name) is { } s && s > newest) newest = s;
        return newest;
    }

    /// <summary>
    /// Deletes the batches at or below <paramref name="sequence"/> (ones every kept version has indexed); returns how many.
    /// The newest batch stays whatever the bound, so the log's end can still be found from it and from the hint. Oldest
    /// first, one at a time: a gc stopped halfway leaves the log one unbroken run of batches to its end, which is what
    /// <see cref="TailStartsAfterAsync"/> relies on (a hole left below the end would read as a damaged log).
    /// </summary>
    public async Task<int> DeleteBatchesThroughAsync(long sequence, CancellationToken ct = default)
    {
        var names = new List<(long Sequence, string Name)>();
        await foreach (var b in Blobs.ListAsync(BatchPrefix, ct).ConfigureAwait(false))
            if (SequenceOf(b.Name) is { } s) names.Add((s, b.Name));
        if (names.Count == 0) return 0;
        long newest = names.Max(n => n.Sequence);
        int deleted = 0;
        foreach (var (s, name) in names.OrderBy(n => n.Sequence))
            if (s <= sequence && s < newest && await Blobs.DeleteAsync(name, ct).ConfigureAwait(false)) deleted++;
        return deleted;
    }

    /// <summary>
    /// The sequence after which a version at <paramref name="watermark"/> reads the log (ingest, strong reads, the lag):
    /// the watermark, except for a build from files. That publishes watermark 0 — its rows are the files', and the log
    /// is applied again on top of them — but <c>gc --log</c> may have deleted the log's oldest batches (every version it
    /// kept had indexed them; the version this build replaced among them). What gc deleted cannot be applied: such a
    /// version takes the log from its oldest batch still there, and the deleted batches' writes are not in it, as
    /// <c>gc --log</c> warns. Costs one existence check, and a listing only when batch 1 is gone. Past a watermark above
    /// 0 nothing is skipped: gc never deletes a batch past the watermark of a version it keeps, so one missing there is damage.
    /// </summary>
    public async Task<long> TailStartsAfterAsync(long watermark, CancellationToken ct = default)
    {
        if (watermark > 0 || await Blobs.GetInfoAsync(BatchName(1), ct).ConfigureAwait(false) is not null) return watermark;
        // Names are listed in order and sequences have a fixed width, so the first batch listed is the oldest.
        await foreach (var b in Blobs.ListAsync(BatchPrefix, ct).ConfigureAwait(false))
            if (SequenceOf(b.Name) is { } oldest) return oldest - 1;
        return 0;
    }

    /// <summary>
    /// Deletes the Idempotency-Key records of requests settled at or below <paramref name="indexedThrough"/> (batches every
    /// kept version has indexed, so no reader consults the record again) and created before <paramref name="createdBefore"/>;
    /// returns how many. A retry with a deleted key is a new request; records not yet settled stay (an attempt may still
    /// be landing its batch), as does any record that cannot be read as one.
    /// </summary>
    public async Task<int> DeleteSettledKeysAsync(long indexedThrough, DateTimeOffset createdBefore, CancellationToken ct = default)
    {
        var names = new List<string>();
        await foreach (var b in Blobs.ListAsync(KeyPrefix, ct).ConfigureAwait(false))
            if (b.LastModified is not { } written || written < createdBefore) names.Add(b.Name);
        int deleted = 0;
        foreach (var name in names)
        {
            KeyRecord? rec;
            try
            {
                rec = JsonSerializer.Deserialize(await Blobs.ReadAllAsync(name, ct).ConfigureAwait(false), WriteLogJson.Default.KeyRecord);
            }
            catch (Exception e) when (e is BlobNotFoundException or JsonException)
            {
                continue;
            }
            // A settled record never changes again, so deleting it cannot lose a concurrent settle.
            if (rec is { Sequence: { } s } && s <= indexedThrough && rec.CreatedUtc < createdBefore
                && await Blobs.DeleteAsync(name, ct).ConfigureAwait(false)) deleted++;
        }
        return deleted;
    }

    /// <summary>The batch at a sequence, or null when it does not exist (not written yet, or collected).</summary>
    public async Task<WriteBatch?> TryReadBatchAsync(long sequence, CancellationToken ct = default)
    {
        var name = BatchName(sequence);
        try
        {
            return WriteBatch.Parse(await Blobs.ReadAllAsync(name, ct).ConfigureAwait(false), name);
        }
        catch (BlobNotFoundException)
        {
            return null;
        }
    }

    /// <summary>When the batch at a sequence was written (the store's clock), or null when it does not exist.</summary>
    public async Task<DateTimeOffset?> WrittenAtAsync(long sequence, CancellationToken ct = default) =>
        (await Blobs.GetInfoAsync(BatchName(sequence), ct).ConfigureAwait(false))?.LastModified;
}

/// <summary>An Idempotency-Key reused for a different request.</summary>
public sealed class WriteKeyConflictException(string key, long? sequence)
    : Exception($"Idempotency-Key '{key}' was first used for a different request{(sequence is { } s ? $" (sequence {s})" : "")}")
{
    public long? Sequence { get; } = sequence;
}
