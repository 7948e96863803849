using Squash.Index.Model;
using Squash.Storage;
using Squash.Storage.Writes;

namespace Squash.Search.Writes;

/// <summary>What a calibration job did.</summary>
public enum CalibrationStatus
{
    /// <summary>Another job holds the calibration lease (measuring, or backing off after a failure).</summary>
    Busy,
    /// <summary>The current version's calibration has not seen enough changes to be measured again.</summary>
    NotDue,
    /// <summary>Too few rows to measure with: the old calibration stays.</summary>
    TooFew,
    /// <summary>Measured and published onto the version current by then.</summary>
    Published,
    /// <summary>Measured, but current now holds a newer measurement (or a rebuild's): nothing published.</summary>
    Superseded,
    /// <summary>
    /// Measuring or publishing failed; the lease is held for <see cref="CalibrationRun.RetryAfter"/>, which is null once
    /// <see cref="LogIngest.MaxCalibrationAttempts"/> failed in a row (given up: not to be asked again).
    /// </summary>
    Failed,
}

/// <param name="MeasuredVersion">The version measured.</param>
/// <param name="PublishedVersion">The manifest-only successor published (of <paramref name="OntoVersion"/>).</param>
/// <param name="OntoVersion">The version current when publishing: the measured one, or a newer one whose later changes stay counted.</param>
/// <param name="StillDue">The published version is due again already (changes since the measured version reach the share).</param>
/// <param name="RetryAfter">How long the calibration lease stays held: a failure's back-off, or the rest after a measurement (<see cref="LogIngest.CalibrationRestRatio"/>).</param>
public sealed record CalibrationRun(CalibrationStatus Status, string? MeasuredVersion = null, string? PublishedVersion = null, string? OntoVersion = null,
    string? Detail = null, TimeSpan? RetryAfter = null, double Seconds = 0, bool StillDue = false, int FailuresInARow = 0)
{
    /// <summary>Failed <see cref="LogIngest.MaxCalibrationAttempts"/> times in a row: the caller must not ask again (a damaged index is reported, not retried for ever).</summary>
    public bool GaveUp => Status == CalibrationStatus.Failed && RetryAfter is null;

    public string Summary => Status switch
    {
        CalibrationStatus.Busy => "another calibration holds the lease",
        CalibrationStatus.NotDue => "not due",
        CalibrationStatus.TooFew => $"version {MeasuredVersion}: too few rows to measure with",
        CalibrationStatus.Published => $"measured version {MeasuredVersion} in {Seconds:F2} s ({Detail}) → version {PublishedVersion} on {OntoVersion}" + (StillDue ? "; due again" : "") + Rest,
        CalibrationStatus.Superseded => $"measured version {MeasuredVersion} in {Seconds:F2} s, not published: {Detail}" + Rest,
        _ when GaveUp => $"failed {FailuresInARow} times in a row, the last: {Detail}; given up, not retried (the index may be damaged; a later ingest that makes the calibration due asks once more)",
        _ => $"failed: {Detail}; retried in {RetryAfter?.TotalSeconds:0} s at the earliest",
    };

    private string Rest => RetryAfter is { } r ? $"; the next measurement in {r.TotalSeconds:0.#} s at the earliest" : "";
}

public static partial class LogIngest
{
    /// <summary>How long a calibration job holds its lease (a measurement at 10⁶ rows takes tens of seconds).</summary>
    public static readonly TimeSpan CalibrationLease = TimeSpan.FromMinutes(5);
    /// <summary>Back-off after a first failed calibration; doubled for each failure in a row, up to <see cref="MaxCalibrationBackOff"/>.</summary>
    public static readonly TimeSpan CalibrationBackOff = TimeSpan.FromSeconds(30);
    public static readonly TimeSpan MaxCalibrationBackOff = TimeSpan.FromMinutes(30);
    /// <summary>
    /// Failed calibrations in a row after which the job gives up (no retry is asked for): with the doubling back-off the eighth
    /// failure comes about an hour after the first (30 s + 1 + 2 + 4 + 8 + 16 + 30 min), longer than a store outage, while an
    /// index that fails that often is damaged and needs a person, not a retry every 30 minutes for ever.
    /// </summary>
    public const int MaxCalibrationAttempts = 8;

    /// <summary>
    /// After a measurement that took S seconds the calibration lease stays held for this many times S, so measurements take at
    /// most a quarter of the time however fast writes make calibrations due. A measurement reads every raw vector of the index
    /// (half a gigabyte at 10⁶ × 128) through the same store the ingest reads and writes; measured back to back under 1,000
    /// writes/s it held the ingest's reads and writes back for most of every minute (bench/writes.md). Proportional to the
    /// measurement's own time, not a fixed interval, so a small index is measured again within seconds and a large one rests
    /// longer only because its measurement costs more.
    /// </summary>
    public const double CalibrationRestRatio = 3;

    /// <summary>Whether a version's calibration is due to be measured again (see <see cref="IngestRecalibration.DefaultShare"/>).</summary>
    public static bool CalibrationDue(IndexManifest m) =>
        m.Calibration is { } c && c.RowsChangedSince > 0 && c.RowsChangedSince >= IngestRecalibration.DefaultShare * m.Count;

    /// <summary>
    /// The calibration job, off the ingest's lease: takes the index's calibration lease (or returns <c>Busy</c>), measures the
    /// current version when its calibration is due, and publishes the measurement onto whatever version is current by then
    /// (<see cref="PublishCalibrationOntoCurrentAsync"/>). A failure keeps the lease for a back-off that doubles with each
    /// failure in a row, so a failing calibration is tried again later, never at once; after
    /// <see cref="MaxCalibrationAttempts"/> failures in a row it gives up (<see cref="CalibrationRun.GaveUp"/>).
    /// </summary>
    public static async Task<CalibrationRun> RunCalibrationLeasedAsync(IndexStore store, TimeProvider? clock = null, CancellationToken ct = default)
    {
        var held = await IngestLease.TryAcquireNamedAsync(store.Blobs, IngestLease.CalibrationNameFor(store.Name), CalibrationLease, clock, ct).ConfigureAwait(false);
        if (held is null) return new CalibrationRun(CalibrationStatus.Busy);
        CalibrationRun run;
        try
        {
            run = await CalibrateCurrentAsync(store, clock, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (!ct.IsCancellationRequested && e is not OutOfMemoryException)
        {
            int failures = held.PriorFailures + 1;
            var backOff = TimeSpan.FromTicks(Math.Min(MaxCalibrationBackOff.Ticks, CalibrationBackOff.Ticks << Math.Min(failures - 1, 20)));
            // The lease is held for the back-off even when giving up, so that messages already queued find it busy.
            await held.HoldAfterFailureAsync(backOff, failures, CancellationToken.None).ConfigureAwait(false);
            return new CalibrationRun(CalibrationStatus.Failed, Detail: $"{e.GetType().Name}: {e.Message}",
                RetryAfter: failures >= MaxCalibrationAttempts ? null : backOff, FailuresInARow: failures);
        }
        if (run.Seconds > 0)
        {
            // Measured (or tried to): rest before the next measurement, so that calibrating takes at most a share of the time.
            var rest = TimeSpan.FromSeconds(run.Seconds * CalibrationRestRatio);
            await held.RestAsync(rest, CancellationToken.None).ConfigureAwait(false);
            return run with { RetryAfter = rest };
        }
        await held.ReleaseAsync(CancellationToken.None).ConfigureAwait(false);
        return run;
    }

    /// <summary>Measures the current version if its calibration is due and publishes the result onto the version current then.</summary>
    public static async Task<CalibrationRun> CalibrateCurrentAsync(IndexStore store, TimeProvider? clock = null, CancellationToken ct = default)
    {
        var m = await store.OpenCurrentAsync(ct).ConfigureAwait(false);
        if (!CalibrationDue(m)) return new CalibrationRun(CalibrationStatus.NotDue, m.Version);
        return await CalibrateVersionAsync(store, m, clock, ct).ConfigureAwait(false);
    }

    /// <summary>Measures <paramref name="m"/> (seeded by its watermark: the same version gives the same calibration) and publishes onto current.</summary>
    public static async Task<CalibrationRun> CalibrateVersionAsync(IndexStore store, IndexManifest m, TimeProvider? clock, CancellationToken ct)
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var measured = await IngestRecalibration.MeasureAsync(store, m, unchecked((int)m.IndexedSequence), ct).ConfigureAwait(false);
        if (measured is null) return new CalibrationRun(CalibrationStatus.TooFew, m.Version, Seconds: watch.Elapsed.TotalSeconds);
        var run = await PublishCalibrationOntoCurrentAsync(store, m, measured.Calibration, clock, ct, keep: measured.Kept).ConfigureAwait(false);
        return run with
        {
            Seconds = watch.Elapsed.TotalSeconds,
            Detail = run.Status == CalibrationStatus.Published
                ? $"{measured.Queries} queries, {measured.WithNearCopies} of them held out with their near-copies"
                : run.Detail,
        };
    }

    /// <summary>
    /// Publishes a calibration measured on <paramref name="measuredAt"/> as a manifest-only successor of the version current
    /// now, by compare-and-swap from it (retried when it moves meanwhile). The current version may be newer than the measured
    /// one: its rows stay as they are, and of its changed-rows count only what the measured version had counted is taken
    /// away (the changes after it are not in the measurement and stay counted). Nothing is published when current no longer
    /// carries the measured version's calibration (a newer measurement, or a rebuild's) or counts fewer changes than it did
    /// (it cannot descend from it).
    /// </summary>
    /// <param name="keep">
    /// The user's queries (and filter families) <paramref name="measured"/> was measured on, to keep with the new version:
    /// new ones (<c>squash calibrate</c>), or the kept ones a recalibration after writes measured again. Null: none (live rows).
    /// </param>
    public static async Task<CalibrationRun> PublishCalibrationOntoCurrentAsync(IndexStore store, IndexManifest measuredAt, RecallCalibration measured,
        TimeProvider? clock, CancellationToken ct, CalibrationQueries? keep = null)
    {
        var old = measuredAt.Calibration ?? throw new ArgumentException($"version {measuredAt.Version} has no calibration to measure again", nameof(measuredAt));
        for (int attempt = 0; attempt < 5; attempt++)
        {
            var current = await store.OpenCurrentAsync(ct).ConfigureAwait(false);
            string? stale = current.Calibration is not { } now ? "the current version has no calibration"
                : VersionIds.Compare(current.Version, measuredAt.Version) < 0 ? $"current version {current.Version} is older than the measured one"
                : !SameMeasurement(now, old) ? $"current version {current.Version} carries a newer calibration"
                : now.RowsChangedSince < old.RowsChangedSince ? $"current version {current.Version} counts fewer changes than the measured one"
                : null;
            if (stale is not null) return new CalibrationRun(CalibrationStatus.Superseded, measuredAt.Version, Detail: stale);
            var since = current.Calibration!.RowsChangedSince - old.RowsChangedSince;
            var version = NewerVersion(current.Version, clock);
            // Kept queries are written again into the successor's folder: a reference would keep an old folder for them alone.
            if (keep is not null) measured = await KeptCalibrationQueries.KeepAsync(store, version, keep, measured, ct).ConfigureAwait(false);
            var successor = current with
            {
                Version = version,
                CreatedUtc = (clock ?? TimeProvider.System).GetUtcNow(),
                Routing = Referenced(current.Routing, current),
                Partitions = current.Partitions.Select(e => Referenced(e, current)).ToArray(),
                Calibration = measured with { RowsChangedSince = since },
                // Still the rows of the build current descends from: a build started after that one may replace it (IndexStore.MovePointerForwardAsync).
                BuiltFrom = current.Lineage,
            };
            var result = await store.PublishIfCurrentAsync(store.CreateSink(successor.Version), successor, current, ct).ConfigureAwait(false);
            if (result.Published)
                return new CalibrationRun(CalibrationStatus.Published, measuredAt.Version, successor.Version, current.Version, StillDue: CalibrationDue(successor));
        }
        return new CalibrationRun(CalibrationStatus.Superseded, measuredAt.Version, Detail: "current kept moving while publishing");
    }

    /// <summary>Whether two calibrations are one measurement (the unfiltered frontier and its provenance; the count aside).</summary>
    private static bool SameMeasurement(RecallCalibration a, RecallCalibration b) =>
        a.K == b.K && a.Queries == b.Queries && a.Source == b.Source && a.Seconds.Equals(b.Seconds) && a.Plans.SequenceEqual(b.Plans);
}

public static partial class LogIngest
{
    /// <summary>
    /// Publishes a run's version; when the calibration job has meanwhile published a calibration-only successor of the run's
    /// base (the same rows: its routing is the base's), the run's rows are published on top of it instead of being refused
    /// by it (a version id is taken when a run starts, so a successor published during the run is newer): a manifest naming
    /// the run's segments where they were written, with the successor's calibration and this run's changes counted on it.
    /// </summary>
    private static async Task<(IndexStore.PublishResult Result, IndexManifest Manifest, bool Due)> PublishRebasingAsync(IndexStore store, IndexStore.VersionSink sink,
        IndexManifest manifest, IndexManifest based, bool due, TimeProvider? clock, CancellationToken ct)
    {
        long changed = (manifest.Calibration?.RowsChangedSince ?? 0) - (based.Calibration?.RowsChangedSince ?? 0);
        // The same rows as the base, with a calibration: what the calibration job publishes (nothing else keeps the routing).
        bool OnBase(IndexManifest current) => current.IndexedSequence == based.IndexedSequence && current.Calibration is not null
            && Referenced(current.Routing, current) == Referenced(based.Routing, based);
        // Only over the base it read, by compare-and-swap: the run holds the base's rows plus its batches, so a version another
        // writer published meanwhile (a build from files, another run that indexed more of the log) must never be replaced by
        // it, whatever the version ids say (a build's id is taken when it starts, minutes before it publishes).
        bool manifestWritten = false;
        if ((await store.GetCurrentAsync(ct).ConfigureAwait(false))?.Version == based.Version)
        {
            var result = await store.PublishIfCurrentAsync(sink, manifest, based, keepWritten: true, ct).ConfigureAwait(false);
            if (result.Published) return (result, manifest, due);
            manifestWritten = true;
        }
        var now = await store.GetCurrentAsync(ct).ConfigureAwait(false);
        if (now is null || !OnBase(await store.ReadManifestAsync(now.Value.Version, ct).ConfigureAwait(false)))
        {
            // Stale: the next run starts from whatever is current and applies the log past its watermark.
            try { await sink.DeleteWrittenAsync(CancellationToken.None).ConfigureAwait(false); } catch (Exception) { /* gc removes it */ }
            return (new IndexStore.PublishResult(false, now?.Version ?? ""), manifest, due);
        }
        // The rebased version references this folder's packs, and gc keeps a folder with a manifest it can read.
        if (!manifestWritten) await sink.WriteAsync(IndexStore.ManifestName, manifest.ToJson(), ct).ConfigureAwait(false);
        for (int attempt = 0; attempt < 5; attempt++)
        {
            var current = await store.OpenCurrentAsync(ct).ConfigureAwait(false);
            if (!OnBase(current)) return (new IndexStore.PublishResult(false, current.Version), manifest, due); // newer rows: this run's are stale
            var rebased = manifest with
            {
                Version = NewerVersion(current.Version, clock),
                CreatedUtc = (clock ?? TimeProvider.System).GetUtcNow(),
                Routing = Referenced(manifest.Routing, manifest),
                Partitions = manifest.Partitions.Select(e => Referenced(e, manifest)).ToArray(),
                Calibration = current.Calibration! with { RowsChangedSince = current.Calibration.RowsChangedSince + changed },
            };
            var published = await store.PublishIfCurrentAsync(store.CreateSink(rebased.Version), rebased, current, ct).ConfigureAwait(false);
            if (published.Published) return (published, rebased, CalibrationDue(rebased));
        }
        return (new IndexStore.PublishResult(false, ""), manifest, due);
    }
}
