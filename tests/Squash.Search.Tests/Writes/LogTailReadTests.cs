using System.Diagnostics;
using Squash.Search.Writes;
using Squash.Storage;
using Squash.Storage.Writes;

namespace Squash.Search.Tests.Writes;

/// <summary>
/// A strong read's tail (<see cref="TailReader"/>) is read window by window: a hint past the log's end does not make it
/// read 10⁹ sequences, and a log that already has a gap below its end (a batch an earlier append put at 10⁹ after such a
/// hint) is an error naming the missing batch at once, not a list of 10⁹ sequences built first (which held a strong
/// query for minutes and gigabytes).
/// </summary>
public sealed class LogTailReadTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-tail-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    private static WriteBatch Upsert(string id, float x) => new() { CreatedUtc = DateTimeOffset.UtcNow, Upserts = [new UpsertItem(id, [x, 1, 2])] };

    [Fact]
    public async Task AHintPastTheEndOrAGapBelowItDoesNotMakeAStrongReadListEverySequence()
    {
        var store = new FolderBlobStore(_root);
        var log = new WriteLog(store, "idx");
        for (int i = 0; i < 5; i++) await log.AppendAsync(Upsert($"r{i}", i), null, "h", 0);
        await store.WriteAsync("idx/log/head", "{\"sequence\":999999999}"u8.ToArray(), WriteCondition.Overwrite);

        var clock = Stopwatch.StartNew();
        var tail = await new TailReader().ReadAsync(new WriteLog(store, "idx"), 0, null).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(5, tail.To);
        Assert.Equal(5, tail.Rows.Count);

        // A batch far past the end, as an append after such a hint wrote it before: the read stops at the gap.
        await store.WriteAsync(log.BatchName(1_000_000_000), await store.ReadAllAsync(log.BatchName(5)), WriteCondition.IfNotExists);
        await store.WriteAsync("idx/log/head", "{\"sequence\":1000000000}"u8.ToArray(), WriteCondition.Overwrite);
        var e = await Assert.ThrowsAsync<InvalidDataException>(() => new TailReader().ReadAsync(new WriteLog(store, "idx"), 0, null).WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains("log batch 6 ('idx/log/batches/000000000006') of index 'idx' is missing", e.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"took {clock.Elapsed}");
    }
}
