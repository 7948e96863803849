using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using System.Text.Json;

namespace Squash.Functions.Tests;

/// <summary>One query is one trace: the coordinator and every tree node share a trace id.</summary>
[Collection(nameof(IndexCollection))]
public sealed class TracingTests(IndexFixture fx)
{
    [Fact]
    public async Task EveryTreeNodeSpanBelongsToTheQuerysTrace()
    {
        var spans = new ConcurrentBag<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == Telemetry.SourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = spans.Add,
        };
        ActivitySource.AddActivityListener(listener);
        // No hedges or timeouts: on a loaded machine a hedged child runs a second node span, and the count below
        // compares spans with the invocations the answer reports.
        using var app = fx.App(2, 2, settings: new Dictionary<string, string> { ["Squash:ChildTimeout"] = "00:01:00", ["Squash:HedgingDelay"] = "00:00:30" });
        var body = new StringContent(JsonSerializer.Serialize(new { vector = fx.Queries[9], k = 10, options = new { exact = true } }), Encoding.UTF8, "application/json");
        var response = await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", body);
        response.EnsureSuccessStatusCode();
        using var answer = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        int invocations = answer.RootElement.GetProperty("stats").GetProperty("invocations").GetInt32();

        var query = Assert.Single(spans, s => s.OperationName == "squash.query");
        var nodes = spans.Where(s => s.OperationName == "squash.scan-node").ToArray();
        // The coordinator runs one node itself; every other invocation is a child node.
        Assert.Equal(invocations, nodes.Length);
        Assert.All(nodes, n => Assert.Equal(query.TraceId, n.TraceId));
        Assert.True(invocations > 2);
    }
}
