using System.CommandLine;
using Squash.Cli.Commands;

namespace Squash.Cli;

public static class Program
{
    public static Task<int> Main(string[] args) => BuildRoot().Parse(args).InvokeAsync();

    /// <summary>The whole command tree; tests parse against it so help and flags stay true.</summary>
    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("squash: serverless vector similarity search (OSQ segments, exact filters).");
        root.Subcommands.Add(BuildCommand.Create());
        root.Subcommands.Add(QueryCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        root.Subcommands.Add(InspectCommand.Create());
        root.Subcommands.Add(ServeCommand.Create());
        root.Subcommands.Add(GcCommand.Create());
        root.Subcommands.Add(DatasetCommand.Create());
        return root;
    }
}
