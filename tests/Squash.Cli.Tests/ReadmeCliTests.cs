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

    /// <summary>
    /// A value the synopsis shows beside a flag (<c>[--k 10]</c>, not a placeholder such as <c>[--limit N]</c>) is the flag's
    /// default: the command's own default, or, for a flag without one, a value its help text names.
    /// </summary>
    [Fact]
    public void EveryDefaultTheReadmeSynopsisShowsIsTheFlagsDefault()
    {
        var readme = File.ReadAllText(Path.Combine(RepositoryRoot(), "README.md"));
        int section = readme.IndexOf("\n## CLI\n", StringComparison.Ordinal);
        int start = readme.IndexOf("```text\n", section, StringComparison.Ordinal);
        var block = readme[start..readme.IndexOf("\n```", start + 8, StringComparison.Ordinal)];
        var options = new Dictionary<string, List<Option>>();
        void Walk(Command c, string path)
        {
            options[path] = [.. c.Options, .. c.Parents.OfType<Command>().SelectMany(p => p.Options.Where(o => o.Recursive))];
            foreach (var sub in c.Subcommands) Walk(sub, path + " " + sub.Name);
        }
        foreach (var c in Program.BuildRoot().Subcommands) Walk(c, c.Name);

        var wrong = new List<string>();
        string? command = null;
        foreach (var raw in block.Split('\n'))
        {
            var line = raw.Split('#')[0];
            if (line.StartsWith("squash ", StringComparison.Ordinal))
            {
                // "dataset generate" is a command of its own; "builds list|show ID|cancel ID" and "build|query|…" name several.
                var words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                command = words.Length > 2 && options.ContainsKey(words[1] + " " + words[2]) ? words[1] + " " + words[2] : words[1];
            }
            if (command is null) continue;
            foreach (Match m in ShownDefault().Matches(line))
            {
                string flag = m.Groups[1].Value, shown = m.Groups[2].Value;
                // A placeholder (N, FILE.jsonl, name:type,..., …), not a value.
                if (shown.Any(char.IsUpper) || shown.Contains("...", StringComparison.Ordinal) || shown.Contains('…')) continue;
                // "build|query|bench … --store" names several commands: the flag's options in each.
                var candidates = command.Split('|').SelectMany(name => options.Where(o => o.Key == name || !command.Contains(' ') && o.Key.StartsWith(name + " ", StringComparison.Ordinal)))
                    .SelectMany(o => o.Value).Where(o => o.Name == flag).ToList();
                if (candidates.Count == 0) continue; // the flag test reports it
                foreach (var option in candidates.DistinctBy(o => o.Description))
                {
                    string? actual = option.HasDefaultValue ? Text(option.GetDefaultValue()) : null;
                    // Or the help names the value (a default in one mode: bench --load's "1x1").
                    bool same = actual is not null && (actual == shown || double.TryParse(shown, System.Globalization.CultureInfo.InvariantCulture, out double a)
                            && double.TryParse(actual, System.Globalization.CultureInfo.InvariantCulture, out double b) && a == b)
                        || Regex.IsMatch(option.Description ?? "", "default[^;)]*?" + Regex.Escape(shown) + "(?![\\w,]|\\.\\d)");
                    if (!same) wrong.Add($"squash {command} {flag}: the README shows {shown}, the command's default is {actual ?? "none (and its help does not name " + shown + ")"}");
                }
            }
        }
        Assert.True(wrong.Count == 0, "defaults in the README's CLI synopsis that are not the command's:\n" + string.Join('\n', wrong));

        static string? Text(object? value) => value switch
        {
            null => null,
            double d => d.ToString(System.Globalization.CultureInfo.InvariantCulture),
            float f => f.ToString(System.Globalization.CultureInfo.InvariantCulture),
            System.Collections.IEnumerable list and not string => string.Join(',', list.Cast<object>().Select(x => Convert.ToString(x, System.Globalization.CultureInfo.InvariantCulture))),
            _ => Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture),
        };
    }

    /// <summary>"[--k 10]": a flag and the one value shown with it (not "a|b" choices, not "--ids A,B | …").</summary>
    [GeneratedRegex("\\[(--[a-z][a-z0-9-]*) ([^\\s\\[\\]|]+)\\]")]
    private static partial Regex ShownDefault();

    [GeneratedRegex("^[a-z][a-z-]*$")]
    private static partial Regex SubcommandWord();

    [GeneratedRegex("(?<![\\w-])--[a-z][a-z0-9-]*")]
    private static partial Regex Flag();
}
