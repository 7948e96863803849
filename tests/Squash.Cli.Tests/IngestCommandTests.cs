using Squash.Storage;
using Squash.Storage.Writes;

namespace Squash.Cli.Tests;

/// <summary>`squash ingest` applies the write log of an index in a store; `squash gc --log` then trims what every kept version has indexed.</summary>
public class IngestCommandTests
{
    [Fact]
    public async Task IngestAppliesTheLogAndGcLogTrimsIndexedBatches()
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(200, 6, 3));
        var build = await CliRunner.RunAsync("build", "--store", "dir:" + dir.File("store"), "--index", "shop", "--vectors", vectors, "--partitions", "4");
        Assert.True(build.Exit == 0, build.Err);
        var log = new WriteLog(new FolderBlobStore(dir.File("store")), "shop");
        for (int i = 0; i < 3; i++)
            await log.AppendAsync(new WriteBatch { CreatedUtc = DateTimeOffset.UtcNow, Upserts = [new UpsertItem((10 + i).ToString(), [1, 2, 3, 4, 5, 6f + i])], Deletes = ["0"] },
                $"key-{i}", $"request-{i}", 0);

        var (exit, output, err) = await CliRunner.RunAsync("ingest", "--store", "dir:" + dir.File("store"), "--index", "shop");
        Assert.True(exit == 0, err);
        Assert.Contains("batches 1–3: 3 upserts, 4 rows removed → version v", output); // 3 replaced rows and row 0
        var again = await CliRunner.RunAsync("ingest", "--store", "dir:" + dir.File("store"), "--index", "shop");
        Assert.Contains("nothing past the watermark", again.Out);
        var m = await new IndexStore(new FolderBlobStore(dir.File("store")), "shop").OpenCurrentAsync();
        Assert.Equal(3, m.IndexedSequence);
        Assert.Equal(199, m.Count);

        var gc = await CliRunner.RunAsync("gc", "--store", "dir:" + dir.File("store"), "--index", "shop", "--keep", "0", "--grace", "0", "--log");
        Assert.True(gc.Exit == 0, gc.Err);
        Assert.Contains("write log: deleted 2 batch(es) at or below sequence 3", gc.Out);
        Assert.Null(await log.TryReadBatchAsync(2));
        Assert.NotNull(await log.TryReadBatchAsync(3));
        // Key records younger than the retention stay, so a retry in that window still gets its first answer.
        Assert.Contains("idempotency keys: deleted 0 record(s) of requests at or below sequence 3 older than --key-retention 1d", gc.Out);
        Assert.Equal(3, await CountKeyRecords(log));
        var retried = await log.AppendAsync(new WriteBatch { CreatedUtc = DateTimeOffset.UtcNow, Deletes = ["1"] }, "key-1", "request-1", 0);
        Assert.Equal((2L, true), (retried.Sequence, retried.Replayed));

        var keysGc = await CliRunner.RunAsync("gc", "--store", "dir:" + dir.File("store"), "--index", "shop", "--keep", "0", "--grace", "0", "--log", "--key-retention", "0");
        Assert.True(keysGc.Exit == 0, keysGc.Err);
        Assert.Contains("idempotency keys: deleted 3 record(s) of requests at or below sequence 3 older than --key-retention 0", keysGc.Out);
        // Accepted, but said on stderr (after the grace warning); the default retention says nothing there.
        Assert.Equal([Squash.Cli.Commands.GcCommand.ShortGraceWarning(TimeSpan.Zero),
            "warning: --key-retention 0 is below 1h: a request sent again with the same Idempotency-Key after its record is deleted is applied a second time"],
            keysGc.Err.ReplaceLineEndings("\n").TrimEnd('\n').Split('\n'));
        Assert.DoesNotContain("--key-retention", gc.Err);
        Assert.Equal(0, await CountKeyRecords(log));
        // Past the retention a retry is a new request: it lands after the end of the log.
        var late = await log.AppendAsync(new WriteBatch { CreatedUtc = DateTimeOffset.UtcNow, Deletes = ["1"] }, "key-1", "request-1", 0);
        Assert.Equal((4L, false), (late.Sequence, late.Replayed));

        var badRetention = await CliRunner.RunAsync("gc", "--store", "dir:" + dir.File("store"), "--index", "shop", "--log", "--key-retention", "a day");
        Assert.Equal(1, badRetention.Exit);
        Assert.Equal("error: --key-retention must be a duration such as 30s, 15m, 1h, 1h30m or 0, got 'a day'", badRetention.Err.Trim());

        var noStore = await CliRunner.RunAsync("ingest", "--index", "shop");
        Assert.Equal(1, noStore.Exit);
        Assert.Equal("error: --store is required: the write log lives beside the index's versions in a store (dir:PATH or azure:…)", noStore.Err.Trim());
    }

    /// <summary>
    /// A build takes the index's write log again on top of its rows, so a build whose vectors have another dimension, or
    /// whose rows have ids where the log's writes name rows by number, would leave every later ingest failing: it is
    /// refused before the build, naming the conflict and the way out, and the index stays as it was. A build of the
    /// same shape still publishes, and ingest applies the log on top of it.
    /// </summary>
    /// <summary>
    /// A `squash ingest` killed mid-run leaves its lease held (2 minutes); a retry before it expires applies nothing, and says
    /// until when rather than only that another ingest is applying the log.
    /// </summary>
    [Fact]
    public async Task IngestTurnedAwayByALeaseAKilledRunLeftSaysWhenToRunAgainAndThenApplies()
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(200, 6, 5));
        var store = "dir:" + dir.File("store");
        Assert.Equal(0, (await CliRunner.RunAsync("build", "--store", store, "--index", "shop", "--vectors", vectors, "--partitions", "4")).Exit);
        var blobs = new FolderBlobStore(dir.File("store"));
        await new WriteLog(blobs, "shop").AppendAsync(new WriteBatch { CreatedUtc = DateTimeOffset.UtcNow, Upserts = [new UpsertItem("7", [1, 2, 3, 4, 5, 6f])] }, null, "r1", 0);
        // What a killed holder leaves: the lease taken, never released.
        var killed = await IngestLease.TryAcquireAsync(blobs, "shop", TimeSpan.FromMinutes(2));
        Assert.NotNull(killed);
        var until = (await IngestLease.HeldUntilAsync(blobs, "shop"))!.Value.UtcDateTime.ToString("HH:mm:ss", System.Globalization.CultureInfo.InvariantCulture);

        var turned = await CliRunner.RunAsync("ingest", "--store", store, "--index", "shop");
        Assert.True(turned.Exit == 0, turned.Err);
        Assert.Equal($"another ingest holds the lease of 'shop' until {until} UTC; it is applying the log (if that process was stopped, nothing is: run this again after {until} UTC)",
            turned.Out.Trim());
        Assert.Equal(0, (await new IndexStore(blobs, "shop").OpenCurrentAsync()).IndexedSequence);

        await killed.ReleaseAsync(); // as its expiry would
        var retried = await CliRunner.RunAsync("ingest", "--store", store, "--index", "shop");
        Assert.Contains("batches 1–1: 1 upserts", retried.Out);
        Assert.Equal(1, (await new IndexStore(blobs, "shop").OpenCurrentAsync()).IndexedSequence);
    }

    [Fact]
    public async Task ABuildOverAWriteLogOfAnotherDimensionOrIdModeIsRefusedNamingTheConflict()
    {
        using var dir = new TempDir();
        string store = "dir:" + dir.File("store");
        var six = dir.Fvecs("six.fvecs", TempDir.Random(200, 6, 3));
        var eight = dir.Fvecs("eight.fvecs", TempDir.Random(200, 8, 4));
        var withIds = dir.File("ids.jsonl");
        await File.WriteAllLinesAsync(withIds, Enumerable.Range(0, 200).Select(i => $"{{\"id\":\"sku-{i}\",\"attributes\":{{\"n\":{i}}}}}"));
        async Task<(int Exit, string Out, string Err)> Build(string index, params string[] more) =>
            await CliRunner.RunAsync(["build", "--store", store, "--index", index, "--partitions", "4", "--no-calibration", .. more]);

        // An index without writes may be rebuilt in any shape.
        Assert.Equal(0, (await Build("quiet", "--vectors", six)).Exit);
        var rebuilt = await Build("quiet", "--vectors", eight, "--attributes", withIds);
        Assert.True(rebuilt.Exit == 0, rebuilt.Err);

        Assert.Equal(0, (await Build("shop", "--vectors", six)).Exit);
        var blobs = new FolderBlobStore(dir.File("store"));
        var built = (await new IndexStore(blobs, "shop").GetCurrentAsync())!.Value.Version;
        var log = new WriteLog(blobs, "shop");
        await log.AppendAsync(new WriteBatch { CreatedUtc = DateTimeOffset.UtcNow, Upserts = [new UpsertItem("17", [1, 2, 3, 4, 5, 6])] }, null, "request-0", 0);

        string Refusal(string differences) =>
            $"index 'shop' has writes in its write-ahead log (through sequence 1) made against version {built}, which has {differences}: " +
            "a build takes the whole log again on top of its rows, and ingest could not apply those writes as they were made; build into another index, " +
            "or, if those writes are no longer wanted, delete the index's log (the blobs under 'shop/log/') first";
        async Task Refused(string differences, params string[] flags)
        {
            var (exit, _, err) = await Build("shop", flags);
            Assert.True(exit == 1, $"exit {exit}: {err}");
            Assert.Equal("error: " + Refusal(differences), err.Split('\n', StringSplitOptions.RemoveEmptyEntries)[^1].TrimEnd('\r'));
        }
        await Refused("6 dimensions where this build has 8", "--vectors", eight);
        await Refused("rows named by number where this build has string ids", "--vectors", six, "--attributes", withIds);
        await Refused("6 dimensions where this build has 8 and rows named by number where this build has string ids", "--vectors", eight, "--attributes", withIds);
        Assert.Equal(built, (await new IndexStore(blobs, "shop").GetCurrentAsync())!.Value.Version);

        var same = await Build("shop", "--vectors", six);
        Assert.True(same.Exit == 0, same.Err);
        var ingest = await CliRunner.RunAsync("ingest", "--store", store, "--index", "shop");
        Assert.True(ingest.Exit == 0, ingest.Err);
        Assert.Equal(1, (await new IndexStore(blobs, "shop").OpenCurrentAsync()).IndexedSequence);
    }

    [Fact]
    public async Task RebuildDueMessageDoesNotSayMoreRowsChangedThanTheIndexHolds()
    {
        // deleteWhere {} removes all 300 rows and 20 upserts refill rows 0–19: 300 rows changed, and the index holds 20.
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(300, 6, 5));
        var build = await CliRunner.RunAsync("build", "--store", "dir:" + dir.File("store"), "--index", "shop", "--vectors", vectors, "--partitions", "4", "--no-calibration");
        Assert.True(build.Exit == 0, build.Err);
        var log = new WriteLog(new FolderBlobStore(dir.File("store")), "shop");
        await log.AppendAsync(new WriteBatch
        {
            CreatedUtc = DateTimeOffset.UtcNow,
            DeleteWhere = System.Text.Json.JsonDocument.Parse("{}").RootElement.Clone(),
            Upserts = Enumerable.Range(0, 20).Select(i => new UpsertItem(i.ToString(), [1, 2, 3, 4, 5, 6f + i])).ToArray(),
        }, "key-all", "request-all", 0);

        var (exit, output, err) = await CliRunner.RunAsync("ingest", "--store", "dir:" + dir.File("store"), "--index", "shop");
        Assert.True(exit == 0, err);
        Assert.Contains("300 rows changed (written or removed) since the index was built, against the 20 it holds now (rebuild share 0.5): "
            + "a full rebuild is due", output);
        Assert.DoesNotContain("300 of 20", output);
    }

    private static async Task<int> CountKeyRecords(WriteLog log)
    {
        int n = 0;
        await foreach (var _ in log.Blobs.ListAsync(log.KeyPrefix)) n++;
        return n;
    }
}
