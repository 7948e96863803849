using System.Text.RegularExpressions;

namespace Squash.Storage;

/// <summary>Opens a blob store from its textual form: <c>dir:PATH</c> or <c>azure:CONNECTION_STRING|ACCOUNT_URL</c>.</summary>
public static partial class BlobStores
{
    /// <summary>Throws <see cref="BlobStoreSpecException"/> with a message that never echoes secrets.</summary>
    public static IBlobStore Open(string spec, string container = "squash")
    {
        if (spec.StartsWith("dir:", StringComparison.Ordinal))
        {
            var path = spec["dir:".Length..];
            if (string.IsNullOrWhiteSpace(path)) throw new BlobStoreSpecException(false, "dir: needs a folder, as in dir:/data/indexes");
            // Counted like a blob store's operations, so that a folder deployment's stats say what Azure would bill.
            return new CountingBlobStore(new FolderBlobStore(path));
        }
        if (spec.StartsWith("azure:", StringComparison.Ordinal))
        {
            var target = spec["azure:".Length..];
            if (string.IsNullOrWhiteSpace(target))
                throw new BlobStoreSpecException(false, "azure: needs a connection string or an account URL, as in azure:https://ACCOUNT.blob.core.windows.net");
            // Read first: its error names the variable, and must not be mistaken for a bad connection string below.
            var resilience = ResilienceOptions.FromEnvironment();
            if (!ContainerName().IsMatch(container) || container.Contains("--"))
                throw new BlobStoreSpecException(true, $"'{container}' is not a valid container name (3-63 lower-case letters, digits and single hyphens)");
            try
            {
                var azure = target.StartsWith("https://", StringComparison.OrdinalIgnoreCase) || target.StartsWith("http://", StringComparison.OrdinalIgnoreCase)
                    ? new AzureBlobStore(new Uri(target), container)
                    : new AzureBlobStore(target, container);
                // Remote storage throttles and drops connections; local folders do not need this.
                // Counted under the retries: a retried request is billed again.
                return new ResilientBlobStore(new CountingBlobStore(azure), resilience);
            }
            catch (Exception e) when (e is FormatException or ArgumentException or UriFormatException or InvalidOperationException)
            {
                throw new BlobStoreSpecException(false, $"azure:… is neither a valid Azure Storage connection string nor an account URL ({e.GetType().Name})");
            }
        }
        throw new BlobStoreSpecException(false, $"must be dir:PATH or azure:CONNECTION_STRING|ACCOUNT_URL, got '{(spec.Length > 12 ? spec[..12] + "…" : spec)}'");
    }

    [GeneratedRegex("^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")]
    private static partial Regex ContainerName();
}

/// <summary>A store specification that cannot be opened; <see cref="IsContainer"/> tells which part is wrong.</summary>
public sealed class BlobStoreSpecException(bool isContainer, string message) : ArgumentException(message)
{
    public bool IsContainer { get; } = isContainer;
}
