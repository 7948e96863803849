using System.Net;
using Azure.Core.Pipeline;
using Azure.Storage.Blobs;
using Azure.Storage.Sas;

namespace Squash.Storage.Tests;

/// <summary>
/// What reaches Azure (Azurite) per operation: one retry layer, no container creation on the read
/// path, and no failure remembered past the call that met it.
/// </summary>
public sealed class AzureRequestTests : IAsyncLifetime
{
    private readonly string _container = "requests-" + Guid.NewGuid().ToString("N")[..16];
    private readonly FaultyHandler _faults = new() { InnerHandler = new SocketsHttpHandler() };

    /// <summary>Counts every HTTP request the SDK sends and answers 503 while told to.</summary>
    private sealed class FaultyHandler : DelegatingHandler
    {
        private int _requests, _failNext;
        public volatile bool FailAll;
        public int Requests => Volatile.Read(ref _requests);
        public int FailNext { set => Volatile.Write(ref _failNext, value); }

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
        {
            Interlocked.Increment(ref _requests);
            if (FailAll || Interlocked.Decrement(ref _failNext) >= 0)
                return new HttpResponseMessage(HttpStatusCode.ServiceUnavailable) { RequestMessage = request, Content = new StringContent("") };
            return await base.SendAsync(request, ct);
        }
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await new BlobContainerClient(Azurite.ConnectionString, _container).DeleteIfExistsAsync();
        _faults.Dispose();
    }

    /// <summary>An AzureBlobStore configured as production configures it, whose requests go through the fault handler.</summary>
    private AzureBlobStore FaultyStore()
    {
        var options = AzureBlobStore.NewOptions();
        options.Transport = new HttpClientTransport(new HttpClient(_faults, disposeHandler: false));
        return new AzureBlobStore(new BlobContainerClient(Azurite.ConnectionString, _container, options));
    }

    private static readonly ResilienceOptions FourQuickTries = new()
    {
        MaxAttempts = 4,
        AttemptTimeout = TimeSpan.FromSeconds(20),
        BaseDelay = TimeSpan.FromMilliseconds(1),
        MaxDelay = TimeSpan.FromMilliseconds(5),
    };

    [Fact]
    public async Task EachRetryIsOneRequest()
    {
        var store = new ResilientBlobStore(FaultyStore(), FourQuickTries);
        await store.WriteAsync("a.seg", new byte[] { 1, 2, 3 }, WriteCondition.Overwrite);

        _faults.FailAll = true;
        int before = _faults.Requests;
        var e = await Assert.ThrowsAsync<IOException>(() => store.ReadAllAsync("a.seg"));
        Assert.Equal(4, _faults.Requests - before);
        Assert.Contains("after 4 attempt(s)", e.Message);
        _faults.FailAll = false;

        // Two 503s, then the answer: three requests in all.
        _faults.FailNext = 2;
        before = _faults.Requests;
        Assert.Equal(new byte[] { 1, 2, 3 }, await store.ReadAllAsync("a.seg"));
        Assert.Equal(3, _faults.Requests - before);
    }

    [Fact]
    public async Task AFailureIsNotRememberedByTheNextCall()
    {
        var store = FaultyStore();
        _faults.FailAll = true;
        await Assert.ThrowsAnyAsync<Exception>(() => store.WriteAsync("b.seg", new byte[] { 4 }, WriteCondition.IfNotExists));
        await Assert.ThrowsAnyAsync<Exception>(() => store.GetInfoAsync("b.seg"));
        _faults.FailAll = false;
        await store.WriteAsync("b.seg", new byte[] { 4 }, WriteCondition.IfNotExists);
        Assert.Equal(new byte[] { 4 }, await store.ReadAllAsync("b.seg"));
    }

    [Fact]
    public async Task ReadsNeverCreateTheContainer()
    {
        var store = new AzureBlobStore(Azurite.ConnectionString, _container);
        var index = new IndexStore(store, "products");
        Assert.Null(await index.GetCurrentAsync());
        Assert.Empty(await index.ListVersionsAsync());
        Assert.Null(await store.GetInfoAsync("x"));
        await Assert.ThrowsAsync<BlobNotFoundException>(() => store.ReadAllAsync("x"));
        await Assert.ThrowsAsync<BlobNotFoundException>(() => store.ReadRangeAsync("x", 0, 1));
        Assert.False(await store.DeleteAsync("x"));
        Assert.False((await store.Container.ExistsAsync()).Value);
        // The first write creates it.
        await store.WriteAsync("x", new byte[] { 1 }, WriteCondition.IfNotExists);
        Assert.True((await store.Container.ExistsAsync()).Value);
    }

    [Fact]
    public async Task AReadOnlyIdentityOpensAndReadsAnIndex()
    {
        var owner = new AzureBlobStore(Azurite.ConnectionString, _container);
        var built = await IndexPublisher.BuildAndPublishAsync(new IndexStore(owner, "products"),
            Enumerable.Range(0, 200 * 4).Select(i => (float)Math.Sin(i)).ToArray(), 200, 4, new Squash.Index.Build.IndexBuildOptions { Partitions = 2 });

        // Read and list only: no right to create, write or delete anything.
        var sas = owner.Container.GenerateSasUri(BlobContainerSasPermissions.Read | BlobContainerSasPermissions.List, DateTimeOffset.UtcNow.AddHours(1));
        var reader = new AzureBlobStore(new BlobContainerClient(sas, AzureBlobStore.NewOptions()));
        var index = new IndexStore(new ResilientBlobStore(reader, FourQuickTries), "products");
        var m = await index.OpenCurrentAsync();
        Assert.Equal(built.Version, m.Version);
        Assert.Equal(m.Partitions[0].Count, (await index.ReadCodesAsync(m, m.Partitions[0])).Count);
        Assert.Equal(new[] { built.Version }, await index.ListVersionsAsync());
        // The identity really is read-only.
        var denied = await Assert.ThrowsAsync<Azure.RequestFailedException>(() => reader.WriteAsync("products/x", new byte[] { 1 }, WriteCondition.Overwrite));
        Assert.Equal(403, denied.Status);
    }
}
