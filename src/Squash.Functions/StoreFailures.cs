using Azure;
using Squash.Index.Format;
using Squash.Storage;

namespace Squash.Functions;

/// <summary>What the blob store (or the data in it) can throw: worth reporting as an unavailable index or a missing partition. Anything else is a bug.</summary>
public static class StoreFailures
{
    /// <summary>The store could not be reached or answered with an error (after the store's own retries).</summary>
    public static bool IsUnreachable(Exception e) => e is IOException or RequestFailedException or HttpRequestException or TimeoutException
        or OperationCanceledException or UnauthorizedAccessException or Polly.Timeout.TimeoutRejectedException or Polly.CircuitBreaker.BrokenCircuitException;

    /// <summary>Unreachable, or a blob is missing or fails its checksum.</summary>
    public static bool IsReadFailure(Exception e) => IsUnreachable(e) || e is CorruptIndexException or BlobNotFoundException;
}
