using System.CommandLine;

namespace Squash.Cli.Commands;

/// <summary>Placeholder until the dataset tools land.</summary>
public static class DatasetCommand
{
    public static Command Create() => new("dataset", "Prepare benchmark data sets.");
}
