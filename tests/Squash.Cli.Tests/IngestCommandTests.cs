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

    private static async Task<int> CountKeyRecords(WriteLog log)
    {
        int n = 0;
        await foreach (var _ in log.Blobs.ListAsync(log.KeyPrefix)) n++;
        return n;
    }
}
