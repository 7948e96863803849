using Squash.Index.Attributes;
using Squash.Index.Format;
using Squash.Search.Filters;
using Squash.Storage;

namespace Squash.Cli.Commands;

/// <summary>A bad command-line value: the message names the flag.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>Runs a command body and turns user-facing failures into one clear line on stderr and exit code 1.</summary>
public static class CliErrors
{
    public static async Task<int> RunAsync(Func<Task<int>> body)
    {
        try
        {
            return await body().ConfigureAwait(false);
        }
        catch (Exception e) when (e is UsageException or ArgumentException or InvalidDataException or CorruptIndexException
                                       or IndexNotFoundException or IOException or UnauthorizedAccessException
                                       or BlobConditionFailedException or BlobNotFoundException or FormatException
                                       or AttributeFormatException or FilterException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("error: cancelled");
            return 130;
        }
    }

    public static void Require(bool condition, string message)
    {
        if (!condition) throw new UsageException(message);
    }
}
