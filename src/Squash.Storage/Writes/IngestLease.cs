using System.Text.Json;
using System.Text.Json.Serialization;

namespace Squash.Storage.Writes;

/// <summary>
/// The lease that lets one ingest at a time work on an index: a small blob naming its holder and when the hold ends,
/// taken create-only when absent and by compare-and-swap when expired, renewed by compare-and-swap and released by
/// writing it expired. A holder that dies simply lets it expire; a holder whose renewal fails has lost it and stops.
/// Ingest stays correct without it (every run starts from the published version and publishes only over it, by compare-and-swap);
/// the lease only keeps two triggers from doing the same work twice.
/// </summary>
public sealed class IngestLease
{
    private readonly IBlobStore _blobs;
    private readonly TimeProvider _clock;
    /// <summary>One write of the lease blob at a time: a keep-alive and the holder's own renewals share the ETag.</summary>
    private readonly SemaphoreSlim _writing = new(1, 1);
    private string _etag;

    private IngestLease(IBlobStore blobs, string name, string holder, TimeSpan duration, TimeProvider clock, string etag)
    {
        _blobs = blobs;
        Name = name;
        Holder = holder;
        Duration = duration;
        _clock = clock;
        _etag = etag;
    }

    public string Name { get; }
    public string Holder { get; }
    public TimeSpan Duration { get; }

    public static string NameFor(string index) => $"{index.Trim('/')}/log/ingest.lease";

    /// <summary>The lease of the recall calibration job (its own: a calibration never holds back an ingest run).</summary>
    public static string CalibrationNameFor(string index) => $"{index.Trim('/')}/log/calibrate.lease";

    /// <param name="Failures">Failed holds in a row (a job that failed keeps the lease, expired later, as its back-off).</param>
    internal sealed record LeaseRecord(string Holder, DateTimeOffset ExpiresUtc,
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)] int Failures = 0);

    /// <summary>Failures recorded by earlier holders in a row (0 after a hold ended by <see cref="ReleaseAsync"/>).</summary>
    public int PriorFailures { get; private init; }

    /// <summary>Takes the index's lease for <paramref name="duration"/>, or returns null while someone else holds it.</summary>
    public static Task<IngestLease?> TryAcquireAsync(IBlobStore blobs, string index, TimeSpan duration, TimeProvider? clock = null, CancellationToken ct = default) =>
        TryAcquireNamedAsync(blobs, NameFor(index), duration, clock, ct);

    /// <summary>Takes the lease blob <paramref name="name"/> for <paramref name="duration"/>, or returns null while someone else holds it.</summary>
    public static async Task<IngestLease?> TryAcquireNamedAsync(IBlobStore blobs, string name, TimeSpan duration, TimeProvider? clock = null, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(duration, TimeSpan.Zero);
        clock ??= TimeProvider.System;
        int failures = 0;
        var holder = Guid.NewGuid().ToString("N");
        var info = await blobs.GetInfoAsync(name, ct).ConfigureAwait(false);
        WriteCondition condition = WriteCondition.IfNotExists;
        if (info is not null)
        {
            LeaseRecord? held;
            try
            {
                held = JsonSerializer.Deserialize(await blobs.ReadAllAsync(name, ct).ConfigureAwait(false), LeaseJson.Default.LeaseRecord);
            }
            catch (JsonException)
            {
                held = null; // a damaged lease holds nothing
            }
            catch (BlobNotFoundException)
            {
                held = null;
                info = null;
            }
            if (held is not null && held.ExpiresUtc > clock.GetUtcNow()) return null;
            failures = held?.Failures ?? 0;
            if (info is not null) condition = WriteCondition.IfMatch(info.ETag);
        }
        try
        {
            var written = await blobs.WriteAsync(name, Serialize(holder, clock.GetUtcNow() + duration), condition, ct).ConfigureAwait(false);
            return new IngestLease(blobs, name, holder, duration, clock, written.ETag) { PriorFailures = failures };
        }
        catch (BlobConditionFailedException)
        {
            return null; // another trigger took it between our read and our write
        }
    }

    /// <summary>
    /// When the hold on the index's ingest lease ends, or null when nobody holds it (absent, expired, unreadable): a holder
    /// that was killed keeps it until then, so a caller turned away can say when to try again.
    /// </summary>
    public static async Task<DateTimeOffset?> HeldUntilAsync(IBlobStore blobs, string index, TimeProvider? clock = null, CancellationToken ct = default)
    {
        try
        {
            var held = JsonSerializer.Deserialize(await blobs.ReadAllAsync(NameFor(index), ct).ConfigureAwait(false), LeaseJson.Default.LeaseRecord);
            return held is not null && held.ExpiresUtc > (clock ?? TimeProvider.System).GetUtcNow() ? held.ExpiresUtc : null;
        }
        catch (Exception e) when (e is JsonException or BlobNotFoundException)
        {
            return null;
        }
    }

    /// <summary>Extends the hold by <see cref="Duration"/> from now; false when the lease was lost (expired and taken).</summary>
    public async Task<bool> RenewAsync(CancellationToken ct = default)
    {
        await _writing.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var written = await _blobs.WriteAsync(Name, Serialize(Holder, _clock.GetUtcNow() + Duration), WriteCondition.IfMatch(_etag), ct).ConfigureAwait(false);
            _etag = written.ETag;
            return true;
        }
        catch (Exception e) when (e is BlobConditionFailedException or BlobNotFoundException)
        {
            return false;
        }
        finally
        {
            _writing.Release();
        }
    }

    /// <summary>
    /// Renews the hold every third of <see cref="Duration"/> until <paramref name="stop"/> is cancelled, so work longer than
    /// the lease (an ingest round at 10⁶ rows that rewrites many partitions) keeps it; cancels <paramref name="lost"/> and
    /// returns when a renewal finds the lease taken. A renewal that fails for another reason (the store unreachable) is
    /// tried again at the next tick: the hold lasts until its expiry meanwhile.
    /// </summary>
    public async Task KeepAliveAsync(CancellationTokenSource lost, CancellationToken stop)
    {
        ArgumentNullException.ThrowIfNull(lost);
        var period = Duration / 3;
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(period, _clock, stop).ConfigureAwait(false);
                if (await RenewAsync(stop).ConfigureAwait(false)) continue;
                await lost.CancelAsync().ConfigureAwait(false);
                return;
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // Transient: the next tick tries again.
            }
        }
    }

    /// <summary>Lets the next trigger take the lease at once (a no-op when it was lost meanwhile).</summary>
    public async Task ReleaseAsync(CancellationToken ct = default)
    {
        await _writing.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await _blobs.WriteAsync(Name, Serialize(Holder, DateTimeOffset.UnixEpoch), WriteCondition.IfMatch(_etag), ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is BlobConditionFailedException or BlobNotFoundException)
        {
        }
        finally
        {
            _writing.Release();
        }
    }

    /// <summary>
    /// Ends the hold after a failure: the lease stays taken for <paramref name="backOff"/> (no other holder starts the same
    /// failing work before then) and records <paramref name="failures"/> in a row for the next holder's back-off.
    /// </summary>
    public Task HoldAfterFailureAsync(TimeSpan backOff, int failures, CancellationToken ct = default) => HoldAsync(backOff, failures, ct);

    /// <summary>
    /// Ends the hold after work that succeeded, but keeps the lease taken for <paramref name="rest"/>: no holder starts the
    /// work again before then (what spaces out a background job that would otherwise run back to back).
    /// </summary>
    public Task RestAsync(TimeSpan rest, CancellationToken ct = default) => HoldAsync(rest, failures: 0, ct);

    private async Task HoldAsync(TimeSpan hold, int failures, CancellationToken ct)
    {
        try
        {
            await _blobs.WriteAsync(Name, Serialize(Holder, _clock.GetUtcNow() + hold, failures), WriteCondition.IfMatch(_etag), ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is BlobConditionFailedException or BlobNotFoundException)
        {
        }
    }

    private static byte[] Serialize(string holder, DateTimeOffset expires, int failures = 0) =>
        JsonSerializer.SerializeToUtf8Bytes(new LeaseRecord(holder, expires, failures), LeaseJson.Default.LeaseRecord);
}

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
[JsonSerializable(typeof(IngestLease.LeaseRecord))]
internal sealed partial class LeaseJson : JsonSerializerContext;
