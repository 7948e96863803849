using System.CommandLine;

namespace Squash.Cli.Commands;

/// <summary>Deletes old index versions: every build leaves one behind, and storage is billed by the byte.</summary>
public static class GcCommand
{
    public static Command Create()
    {
        var index = new Option<string>("--index") { Description = "Folder that holds the index; with --store, the index's name inside the store.", Required = true };
        var keep = new Option<int>("--keep")
        {
            Description = "Versions to keep besides the current one: the N newest (queries that opened an older version may still be reading it).",
            DefaultValueFactory = _ => 2,
        };
        var cmd = new Command("gc", "Delete old versions of an index, keeping the N newest and whatever 'current' names.") { index, keep };
        IndexLocation.AddStoreOptions(cmd);
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            int n = pr.GetValue(keep);
            CliErrors.Require(n >= 0, $"--keep must be ≥ 0, got {n}");
            var store = IndexLocation.Open(pr, pr.GetValue(index));
            var current = await store.GetCurrentAsync(ct);
            var deleted = await store.CollectGarbageAsync(n, ct);
            var left = await store.ListVersionsAsync(ct);
            Console.WriteLine(deleted.Count == 0 ? "nothing to delete" : $"deleted {deleted.Count} version(s): {string.Join(' ', deleted)}");
            Console.WriteLine($"kept {left.Count}: " + string.Join(' ', left.Select(v => v == current?.Version ? v + " (current)" : v)));
            return 0;
        }));
        return cmd;
    }
}
