using System.Net.Sockets;
using Azure.Storage;
using Azure.Storage.Blobs;
using Squash.Storage;

namespace Squash.Testing;

/// <summary>
/// The Azurite that scripts/test.sh starts (SQUASH_TEST_AZURITE), for every test project: tests fail (never skip)
/// without it. Its endpoint is probed once per test process, so a missing or foreign emulator fails each Azure test
/// at once with one message instead of after every store's retries. Compiled into each test project (linked source).
/// </summary>
internal static class AzuriteTestStore
{
    public const string Variable = "SQUASH_TEST_AZURITE";

    private static readonly TimeSpan ConnectDeadline = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan AnswerDeadline = TimeSpan.FromSeconds(15);

    // Lazy caches a failed probe too: the first test reports it, the rest repeat it without probing again.
    private static readonly Lazy<string> Checked = new(() => Probe(Environment.GetEnvironmentVariable(Variable)));

    /// <summary>The connection string, once the emulator behind it has answered as a Blob service.</summary>
    public static string ConnectionString => Checked.Value;

    /// <summary>
    /// A store over a fresh container. The tests' bound on retries is set here, in one place: a dead emulator must
    /// fail a test in seconds, not after minutes of back-off (at most one SDK retry; never more than the store's own).
    /// </summary>
    public static AzureBlobStore NewStore(string prefix, StorageTransferOptions? transfer = null)
    {
        var options = AzureBlobStore.NewOptions();
        options.Retry.MaxRetries = Math.Min(options.Retry.MaxRetries, 1);
        options.Retry.NetworkTimeout = TimeSpan.FromSeconds(30);
        var container = $"{prefix}-{Guid.NewGuid():N}"[..Math.Min(63, prefix.Length + 33)];
        return new AzureBlobStore(new BlobContainerClient(ConnectionString, container, options), transfer);
    }

    /// <summary>Checks the variable, then that its blob endpoint accepts a connection and answers like Azure Storage.</summary>
    internal static string Probe(string? connectionString)
    {
        if (connectionString is not { Length: > 0 })
            throw new InvalidOperationException($"{Variable} is not set: run the tests through scripts/test.sh, which starts Azurite and sets it");
        var endpoint = BlobEndpoint(connectionString);
        try
        {
            Connect(endpoint);
        }
        catch (SocketException e)
        {
            throw new InvalidOperationException(
                $"Azurite is not reachable at {endpoint.Host}:{endpoint.Port} ({Variable}): {(e.SocketErrorCode == SocketError.TimedOut ? $"no connection within {ConnectDeadline.TotalSeconds:0} s" : e.SocketErrorCode.ToString())}. " +
                "Run the tests through scripts/test.sh, which starts it.", e);
        }
        // Any Azure Storage service stamps its answers with a request id, even a refusal of this unsigned request.
        using var http = new HttpClient { Timeout = AnswerDeadline };
        HttpResponseMessage answer;
        try
        {
            answer = http.GetAsync(new Uri(endpoint, "?comp=list")).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
        {
            throw new InvalidOperationException($"the server at {endpoint.Authority} ({Variable}) does not answer HTTP like Azurite: {e.Message}", e);
        }
        using (answer)
        {
            if (!answer.Headers.Contains("x-ms-request-id"))
                throw new InvalidOperationException(
                    $"the server at {endpoint.Authority} ({Variable}) is not Azure Storage (HTTP {(int)answer.StatusCode}, server '{answer.Headers.Server}'): another program holds the port");
        }
        return connectionString;
    }

    /// <summary>
    /// A connect that waits on the socket itself, not on the thread pool: the probe runs inside a test while
    /// other tests block pool threads, and an async connect's completion (and its timer) queued behind them
    /// once missed a 2 s deadline with Azurite listening.
    /// </summary>
    private static void Connect(Uri endpoint)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { Blocking = false };
        var address = System.Net.Dns.GetHostAddresses(endpoint.Host).First(a => a.AddressFamily == AddressFamily.InterNetwork);
        try
        {
            socket.Connect(address, endpoint.Port);
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress)
        {
            // Poll in microseconds: writable means connected, an error event means refused.
            if (!socket.Poll((int)ConnectDeadline.TotalMicroseconds, SelectMode.SelectWrite))
            {
                var error = (SocketError)(int)socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!;
                throw new SocketException((int)(error == SocketError.Success ? SocketError.TimedOut : error));
            }
            var status = (SocketError)(int)socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!;
            if (status != SocketError.Success) throw new SocketException((int)status);
        }
    }

    private static Uri BlobEndpoint(string connectionString)
    {
        foreach (var part in connectionString.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            if (part.StartsWith("BlobEndpoint=", StringComparison.OrdinalIgnoreCase)
                && Uri.TryCreate(part["BlobEndpoint=".Length..].TrimEnd('/') + "/", UriKind.Absolute, out var uri))
                return uri;
        throw new InvalidOperationException($"{Variable} has no BlobEndpoint=http://host:port/account part");
    }
}
