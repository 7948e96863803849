using System.Text;
using System.Text.Json;
using Squash.Search;

namespace Squash.Functions.Tests;

/// <summary>
/// <c>stats.certified</c> through the invocation tree: the scan nodes report the bound of what they passed over, the
/// coordinator adds the partitions it never planned or lost, and the verdict equals the in-process engine's.
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class CertifiedTreeTests(IndexFixture fx)
{
    private static StringContent Body(object o) => new(JsonSerializer.Serialize(o), Encoding.UTF8, "application/json");

    [Theory]
    [InlineData(2, 2)]
    [InlineData(3, 1)]
    [InlineData(1, 0)]
    public async Task TheTreeCertifiesExactlyTheAnswersTheEngineCertifies(int branching, int depth)
    {
        using var app = fx.App(branching, depth);
        var client = app.CreateClient();
        int certified = 0, uncertified = 0;
        // The defaults certify few answers; every partition planned with R 100 certifies them (a loose bound at the default energy needs the wide re-rank).
        foreach (var (cf, r) in new[] { (1.3, 2), (SearchOptions.MaxCentroidFactor, 100) })
        {
            foreach (var q in fx.Queries.Take(30))
            {
                var response = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query",
                    Body(new { vector = q, k = 10, options = new { centroidFactor = cf, rerankFactor = r } }));
                response.EnsureSuccessStatusCode();
                using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
                var stats = doc.RootElement.GetProperty("stats");
                var expected = fx.Engine.Search(q, new SearchOptions { K = 10, CentroidFactor = cf, RerankFactor = r });
                Assert.Equal(expected.Ids, doc.RootElement.GetProperty("results").EnumerateArray().Select(e => e.GetProperty("id").GetInt64()));
                Assert.Equal(expected.Stats.Certified, stats.GetProperty("certified").GetBoolean());
                Assert.False(stats.TryGetProperty("skippedBound", out _), "the tree's internal bound leaked into the answer");
                if (expected.Stats.Certified) certified++; else uncertified++;
            }
        }
        Assert.True(certified > 0 && uncertified > 0, $"{certified} certified, {uncertified} not: the comparison saw only one verdict");
    }

    [Fact]
    public async Task ExactAnswersThroughTheTreeAreCertified()
    {
        using var app = fx.App(2, 2);
        var client = app.CreateClient();
        foreach (var q in fx.Queries.Take(5))
        {
            var response = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = q, k = 10, options = new { exact = true } }));
            response.EnsureSuccessStatusCode();
            using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            Assert.True(doc.RootElement.GetProperty("stats").GetProperty("certified").GetBoolean());
        }
    }

    [Fact]
    public async Task AnAnswerMissingPartitionsThatCouldHoldNeighboursIsNotCertified()
    {
        // Every child fails: nothing is scanned, even in exact mode, so nothing can be proven.
        using var app = fx.App(4, 1, (req, n) => IndexFixture.Unavailable());
        var response = await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.IndexName}/query",
            Body(new { vector = fx.Queries[5], k = 10, options = new { exact = true } }));
        response.EnsureSuccessStatusCode();
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.False(doc.RootElement.GetProperty("complete").GetBoolean());
        Assert.False(doc.RootElement.GetProperty("stats").GetProperty("certified").GetBoolean());
    }
}
