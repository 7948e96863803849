using System.CommandLine;
using Squash.Storage;

namespace Squash.Cli.Commands;

/// <summary>Deletes old index versions: every build leaves one behind, and storage is billed by the byte.</summary>
public static class GcCommand
{
    public const string DefaultGrace = "1h";

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
                        + $"less than this ago (queries may still read it): a duration such as {Durations.Examples}.",
            DefaultValueFactory = _ => DefaultGrace,
        };
        var cmd = new Command("gc", "Delete old versions of an index, keeping whatever 'current' names, the N newest, and versions within the grace period.") { index, keep, grace };
        IndexLocation.AddStoreOptions(cmd);
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            int n = pr.GetValue(keep);
            CliErrors.Require(n >= 0, $"--keep must be ≥ 0, got {n}");
            var graceText = pr.GetValue(grace);
            CliErrors.Require(Durations.TryParse(graceText, out var gracePeriod), $"--grace must be a duration such as {Durations.Examples}, got '{graceText}'");
            var store = IndexLocation.Open(pr, pr.GetValue(index));
            var result = await store.CollectGarbageAsync(n, gracePeriod, ct: ct);
            Console.WriteLine(result.Deleted.Count == 0 ? "nothing to delete" : $"deleted {result.Deleted.Count} version(s): {string.Join(' ', result.Deleted)}");
            Console.WriteLine($"kept {result.Kept.Count}: " + string.Join(' ', result.Kept.Select(k => $"{k.Version} ({Explain(k.Reason, n, gracePeriod)})")));
            return 0;
        }));
        return cmd;
    }

    private static string Explain(IndexStore.KeptReason reason, int keep, TimeSpan grace) => reason switch
    {
        IndexStore.KeptReason.Current => "current",
        IndexStore.KeptReason.Newest => $"one of the {keep} newest",
        IndexStore.KeptReason.Recent => $"younger than --grace {Durations.Format(grace)}: a build may be writing it",
        IndexStore.KeptReason.Referenced => "a kept version references its segments",
        _ => $"current less than --grace {Durations.Format(grace)} ago: queries may still read it",
    };
}
