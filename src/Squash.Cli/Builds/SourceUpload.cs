using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Azure;
using Azure.Core;
using Azure.Identity;
using Azure.Storage;
using Azure.Storage.Blobs;
using Azure.Storage.Blobs.Models;
using Squash.Storage;

namespace Squash.Cli.Builds;

/// <summary>
/// Puts a local vector or attributes file into the service's blob store for a build through the queue. The blob is
/// named by the file's content, <c>{index}/uploads/{SHA-256, 32 hex digits}/{file name}</c>: uploading the same file
/// again (a retried or repeated build) finds it there and sends nothing, two different files can never overwrite each
/// other (a build fails when its source blob changes under it), and the file name keeps the extension the service
/// reads the format from. The upload is the Azure SDK's block upload (blocks staged in parallel, then one commit),
/// committed create-only, so a blob under that name is always a whole file.
/// </summary>
public static partial class SourceUpload
{
    public const string Folder = "uploads";

    /// <summary>Blocks of 8 MiB, 4 in flight: bounded memory for any file size, and a single request for small files.</summary>
    public static readonly StorageTransferOptions Transfer = new()
    {
        InitialTransferSize = 8 << 20,
        MaximumTransferSize = 8 << 20,
        MaximumConcurrency = 4,
    };

    public sealed record Result(string BlobName, long Bytes, bool Uploaded);

    /// <summary>The blob a file with this content goes to.</summary>
    public static string BlobName(string index, string sha256Hex, string path)
    {
        // Blob names take almost anything, but the service's checks and people reading a listing are better served by plain names.
        var name = UnsafeNameCharacters().Replace(Path.GetFileName(path), "_");
        return $"{index}/{Folder}/{sha256Hex[..32]}/{name}";
    }

    /// <summary>The file's SHA-256 in lower-case hex, read in 1 MiB pieces.</summary>
    public static async Task<string> HashAsync(string path, IProgress<long>? progress, CancellationToken ct)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        await using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.Asynchronous | FileOptions.SequentialScan);
        var buffer = new byte[1 << 20];
        long done = 0;
        int read;
        while ((read = await file.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
        {
            hash.AppendData(buffer, 0, read);
            done += read;
            progress?.Report(done);
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>
    /// A container client for an <c>azure:</c> store spec (already checked by <see cref="BlobStores.Open"/>), with the SDK's
    /// own retries on: they retry each staged block, so one dropped connection does not restart a large upload. (The
    /// stores turn them off because a retried conditional write cannot tell its own earlier success from a conflict;
    /// here the name is the content, so a blob already there is the same file, and that is checked by length.)
    /// </summary>
    public static BlobContainerClient OpenContainer(string spec, string container)
    {
        var target = spec["azure:".Length..];
        var options = AzureBlobStore.NewOptions();
        options.Retry.MaxRetries = 5;
        options.Retry.Mode = RetryMode.Exponential;
        options.Retry.Delay = TimeSpan.FromMilliseconds(500);
        options.Retry.MaxDelay = TimeSpan.FromSeconds(10);
        return target.StartsWith("https://", StringComparison.OrdinalIgnoreCase) || target.StartsWith("http://", StringComparison.OrdinalIgnoreCase)
            ? new BlobContainerClient(new Uri(target.TrimEnd('/') + "/" + Uri.EscapeDataString(container)), new DefaultAzureCredential(), options)
            : new BlobContainerClient(target, container, options);
    }

    /// <summary>
    /// Uploads <paramref name="path"/> as <paramref name="blobName"/> unless a blob of that name and length is there
    /// already; <paramref name="starting"/> is called when bytes are about to be sent, and <paramref name="progress"/> gets
    /// the bytes sent so far.
    /// </summary>
    public static async Task<Result> UploadAsync(BlobContainerClient container, string path, string blobName, IProgress<long>? progress, CancellationToken ct, Action? starting = null)
    {
        long length = new FileInfo(path).Length;
        var blob = container.GetBlobClient(blobName);
        if (await ExistingLengthAsync(blob, ct).ConfigureAwait(false) is { } existing)
            return Same(blobName, existing, length, uploaded: false);
        starting?.Invoke();
        try
        {
            await UploadFileAsync(blob, path, progress, ct).ConfigureAwait(false);
        }
        catch (RequestFailedException e) when (e.ErrorCode == BlobErrorCode.ContainerNotFound)
        {
            // A store nobody has written to yet: the first write creates the container, as the stores do.
            await container.CreateIfNotExistsAsync(cancellationToken: ct).ConfigureAwait(false);
            await UploadFileAsync(blob, path, progress, ct).ConfigureAwait(false);
        }
        catch (RequestFailedException e) when (e.Status is 409 or 412)
        {
            // Another upload of the same file (or this one's commit, retried after its answer was lost) got there first.
            if (await ExistingLengthAsync(blob, ct).ConfigureAwait(false) is { } raced) return Same(blobName, raced, length, uploaded: false);
            throw;
        }
        return new Result(blobName, length, Uploaded: true);
    }

    private static Task UploadFileAsync(BlobClient blob, string path, IProgress<long>? progress, CancellationToken ct) =>
        blob.UploadAsync(path, new BlobUploadOptions
        {
            Conditions = new BlobRequestConditions { IfNoneMatch = ETag.All },
            TransferOptions = Transfer,
            ProgressHandler = progress,
        }, ct);

    private static async Task<long?> ExistingLengthAsync(BlobClient blob, CancellationToken ct)
    {
        try
        {
            return (await blob.GetPropertiesAsync(cancellationToken: ct).ConfigureAwait(false)).Value.ContentLength;
        }
        catch (RequestFailedException e) when (e.Status == 404)
        {
            return null;
        }
    }

    private static Result Same(string blobName, long existing, long length, bool uploaded) =>
        existing == length
            ? new Result(blobName, length, uploaded)
            : throw new InvalidDataException($"blob '{blobName}' is already in the store with {existing:N0} bytes, but the file has {length:N0}: the blob is not this file (delete it and upload again)");

    [GeneratedRegex("[^A-Za-z0-9._-]")]
    private static partial Regex UnsafeNameCharacters();
}
