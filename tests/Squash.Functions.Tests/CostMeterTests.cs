using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Squash.Functions.Tree;
using Squash.LocalHost;
using Squash.Storage;
using Squash.Testing;

namespace Squash.Functions.Tests;

/// <summary>
/// The price model's billing rule (Flex Consumption: an activity period is billed at least 1,000 ms, else rounded up to
/// 100 ms), the local host's meter against an independent model, the marginal attribution behind <c>stats.cost</c>, and a
/// run through the real host whose bill equals a recomputation from its own invocation log.
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class CostMeterTests(IndexFixture fx)
{
    [Theory]
    [InlineData(3, 1000)]
    [InlineData(0, 1000)]
    [InlineData(999.9, 1000)]
    [InlineData(1000, 1000)]
    [InlineData(1001, 1100)]
    [InlineData(1100, 1100)]
    [InlineData(1100.0000000001, 1100)]
    [InlineData(2345, 2400)]
    public void APeriodIsBilledAtLeastOneSecondElseRoundedUpTo100Ms(double activeMs, double billedMs) =>
        Assert.Equal(billedMs, PriceTable.BilledMilliseconds(activeMs));

    [Fact]
    public void ANegativePeriodIsRefused() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => PriceTable.BilledMilliseconds(-1));

    [Fact]
    public void OverlappingInvocationsShareOnePeriod()
    {
        var meter = new ActivityMeter();
        meter.Start(0);
        meter.Start(2);
        meter.Stop(5);
        meter.Start(6);
        meter.Stop(7);
        meter.Stop(9);
        var period = Assert.Single(meter.Periods(100));
        Assert.Equal(new ActivityPeriod(0, 9), period);
        Assert.Equal(1000, meter.BilledMs(100));
        Assert.Equal(3, meter.Executions);
    }

    [Fact]
    public void PeriodsSeparatedByIdleAreBilledSeparately()
    {
        var meter = new ActivityMeter();
        meter.Start(0);
        meter.Stop(3);
        meter.Start(5000);
        meter.Stop(6001);
        Assert.Equal(2, meter.Periods(10_000).Count);
        // 3 ms → 1,000 ms; 1,001 ms → 1,100 ms.
        Assert.Equal(2100, meter.BilledMs(10_000));
        // Touching invocations (one ends as the next starts) are one period, as the instance never went idle.
        var touching = new ActivityMeter();
        touching.Start(0);
        touching.Stop(600);
        touching.Start(600);
        touching.Stop(1200);
        Assert.Equal(1200, touching.BilledMs(2000));
        // An invocation that starts on an idle instance inside time already billed (the first period's 1 s minimum) joins
        // that period: no millisecond is billed twice.
        var inside = new ActivityMeter();
        inside.Start(0);
        inside.Stop(3);
        inside.Start(500);
        inside.Stop(503);
        Assert.Single(inside.Periods(2000));
        Assert.Equal(1000, inside.BilledMs(2000));
        inside.Start(1000);                          // at the billed end: a new period
        inside.Stop(1001);
        Assert.Equal(2, inside.Periods(2000).Count);
        Assert.Equal(2000, inside.BilledMs(2000));
    }

    [Fact]
    public void AnOpenPeriodIsBilledUpToNow()
    {
        var meter = new ActivityMeter();
        meter.Start(10);
        Assert.Equal(1000, meter.BilledMs(20));
        Assert.Equal(1600, meter.BilledMs(1555));
        Assert.Throws<InvalidOperationException>(() => new ActivityMeter().Stop(1));
    }

    /// <summary>Random overlapping invocations: the meter, the recomputation from its log and a millisecond timeline agree.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void TheMeterEqualsAnIndependentTimelineModel(int seed)
    {
        var random = new Random(seed);
        var spans = new List<(int Start, int End)>();
        int t = 0;
        for (int i = 0; i < 300; i++)
        {
            t += random.Next(0, 3) == 0 ? random.Next(800, 4000) : random.Next(0, 40);
            spans.Add((t, t + random.Next(0, 1500)));
        }
        var meter = new ActivityMeter();
        foreach (var (time, isStart) in spans.SelectMany(s => new[] { (s.Start, true), (s.End, false) })
                     .OrderBy(e => e.Item1).ThenBy(e => e.Item2 ? 0 : 1))
            if (isStart) meter.Start(time); else meter.Stop(time);

        // Independent model: mark every busy millisecond, cut the timeline into runs, bill each run.
        int end = spans.Max(s => s.End);
        var busy = new bool[end + 1];
        var instants = new HashSet<int>();
        foreach (var (s, e) in spans)
        {
            for (int ms = s; ms < e; ms++) busy[ms] = true;
            if (s == e) instants.Add(s);
        }
        // Runs of busy milliseconds (an instant invocation is a run of length 0 unless it touches one)...
        var runs = new List<(double Start, double End)>();
        for (int ms = 0; ms <= end;)
        {
            if (busy[ms])
            {
                int start = ms;
                while (ms <= end && busy[ms]) ms++;
                runs.Add((start, ms));
                instants.Remove(ms);
                continue;
            }
            if (instants.Contains(ms)) runs.Add((ms, ms));
            ms++;
        }
        // ...then a run that starts inside the time billed for the period before it joins that period.
        double expected = 0;
        int periods = 0;
        (double Start, double End)? period = null;
        foreach (var run in runs)
        {
            if (period is { } p && run.Start < p.Start + PriceTable.BilledMilliseconds(p.End - p.Start)) { period = (p.Start, run.End); continue; }
            if (period is { } done) { expected += PriceTable.BilledMilliseconds(done.End - done.Start); periods++; }
            period = run;
        }
        if (period is { } last) { expected += PriceTable.BilledMilliseconds(last.End - last.Start); periods++; }
        Assert.True(meter.Periods(end).Count == periods, $"seed {seed}: {meter.Periods(end).Count} periods, model {periods}");
        Assert.True(expected == meter.BilledMs(end), $"seed {seed}: meter {meter.BilledMs(end)} ms, model {expected} ms");
        Assert.Equal(meter.BilledMs(end), ActivityMeter.Recompute(meter.Log()));
        Assert.Equal(spans.Count, meter.Executions);
    }

    private sealed class ManualClock : TimeProvider
    {
        public long Ticks;
        public override long TimestampFrequency => 1000; // one tick per millisecond
        public override long GetTimestamp() => Ticks;
    }

    [Fact]
    public void AWakingInvocationPaysTheMinimumAndOneInsideBilledTimePaysNothing()
    {
        var clock = new ManualClock();
        var activity = new InstanceActivity(clock);
        activity.Begin();
        clock.Ticks = 3;
        Assert.Equal(1000, activity.Attribute());   // woke the instance: its 1 s minimum
        activity.Begin();                            // a second invocation while the first runs
        activity.End();
        clock.Ticks = 800;
        Assert.Equal(0, activity.Attribute());       // inside time already billed
        clock.Ticks = 1050;
        Assert.Equal(100, activity.Attribute());     // ran past it: one more 100 ms step
        activity.End();
        clock.Ticks = 1080;                          // idle, but inside the 1,100 ms already billed: the same period
        Assert.Equal(0, activity.Attribute());       // nothing runs: nothing to charge
        activity.Begin();
        clock.Ticks = 1090;
        Assert.Equal(0, activity.Attribute());
        activity.End();
        clock.Ticks = 5000;                          // past the billed time: a new period
        activity.Begin();
        clock.Ticks = 5001;
        Assert.Equal(1000, activity.Attribute());
        activity.End();
    }

    [Fact]
    public void StorageOperationHeadersRoundTripAndBadOnesAreIgnored()
    {
        var ops = new StorageOperations(5, 1, 2, 3, 0, 7);
        Assert.Equal(ops, StorageOperations.ParseHeader(ops.ToHeader()));
        foreach (var bad in new[] { null, "", "1,2,3", "1,2,3,4,5,-6", "1,2,3,4,5,x", "1,2,3,4,5,6,7" })
            Assert.Null(StorageOperations.ParseHeader(bad));
        // 10,000 reads cost the read price; a list costs the list price.
        Assert.Equal(PriceTable.BlobReadPer10k, PriceTable.StorageCost(new StorageOperations(10_000, 0, 0, 0, 0, 0)), 12);
        Assert.Equal(PriceTable.BlobListPer10k / 10_000, PriceTable.StorageCost(new StorageOperations(0, 0, 1, 0, 0, 0)), 15);
    }


    /// <summary>A timestamp of <see cref="TimeProvider.System"/> <paramref name="ms"/> milliseconds after its zero.</summary>
    private static long At(double ms) => (long)Math.Round(ms * TimeProvider.System.TimestampFrequency / 1000);

    [Fact]
    public void ADroppedAttemptIsBilledAsAPeriodOfItsOwnAndTheAnswersAttemptIsNot()
    {
        var tally = new ScanAttempts.Tally();
        using var failed = new HttpResponseMessage(HttpStatusCode.ServiceUnavailable);
        using var answer = new HttpResponseMessage(HttpStatusCode.OK);
        var retried = tally.Start(At(0));
        tally.End(retried, At(3), failed);          // a failed try back in 3 ms: 1,000 ms
        var hedged = tally.Start(At(10));           // still running when the answer came: cancelled then, 1,001 ms → 1,100
        var won = tally.Start(At(20));
        tally.End(won, At(1011), answer);           // the answer's own attempt (991 ms): not counted
        Assert.Equal(new ScanAttempts.Dropped(2, 2100), tally.DroppedBesides(answer, At(1011)));
        // An attempt cancelled after the answer came back ends when it came back.
        tally.End(hedged, At(5000), null);
        Assert.Equal(new ScanAttempts.Dropped(2, 2100), tally.DroppedBesides(answer, At(1011)));

        // One attempt that answered: nothing dropped.
        var single = new ScanAttempts.Tally();
        single.End(single.Start(At(0)), At(3), answer);
        Assert.Equal(new ScanAttempts.Dropped(0, 0), single.DroppedBesides(answer, At(3)));
        // The rule itself: the Flex minimum and its rounding.
        Assert.Equal(1000, ScanAttempts.EstimatedBilledMilliseconds(3));
        Assert.Equal(1100, ScanAttempts.EstimatedBilledMilliseconds(1001));
        Assert.Equal(2400, ScanAttempts.EstimatedBilledMilliseconds(2345));
    }

    [Fact]
    public void WhenNoAttemptReturnedTheAnswerTheLastOneThatCameBackIsTakenAsItsOwn()
    {
        var tally = new ScanAttempts.Tally();
        using var failed = new HttpResponseMessage(HttpStatusCode.ServiceUnavailable);
        using var last = new HttpResponseMessage(HttpStatusCode.OK);
        using var elsewhere = new HttpResponseMessage(HttpStatusCode.OK);
        tally.End(tally.Start(At(0)), At(2500), failed);
        tally.End(tally.Start(At(100)), At(2600), last);
        Assert.Equal(new ScanAttempts.Dropped(1, 2500), tally.DroppedBesides(elsewhere, At(2600)));
    }

    [Fact]
    public void AChildsDroppedAttemptFiguresAreCheckedBeforeTheyAreAddedUp()
    {
        static Api.ScanResponse Answer(int invocations, int dropped, double droppedMs, double billedMs = 0) => new()
        {
            Neighbours = [], Stats = [], MissingPartitions = [], Invocations = invocations,
            DroppedAttempts = dropped, DroppedBilledMilliseconds = droppedMs, BilledMilliseconds = billedMs,
        };
        Assert.Null(Tree.ScanInvoker.CheckCostFigures(Answer(1, 0, 0)));
        Assert.Null(Tree.ScanInvoker.CheckCostFigures(Answer(3, 2, 2100, 1000)));
        foreach (var (bad, field) in new[]
        {
            (Answer(2, -1, 0), "droppedAttempts"),
            (Answer(2, 2, 2000), "droppedAttempts"),                    // every invocation dropped: none answered
            (Answer(2, 1, 999), "droppedBilledMilliseconds"),           // under the 1,000 ms minimum
            (Answer(2, 1, -5), "droppedBilledMilliseconds"),
            (Answer(2, 1, double.NaN), "droppedBilledMilliseconds"),
            (Answer(2, 1, double.PositiveInfinity), "droppedBilledMilliseconds"),
            (Answer(2, 1, 1e12), "droppedBilledMilliseconds"),          // 31 years
            (Answer(1, 0, 1000), "droppedBilledMilliseconds"),          // billed time without an attempt
            (Answer(1, 0, 0, -1), "billedMilliseconds"),
            (Answer(1, 0, 0, double.NaN), "billedMilliseconds"),
        })
        {
            var problem = Tree.ScanInvoker.CheckCostFigures(bad);
            Assert.NotNull(problem);
            Assert.StartsWith(field + " ", problem);
        }
    }

    [Fact]
    public void AChildsAnswerOfTheWrongShapeIsNamedBeforeItIsMerged()
    {
        var stats = new Squash.Search.QueryStats();
        Api.ScanResponse Good() => new()
        {
            Neighbours = [[new Api.ScanHit(4, 1.5f)], []], Stats = [stats, stats], MissingPartitions = [], Invocations = 1,
            SkippedBounds = [null, 2f], Levels = [new Api.LevelTiming(0, 1, 2, 1, 0)],
        };
        Assert.Null(Tree.ScanInvoker.CheckShape(Good(), 2));
        Assert.Null(Tree.ScanInvoker.CheckShape(Good() with { SkippedBounds = null }, 2));   // an older node: nothing certified
        foreach (var (bad, queries, field) in new[]
        {
            (Good(), 3, "neighbours:"),                                                      // two lists for three queries
            (Good() with { Neighbours = null! }, 2, "neighbours:"),
            (Good() with { Neighbours = [[new Api.ScanHit(4, 1.5f)], null!] }, 2, "neighbours[1]:"),
            (Good() with { Neighbours = [[new Api.ScanHit(4, float.NaN)], []] }, 2, "neighbours[0][0]:"),
            (Good() with { Neighbours = [[null!], []] }, 2, "neighbours[0][0]:"),
            (Good() with { Stats = [stats] }, 2, "stats:"),
            (Good() with { Stats = [stats, null!] }, 2, "stats:"),
            (Good() with { SkippedBounds = [1f] }, 2, "skippedBounds:"),
            (Good() with { MissingPartitions = null! }, 2, "missingPartitions:"),
            (Good() with { MissingPartitions = [3, -1] }, 2, "missingPartitions:"),
            (Good() with { Levels = null! }, 2, "levels:"),
            (Good() with { Levels = [null!] }, 2, "levels:"),
            (Good() with { Invocations = 0 }, 2, "invocations "),
        })
        {
            var problem = Tree.ScanInvoker.CheckShape(bad, queries);
            Assert.NotNull(problem);
            Assert.StartsWith(field, problem);
        }
    }

    /// <summary>
    /// Queries through the real host, sequential and concurrent: every instance's billed time equals a recomputation from its
    /// own invocation log, the host's total equals the prices applied to that, and the answers' stats give the cost in parts.
    /// </summary>
    [Fact]
    public async Task AHostRunsBillEqualsARecomputationFromItsOwnInvocationLog()
    {
        await using var host = new LocalFunctionHost(new LocalHostOptions { Store = "dir:" + fx.Root, Port = FreePorts.Next(), Branching = 2, Depth = 1, ProcessorPools = 2, MaxInstancesPerPool = 2, InstanceConcurrency = 8 });
        await host.StartAsync();
        using var client = new HttpClient { BaseAddress = host.BaseAddress, Timeout = TimeSpan.FromSeconds(120) };
        async Task<JsonElement> Query(float[] q)
        {
            using var body = new StringContent(JsonSerializer.Serialize(new { vector = q, k = 10 }), Encoding.UTF8, "application/json");
            using var response = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", body);
            response.EnsureSuccessStatusCode();
            return JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        }
        var first = await Query(fx.Queries[0]);
        foreach (var q in fx.Queries.Skip(1).Take(10)) await Query(q);
        await Task.WhenAll(fx.Queries.Skip(11).Take(12).Select(Query));
        // A gap longer than nothing: the next query opens new periods.
        await Task.Delay(50);
        await Query(fx.Queries[3]);

        var stats = first.GetProperty("stats");
        var cost = stats.GetProperty("cost");
        double parts = cost.GetProperty("computeUsd").GetDouble() + cost.GetProperty("droppedComputeUsd").GetDouble()
            + cost.GetProperty("executionsUsd").GetDouble() + cost.GetProperty("storageUsd").GetDouble();
        Assert.Equal(parts, cost.GetProperty("totalUsd").GetDouble(), 12);
        Assert.Equal(cost.GetProperty("totalUsd").GetDouble(), stats.GetProperty("estimatedCostUsd").GetDouble(), 12);
        // The first query woke the coordinator: at least its 1 s minimum. (Not 2 s for two instances: a scan the hedging
        // raced against a slow cold start is charged to the losing attempt, whose compute is only estimated, under
        // droppedBilledMilliseconds; the host's meter bills what it really ran.)
        Assert.True(cost.GetProperty("billedMilliseconds").GetDouble() >= 1000, stats.ToString());
        Assert.Equal(stats.GetProperty("invocations").GetInt32(), cost.GetProperty("executions").GetInt32());
        // A cold instance reads the index from the store (a folder store is counted as Azure would bill it, priced at $0).
        Assert.True(cost.GetProperty("blobReads").GetInt64() > 0, cost.ToString());

        var snapshot = host.Snapshot(withLog: true);
        double recomputedMs = 0;
        long executions = 0;
        foreach (var pool in snapshot.Pools)
            foreach (var instance in pool.History)
            {
                Assert.NotNull(instance.Invocations);
                double fromLog = ActivityMeter.Recompute(instance.Invocations!);
                Assert.True(Math.Abs(fromLog - instance.BilledSeconds * 1000) < 1e-6, $"{pool.Pool}/{instance.ProcessId}: meter {instance.BilledSeconds * 1000} ms, log {fromLog} ms");
                Assert.Equal(instance.Executions, instance.Invocations!.Count);
                recomputedMs += fromLog;
                executions += instance.Invocations.Count;
            }
        Assert.Equal(snapshot.TotalExecutions, executions);
        // The host runs on a folder store: its storage operations are counted but not billed.
        Assert.Equal(0, snapshot.TotalStorageUsd);
        double expected = PriceTable.ComputeCost(recomputedMs, 2048) + PriceTable.ExecutionsCost(executions);
        Assert.Equal(expected, snapshot.TotalCostUsd, 12);
        Assert.True(snapshot.TotalActivityPeriods >= snapshot.Pools.Sum(p => p.History.Count));
        Assert.True(snapshot.TotalStorageOperations.BlobReads > 0);
        // Every period was billed at least its second.
        Assert.True(snapshot.TotalBilledSeconds >= snapshot.TotalActivityPeriods);
    }
}
