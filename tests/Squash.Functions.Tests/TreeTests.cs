using System.Text;
using System.Text.Json;
using Squash.Functions.Tree;
using Squash.Search;

namespace Squash.Functions.Tests;

[Collection(nameof(IndexCollection))]
public sealed class TreeTests(IndexFixture fx)
{
    private static StringContent Body(object o) => new(JsonSerializer.Serialize(o), Encoding.UTF8, "application/json");

    private static (long[] Ids, float[] Distances) Read(JsonElement answer) => (
        answer.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("id").GetInt64()).ToArray(),
        answer.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("distance").GetSingle()).ToArray());

    [Theory]
    [InlineData(2, 3)]
    [InlineData(4, 1)]
    [InlineData(3, 2)]
    [InlineData(1, 0)]
    public async Task AnswersThroughTheTreeEqualTheInProcessEngine(int branching, int depth)
    {
        using var app = fx.App(branching, depth);
        var client = app.CreateClient();
        foreach (var q in fx.Queries)
        {
            var response = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = q, k = 10 }));
            response.EnsureSuccessStatusCode();
            using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            var (ids, distances) = Read(doc.RootElement);
            var expected = fx.Engine.Search(q, new SearchOptions { K = 10 });
            Assert.Equal(expected.Ids, ids);
            Assert.Equal(expected.Distances, distances);
            Assert.True(doc.RootElement.GetProperty("complete").GetBoolean());
            if (depth > 0) Assert.True(doc.RootElement.GetProperty("stats").GetProperty("invocations").GetInt32() >= 2);
        }
    }

    [Fact]
    public async Task ACacheSmallerThanTheIndexEvictsButAnswersStayExact()
    {
        // About a third of the index fits: partitions are evicted and re-read, answers do not change.
        using var app = fx.App(2, 1, settings: new Dictionary<string, string> { ["Squash:CacheBytes"] = "150000" });
        var client = app.CreateClient();
        long misses = 0;
        foreach (var q in fx.Queries.Take(60))
        {
            var response = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = q, k = 10 }));
            response.EnsureSuccessStatusCode();
            using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            Assert.Equal(fx.Engine.Search(q, new SearchOptions { K = 10 }).Ids, Read(doc.RootElement).Ids);
            misses += doc.RootElement.GetProperty("stats").GetProperty("cacheMisses").GetInt32();
        }
        var catalog = (IndexCatalog)app.Services.GetService(typeof(IndexCatalog))!;
        Assert.True(catalog.CacheStats.CurrentBytes <= 150_000, $"cache holds {catalog.CacheStats.CurrentBytes} bytes");
        Assert.True(catalog.CacheStats.Evictions > 0);
        Assert.True(misses > 12, $"only {misses} misses: nothing was evicted and re-read");
    }

    [Fact]
    public async Task ABatchEqualsTheSameQueriesSentOneByOne()
    {
        using var app = fx.App(2, 2);
        var client = app.CreateClient();
        var batch = fx.Queries.Take(40).ToArray();
        var response = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vectors = batch, k = 7 }));
        response.EnsureSuccessStatusCode();
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var answers = doc.RootElement.GetProperty("answers").EnumerateArray().ToArray();
        Assert.Equal(batch.Length, answers.Length);
        for (int i = 0; i < batch.Length; i++)
        {
            var single = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = batch[i], k = 7 }));
            using var one = JsonDocument.Parse(await single.Content.ReadAsStringAsync());
            Assert.Equal(Read(one.RootElement).Ids, Read(answers[i]).Ids);
            Assert.Equal(Read(one.RootElement).Distances, Read(answers[i]).Distances);
        }
    }

    [Fact]
    public async Task ATransientChildFailureIsRetriedAndTheAnswerIsComplete()
    {
        // Every other call fails once with 503: the resilience pipeline retries it.
        using var app = fx.App(2, 2, (req, n) => n % 2 == 1 ? IndexFixture.Unavailable() : null);
        var q = fx.Queries[3];
        var response = await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = q, k = 10 }));
        response.EnsureSuccessStatusCode();
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.True(doc.RootElement.GetProperty("complete").GetBoolean());
        Assert.Equal(fx.Engine.Search(q, new SearchOptions { K = 10 }).Ids, Read(doc.RootElement).Ids);
    }

    [Fact]
    public async Task AChildThatHangsIsHedgedAndTheAnswerStaysComplete()
    {
        // The first child call hangs far past the hedging delay (but inside the per-attempt timeout). Hedging shows as
        // a second call to the same child sent while the first is still pending (not failed: a retry would wait for
        // the failure); without hedging the one slow call would answer alone. Which attempt wins is timing, not asserted.
        int calls = 0, firstFinished = 0, hedgedWhileFirstPending = 0;
        using var app = fx.App(1, 1,
            fault: (_, n) => { if (n == 1) Volatile.Write(ref firstFinished, 1); return null; },
            delay: n =>
            {
                Interlocked.Increment(ref calls);
                if (n == 2 && Volatile.Read(ref firstFinished) == 0) Volatile.Write(ref hedgedWhileFirstPending, 1);
                return n == 1 ? TimeSpan.FromSeconds(1.8) : TimeSpan.Zero;
            });
        var q = fx.Queries[4];
        var response = await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = q, k = 10 }));
        response.EnsureSuccessStatusCode();
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.True(doc.RootElement.GetProperty("complete").GetBoolean());
        Assert.Equal(fx.Engine.Search(q, new SearchOptions { K = 10 }).Ids, Read(doc.RootElement).Ids);
        Assert.True(calls >= 2, $"{calls} child call(s): the hanging call was not hedged");
        Assert.True(hedgedWhileFirstPending == 1, "the second call came after the first had finished: a retry, not a hedge");
    }

    [Fact]
    public async Task AHedgeThatLostIsOneDroppedAttemptAndItsEstimatedComputeIsInTheTotal()
    {
        // The first child call hangs past the hedging delay; the hedge answers and the first is cancelled. The delay is
        // 1 s here (not the fixture's 200 ms) so that a busy machine answers the hedge well inside it: a third attempt
        // would be a second dropped one.
        int calls = 0;
        using var app = fx.App(1, 1,
            delay: n => { Interlocked.Increment(ref calls); return n == 1 ? TimeSpan.FromSeconds(20) : TimeSpan.Zero; },
            settings: new Dictionary<string, string> { ["Squash:ChildTimeout"] = "00:00:30", ["Squash:HedgingDelay"] = "00:00:01" });
        var client = app.CreateClient();
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        async Task<JsonElement> Query(float[] q)
        {
            var response = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = q, k = 10 }), deadline.Token);
            response.EnsureSuccessStatusCode();
            using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync(deadline.Token));
            Assert.True(doc.RootElement.GetProperty("complete").GetBoolean());
            Assert.Equal(fx.Engine.Search(q, new SearchOptions { K = 10 }).Ids, Read(doc.RootElement).Ids);
            return doc.RootElement.GetProperty("stats").Clone();
        }
        static void AssertTotalIsTheSumOfItsParts(JsonElement stats)
        {
            var cost = stats.GetProperty("cost");
            double parts = cost.GetProperty("computeUsd").GetDouble() + cost.GetProperty("droppedComputeUsd").GetDouble()
                + cost.GetProperty("executionsUsd").GetDouble() + cost.GetProperty("storageUsd").GetDouble();
            Assert.Equal(parts, cost.GetProperty("totalUsd").GetDouble(), 15);
            Assert.Equal(cost.GetProperty("totalUsd").GetDouble(), stats.GetProperty("estimatedCostUsd").GetDouble(), 15);
            Assert.Equal(stats.GetProperty("invocations").GetInt32(), cost.GetProperty("executions").GetInt32());
        }

        var hedged = await Query(fx.Queries[8]);
        Assert.Equal(2, calls);
        var cost = hedged.GetProperty("cost");
        Assert.True(cost.GetProperty("droppedAttempts").GetInt32() == 1, cost.ToString());
        // The coordinator, the child's answer, and the dropped attempt.
        Assert.Equal(3, hedged.GetProperty("invocations").GetInt32());
        // The dropped attempt ran from its start to the hedge's answer (a little over the 1 s delay), billed as a period
        // of its own: at least 1,000 ms, in 100 ms steps, and no longer than the whole query took.
        double droppedMs = cost.GetProperty("droppedBilledMilliseconds").GetDouble();
        Assert.True(droppedMs >= PriceTable.MinimumPeriodMs, cost.ToString());
        Assert.Equal(0, droppedMs % PriceTable.PeriodRoundingMs);
        Assert.True(droppedMs <= PriceTable.BilledMilliseconds(hedged.GetProperty("milliseconds").GetDouble()), hedged.ToString());
        double droppedUsd = cost.GetProperty("droppedComputeUsd").GetDouble();
        Assert.Equal(PriceTable.ComputeCost(droppedMs, 2048), droppedUsd, 15);
        Assert.True(droppedUsd >= PriceTable.ComputeCost(PriceTable.MinimumPeriodMs, 2048), cost.ToString());
        AssertTotalIsTheSumOfItsParts(hedged);

        // The next query is not hedged: nothing dropped, nothing estimated.
        var plain = await Query(fx.Queries[9]);
        Assert.Equal(3, calls);
        Assert.Equal(0, plain.GetProperty("cost").GetProperty("droppedAttempts").GetInt32());
        Assert.Equal(0, plain.GetProperty("cost").GetProperty("droppedComputeUsd").GetDouble());
        Assert.Equal(2, plain.GetProperty("invocations").GetInt32());
        AssertTotalIsTheSumOfItsParts(plain);
    }

    [Theory]
    [InlineData(0, 0, System.Net.HttpStatusCode.OK)]
    [InlineData(-1, 0, System.Net.HttpStatusCode.InternalServerError)]
    [InlineData(1, 5, System.Net.HttpStatusCode.InternalServerError)]
    public async Task AChildsWrongDroppedAttemptFiguresAreA500ProblemNotACost(int dropped, double droppedMs, System.Net.HttpStatusCode expected)
    {
        // The child answers an empty scan with the given figures: well-formed otherwise, so only they decide.
        string body = $"{{\"neighbours\":[[]],\"stats\":[{{}}],\"missingPartitions\":[],\"levels\":[],\"invocations\":2,\"droppedAttempts\":{dropped},\"droppedBilledMilliseconds\":{droppedMs}}}";
        using var app = fx.App(1, 1, (req, n) => new System.Net.Http.HttpResponseMessage(System.Net.HttpStatusCode.OK)
        {
            Content = new StringContent(body, Encoding.UTF8, "application/json"),
        });
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var response = await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = fx.Queries[7], k = 10 }), deadline.Token);
        if (expected == System.Net.HttpStatusCode.OK)
        {
            var text = await response.Content.ReadAsStringAsync(deadline.Token);
            Assert.True(response.StatusCode == expected, text);
            // The child's two invocations per pass are counted (the empty answer sends the coordinator on more passes).
            Assert.True(JsonDocument.Parse(text).RootElement.GetProperty("stats").GetProperty("invocations").GetInt32() >= 2 + 1, text);
        }
        else await Problems.Read(response, expected);
    }

    [Theory]
    [InlineData(2, 1)]
    [InlineData(1, 0)]
    public async Task ABlobThatCannotBeReadMakesItsPartitionMissingAndTheRestIsStillAnswered(int branching, int depth)
    {
        // Every read of partition 3's segments fails (a store that stays down after its retries).
        using var app = fx.App(branching, depth, wrapStore: inner => new FailingReads(inner, name => name.Contains("p00003.")));
        var q = fx.Queries[6];
        var response = await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = q, k = 10, options = new { exact = true } }));
        response.EnsureSuccessStatusCode();
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.False(doc.RootElement.GetProperty("complete").GetBoolean());
        Assert.Equal([3], doc.RootElement.GetProperty("missingPartitions").EnumerateArray().Select(e => e.GetInt32()));
        // The answer is the exact top-10 of everything except partition 3.
        var lost = fx.Engine.Index.Codes(3).Ids.Select(i => (long)i).ToHashSet();
        var all = fx.Engine.Search(q, new SearchOptions { K = IndexFixture.Count, Exact = true });
        Assert.Equal(all.Ids.Where(id => !lost.Contains(id)).Take(10).ToArray(), Read(doc.RootElement).Ids);
    }

    private sealed class FailingReads(Squash.Storage.IBlobStore inner, Func<string, bool> fails) : Squash.Storage.IBlobStore
    {
        public string Description => inner.Description;
        public Task<byte[]> ReadAllAsync(string name, CancellationToken ct = default) =>
            fails(name) ? throw new IOException($"injected: {name} cannot be read") : inner.ReadAllAsync(name, ct);
        public Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken ct = default) =>
            fails(name) ? throw new IOException($"injected: {name} cannot be read") : inner.ReadRangeAsync(name, offset, length, ct);
        public Task<Squash.Storage.BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, Squash.Storage.WriteCondition condition, CancellationToken ct = default) =>
            inner.WriteAsync(name, data, condition, ct);
        public Task<Squash.Storage.BlobInfo?> GetInfoAsync(string name, CancellationToken ct = default) => inner.GetInfoAsync(name, ct);
        public IAsyncEnumerable<Squash.Storage.BlobInfo> ListAsync(string prefix, CancellationToken ct = default) => inner.ListAsync(prefix, ct);
        public Task<bool> DeleteAsync(string name, CancellationToken ct = default) => inner.DeleteAsync(name, ct);
    }

    [Fact]
    public async Task ABranchThatKeepsFailingMakesTheAnswerIncompleteAndNamesTheMissingPartitions()
    {
        using var app = fx.App(4, 1, (req, n) => IndexFixture.Unavailable());
        var q = fx.Queries[5];
        var response = await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = q, k = 10, options = new { exact = true } }));
        response.EnsureSuccessStatusCode();
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.False(doc.RootElement.GetProperty("complete").GetBoolean());
        var missing = doc.RootElement.GetProperty("missingPartitions").EnumerateArray().Select(e => e.GetInt32()).Order().ToArray();
        Assert.Equal(Enumerable.Range(0, fx.Partitions).ToArray(), missing);
        Assert.Equal(0, doc.RootElement.GetProperty("results").GetArrayLength());
    }

    [Fact]
    public async Task ABugInAChildCallIsA500ProblemNotAnIncompleteAnswer()
    {
        // An InvalidOperationException is a defect, not an outage: it must not be reported as missing partitions.
        using var app = fx.App(2, 1, (req, n) => throw new InvalidOperationException("injected: a bug on the way to a child"));
        var response = await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = fx.Queries[7], k = 10 }));
        var problem = await Problems.Read(response, System.Net.HttpStatusCode.InternalServerError);
        Assert.DoesNotContain("injected", problem.ToString());
    }

    [Fact]
    public async Task AChildThatRejectsTheScanRequestIsA500ProblemNotAnIncompleteAnswer()
    {
        // A 400 from a child means this node sent something wrong: a bug here, whatever the pipeline's retries do.
        using var app = fx.App(2, 1, (req, n) => new System.Net.Http.HttpResponseMessage(System.Net.HttpStatusCode.BadRequest));
        var response = await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = fx.Queries[7], k = 10 }));
        await Problems.Read(response, System.Net.HttpStatusCode.InternalServerError);
    }

    /// <summary>
    /// A child that refuses the scan body as too large runs with smaller limits than the coordinator (a strong query's
    /// masked rows come on top of the request limit): a 500 problem saying which settings to align, not a bare 500.
    /// </summary>
    [Fact]
    public async Task AChildThatRefusesTheScanBodyAsTooLargeIsA500ProblemNamingTheSettings()
    {
        using var app = fx.App(2, 1, (req, n) => new System.Net.Http.HttpResponseMessage(System.Net.HttpStatusCode.RequestEntityTooLarge));
        var response = await app.CreateClient().PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", Body(new { vector = fx.Queries[7], k = 10 }));
        var problem = await Problems.Read(response, System.Net.HttpStatusCode.InternalServerError);
        Assert.Equal("Tree node refused the scan", problem.GetProperty("title").GetString());
        var detail = problem.GetProperty("detail").GetString()!;
        Assert.Matches(@"^tree node \d+ \(processor pool 0\) refused the scan body as too large \(413\): ", detail);
        Assert.EndsWith("give the coordinator and every processor pool the same Squash:MaxRequestBytes and Squash:MaxMaskedRows", detail);
    }

    [Fact]
    public void TheTreePlannerPlacesEveryPartitionOnceAndStably()
    {
        var partitions = Enumerable.Range(0, 50).ToArray();
        var roots = TreePlanner.Build(partitions, 2, 3);
        var placed = roots.SelectMany(r => r.AllPartitions()).Order().ToArray();
        Assert.Equal(partitions, placed);
        Assert.True(roots.Length <= 2);
        Assert.Equal(14, TreePlanner.SlotCount(2, 3));
        // A partition keeps its slot whatever else is planned.
        var subset = TreePlanner.Build([7, 9], 2, 3).SelectMany(Flatten).Where(n => n.Partitions.Length > 0).ToDictionary(n => n.Partitions[0], n => n.Id);
        var full = roots.SelectMany(Flatten).SelectMany(n => n.Partitions.Select(p => (p, n.Id))).ToDictionary(x => x.p, x => x.Id);
        Assert.Equal(full[7], subset.GetValueOrDefault(7, subset.Values.First()));
    }

    [Fact]
    public void NoTreeNodeOnlyRelaysToOneChild()
    {
        var rng = new Random(3);
        for (int trial = 0; trial < 200; trial++)
        {
            var partitions = Enumerable.Range(0, 1000).OrderBy(_ => rng.Next()).Take(rng.Next(1, 20)).ToArray();
            int b = rng.Next(1, 6), depth = rng.Next(1, 4);
            var nodes = TreePlanner.Build(partitions, b, depth).SelectMany(Flatten).ToArray();
            Assert.Equal(partitions.Order(), nodes.SelectMany(n => n.Partitions).Order());
            Assert.All(nodes, n => Assert.True(n.Partitions.Length > 0 || n.Children.Length >= 2, $"node {n.Id} relays to {n.Children.Length} child"));
            Assert.All(nodes, n => Assert.True(n.Children.Length <= b));
            // Collapsing keeps every partition in its slot, so its pool and warm instance stay the same.
            var slots = TreePlanner.SlotCount(b, depth);
            Assert.All(nodes, n => Assert.All(n.Partitions, p => Assert.Equal(TreePlanner.Owner(p, slots), n.Id)));
        }
    }

    private static IEnumerable<Squash.Functions.Api.ScanNode> Flatten(Squash.Functions.Api.ScanNode n) => new[] { n }.Concat(n.Children.SelectMany(Flatten));
}
