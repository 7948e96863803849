using Squash.Storage;

namespace Squash.Cli.Commands;

/// <summary>Where an index lives. For now a folder (the embedded default); blob stores come with --store.</summary>
public static class IndexLocation
{
    public static IndexStore Open(string? indexDir)
    {
        if (string.IsNullOrWhiteSpace(indexDir)) throw new UsageException("--index is required: the folder that holds (or will hold) the index");
        return new IndexStore(new FolderBlobStore(indexDir));
    }
}
