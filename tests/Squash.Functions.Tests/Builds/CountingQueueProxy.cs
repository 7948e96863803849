using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Extensions;
using Microsoft.Extensions.Logging;

namespace Squash.Functions.Tests.Builds;

/// <summary>
/// A forwarding proxy in front of Azurite's queue service that counts the requests it is sent, at the wire: what the app's
/// own count must equal. It can answer the next requests with 503 Server Busy, which the SDK retries, so that a retry is
/// among what is counted. Listens on a port the OS picks.
/// </summary>
internal sealed partial class CountingQueueProxy : IAsyncDisposable
{
    private static readonly HashSet<string> HopByHop = new(StringComparer.OrdinalIgnoreCase)
        { "Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Proxy-Connection", "TE", "Trailer", "Host" };

    private readonly WebApplication _app;
    private readonly Uri _azurite;
    private readonly HttpClient _forward = new(new SocketsHttpHandler { UseProxy = false, AllowAutoRedirect = false }) { Timeout = TimeSpan.FromSeconds(30) };
    private readonly object _gate = new();
    private long _requests;
    private int _refuseNext;

    private CountingQueueProxy(WebApplication app, Uri azurite)
    {
        _app = app;
        _azurite = azurite;
    }

    /// <summary>Requests received, refused ones included (each is a request the sender's SDK made).</summary>
    public long Requests { get { lock (_gate) return _requests; } }

    /// <summary>The Azurite connection string with its queue endpoint pointing here.</summary>
    public string ConnectionString { get; private set; } = "";

    /// <summary>The next <paramref name="count"/> requests are answered 503 without reaching Azurite.</summary>
    public void RefuseNext(int count)
    {
        lock (_gate) _refuseNext = count;
    }

    [GeneratedRegex("QueueEndpoint=(https?://[^;/]+)", RegexOptions.IgnoreCase)]
    private static partial Regex QueueEndpoint();

    public static async Task<CountingQueueProxy> StartAsync(string azurite)
    {
        var target = QueueEndpoint().Match(azurite) is { Success: true } m ? new Uri(m.Groups[1].Value) : throw new ArgumentException("no QueueEndpoint in the connection string");
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        var app = builder.Build();
        var proxy = new CountingQueueProxy(app, target);
        app.Run(proxy.ForwardAsync);
        await app.StartAsync();
        var address = app.Urls.Single();
        proxy.ConnectionString = QueueEndpoint().Replace(azurite, "QueueEndpoint=" + address.TrimEnd('/'));
        return proxy;
    }

    private async Task ForwardAsync(HttpContext http)
    {
        bool refuse;
        lock (_gate)
        {
            _requests++;
            refuse = _refuseNext > 0;
            if (refuse) _refuseNext--;
        }
        if (refuse)
        {
            http.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
            return;
        }
        using var request = new HttpRequestMessage(new HttpMethod(http.Request.Method), new Uri(_azurite, http.Request.GetEncodedPathAndQuery()));
        if (http.Request.ContentLength > 0 || http.Request.Headers.TransferEncoding.Count > 0)
            request.Content = new StreamContent(http.Request.Body);
        foreach (var h in http.Request.Headers)
        {
            if (HopByHop.Contains(h.Key)) continue;
            // Content headers are signed (Shared Key): passed on as they came.
            if (h.Key.StartsWith("Content-", StringComparison.OrdinalIgnoreCase))
                request.Content?.Headers.TryAddWithoutValidation(h.Key, h.Value.ToArray());
            else
                request.Headers.TryAddWithoutValidation(h.Key, h.Value.ToArray());
        }
        using var response = await _forward.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, http.RequestAborted);
        http.Response.StatusCode = (int)response.StatusCode;
        foreach (var h in response.Headers.Concat(response.Content.Headers))
            if (!HopByHop.Contains(h.Key)) http.Response.Headers[h.Key] = h.Value.ToArray();
        await response.Content.CopyToAsync(http.Response.Body, http.RequestAborted);
    }

    public async ValueTask DisposeAsync()
    {
        using (var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(10))) await _app.StopAsync(deadline.Token);
        await _app.DisposeAsync();
        _forward.Dispose();
    }
}
