using System.CommandLine;
using System.Net.Http;
using System.Net.Sockets;
using Azure;
using Squash.Index.Attributes;
using Squash.Index.Format;
using Squash.Search.Filters;
using Squash.Storage;

namespace Squash.Cli.Commands;

/// <summary>A bad command-line value: the message names the flag.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>
/// Every failure of a command becomes one <c>error: …</c> line on stderr and exit code 1 (130 when cancelled).
/// Known failures (bad input, a missing file, an unreachable endpoint or store) are told in words that name the
/// flag; anything else is a bug, told by its message and type, with the stack trace only under SQUASH_DEBUG=1.
/// Everything printed goes through <see cref="SecretRedaction"/>.
/// </summary>
public static class CliErrors
{
    public const string DebugVariable = "SQUASH_DEBUG";
    public const string EndpointFlag = "--endpoint";

    public static bool DebugRequested => Environment.GetEnvironmentVariable(DebugVariable) is { Length: > 0 } v && v != "0" && !v.Equals("false", StringComparison.OrdinalIgnoreCase);

    public static Task<int> RunAsync(Func<Task<int>> body) => RunAsync(null, body);

    /// <summary>Runs a command body; <paramref name="parse"/> lets a network failure name the flag (--endpoint or --store) it came from.</summary>
    public static async Task<int> RunAsync(ParseResult? parse, Func<Task<int>> body)
    {
        try
        {
            return await body().ConfigureAwait(false);
        }
        catch (Exception e)
        {
            return Report(e, parse);
        }
    }

    /// <summary>Prints the one error line (and the redacted stack under SQUASH_DEBUG=1) and returns the exit code.</summary>
    public static int Report(Exception e, ParseResult? parse = null)
    {
        if (IsCancellation(e))
        {
            Console.Error.WriteLine("error: cancelled");
            return 130;
        }
        Console.Error.WriteLine("error: " + Describe(e, parse));
        if (DebugRequested) Console.Error.WriteLine(SecretRedaction.Redact(e.ToString()));
        return 1;
    }

    /// <summary>The error line's text (without "error: "): one line, credentials redacted.</summary>
    public static string Describe(Exception e, ParseResult? parse = null)
    {
        e = Unwrap(e);
        string source = Source(parse) is { } flag ? flag + ": " : "";
        return e switch
        {
            UsageException or ArgumentException or InvalidDataException or CorruptIndexException or IndexNotFoundException
                or UnauthorizedAccessException or BlobConditionFailedException or BlobNotFoundException or FormatException
                or AttributeFormatException or FilterException or System.Text.Json.JsonException or EndpointProblemException
                or Squash.Storage.Writes.WriteLogConflictException => Text(e),
            _ when NetworkFailure(e) is { } network => $"{source}cannot connect: {Text(network)}",
            TimeoutException or OperationCanceledException => $"{source}no answer in time ({Text(e)})",
            RequestFailedException r => $"{source}Azure Storage answered {r.Status}{(r.ErrorCode is { } code ? " " + code : "")}: {Text(e)}",
            IOException => Text(e),
            _ => $"{Text(e)} ({e.GetType().Name}" + (DebugRequested ? ")" : $"; run with {DebugVariable}=1 for details)"),
        };
    }

    /// <summary>An exception's first line, redacted (the parts the CLI adds around it are redacted where they are made).</summary>
    private static string Text(Exception e) => SecretRedaction.Redact(FirstLine(e.Message));

    public static void Require(bool condition, string message)
    {
        if (!condition) throw new UsageException(message);
    }

    /// <summary>The file a flag names exists and is a file: a folder would otherwise read as "does not exist".</summary>
    public static void RequireFile(string flag, string path)
    {
        if (Directory.Exists(path)) throw new UsageException($"{flag}: '{path}' is a folder, not a file");
        if (!File.Exists(path)) throw new UsageException($"{flag}: file '{path}' does not exist");
    }

    /// <summary>Ctrl+C, as opposed to a timeout (HttpClient reports its timeout as a cancellation caused by a TimeoutException).</summary>
    private static bool IsCancellation(Exception e) =>
        Unwrap(e) is OperationCanceledException oce && oce.InnerException is not TimeoutException;

    /// <summary>The failure itself rather than its wrapper: an SDK's retry loop reports each try inside an AggregateException.</summary>
    private static Exception Unwrap(Exception e)
    {
        while (true)
        {
            switch (e)
            {
                case AggregateException { InnerExceptions.Count: > 0 } a: e = a.InnerExceptions[0]; break;
                case System.Reflection.TargetInvocationException { InnerException: { } inner }: e = inner; break;
                default: return e;
            }
        }
    }

    /// <summary>The exception that says why a connection failed (refused, unknown host, reset), if that is what happened.</summary>
    private static Exception? NetworkFailure(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
        {
            if (x is HttpRequestException or SocketException) return x;
            if (x is RequestFailedException { Status: not 0 }) return null; // the service answered
        }
        return null;
    }

    /// <summary>Which flag a network failure is about: --endpoint when the command has one and it was given, else --store.</summary>
    private static string? Source(ParseResult? parse)
    {
        if (parse is null) return null;
        if (Value(parse, EndpointFlag) is { } endpoint) return $"{EndpointFlag} {endpoint}";
        if (Value(parse, IndexLocation.StoreFlag) is { } store) return $"{IndexLocation.StoreFlag} {store}";
        return null;
    }

    private static string? Value(ParseResult parse, string flag) =>
        parse.CommandResult.Command.Options.FirstOrDefault(o => o.Name == flag) is Option<string> option
            ? parse.GetValue(option) is { Length: > 0 } v ? SecretRedaction.Redact(v) : null
            : null;

    private static string FirstLine(string message)
    {
        var line = message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault() ?? "";
        return line.Length > 0 ? line : "(no message)";
    }
}
