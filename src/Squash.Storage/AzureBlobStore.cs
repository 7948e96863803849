using System.Runtime.CompilerServices;
using Azure;
using Azure.Core;
using Azure.Identity;
using Azure.Storage;
using Azure.Storage.Blobs;
using Azure.Storage.Blobs.Models;

namespace Squash.Storage;

/// <summary>
/// Azure Blob Storage behind the blob-store contract. Conditional writes are ETag conditions
/// (If-None-Match: * for create-only, If-Match for compare-and-swap), so the publish protocol
/// keeps its guarantees across processes and machines.
/// </summary>
public sealed class AzureBlobStore : IBlobStore
{
    /// <summary>
    /// Pinned so that the SDK's default (a newer x-ms-version than Azurite 3.37 accepts) works against
    /// a plain emulator as well as the real service.
    /// </summary>
    public const BlobClientOptions.ServiceVersion PinnedServiceVersion = BlobClientOptions.ServiceVersion.V2026_06_06;

    /// <summary>Blobs up to 8 MiB move in one request; larger ones as 4 MiB blocks or ranges, 4 in parallel.</summary>
    public static readonly StorageTransferOptions DefaultTransfer = new()
    {
        InitialTransferSize = 8 << 20,
        MaximumTransferSize = 4 << 20,
        MaximumConcurrency = 4,
    };

    private readonly BlobContainerClient _container;
    private readonly StorageTransferOptions _transfer;

    /// <summary>Shared-key or SAS access from a connection string (Azurite, or a storage account's keys).</summary>
    public AzureBlobStore(string connectionString, string containerName, StorageTransferOptions? transfer = null)
        : this(new BlobContainerClient(connectionString, containerName, NewOptions()), transfer)
    {
    }

    /// <summary>Entra ID access (managed identity, az login, environment...) through DefaultAzureCredential.</summary>
    public AzureBlobStore(Uri accountUrl, string containerName, TokenCredential? credential = null, StorageTransferOptions? transfer = null)
        : this(new BlobContainerClient(ContainerUri(accountUrl, containerName), credential ?? new DefaultAzureCredential(), NewOptions()), transfer)
    {
    }

    public AzureBlobStore(BlobContainerClient container, StorageTransferOptions? transfer = null)
    {
        // Constructors stay synchronous and offline. The container is created by the first write that
        // finds it missing, so an instance that only reads never needs the right to create containers.
        _container = container;
        _transfer = transfer ?? DefaultTransfer;
    }

    /// <summary>
    /// Client options with the SDK's own retries off: <see cref="ResilientBlobStore"/> is the one retry
    /// layer. Retries inside it would multiply its attempts (4 × (1 + 3) requests per operation), escape
    /// its per-attempt timeout and total budget, and hide a conditional write whose answer was lost: the
    /// SDK's retry of a create-only write that had landed fails its condition, and only the outer layer
    /// can tell that from a real conflict (it reads the blob back).
    /// </summary>
    public static BlobClientOptions NewOptions()
    {
        var options = new BlobClientOptions(PinnedServiceVersion);
        options.Retry.MaxRetries = 0;
        return options;
    }

    private static Uri ContainerUri(Uri accountUrl, string containerName) =>
        new(accountUrl.ToString().TrimEnd('/') + "/" + Uri.EscapeDataString(containerName));

    public string Description => $"azure:{_container.AccountName}/{_container.Name}";

    public BlobContainerClient Container => _container;

    private BlobClient Blob(string name)
    {
        BlobNames.Validate(name);
        return _container.GetBlobClient(name);
    }

    private static bool IsContainerMissing(RequestFailedException e) => e.ErrorCode == BlobErrorCode.ContainerNotFound;

    public async Task<byte[]> ReadAllAsync(string name, CancellationToken cancellationToken = default)
    {
        var blob = Blob(name);
        try
        {
            // Big segments (raw vectors) come down as parallel ranges; the SDK pins them to the first
            // range's ETag, so a blob replaced mid-download fails instead of mixing two versions.
            using var buffer = new MemoryStream();
            await blob.DownloadToAsync(buffer, new BlobDownloadToOptions { TransferOptions = _transfer }, cancellationToken).ConfigureAwait(false);
            return buffer.ToArray();
        }
        catch (RequestFailedException e) when (e.Status == 404)
        {
            throw new BlobNotFoundException(name);
        }
    }

    public async Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        var blob = Blob(name);
        if (length == 0)
        {
            // HTTP has no empty byte range; an existence and size check gives the folder store's answer.
            var info = await GetInfoAsync(name, cancellationToken).ConfigureAwait(false) ?? throw new BlobNotFoundException(name);
            if (offset > info.Length) throw PastTheEnd(name, offset, length, info.Length);
            return [];
        }
        try
        {
            var response = await blob.DownloadStreamingAsync(new BlobDownloadOptions { Range = new HttpRange(offset, length) }, cancellationToken).ConfigureAwait(false);
            using var result = response.Value;
            // The service clips a range that runs past the end instead of failing: compare with the total size.
            long total = TotalLength(result.Details.ContentRange) ?? result.Details.ContentLength;
            if (offset + length > total) throw PastTheEnd(name, offset, length, total);
            var buffer = new byte[length];
            await result.Content.ReadExactlyAsync(buffer, cancellationToken).ConfigureAwait(false);
            return buffer;
        }
        catch (EndOfStreamException e)
        {
            // A connection that closed early: transient, so the resilient wrapper may retry it.
            throw new IOException($"ranged read of blob '{name}' in {Description} ended early", e);
        }
        catch (RequestFailedException e) when (e.Status == 404)
        {
            throw new BlobNotFoundException(name);
        }
        catch (RequestFailedException e) when (e.Status == 416)
        {
            var info = await GetInfoAsync(name, cancellationToken).ConfigureAwait(false);
            throw PastTheEnd(name, offset, length, info?.Length ?? 0);
        }
    }

    private static ArgumentOutOfRangeException PastTheEnd(string name, long offset, int length, long size) =>
        new(nameof(length), $"range {offset}+{length} lies past the end of blob '{name}' ({size} bytes)");

    /// <summary>"bytes 0-9/1000" → 1000.</summary>
    private static long? TotalLength(string? contentRange)
    {
        if (contentRange is null) return null;
        int slash = contentRange.LastIndexOf('/');
        return slash >= 0 && long.TryParse(contentRange.AsSpan(slash + 1), out long total) ? total : null;
    }

    public async Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken cancellationToken = default)
    {
        var blob = Blob(name);
        try
        {
            return await UploadAsync(blob, data, condition, cancellationToken).ConfigureAwait(false);
        }
        catch (RequestFailedException e) when (IsContainerMissing(e))
        {
            // Nothing is cached: a failed create surfaces here and the next write tries again.
            await _container.CreateIfNotExistsAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
            return await UploadAsync(blob, data, condition, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task<BlobInfo> UploadAsync(BlobClient blob, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken cancellationToken)
    {
        var name = blob.Name;
        var conditions = condition switch
        {
            WriteCondition.IfNotExistsCondition => new BlobRequestConditions { IfNoneMatch = ETag.All },
            WriteCondition.IfMatchCondition m => new BlobRequestConditions { IfMatch = new ETag(m.ETag) },
            _ => null,
        };
        try
        {
            // Above InitialTransferSize the SDK stages blocks in parallel and commits them with the
            // conditions, so a large conditional write is still all-or-nothing.
            var response = await blob.UploadAsync(BinaryData.FromBytes(data), new BlobUploadOptions
            {
                Conditions = conditions,
                TransferOptions = _transfer,
            }, cancellationToken).ConfigureAwait(false);
            return new BlobInfo(name, data.Length, Tag(response.Value.ETag), response.Value.LastModified);
        }
        catch (RequestFailedException e) when (!IsContainerMissing(e) && (e.Status is 409 or 412 || (e.Status == 404 && condition is WriteCondition.IfMatchCondition)))
        {
            var reason = condition switch
            {
                WriteCondition.IfNotExistsCondition => "it already exists",
                WriteCondition.IfMatchCondition when e.Status == 404 => "it does not exist",
                WriteCondition.IfMatchCondition => "it was changed by another writer (ETag mismatch)",
                _ => $"the service refused it ({e.Status} {e.ErrorCode})",
            };
            throw new BlobConditionFailedException(name, reason);
        }
    }

    /// <summary>Listings report ETags unquoted and properties quoted; one form keeps them comparable.</summary>
    private static string Tag(ETag etag)
    {
        var s = etag.ToString();
        return s.StartsWith('"') ? s : $"\"{s}\"";
    }

    /// <summary>One request: the content and its ETag come from the same response.</summary>
    public async Task<(byte[] Bytes, BlobInfo Info)?> ReadWithInfoAsync(string name, CancellationToken cancellationToken = default)
    {
        try
        {
            var result = (await Blob(name).DownloadContentAsync(cancellationToken).ConfigureAwait(false)).Value;
            var bytes = result.Content.ToArray();
            return (bytes, new BlobInfo(name, bytes.Length, Tag(result.Details.ETag), result.Details.LastModified));
        }
        catch (RequestFailedException e) when (e.Status == 404)
        {
            return null;
        }
    }

    public async Task<BlobInfo?> GetInfoAsync(string name, CancellationToken cancellationToken = default)
    {
        var blob = Blob(name);
        try
        {
            var props = await blob.GetPropertiesAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
            return new BlobInfo(name, props.Value.ContentLength, Tag(props.Value.ETag), props.Value.LastModified);
        }
        catch (RequestFailedException e) when (e.Status == 404)
        {
            return null;
        }
    }

    public async IAsyncEnumerable<BlobInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        // The service lists in byte order of the UTF-8 names, which is ordinal order for the names we use.
        var items = _container.GetBlobsAsync(BlobTraits.None, BlobStates.None, prefix, cancellationToken).GetAsyncEnumerator(cancellationToken);
        try
        {
            while (true)
            {
                try
                {
                    if (!await items.MoveNextAsync().ConfigureAwait(false)) break;
                }
                catch (RequestFailedException e) when (IsContainerMissing(e))
                {
                    // A container nobody has written to yet holds nothing.
                    break;
                }
                var item = items.Current;
                yield return new BlobInfo(item.Name, item.Properties.ContentLength ?? 0, item.Properties.ETag is { } tag ? Tag(tag) : "", item.Properties.LastModified);
            }
        }
        finally
        {
            await items.DisposeAsync().ConfigureAwait(false);
        }
    }

    public async Task<bool> DeleteAsync(string name, CancellationToken cancellationToken = default)
    {
        var blob = Blob(name);
        var response = await blob.DeleteIfExistsAsync(DeleteSnapshotsOption.IncludeSnapshots, cancellationToken: cancellationToken).ConfigureAwait(false);
        return response.Value;
    }
}
