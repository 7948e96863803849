using System.CommandLine;
using System.Text.RegularExpressions;
using Squash.Storage;

namespace Squash.Cli.Commands;

/// <summary>
/// Where an index lives. <c>--index DIR</c> alone is a folder holding one index (the default: nothing to
/// set up). With <c>--store dir:PATH</c> or <c>--store azure:CONNECTION_STRING|ACCOUNT_URL</c>
/// (and <c>--container</c>, default "squash"), <c>--index</c> names an index inside that store, so one
/// store can hold many indexes.
/// </summary>
public static partial class IndexLocation
{
    public const string StoreFlag = "--store";
    public const string ContainerFlag = "--container";
    public const string DefaultContainer = "squash";

    /// <summary>Adds --store and --container to a command that has --index.</summary>
    public static void AddStoreOptions(Command command)
    {
        command.Options.Add(new Option<string?>(StoreFlag)
        {
            Description = "Blob store holding the index: dir:PATH, or azure:CONNECTION_STRING or azure:https://ACCOUNT.blob.core.windows.net "
                        + "(Entra ID via DefaultAzureCredential). With it, --index is the index's name inside the store.",
        });
        command.Options.Add(new Option<string>(ContainerFlag)
        {
            Description = "Blob container for --store azure:….",
            DefaultValueFactory = _ => DefaultContainer,
        });
    }

    /// <summary>Opens the index the command's --index/--store/--container name.</summary>
    public static IndexStore Open(ParseResult parse, string? index) =>
        Open(index, parse.GetValue<string?>(StoreFlag), parse.GetValue<string>(ContainerFlag) ?? DefaultContainer);

    public static IndexStore Open(string? index, string? store = null, string container = DefaultContainer)
    {
        if (string.IsNullOrWhiteSpace(store))
        {
            if (string.IsNullOrWhiteSpace(index)) throw new UsageException("--index is required: the folder that holds (or will hold) the index");
            if (File.Exists(index)) throw new UsageException($"--index {index} is a file; without --store it names the folder that holds the index");
            if (OutputFolder.FileInTheWay(index) is { } file) throw new UsageException($"--index {index}: '{file}' is a file, not a folder");
            return new IndexStore(new FolderBlobStore(index));
        }
        if (string.IsNullOrWhiteSpace(index) || !IndexName().IsMatch(index) || index.Split('/').Any(s => s is "." or ".."))
            throw new UsageException($"--index: with --store it names an index inside the store (letters, digits, '.', '_', '-', '/' between parts), got '{index}'");
        return new IndexStore(OpenStore(store, container), index);
    }

    /// <summary>Opens a store spec; a bad spec or container is a usage error naming the flag, without echoing secrets.</summary>
    public static IBlobStore OpenStore(string store, string container)
    {
        if (store.StartsWith("dir:", StringComparison.Ordinal) && File.Exists(store[4..]))
            throw new UsageException($"{StoreFlag} {store} is a file, not a folder of indexes");
        if (store.StartsWith("dir:", StringComparison.Ordinal) && store.Length > 4 && OutputFolder.FileInTheWay(store[4..]) is { } file)
            throw new UsageException($"{StoreFlag} {store}: '{file}' is a file, not a folder");
        try
        {
            return BlobStores.Open(store, container);
        }
        catch (BlobStoreSpecException e)
        {
            throw new UsageException(e.IsContainer ? $"{ContainerFlag}: {e.Message}" : $"{StoreFlag} {e.Message}");
        }
    }

    [GeneratedRegex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")]
    private static partial Regex IndexName();
}
