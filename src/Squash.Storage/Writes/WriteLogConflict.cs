using Squash.Index.Model;

namespace Squash.Storage.Writes;

/// <summary>
/// A build's version has watermark 0, so ingest applies the index's whole write log again on top of its rows ("files +
/// the log", docs/writes.md). Writes that the write API took against a version of another dimension, or of the other id
/// mode (string ids, or rows named by number), cannot be applied to such a build: every later ingest would fail on them
/// (or take row numbers for ids nobody gave). So a build refuses to publish over them, before it starts and again just
/// before it publishes (writes may arrive meanwhile).
/// </summary>
public static class WriteLogConflict
{
    /// <summary>
    /// Why a build of <paramref name="dimensions"/> dimensions, with or without ids, must not be published as this index's
    /// next version; null when the index has no current version, its log is empty, or its current version (the one the log's
    /// writes were checked against) has the same dimension and id mode.
    /// </summary>
    public static async Task<string?> FindAsync(IndexStore store, int dimensions, bool hasIds, CancellationToken ct = default)
    {
        // A folder index (no name) has no write log: writes go to named indexes of a store.
        if (store.Name.Length == 0 || await store.GetCurrentAsync(ct).ConfigureAwait(false) is not { } current) return null;
        var log = new WriteLog(store.Blobs, store.Name);
        long latest = await log.LatestSequenceAsync(0, ct).ConfigureAwait(false);
        if (latest == 0) return null;
        var m = await store.ReadManifestAsync(current.Version, ct).ConfigureAwait(false);
        bool hadIds = m.Attributes is { HasIds: true };
        var differences = new List<string>();
        if (m.Dimensions != dimensions) differences.Add($"{m.Dimensions} dimensions where this build has {dimensions}");
        if (hadIds != hasIds)
            differences.Add(hadIds ? "string ids where this build has none (its rows are named by number)" : "rows named by number where this build has string ids");
        if (differences.Count == 0) return null;
        return $"index '{store.Name}' has writes in its write-ahead log (through sequence {latest}) made against version {current.Version}, which has " +
            string.Join(" and ", differences) + ": a build takes the whole log again on top of its rows, and ingest could not apply those writes as they were made; " +
            $"build into another index, or, if those writes are no longer wanted, delete the index's log (the blobs under '{store.Name}/log/') first";
    }

    /// <summary>
    /// The check of <see cref="FindAsync"/> made safe against writes landing between it and the publish: run by
    /// <see cref="IndexStore.MovePointerForwardAsync(string, Func{IndexStore.PointerState, CancellationToken, Task{string}}?, CancellationToken)"/>
    /// before it moves the pointer. A build of another shape than the version it replaces first reserves the pointer for
    /// that shape (compare-and-swap), then checks the log, then publishes by compare-and-swap against its reservation. A
    /// write that lands after the check reads the pointer after its append (<see cref="CheckAfterAppendAsync"/>): it sees the
    /// reservation and clears it (then the publish fails, and the next attempt's check sees the write), or it sees the new
    /// version and is refused. So either the build or the write gives way, never neither.
    /// </summary>
    public static Func<IndexStore.PointerState, CancellationToken, Task<string>> PublishGuard(IndexStore store, string buildVersion, int dimensions, bool hasIds) =>
        async (pointer, ct) =>
        {
            if (store.Name.Length == 0) return pointer.ETag;
            var replaced = await store.ReadManifestAsync(pointer.Version, ct).ConfigureAwait(false);
            // The same shape takes every write the log can hold: nothing to reserve.
            if (replaced.Dimensions == dimensions && replaced.Attributes is { HasIds: true } == hasIds) return pointer.ETag;
            string reserved = await store.SetReservationAsync(pointer.Version, pointer.ETag, new IndexStore.ShapeReservation(buildVersion, dimensions, hasIds), ct).ConfigureAwait(false);
            if (await FindAsync(store, dimensions, hasIds, ct).ConfigureAwait(false) is { } conflict)
            {
                try
                {
                    await store.SetReservationAsync(pointer.Version, reserved, null, CancellationToken.None).ConfigureAwait(false);
                }
                catch (BlobConditionFailedException)
                {
                    // A write cleared it already, or the pointer moved on: either way it no longer holds this reservation.
                }
                throw new WriteLogConflictException(conflict);
            }
            return reserved;
        };

    /// <summary>
    /// Why <paramref name="batch"/> cannot be applied to a version of <paramref name="dimensions"/> dimensions, with or
    /// without ids: each upsert whose vector has another dimension, and, where rows are named by number, each upsert whose id
    /// is not a row number. Empty when it fits. Deletes fit any version (an id nothing has deletes nothing), as does
    /// <c>deleteWhere</c>. The write API refuses a write that stops fitting while it is made; ingest and strong reads skip one
    /// that does not fit the version they apply the log to, so both decide alike.
    /// </summary>
    public static IReadOnlyList<(string Field, string Problem)> Misfits(WriteBatch batch, int dimensions, bool hasIds)
    {
        var misfits = new List<(string, string)>();
        var upserts = batch.Upserts ?? [];
        for (int i = 0; i < upserts.Count; i++)
        {
            if (upserts[i].Vector.Length != dimensions)
                misfits.Add(($"upserts[{i}].vector", $"has {upserts[i].Vector.Length} dimensions; the index now has {dimensions}"));
            if (!hasIds && !UpsertItem.IsRowNumber(upserts[i].Id))
                misfits.Add(($"upserts[{i}].id", $"'{upserts[i].Id}' is not a row number; the index now names its rows by number (it was built without ids)"));
        }
        return misfits;
    }

    /// <summary>Compare-and-swaps of the pointer <see cref="CheckAfterAppendAsync"/> tries before it gives up (<see cref="WriteShapeUncheckedException"/>).</summary>
    public const int MaxPointerAttempts = 50;

    /// <summary>What <see cref="CheckAfterAppendAsync"/> found: the version current now, and what of the write does not fit it (empty: the write stands).</summary>
    public sealed record AfterAppend(string? Current, IReadOnlyList<(string Field, string Problem)> Misfits);

    /// <summary>
    /// Run by the write API after its batch is durable, before it answers: a write validated against
    /// <paramref name="validatedAgainst"/> stands unless <c>current</c> moved meanwhile to a version it does not fit. It
    /// clears a reservation of a build whose shape the write does not fit (<see cref="PublishGuard"/>: that build then sees the
    /// write and is refused). Costs one pointer read when nothing changed.
    /// </summary>
    public static async Task<AfterAppend> CheckAfterAppendAsync(IndexStore store, IndexManifest validatedAgainst, WriteBatch batch, CancellationToken ct = default)
    {
        for (int attempt = 0; ; attempt++)
        {
            var pointer = await store.ReadPointerAsync(ct).ConfigureAwait(false);
            if (pointer is null) return new AfterAppend(null, []);
            if (pointer.Reserved is { } r && Misfits(batch, r.Dimensions, r.HasIds).Count > 0)
            {
                try
                {
                    await store.SetReservationAsync(pointer.Version, pointer.ETag, null, ct).ConfigureAwait(false);
                }
                catch (BlobConditionFailedException e)
                {
                    // The pointer changed meanwhile (published, or reserved again): read it again, a bounded number of times.
                    if (attempt + 1 >= MaxPointerAttempts) throw new WriteShapeUncheckedException(MaxPointerAttempts, e);
                }
                continue;
            }
            if (pointer.Version == validatedAgainst.Version) return new AfterAppend(pointer.Version, []);
            var now = await store.ReadManifestAsync(pointer.Version, ct).ConfigureAwait(false);
            return new AfterAppend(pointer.Version, Misfits(batch, now.Dimensions, now.Attributes is { HasIds: true }));
        }
    }

    /// <summary><see cref="FindAsync"/>, as an exception.</summary>
    public static async Task ThrowIfAnyAsync(IndexStore store, int dimensions, bool hasIds, CancellationToken ct = default)
    {
        if (await FindAsync(store, dimensions, hasIds, ct).ConfigureAwait(false) is { } conflict) throw new WriteLogConflictException(conflict);
    }
}

/// <summary>
/// <see cref="WriteLogConflict.CheckAfterAppendAsync"/> could not clear a build's reservation: the pointer changed under each
/// of its compare-and-swaps. The write's batch is in the log, but whether it fits the version the build publishes is not known,
/// so the write is not acknowledged (ingest skips the batch if it does not fit).
/// </summary>
public sealed class WriteShapeUncheckedException(int attempts, Exception inner)
    : Exception($"the index's pointer changed under each of {attempts} attempts to check the write against a build of another shape", inner);

/// <summary>A build refused because the index's write log holds writes it could not take (<see cref="WriteLogConflict"/>).</summary>
public sealed class WriteLogConflictException(string message) : InvalidOperationException(message);
