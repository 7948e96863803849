using System.CommandLine;
using System.Text.RegularExpressions;

namespace Squash.Cli.Tests;

/// <summary>
/// The README's CLI synopsis against the command tree itself: every flag a command takes is in that command's synopsis,
/// and every flag the synopsis gives a command is one it takes. A flag added, renamed or removed on one side only fails here.
/// </summary>
public sealed partial class ReadmeCliTests
{
    private static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Serverless.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("Serverless.sln not found above " + AppContext.BaseDirectory);
    }

    /// <summary>The README's "## CLI" code block, one entry per "squash …" line with its indented continuation lines.</summary>
    private static List<(string Command, HashSet<string> Flags)> Synopsis()
    {
        var readme = File.ReadAllText(Path.Combine(RepositoryRoot(), "README.md"));
        int section = readme.IndexOf("\n## CLI\n", StringComparison.Ordinal);
        Assert.True(section >= 0, "README.md has no '## CLI' section");
        int start = readme.IndexOf("```text\n", section, StringComparison.Ordinal) + "```text\n".Length;
        int end = readme.IndexOf("\n```", start, StringComparison.Ordinal);
        var entries = new List<(string, HashSet<string>)>();
        foreach (var raw in readme[start..end].Split('\n'))
        {
            // What follows '#' is a comment, not flags of the entry (it may name another command's flags).
            string line = raw.Split('#')[0];
            if (line.StartsWith("squash ", StringComparison.Ordinal))
            {
                // "squash builds list|show ID|cancel ID --endpoint …": the command, then its subcommands (lower-case words).
                var words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).TakeWhile(w => !w.StartsWith('-') && !w.StartsWith('[')).ToList();
                var subcommands = words.Skip(1).SelectMany(w => w.Split('|')).Where(w => SubcommandWord().IsMatch(w));
                entries.Add((string.Join(' ', words.Take(1).Append(string.Join('|', subcommands))).Trim(), []));
            }
            if (entries.Count == 0) continue;
            foreach (Match m in Flag().Matches(line)) entries[^1].Item2.Add(m.Value);
        }
        return entries;
    }

    /// <summary>Every command that runs something, by its path ("builds list"), with its long flag names.</summary>
    private static Dictionary<string, HashSet<string>> Commands()
    {
        var all = new Dictionary<string, HashSet<string>>();
        void Walk(Command c, string path)
        {
            if (c.Subcommands.Count == 0 || c.Action is not null)
                all[path] = c.Options.Concat(c.Parents.OfType<Command>().SelectMany(p => p.Options.Where(o => o.Recursive)))
                    .Select(o => o.Name).Where(n => n.StartsWith("--", StringComparison.Ordinal) && n != "--help").ToHashSet();
            foreach (var s in c.Subcommands) Walk(s, path.Length == 0 ? s.Name : path + " " + s.Name);
        }
        foreach (var c in Program.BuildRoot().Subcommands) Walk(c, c.Name);
        return all;
    }

    /// <summary>The synopsis entries that document a command: "builds list|show ID|cancel ID" documents all three.</summary>
    private static IEnumerable<HashSet<string>> EntriesOf(List<(string Command, HashSet<string> Flags)> synopsis, string path)
    {
        var words = path.Split(' ');
        foreach (var (command, flags) in synopsis)
        {
            var documented = command.Split(' ');
            if (!documented[0].Split('|').Contains(words[0])) continue;
            if (words.Length == 1 || documented.Length > 1 && documented[1].Split('|').Contains(words[1])) yield return flags;
        }
    }

    [Fact]
    public void EveryFlagOfEveryCommandIsInItsReadmeSynopsis()
    {
        var synopsis = Synopsis();
        var missing = new List<string>();
        foreach (var (path, flags) in Commands())
        {
            var entries = EntriesOf(synopsis, path).ToList();
            if (entries.Count == 0) { missing.Add($"squash {path}: no synopsis line"); continue; }
            var documented = entries.SelectMany(e => e).ToHashSet();
            missing.AddRange(flags.Where(f => !documented.Contains(f)).Order().Select(f => $"squash {path} {f}"));
        }
        Assert.True(missing.Count == 0, "missing from the README's CLI synopsis:\n" + string.Join('\n', missing));
    }

    [Fact]
    public void EveryFlagTheReadmeSynopsisGivesIsOneTheCommandTakes()
    {
        var commands = Commands();
        var stale = new List<string>();
        foreach (var (command, flags) in Synopsis())
        {
            var takes = commands.Where(c => EntriesOf([(command, flags)], c.Key).Any()).SelectMany(c => c.Value).ToHashSet();
            if (takes.Count == 0 && !commands.Keys.Any(k => EntriesOf([(command, flags)], k).Any())) { stale.Add($"squash {command}: no such command"); continue; }
            stale.AddRange(flags.Where(f => !takes.Contains(f)).Order().Select(f => $"squash {command} {f}"));
        }
        Assert.True(stale.Count == 0, "in the README's CLI synopsis but not taken by the command:\n" + string.Join('\n', stale));
    }

    [GeneratedRegex("^[a-z][a-z-]*$")]
    private static partial Regex SubcommandWord();

    [GeneratedRegex("(?<![\\w-])--[a-z][a-z0-9-]*")]
    private static partial Regex Flag();
}
