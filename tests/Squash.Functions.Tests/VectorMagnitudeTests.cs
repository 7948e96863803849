using System.Net;
using System.Text.Json;
using Squash.Core;
using Squash.Index.Build;
using Squash.Storage;
using Squash.Storage.Writes;

namespace Squash.Functions.Tests;

/// <summary>
/// Vectors of finite float32 values whose float32 distances overflow (a value of 3e38, or 1e20 in 16 dimensions) were
/// taken: a query came back 200 with no results, every partition "missing" and <c>certified: true</c> (the nodes' answers
/// held +∞, which JSON cannot carry); a write was acknowledged and then broke every strong read that reached it, and once
/// ingested, the partition it joined. A subnormal vector on a cosine index normalised to ∞/NaN (empty exact answers, a
/// 500 for every strong read after it was written); an all-zero cosine query was a 500. Now all are 400s naming the vector,
/// or answered as their direction says.
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class VectorMagnitudeTests(IndexFixture fx)
{
    private static string Huge(int dims) => "[" + string.Join(',', Enumerable.Repeat("3e38", dims)) + "]";

    [Fact]
    public async Task AQueryWhoseDistancesWouldOverflowIs400NamingTheVector()
    {
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var errors = await Problems.BadRequest(await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query",
            Bodies.Json("{\"vector\":" + Huge(IndexFixture.Dims) + ",\"k\":3}")));
        Assert.Equal(["vector"], errors.Keys);
        Assert.Contains("above the largest norm a vector may have", errors["vector"][0]);

        errors = await Problems.BadRequest(await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query",
            Bodies.Json("{\"vectors\":[" + Bodies.Vector(fx.Queries[0]) + "," + Huge(IndexFixture.Dims) + "],\"k\":3}")));
        Assert.Equal(["vectors[1]"], errors.Keys);
    }

    [Fact]
    public async Task AWriteWhoseDistancesWouldOverflowIs400AndNothingIsWritten()
    {
        const int dims = 4;
        var name = "magnitude-" + Guid.NewGuid().ToString("N")[..12];
        var rng = new Random(3);
        var data = Enumerable.Range(0, 60 * dims).Select(_ => (float)rng.NextDouble()).ToArray();
        await IndexPublisher.BuildAndPublishAsync(new IndexStore(new FolderBlobStore(fx.Root), name), data, 60, dims,
            new IndexBuildOptions { Partitions = 3, Seed = 1 });
        using var app = fx.App(2, 1);
        var errors = await Problems.BadRequest(await app.CreateClient().PostAsync($"/api/indexes/{name}/vectors",
            Bodies.Json("{\"upserts\":[{\"id\":\"7\",\"vector\":" + Huge(dims) + "}]}")));
        Assert.Equal(["upserts[0].vector"], errors.Keys);
        Assert.Equal(0, await new WriteLog(new FolderBlobStore(fx.Root), name).LatestSequenceAsync(0, CancellationToken.None));
    }

    [Fact]
    public async Task AnAllZeroQueryOnACosineIndexIs400NotA500()
    {
        const int dims = 4;
        var name = "cosine-" + Guid.NewGuid().ToString("N")[..12];
        var rng = new Random(4);
        var data = Enumerable.Range(0, 60 * dims).Select(_ => (float)rng.NextDouble() + 0.1f).ToArray();
        await IndexPublisher.BuildAndPublishAsync(new IndexStore(new FolderBlobStore(fx.Root), name), data, 60, dims,
            new IndexBuildOptions { Partitions = 3, Seed = 1, Metric = Metric.Cosine });
        using var app = fx.App(2, 1);
        var client = app.CreateClient();
        var errors = await Problems.BadRequest(await client.PostAsync($"/api/indexes/{name}/query", Bodies.Json("{\"vector\":[0,0,0,0],\"k\":3}")));
        Assert.Equal(["vector"], errors.Keys);
        // A subnormal query has a direction: the exact answer is full.
        var response = await client.PostAsync($"/api/indexes/{name}/query",
            Bodies.Json("{\"vector\":[1e-45,1e-45,1e-45,1e-45],\"k\":3,\"options\":{\"exact\":true}}"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        using var doc = JsonDocument.Parse(text);
        Assert.Equal(3, doc.RootElement.GetProperty("results").GetArrayLength());
    }

    [Fact]
    public void ASubnormalVectorNormalisesToItsDirectionUnderCosine()
    {
        var space = new MetricSpace(Metric.Cosine, 3);
        var output = new float[3];
        space.MapQuery([1e-45f, 1e-45f, 0], output);
        Assert.All(output, x => Assert.True(float.IsFinite(x)));
        Assert.Equal(MathF.Sqrt(0.5f), output[0], 1e-6f);
        Assert.Equal(MathF.Sqrt(0.5f), output[1], 1e-6f);
        Assert.Equal(0f, output[2]);
        // Ordinary vectors keep the float32 path, bit for bit (built indexes stay byte-identical).
        space.MapStored([3f, 4f, 0], output);
        float inv = (float)(1 / Math.Sqrt(25.0));
        Assert.Equal([3f * inv, 4f * inv, 0f], output);
    }
}
