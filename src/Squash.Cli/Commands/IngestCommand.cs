using System.CommandLine;
using Squash.Search.Writes;
using Squash.Storage.Writes;

namespace Squash.Cli.Commands;

/// <summary>
/// Applies an index's write-ahead log by hand: what the queue-triggered ingest function does after writes, for a store
/// without queues (squash serve --store dir:…) or to catch up at once.
/// </summary>
public static class IngestCommand
{
    public static Command Create()
    {
        var index = new Option<string>("--index") { Description = "The index's name inside --store (writes go to indexes served from a store).", Required = true };
        var rounds = new Option<int>("--max-rounds")
        {
            Description = $"Versions to publish at most; each applies up to {LogIngest.DefaultMaxBatches:N0} batches.",
            DefaultValueFactory = _ => 10,
        };
        var cmd = new Command("ingest", "Apply the write log past the current version's watermark and publish the result (only the touched partitions are rewritten).") { index, rounds };
        IndexLocation.AddStoreOptions(cmd);
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            int max = pr.GetValue(rounds);
            CliErrors.Require(max >= 1, $"--max-rounds must be ≥ 1, got {max}");
            CliErrors.Require(!string.IsNullOrWhiteSpace(pr.GetValue<string?>(IndexLocation.StoreFlag)),
                "--store is required: the write log lives beside the index's versions in a store (dir:PATH or azure:…)");
            var store = IndexLocation.Open(pr, pr.GetValue(index));
            // No build queue here: past the share it says that a full rebuild is due; one the service queued is published by it too.
            var run = await LogIngest.RunLeasedAsync(store, new WriteLog(store.Blobs, store.Name), maxRounds: max, ct: ct,
                rebuild: new RebuildSettings(RebuildSettings.DefaultShare));
            if (run.Busy)
            {
                // A holder killed mid-run keeps the lease until it expires: say when, so that a retry is not mistaken for done.
                var until = await IngestLease.HeldUntilAsync(store.Blobs, store.Name, ct: ct);
                Console.WriteLine($"another ingest holds the lease of '{store.Name}'" + (until is { } u
                    ? $" until {u.UtcDateTime:HH:mm:ss} UTC; it is applying the log (if that process was stopped, nothing is: run this again after {u.UtcDateTime:HH:mm:ss} UTC)"
                    : "; it is applying the log"));
                return 0;
            }
            if (run.Rounds.Count == 0) Console.WriteLine("nothing past the watermark");
            foreach (var r in run.Rounds)
                Console.WriteLine($"batches {r.FromSequence + 1}–{r.ToSequence}: {r.Upserts:N0} upserts, {r.Deleted:N0} rows removed → version {r.Version} " +
                    $"({r.PartitionSummary}{(r.Published ? "" : "; not published: another version became current while it ran")}; {r.Timings}){r.SkippedSummary}");
            if (run.Rebuild is { } rebuild) Console.WriteLine(rebuild.Message);
            return 0;
        }));
        return cmd;
    }
}
