using System.Text.Json;
using Squash.Search;
using Squash.Search.Builds;
using Squash.Search.Writes;
using Squash.Storage;
using Squash.Storage.Builds;
using Squash.Storage.Writes;
using static Squash.Functions.Tests.WriteModel;

namespace Squash.Functions.Tests;

/// <summary>
/// The full rebuild (docs/writes.md, "Full rebuild"): ingest queues one rebuild once half the rows changed since the build,
/// the rebuild runs through the real queue-build stages (messages delivered in order in this process), writes that arrive
/// meanwhile are applied on top of it when ingest publishes it, and answers stay equal to brute force over a model at every
/// step, the watermark never moving back.
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class RebuildTests(IndexFixture fx)
{
    private sealed record Setup(string Index, IndexStore Store, Dictionary<string, Item> Model, HttpClient Client, WriteLog Log, InOrderBuildQueue Queue,
        BuildTaskRunner Runner, RebuildSettings Settings, IDisposable App);

    private async Task<Setup> SetUpAsync(int seed)
    {
        var index = "rebuild-" + Guid.NewGuid().ToString("N")[..10];
        var (model, store) = await BuildAsync(fx.Root, index, seed, withIds: true);
        var app = fx.App(2, 0, settings: new Dictionary<string, string> { ["Squash:CurrentRecheck"] = "00:00:00" });
        var queue = new InOrderBuildQueue();
        var jobs = new BuildJobStore(store.Blobs);
        return new Setup(index, store, model, app.CreateClient(), new WriteLog(store.Blobs, index), queue, new BuildTaskRunner(jobs, queue, new QueueStageWork()),
            new RebuildSettings(0.5, jobs, queue), app);
    }

    private static async Task DrainAsync(Setup s)
    {
        while (s.Queue.Pending.TryDequeue(out var message))
        {
            var outcome = await s.Runner.RunAsync(message, 1, 5, CancellationToken.None);
            Assert.True(outcome.Success, outcome.Log);
        }
    }

    private static async Task AssertExactAsync(Setup s, Random rng, Dictionary<string, Item> published, long watermark, string context)
    {
        var query = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
        var filter = rng.Next(2) == 0 ? RandomFilter(rng) : null;
        await AssertAnswer(s.Client, s.Index, true, query, filter, "strong", s.Model, watermark, $"{context} strong {filter?.Json}");
        await AssertAnswer(s.Client, s.Index, true, query, filter, "eventual", published, watermark, $"{context} eventual {filter?.Json}");
    }

    /// <summary>
    /// A small write: two upserts (a new row and a replacement) and a delete, so the rows changed per write stay few and the
    /// index keeps its size (the random writes' deletes by filter can empty a 60-row index, and make the next rebuild due at once).
    /// </summary>
    private static async Task SmallWriteAsync(Setup s, Random rng, Func<string> newId, string context)
    {
        var ids = s.Model.Keys.OrderBy(k => k, StringComparer.Ordinal).ToArray();
        var replaced = ids[rng.Next(ids.Length)];
        var deleted = ids.Where(i => i != replaced).ElementAt(rng.Next(ids.Length - 1));
        var items = new List<string>();
        foreach (var id in new[] { newId(), replaced })
        {
            var v = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
            var item = new Item(v, new[] { "red", "blue", "green" }[rng.Next(3)], Math.Round(rng.NextDouble() * 160 - 10, 2), rng.Next(80));
            s.Model[id] = item;
            items.Add($"{{\"id\":\"{id}\",\"vector\":{Bodies.Vector(v)},\"attributes\":{{\"colour\":\"{item.Colour}\",\"price\":{F(item.Price!.Value)},\"n\":{item.N}}}}}");
        }
        s.Model.Remove(deleted);
        var written = await s.Client.PostAsync($"/api/indexes/{s.Index}/vectors", Bodies.Json($"{{\"upserts\":[{string.Join(',', items)}],\"deletes\":[\"{deleted}\"]}}"));
        Assert.True(written.IsSuccessStatusCode, $"{context}: {await written.Content.ReadAsStringAsync()}");
    }

    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    public async Task OneRebuildIsQueuedAndPublishedWithTheWritesThatArrivedMeanwhile(int seed)
    {
        var s = await SetUpAsync(seed);
        using var _ = s.App;
        var rng = new Random(seed);
        int fresh = 0;
        string NewId() => $"new-{fresh++}";
        long sequence = 0, watermark = 0;
        var published = s.Model.ToDictionary(e => e.Key, e => e.Value);
        async Task<LogIngest.LeasedRun> IngestAsync(string context)
        {
            var run = await LogIngest.RunLeasedAsync(s.Store, s.Log, rebuild: s.Settings);
            Assert.False(run.Busy);
            var m = await s.Store.OpenCurrentAsync();
            Assert.True(m.IndexedSequence >= watermark, $"{context}: the watermark moved back from {watermark} to {m.IndexedSequence}");
            Assert.Equal(sequence, m.IndexedSequence);
            Assert.True(s.Model.Count == m.Count, $"{context}: the version holds {m.Count} rows, the model {s.Model.Count}");
            watermark = m.IndexedSequence;
            published = s.Model.ToDictionary(e => e.Key, e => e.Value);
            return run;
        }

        // Writes until the trigger fires: exactly one rebuild queued, and the next runs (two at once, too) queue none.
        string? queued = null;
        for (int step = 0; queued is null; step++)
        {
            Assert.True(step < 200, "no rebuild was queued");
            // A few random writes (deletes by filter among them), then small ones.
            if (step < 3) await WriteAsync(s.Client, s.Index, rng, s.Model, NewId, $"step {step}");
            else await SmallWriteAsync(s, rng, NewId, $"step {step}");
            sequence++;
            var run = await IngestAsync($"step {step}");
            var m = await s.Store.OpenCurrentAsync();
            queued = run.Rebuild?.Queued;
            Assert.True(queued is null == m.RowsChangedSinceBuild < 0.5 * m.Count, $"step {step}: {m.RowsChangedSinceBuild} of {m.Count} changed, queued {queued}");
            await AssertExactAsync(s, rng, published, watermark, $"step {step}");
        }
        var record = (await RebuildRecord.ReadAsync(s.Store.Blobs, s.Index))!.Value.Record;
        Assert.Equal(queued, record.BuildId);
        Assert.Equal(watermark, record.CoversSequence);
        Assert.Equal(1, s.Queue.Trains);
        var twice = await Task.WhenAll(LogIngest.RunLeasedAsync(s.Store, s.Log, rebuild: s.Settings), LogIngest.RunLeasedAsync(s.Store, s.Log, rebuild: s.Settings));
        Assert.All(twice, r => Assert.Null(r.Rebuild?.Queued));
        Assert.Equal(1, s.Queue.Trains);

        // Writes acknowledged and ingested while the rebuild has not run.
        for (int step = 0; step < 4; step++)
        {
            await SmallWriteAsync(s, rng, NewId, $"during {step}");
            sequence++;
            var run = await IngestAsync($"during {step}");
            Assert.Null(run.Rebuild?.Queued);
            Assert.Null(run.Rebuild?.Published);
            await AssertExactAsync(s, rng, published, watermark, $"during {step}");
        }
        Assert.Equal(1, s.Queue.Trains);

        // The rebuild runs: its version is written but not published (writes were indexed since its base).
        await DrainAsync(s);
        var job = (await new BuildJobStore(s.Store.Blobs).GetAsync(s.Index, queued))!.Value.Job;
        Assert.Equal(BuildStatus.Succeeded, job.Status);
        Assert.False(job.Current);
        Assert.NotEqual(job.Version, (await s.Store.GetCurrentAsync())!.Value.Version);
        var rebuilt = await s.Store.ReadManifestAsync(job.Version);
        Assert.Equal(record.CoversSequence, rebuilt.IndexedSequence);

        // gc now keeps the rebuilt version and the log past its position, however little it is asked to keep.
        var gc = await s.Store.CollectGarbageAsync(0, TimeSpan.Zero);
        Assert.Contains(gc.Kept, k => k.Version == job.Version && k.Reason == IndexStore.KeptReason.Rebuild);
        Assert.True(gc.LogIndexedByAllKept is null || gc.LogIndexedByAllKept <= record.CoversSequence, $"gc would trim the log to {gc.LogIndexedByAllKept}");
        await s.Store.VerifyCompleteAsync(rebuilt);

        // One more write, then ingest publishes the rebuild with every batch past its position applied on top.
        await SmallWriteAsync(s, rng, NewId, "after");
        sequence++;
        var adopting = await IngestAsync("adoption");
        Assert.True(adopting.Rebuild?.Published is not null, adopting.Rebuild?.Message ?? "no rebuild report");
        var now = await s.Store.OpenCurrentAsync();
        Assert.Equal(job.Version, now.BuiltFrom);
        Assert.True(now.RowsChangedSinceBuild < 0.5 * now.Count, $"the count restarts at the rebuild: {now.RowsChangedSinceBuild}");
        var closed = (await RebuildRecord.ReadAsync(s.Store.Blobs, s.Index))!.Value.Record;
        Assert.Equal(RebuildRecord.Published, closed.Outcome);
        for (int step = 0; step < 6; step++) await AssertExactAsync(s, rng, published, watermark, $"after adoption {step}");

        // Writes keep going onto the rebuilt line, exactly.
        for (int step = 0; step < 3; step++)
        {
            await SmallWriteAsync(s, rng, NewId, $"later {step}");
            sequence++;
            await IngestAsync($"later {step}");
            await AssertExactAsync(s, rng, published, watermark, $"later {step}");
        }
        Assert.Equal(1, s.Queue.Trains);
    }

    /// <summary>
    /// Queuing a rebuild writes every live row as its source (~40 s at 10⁶ rows): the run does it after releasing the lease
    /// and after asking for the next run, so writes meanwhile are ingested by another run instead of waiting for it.
    /// </summary>
    [Fact]
    public async Task ARebuildIsQueuedOnlyAfterTheLeaseIsReleasedAndTheNextRunAskedFor()
    {
        var s = await SetUpAsync(13);
        using var _ = s.App;
        var rng = new Random(13);
        int fresh = 0;
        string NewId() => $"new-{fresh++}";
        string? queued = null;
        for (int step = 0; queued is null; step++)
        {
            Assert.True(step < 200, "no rebuild was queued");
            // Two writes, and a run capped at one batch: the log is past it when it ends.
            await SmallWriteAsync(s, rng, NewId, $"step {step} a");
            await SmallWriteAsync(s, rng, NewId, $"step {step} b");
            int asked = 0;
            bool leaseFree = false, recordClaimed = true;
            var run = await LogIngest.RunLeasedAsync(s.Store, s.Log, maxRounds: 1, maxBatches: 1, rebuild: s.Settings, requestIngest: async ct =>
            {
                asked++;
                var lease = await IngestLease.TryAcquireAsync(s.Store.Blobs, s.Index, TimeSpan.FromSeconds(30), ct: ct);
                leaseFree = lease is not null;
                if (lease is not null) await lease.ReleaseAsync(ct);
                recordClaimed = await RebuildRecord.ReadAsync(s.Store.Blobs, s.Index, ct) is { Record.IsActive: true };
            });
            Assert.True(run.MorePastWatermark, $"step {step}: the log was not past the run");
            Assert.True(run.Requested, $"step {step}: the next run was not asked for");
            Assert.Equal(1, asked);
            Assert.True(leaseFree, $"step {step}: the lease was still held when the next run was asked for");
            Assert.False(recordClaimed, $"step {step}: a rebuild was claimed before the next run was asked for");
            queued = run.Rebuild?.Queued;
            // The second batch, by a run that neither asks for more nor considers a rebuild (the capped run is the one that queues).
            var rest = await LogIngest.RunLeasedAsync(s.Store, s.Log);
            Assert.False(rest.MorePastWatermark);
            Assert.False(rest.Requested);
        }
        Assert.Equal(queued, (await RebuildRecord.ReadAsync(s.Store.Blobs, s.Index))!.Value.Record.BuildId);
        Assert.Equal(1, s.Queue.Trains);
    }

    [Fact]
    public async Task ADamagedRebuildRecordIsReportedAsUnreadableAndTheIndexInfoStillAnswers()
    {
        var s = await SetUpAsync(31);
        using var _ = s.App;
        await s.Store.Blobs.WriteAsync(RebuildRecord.NameFor(s.Index), "{\"buildId\": tru"u8.ToArray(), WriteCondition.Overwrite);
        using var response = await s.Client.GetAsync($"/api/indexes/{s.Index}");
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == System.Net.HttpStatusCode.OK, text);
        var rebuild = JsonDocument.Parse(text).RootElement.GetProperty("rebuild");
        Assert.Equal("unreadable", rebuild.GetProperty("status").GetString());
        Assert.StartsWith($"rebuild record '{RebuildRecord.NameFor(s.Index)}' is not valid: ", rebuild.GetProperty("reason").GetString());
        // Ingest names the blob instead of guessing past it.
        var failure = await Assert.ThrowsAsync<InvalidDataException>(() => LogIngest.RunLeasedAsync(s.Store, s.Log, rebuild: s.Settings));
        Assert.Contains(RebuildRecord.NameFor(s.Index), failure.Message);
    }

    [Fact]
    public async Task AFailedRebuildLeavesTheIndexAnsweringAndDoesNotLoop()
    {
        var s = await SetUpAsync(21);
        using var _ = s.App;
        var rng = new Random(21);
        int fresh = 0;
        long sequence = 0;
        string? queued = null;
        for (int step = 0; queued is null; step++)
        {
            Assert.True(step < 200, "no rebuild was queued");
            await WriteAsync(s.Client, s.Index, rng, s.Model, () => $"new-{fresh++}", $"step {step}");
            sequence++;
            queued = (await LogIngest.RunLeasedAsync(s.Store, s.Log, rebuild: s.Settings)).Rebuild?.Queued;
        }
        var before = await s.Store.GetCurrentAsync();
        // The train task fails for good (its source is gone), as a bad source would.
        var record = (await RebuildRecord.ReadAsync(s.Store.Blobs, s.Index))!.Value.Record;
        await foreach (var b in s.Store.Blobs.ListAsync(LogIngest.RebuildSourcePrefix(s.Index, record.BaseVersion))) await s.Store.Blobs.DeleteAsync(b.Name);
        while (s.Queue.Pending.TryDequeue(out var message)) await s.Runner.RunAsync(message, 5, 5, CancellationToken.None);
        Assert.Equal(BuildStatus.Failed, (await new BuildJobStore(s.Store.Blobs).GetAsync(s.Index, queued))!.Value.Job.Status);
        Assert.Equal(before, await s.Store.GetCurrentAsync());

        // Ingest closes it and keeps answering from its own line; a few more writes queue no new rebuild.
        var published = s.Model.ToDictionary(e => e.Key, e => e.Value);
        var closing = await LogIngest.RunLeasedAsync(s.Store, s.Log, rebuild: s.Settings);
        Assert.Contains("failed", closing.Rebuild!.Message);
        Assert.Equal(RebuildRecord.Failed, (await RebuildRecord.ReadAsync(s.Store.Blobs, s.Index))!.Value.Record.Outcome);
        for (int step = 0; step < 3; step++)
        {
            await WriteAsync(s.Client, s.Index, rng, s.Model, () => $"new-{fresh++}", $"after failure {step}");
            sequence++;
            var run = await LogIngest.RunLeasedAsync(s.Store, s.Log, rebuild: s.Settings);
            Assert.True(run.Rebuild?.Queued is null, run.Rebuild?.Message);
            published = s.Model.ToDictionary(e => e.Key, e => e.Value);
            Assert.Equal(sequence, (await s.Store.OpenCurrentAsync()).IndexedSequence);
            await AssertExactAsync(s, rng, published, sequence, $"after failure {step}");
        }
        Assert.Equal(1, s.Queue.Trains);
    }

    [Fact]
    public async Task WithoutAQueueIngestSaysARebuildIsDueAndQueuesNothing()
    {
        var s = await SetUpAsync(31);
        using var _ = s.App;
        var rng = new Random(31);
        int fresh = 0;
        LogIngest.LeasedRun run;
        int step = 0;
        do
        {
            Assert.True(step < 200, "no rebuild became due");
            await WriteAsync(s.Client, s.Index, rng, s.Model, () => $"new-{fresh++}", $"step {step++}");
            run = await LogIngest.RunLeasedAsync(s.Store, s.Log, rebuild: new RebuildSettings(0.5));
        }
        while (run.Rebuild is null);
        Assert.Contains("a full rebuild is due", run.Rebuild.Message);
        Assert.Null(await RebuildRecord.ReadAsync(s.Store.Blobs, s.Index));
        // Off: nothing said.
        await WriteAsync(s.Client, s.Index, rng, s.Model, () => $"new-{fresh++}", "off");
        Assert.Null((await LogIngest.RunLeasedAsync(s.Store, s.Log, rebuild: new RebuildSettings(0))).Rebuild);
    }
}
