using System.Collections.Concurrent;
using System.Net;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Yarp.ReverseProxy.Forwarder;

namespace Squash.Cli.Bench;

/// <summary>
/// Counts the storage traffic of everything that talks to an Azurite account through it: a forwarding proxy (YARP) on two
/// loopback ports, one in front of the blob service and one in front of the queue service. Every request is classified as
/// Azure bills it (blob: write, read, list, other, delete; queue: one class) and its body bytes both ways are added up.
/// Measured at the wire, so it sees what the function instances, the host's queue listeners and its scaler send alike.
/// </summary>
public sealed partial class StorageMeter : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentDictionary<string, Counter> _counters = new();

    private StorageMeter(WebApplication app, Uri blob, Uri queue)
    {
        _app = app;
        BlobEndpoint = blob;
        QueueEndpoint = queue;
    }

    public Uri BlobEndpoint { get; }
    public Uri QueueEndpoint { get; }

    /// <summary>The Azurite connection string with its blob and queue endpoints pointing at the meter.</summary>
    public string ConnectionString(string azurite)
    {
        var parts = azurite.Split(';', StringSplitOptions.RemoveEmptyEntries).Where(p => !p.StartsWith("BlobEndpoint=", StringComparison.OrdinalIgnoreCase)
            && !p.StartsWith("QueueEndpoint=", StringComparison.OrdinalIgnoreCase) && !p.StartsWith("TableEndpoint=", StringComparison.OrdinalIgnoreCase));
        var account = AccountName().Match(azurite) is { Success: true } m ? m.Groups[1].Value : "devstoreaccount1";
        return string.Join(';', parts.Append($"BlobEndpoint={BlobEndpoint}{account}").Append($"QueueEndpoint={QueueEndpoint}{account}"));
    }

    [GeneratedRegex("AccountName=([^;]+)", RegexOptions.IgnoreCase)]
    private static partial Regex AccountName();

    [GeneratedRegex("(BlobEndpoint|QueueEndpoint)=(https?://[^;/]+)", RegexOptions.IgnoreCase)]
    private static partial Regex Endpoint();

    /// <summary>Starts the meter in front of the blob and queue endpoints named in an Azurite connection string.</summary>
    public static async Task<StorageMeter> StartAsync(string azurite, CancellationToken ct)
    {
        var endpoints = Endpoint().Matches(azurite).ToDictionary(m => m.Groups[1].Value.ToLowerInvariant(), m => m.Groups[2].Value + "/");
        if (!endpoints.TryGetValue("blobendpoint", out var blob) || !endpoints.TryGetValue("queueendpoint", out var queue))
            throw new ArgumentException("the connection string must name BlobEndpoint and QueueEndpoint (an Azurite connection string)");
        int blobPort = FreePort(), queuePort = FreePort();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Logging.AddFilter("Microsoft.Extensions.Hosting", LogLevel.None);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(IPAddress.Loopback, blobPort);
            k.Listen(IPAddress.Loopback, queuePort);
            // Runs and segments can be tens of MB in one request.
            k.Limits.MaxRequestBodySize = null;
        });
        builder.Services.AddHttpForwarder();
        var app = builder.Build();
        var meter = new StorageMeter(app, new Uri($"http://127.0.0.1:{blobPort}/"), new Uri($"http://127.0.0.1:{queuePort}/"));
        // Idle connections are dropped after 2 s: Azurite (Node.js) closes its side after 5 s idle, and a request sent on a
        // connection it is closing fails with "connection reset" (the client's retry then sends it again, counted twice).
        var client = new HttpMessageInvoker(new SocketsHttpHandler
        {
            UseProxy = false, AllowAutoRedirect = false, AutomaticDecompression = DecompressionMethods.None, UseCookies = false,
            PooledConnectionIdleTimeout = TimeSpan.FromSeconds(2),
        });
        var forwarder = app.Services.GetRequiredService<IHttpForwarder>();
        app.Map("/{**rest}", async (HttpContext http) =>
        {
            bool isBlob = http.Connection.LocalPort == blobPort;
            var inbound = new CountingStream(http.Request.Body);
            var outbound = new CountingStream(http.Response.Body);
            http.Request.Body = inbound;
            http.Response.Body = outbound;
            await forwarder.SendAsync(http, isBlob ? blob : queue, client, ForwarderRequestConfig.Empty, HttpTransformer.Default);
            var counter = meter._counters.GetOrAdd(Classify(isBlob, http.Request.Method, http.Request.Query), _ => new Counter());
            counter.Add(inbound.Bytes, outbound.Bytes);
        });
        await app.StartAsync(ct);
        return meter;
    }

    /// <summary>The billing class of a request (Azure Storage pricing: "Map each REST operation to a price").</summary>
    public static string Classify(bool blob, string method, IQueryCollection query)
    {
        if (!blob) return "queue";
        if (HttpMethods.IsDelete(method)) return "blob delete";
        if (HttpMethods.IsPut(method)) return "blob write";
        if (HttpMethods.IsGet(method)) return string.Equals(query["comp"], "list", StringComparison.OrdinalIgnoreCase) ? "blob list" : "blob read";
        return "blob other"; // HEAD (properties) and the rest
    }

    /// <summary>Requests and body bytes (sent to the service, received from it) per class since the last reset.</summary>
    public IReadOnlyDictionary<string, (long Requests, long BytesSent, long BytesReceived)> Snapshot() =>
        _counters.ToDictionary(kv => kv.Key, kv => kv.Value.Read());

    public void Reset() => _counters.Clear();

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    private static int FreePort()
    {
        using var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    private sealed class Counter
    {
        private long _requests, _sent, _received;
        public void Add(long sent, long received)
        {
            Interlocked.Increment(ref _requests);
            Interlocked.Add(ref _sent, sent);
            Interlocked.Add(ref _received, received);
        }
        public (long, long, long) Read() => (Interlocked.Read(ref _requests), Interlocked.Read(ref _sent), Interlocked.Read(ref _received));
    }

    /// <summary>Passes a body through and counts its bytes.</summary>
    private sealed class CountingStream(Stream inner) : Stream
    {
        private long _bytes;
        public long Bytes => Interlocked.Read(ref _bytes);
        public override bool CanRead => inner.CanRead;
        public override bool CanSeek => false;
        public override bool CanWrite => inner.CanWrite;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override Task FlushAsync(CancellationToken ct) => inner.FlushAsync(ct);
        public override int Read(byte[] buffer, int offset, int count) { int n = inner.Read(buffer, offset, count); Interlocked.Add(ref _bytes, n); return n; }
        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
        {
            int n = await inner.ReadAsync(buffer, ct);
            Interlocked.Add(ref _bytes, n);
            return n;
        }
        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) => ReadAsync(buffer.AsMemory(offset, count), ct).AsTask();
        public override void Write(byte[] buffer, int offset, int count) { inner.Write(buffer, offset, count); Interlocked.Add(ref _bytes, count); }
        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken ct = default)
        {
            await inner.WriteAsync(buffer, ct);
            Interlocked.Add(ref _bytes, buffer.Length);
        }
        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken ct) => WriteAsync(buffer.AsMemory(offset, count), ct).AsTask();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
