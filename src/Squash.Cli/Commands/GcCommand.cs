using System.CommandLine;
using Squash.Storage;

namespace Squash.Cli.Commands;

/// <summary>Deletes old index versions: every build leaves one behind, and storage is billed by the byte.</summary>
public static class GcCommand
{
    public const string DefaultGrace = "1h";
    public const string DefaultKeyRetention = "24h";

    public static Command Create()
    {
        var index = new Option<string>("--index") { Description = "Folder that holds the index; with --store, the index's name inside the store.", Required = true };
        var keep = new Option<int>("--keep")
        {
            Description = "Versions to keep besides the current one: the N newest.",
            DefaultValueFactory = _ => 2,
        };
        var grace = new Option<string>("--grace")
        {
            Description = "Never delete a version younger than this (a build may still be writing it) or one that stopped being current "
                        + $"less than this ago (queries may still read it): a duration such as {Durations.Examples}. "
                        + $"Below {DefaultGrace} gc warns on stderr and goes on (0 is for when no build runs and no reader uses an older version).",
            DefaultValueFactory = _ => DefaultGrace,
        };
        var log = new Option<bool>("--log")
        {
            Description = "Also delete the write-log batches every kept version has already indexed (never the newest batch). "
                        + "A later rebuild from files re-applies only the batches left, so leave this off while you may rebuild from the original files.",
        };
        var keyRetention = new Option<string>("--key-retention")
        {
            Description = "With --log: also delete the Idempotency-Key records of requests in the trimmed batches once they are older than this "
                        + $"(a retry with the same key after that is applied again; below 1h gc warns on stderr): a duration such as {Durations.Examples}.",
            DefaultValueFactory = _ => DefaultKeyRetention,
        };
        var cmd = new Command("gc", "Delete old versions of an index, keeping whatever 'current' names, the N newest, versions within the grace period and versions whose segments a kept one references; "
            + "with --store, also the build uploads ({index}/uploads/) that no unfinished build reads and that are older than the grace period.") { index, keep, grace, log, keyRetention };
        IndexLocation.AddStoreOptions(cmd);
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            int n = pr.GetValue(keep);
            CliErrors.Require(n >= 0, $"--keep must be ≥ 0, got {n}");
            var graceText = pr.GetValue(grace);
            CliErrors.Require(Durations.TryParse(graceText, out var gracePeriod), $"--grace must be a duration such as {Durations.Examples}, got '{graceText}'");
            var retentionText = pr.GetValue(keyRetention);
            CliErrors.Require(Durations.TryParse(retentionText, out var retention), $"--key-retention must be a duration such as {Durations.Examples}, got '{retentionText}'");
            var store = IndexLocation.Open(pr, pr.GetValue(index));
            // Checked before anything is deleted: a refused --log must not have collected versions already.
            bool trimLog = pr.GetValue(log);
            CliErrors.Require(!trimLog || store.Name.Length > 0, "--log needs --store and the index's name in it (the write log lives beside the index's versions in the store)");
            // Accepted (a quiet store may be collected at once), but said out loud: the grace period is what protects a build
            // in flight and the readers of a superseded version. After the flag checks, so a refused command warns of nothing.
            if (gracePeriod < Durations.Parse(DefaultGrace, "--grace"))
                Console.Error.WriteLine(ShortGraceWarning(gracePeriod));
            // Likewise a short key retention: retries of a request whose key record is gone are applied again.
            if (trimLog && retention < Durations.Parse(WarnedKeyRetention, "--key-retention"))
                Console.Error.WriteLine(ShortKeyRetentionWarning(retention));
            var result = await store.CollectGarbageAsync(n, gracePeriod, ct: ct);
            Console.WriteLine(result.Deleted.Count == 0 ? "nothing to delete" : $"deleted {result.Deleted.Count} version(s): {string.Join(' ', result.Deleted)}");
            Console.WriteLine($"kept {result.Kept.Count}: " + string.Join(' ', result.Kept.Select(k => $"{k.Version} ({Explain(k.Reason, n, gracePeriod)})")));
            if (store.Name.Length > 0)
            {
                // Files `squash build --endpoint` uploaded for builds: kept while an unfinished build reads them, and for the grace period.
                var uploads = await Squash.Storage.Builds.UploadCollection.CollectAsync(store.Blobs, store.Name, gracePeriod, ct: ct);
                if (uploads.Deleted.Count + uploads.InUse.Count + uploads.Recent.Count > 0)
                    Console.WriteLine($"uploads: deleted {uploads.Deleted.Count}, kept {uploads.InUse.Count} that unfinished builds read and "
                        + $"{uploads.Recent.Count} younger than --grace {Durations.Format(gracePeriod)}");
            }
            if (trimLog)
            {
                if (result.LogIndexedByAllKept is { } through and > 0)
                {
                    var writeLog = new Squash.Storage.Writes.WriteLog(store.Blobs, store.Name);
                    int batches = await writeLog.DeleteBatchesThroughAsync(through, ct);
                    Console.WriteLine($"write log: deleted {batches} batch(es) at or below sequence {through}, which every kept version has indexed");
                    int keys = await writeLog.DeleteSettledKeysAsync(through, DateTimeOffset.UtcNow - retention, ct);
                    Console.WriteLine($"idempotency keys: deleted {keys} record(s) of requests at or below sequence {through} older than --key-retention {Durations.Format(retention)}");
                }
                else
                {
                    Console.WriteLine(result.LogIndexedByAllKept is null
                        ? "write log: kept whole (a kept version has no manifest yet, so what it will need is unknown)"
                        : "write log: kept whole (a kept version has indexed none of it)");
                }
            }
            return 0;
        }));
        return cmd;
    }

    /// <summary>A --key-retention below this is warned about (with --log): clients' retries of one request can take that long.</summary>
    public const string WarnedKeyRetention = "1h";

    /// <summary>What a key retention below <see cref="WarnedKeyRetention"/> risks: a retry past it is applied twice.</summary>
    public static string ShortKeyRetentionWarning(TimeSpan retention) =>
        $"warning: --key-retention {Durations.Format(retention)} is below {WarnedKeyRetention}: a request sent again with the same "
        + "Idempotency-Key after its record is deleted is applied a second time";

    /// <summary>What a grace period below the default risks: gc takes the blobs of versions still in use.</summary>
    public static string ShortGraceWarning(TimeSpan grace) =>
        $"warning: --grace {Durations.Format(grace)} is below the default {DefaultGrace}: gc may delete the blobs of a version a build is still "
        + "writing (the build fails) or that queries still read (they fail until they re-read 'current')";

    private static string Explain(IndexStore.KeptReason reason, int keep, TimeSpan grace) => reason switch
    {
        IndexStore.KeptReason.Current => "current",
        IndexStore.KeptReason.Newest => $"one of the {keep} newest",
        IndexStore.KeptReason.Recent => $"younger than --grace {Durations.Format(grace)}: a build may be writing it",
        IndexStore.KeptReason.Referenced => "a kept version references its segments",
        IndexStore.KeptReason.Rebuild => "a full rebuild not yet published writes it or was built from it",
        _ => $"current less than --grace {Durations.Format(grace)} ago: queries may still read it",
    };
}
