using System.CommandLine;
using System.CommandLine.Invocation;
using System.Text.RegularExpressions;
using Squash.Cli.Commands;

namespace Squash.Cli;

public static partial class Program
{
    public static Task<int> Main(string[] args) => RunAsync(args);

    /// <summary>
    /// Parses and runs a command line. Every failure is one <c>error: …</c> line and exit code 1: a parse error
    /// (with a pointer to --help instead of the whole help text), a failed command, and a bug that escaped a command.
    /// </summary>
    public static Task<int> RunAsync(string[] args) => RunAsync(args, CancellationToken.None);

    /// <summary>As <see cref="RunAsync(string[])"/>; cancelling <paramref name="cancellationToken"/> is what Ctrl+C does.</summary>
    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken)
    {
        var parse = BuildRoot().Parse(args);
        if (parse.Action is ParseErrorAction)
        {
            var messages = parse.Errors.Select(e => Reword(e.Message)).Distinct();
            var lists = parse.CommandResult.Command is RootCommand ? "commands" : "options";
            Console.Error.WriteLine($"error: {string.Join("; ", messages)} ({CommandPath(parse)} --help lists the {lists})");
            return 1;
        }
        try
        {
            return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false }, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            return CliErrors.Report(e, parse);
        }
    }

    /// <summary>The whole command tree; tests parse against it so help and flags stay true.</summary>
    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("squash: serverless vector similarity search (OSQ segments, exact filters).");
        root.Subcommands.Add(BuildCommand.Create());
        root.Subcommands.Add(BuildsCommand.Create());
        root.Subcommands.Add(QueryCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        root.Subcommands.Add(Bench.BuildBench.Create());
        root.Subcommands.Add(Bench.WriteBench.Create());
        root.Subcommands.Add(InspectCommand.Create());
        root.Subcommands.Add(ServeCommand.Create());
        root.Subcommands.Add(GcCommand.Create());
        root.Subcommands.Add(IngestCommand.Create());
        root.Subcommands.Add(CalibrateCommand.Create());
        root.Subcommands.Add(WriteCommands.Upsert());
        root.Subcommands.Add(WriteCommands.Delete());
        root.Subcommands.Add(DatasetCommand.Create());
        return root;
    }

    private static string CommandPath(ParseResult parse)
    {
        var names = new List<string>();
        for (var c = parse.CommandResult; c is not null; c = c.Parent as System.CommandLine.Parsing.CommandResult)
            names.Add(c.Command is RootCommand ? "squash" : c.Command.Name);
        names.Reverse();
        return string.Join(' ', names);
    }

    /// <summary>The parser's messages in the CLI's words: flag first, and no .NET type names.</summary>
    private static string Reword(string message)
    {
        message = message.TrimEnd('.');
        if (ParseFailure().Match(message) is { Success: true } m)
        {
            string expected = m.Groups["type"].Value switch
            {
                "System.Int32" or "System.Int64" or "System.Nullable`1[System.Int32]" => "an integer",
                "System.Double" or "System.Single" => "a number",
                "System.Boolean" => "true or false",
                var t => "a " + t[(t.LastIndexOf('.') + 1)..] + " value",
            };
            return $"{m.Groups["flag"].Value}: '{m.Groups["value"].Value}' is not {expected}";
        }
        return message == "Required command was not provided" ? "no command given" : message;
    }

    [GeneratedRegex(@"^Cannot parse argument '(?<value>.*)' for option '(?<flag>[^']+)' as expected type '(?<type>[^']+)'")]
    private static partial Regex ParseFailure();
}
