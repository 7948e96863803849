using System.Net;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Squash.Functions.Tree;
using Squash.Index.Build;
using Squash.Search;
using Squash.Storage;

namespace Squash.Functions.Tests;

/// <summary>One small index in a temp folder store, shared by the handler tests.</summary>
public sealed class IndexFixture : IDisposable
{
    public const string IndexName = "test-index";
    /// <summary>The same vectors with string ids and attributes (colour, price, tags), for filters and include.</summary>
    public const string AttributedIndexName = "test-attrs";
    /// <summary>The same vectors built with the recall calibration, in 30 partitions.</summary>
    public const string CalibratedIndexName = "test-calibrated";
    public static readonly string[] Colours = ["red", "green", "blue", "black", "white"];
    public const int Count = 3000, Dims = 24;

    public IndexFixture()
    {
        Root = Path.Combine(Path.GetTempPath(), "squash-fn-" + Guid.NewGuid().ToString("N"));
        var rng = new Random(5);
        Data = new float[Count * Dims];
        var centres = Enumerable.Range(0, 10 * Dims).Select(_ => (float)(rng.NextDouble() * 10)).ToArray();
        for (int i = 0; i < Count; i++)
        {
            int c = rng.Next(10);
            for (int j = 0; j < Dims; j++) Data[i * Dims + j] = centres[c * Dims + j] + (float)rng.NextDouble();
        }
        var store = new IndexStore(new FolderBlobStore(Root), IndexName);
        IndexPublisher.BuildAndPublishAsync(store, Data, Count, Dims, new IndexBuildOptions { Partitions = 12, Seed = 2 }).GetAwaiter().GetResult();
        Engine = new SearchEngine(OpenedIndex.OpenAsync(store).GetAwaiter().GetResult());
        var lines = AttributeLines = string.Join('\n', Enumerable.Range(0, Count).Select(i =>
            $"{{\"id\":\"doc-{i}\",\"attributes\":{{\"colour\":\"{Colours[i % 5]}\",\"price\":{i % 1000}.5,\"tags\":[\"t{i % 7}\",\"t{i % 3 + 7}\"]}}}}"));
        var attributed = new IndexStore(new FolderBlobStore(Root), AttributedIndexName);
        IndexPublisher.BuildAndPublishAsync(attributed, Data, Count, Dims, new IndexBuildOptions
        {
            Partitions = 12, Seed = 2, Attributes = Squash.Index.Attributes.AttributeReader.ReadJsonLines(new StringReader(lines), "test.jsonl"),
        }).GetAwaiter().GetResult();
        AttributedEngine = new SearchEngine(OpenedIndex.OpenAsync(attributed).GetAwaiter().GetResult());
        // Built as `squash build` builds: with the recall calibration, so that queries plan by a recall target.
        var calibrated = new IndexStore(new FolderBlobStore(Root), CalibratedIndexName);
        CalibratedBuild.BuildAndPublishAsync(calibrated, Data, Count, Dims, new IndexBuildOptions { Partitions = 30, Seed = 2 }).GetAwaiter().GetResult();
        CalibratedEngine = new SearchEngine(OpenedIndex.OpenAsync(calibrated).GetAwaiter().GetResult());
        Queries = Enumerable.Range(0, 200).Select(i => Enumerable.Range(0, Dims).Select(j => Data[(i * 7) % Count * Dims + j] + (float)(rng.NextDouble() - 0.5)).ToArray()).ToArray();
    }

    public string Root { get; }
    public float[] Data { get; }
    public float[][] Queries { get; }
    /// <summary>The in-process engine over the same index: the reference answers.</summary>
    public SearchEngine Engine { get; }
    /// <summary>Partitions the test indexes have: the 12 asked for less any that no vector chose as its nearest.</summary>
    public int Partitions => Engine.Index.PartitionCount;
    /// <summary>The attributes of <see cref="AttributedIndexName"/> as JSON lines (id doc-i, colour, price, tags).</summary>
    public string AttributeLines { get; }
    /// <summary>The reference engine for <see cref="AttributedIndexName"/>.</summary>
    public SearchEngine AttributedEngine { get; }
    /// <summary>The reference engine for <see cref="CalibratedIndexName"/>.</summary>
    public SearchEngine CalibratedEngine { get; }

    public void Dispose()
    {
        try { Directory.Delete(Root, true); } catch (IOException) { }
    }

    /// <summary>A function app whose child calls go back into the same in-memory server, optionally through a fault injector.</summary>
    public WebApplicationFactory<Program> App(int branching, int depth, Func<HttpRequestMessage, int, HttpResponseMessage?>? fault = null,
        Func<int, TimeSpan>? delay = null, IReadOnlyDictionary<string, string>? settings = null, Func<IBlobStore, IBlobStore>? wrapStore = null,
        Action<IServiceCollection>? services = null)
    {
        WebApplicationFactory<Program>? app = null;
        app = new WebApplicationFactory<Program>().WithWebHostBuilder(b =>
        {
            b.UseSetting("Squash:Store", "dir:" + Root);
            b.UseSetting("Squash:Branching", branching.ToString());
            b.UseSetting("Squash:Depth", depth.ToString());
            b.UseSetting("Squash:ScanUrl", "http://localhost");
            b.UseSetting("Squash:ChildTimeout", "00:00:02");
            b.UseSetting("Squash:HedgingDelay", "00:00:00.200");
            foreach (var (key, value) in settings ?? new Dictionary<string, string>()) b.UseSetting(key, value);
            b.ConfigureTestServices(s =>
            {
                s.AddHttpClient(ScanInvoker.ClientName)
                    .ConfigurePrimaryHttpMessageHandler(() => new FaultInjector(fault, delay) { InnerHandler = app!.Server.CreateHandler() });
                if (wrapStore is not null) s.AddSingleton(wrapStore(new FolderBlobStore(Root)));
                services?.Invoke(s);
            });
        });
        return app;
    }

    private sealed class FaultInjector(Func<HttpRequestMessage, int, HttpResponseMessage?>? fault, Func<int, TimeSpan>? delay) : DelegatingHandler
    {
        private int _calls;

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
        {
            int n = Interlocked.Increment(ref _calls);
            if (delay?.Invoke(n) is { } wait && wait > TimeSpan.Zero) await Task.Delay(wait, ct);
            var injected = fault?.Invoke(request, n);
            return injected ?? await base.SendAsync(request, ct);
        }
    }

    public static HttpResponseMessage Unavailable() => new(HttpStatusCode.ServiceUnavailable);
}

[CollectionDefinition(nameof(IndexCollection))]
public sealed class IndexCollection : ICollectionFixture<IndexFixture>;
