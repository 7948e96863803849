using Squash.Storage.Writes;

namespace Squash.Storage.Tests;

/// <summary>
/// The write-ahead log: concurrent writers claim dense, distinct sequences and never overwrite each other; an
/// Idempotency-Key is applied once however the retries interleave, and a retry finds an earlier attempt's batch
/// without reading the log from its start. Run on a folder and on Azurite, with separate store instances per writer
/// (as separate processes would have them).
/// </summary>
public sealed class WriteLogTests : IAsyncLifetime
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-log-" + Guid.NewGuid().ToString("N"));
    private readonly string _container = "log-" + Guid.NewGuid().ToString("N")[..16];
    private bool _usedAzure;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (_usedAzure) await new AzureBlobStore(Azurite.ConnectionString, _container).Container.DeleteIfExistsAsync();
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    private IBlobStore Store(string kind)
    {
        if (kind != "azure") return new FolderBlobStore(_root);
        _usedAzure = true;
        return new ResilientBlobStore(new AzureBlobStore(Azurite.ConnectionString, _container));
    }

    private WriteLog Log(string kind) => new(Store(kind), "products");

    private static WriteBatch Upsert(string id, float x) => new() { Upserts = [new UpsertItem(id, [x, 1, 2])] };

    [Theory]
    [InlineData("folder")]
    [InlineData("azure")]
    public async Task ConcurrentWritersGetDenseDistinctSequencesAndEveryBatchSurvives(string kind)
    {
        const int writers = 6, each = 8;
        var results = await Task.WhenAll(Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
        {
            var log = Log(kind);
            var mine = new List<(long Sequence, string Id)>();
            for (int i = 0; i < each; i++)
            {
                var id = $"w{w}-{i}";
                var r = await log.AppendAsync(Upsert(id, w), null, "h", 0);
                Assert.False(r.Replayed);
                mine.Add((r.Sequence, id));
            }
            return mine;
        })));
        var all = results.SelectMany(r => r).ToList();
        Assert.Equal(Enumerable.Range(1, writers * each).Select(i => (long)i), all.Select(a => a.Sequence).Order());
        var log = Log(kind);
        Assert.Equal(writers * each, await log.LatestSequenceAsync());
        // Each sequence holds the batch its writer was told it holds: nobody overwrote anybody.
        foreach (var (sequence, id) in all)
            Assert.Equal(id, (await log.TryReadBatchAsync(sequence))!.Upserts![0].Id);
        // Every writer's own sequences ascend: a writer never goes back.
        foreach (var mine in results) Assert.Equal(mine.Select(m => m.Sequence).Order(), mine.Select(m => m.Sequence));
    }

    [Theory]
    [InlineData("folder")]
    [InlineData("azure")]
    public async Task WritersInOneProcessShareOneStoreAndNeverRaceEachOtherForASequence(string kind)
    {
        // Another process (its own store object) appended first, and appends again while these writers run.
        var other = Log(kind);
        await other.AppendAsync(Upsert("other", 0), null, "h", 0);
        var counting = new CountingStore(Store(kind));
        const int writers = 8, each = 6;
        var results = await Task.WhenAll(Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
        {
            var mine = new List<(long Sequence, string Id)>();
            for (int i = 0; i < each; i++)
            {
                var id = $"w{w}-{i}";
                // A new WriteLog per request, as the vectors function makes one: the claims are shared through the store object.
                mine.Add(((await new WriteLog(counting, "products").AppendAsync(Upsert(id, w), null, "h", 0)).Sequence, id));
            }
            return mine;
        })).Append(Task.Run(async () =>
        {
            var mine = new List<(long Sequence, string Id)>();
            for (int i = 1; i <= 4; i++) mine.Add(((await other.AppendAsync(Upsert($"other-{i}", i), null, "h", 0)).Sequence, $"other-{i}"));
            return mine;
        })));
        var all = results.SelectMany(r => r).Append((Sequence: 1L, Id: "other")).ToList();
        Assert.Equal(Enumerable.Range(1, writers * each + 5).Select(i => (long)i), all.Select(a => a.Sequence).Order());
        var log = Log(kind);
        Assert.Equal(writers * each + 5, await log.LatestSequenceAsync());
        foreach (var (sequence, id) in all)
            Assert.Equal(id, (await log.TryReadBatchAsync(sequence))!.Upserts![0].Id);
        // Only the other process can take a sequence from under this one's writers: at most one lost write per batch it wrote.
        Assert.InRange(counting.LostCreates, 0, 4);
        // Past the first claim, a claim probes the end only after losing a race: a few existence checks, not several per write.
        Assert.InRange(counting.InfoChecks, 1, 10 + 10 * counting.LostCreates);
    }

    [Theory]
    [InlineData("folder")]
    [InlineData("azure")]
    public async Task TheEndIsFoundFromAStaleHintOrNone(string kind)
    {
        var log = Log(kind);
        for (int i = 0; i < 37; i++) await log.AppendAsync(Upsert("a", i), null, "h", 0);
        var store = Store(kind);
        await store.WriteAsync("products/log/head", "{\"sequence\":3}"u8.ToArray(), WriteCondition.Overwrite);
        Assert.Equal(37, await new WriteLog(store, "products").LatestSequenceAsync());
        await store.DeleteAsync("products/log/head");
        Assert.Equal(37, await new WriteLog(store, "products").LatestSequenceAsync());
        await store.WriteAsync("products/log/head", "not json"u8.ToArray(), WriteCondition.Overwrite);
        Assert.Equal(37, await new WriteLog(store, "products").LatestSequenceAsync(knownSequence: 20));
        // An empty log of another index.
        Assert.Equal(0, await new WriteLog(store, "other").LatestSequenceAsync());
    }

    /// <summary>
    /// A hint past the real end (a damaged or hand-written <c>log/head</c>) is not trusted: the end is found from the
    /// newest batch listed, also when gc removed the oldest batches (no probe from 0), and the next append takes the
    /// sequence after the real end, not one past the hint (which left a gap ingest could never pass).
    /// </summary>
    [Theory]
    [InlineData("folder")]
    [InlineData("azure")]
    public async Task AHintPastTheEndIsIgnoredAndTheEndFoundFromTheListedBatches(string kind)
    {
        var log = Log(kind);
        for (int i = 0; i < 6; i++) await log.AppendAsync(Upsert("a", i), null, "h", 0);
        Assert.Equal(3, await log.DeleteBatchesThroughAsync(3));
        var store = Store(kind);
        foreach (var hint in new[] { "999999999", "5000000000000", "9223372036854775807" })
        {
            await store.WriteAsync("products/log/head", System.Text.Encoding.UTF8.GetBytes($"{{\"sequence\":{hint}}}"), WriteCondition.Overwrite);
            Assert.Equal(6, await new WriteLog(store, "products").LatestSequenceAsync());
            Assert.Equal(6, await new WriteLog(store, "products").LatestSequenceAsync(knownSequence: 4));
        }
        Assert.Equal(7, (await new WriteLog(store, "products").AppendAsync(Upsert("b", 7), null, "h", 0)).Sequence);
        // The append wrote a true hint again, and the log is dense.
        Assert.Equal(7, await new WriteLog(store, "products").LatestSequenceAsync());
        Assert.NotNull(await log.TryReadBatchAsync(7));
        // A hint past the end of an empty log.
        await store.WriteAsync("other/log/head", "{\"sequence\":999999999}"u8.ToArray(), WriteCondition.Overwrite);
        Assert.Equal(0, await new WriteLog(store, "other").LatestSequenceAsync());
    }

    [Theory]
    [InlineData("folder")]
    [InlineData("azure")]
    public async Task ARetryWithTheSameKeyIsAppliedOnceAndAReusedKeyIsAConflict(string kind)
    {
        var log = Log(kind);
        await log.AppendAsync(Upsert("before", 0), null, "h0", 0);
        var first = await log.AppendAsync(Upsert("x", 1), "key-1", "hash-a", 0);
        Assert.Equal(new WriteLog.AppendResult(2, false), first);
        await log.AppendAsync(Upsert("between", 0), null, "h0", 0);
        Assert.Equal(new WriteLog.AppendResult(2, true), await Log(kind).AppendAsync(Upsert("x", 1), "key-1", "hash-a", 0));
        Assert.Equal(3, await log.LatestSequenceAsync());
        var conflict = await Assert.ThrowsAsync<WriteKeyConflictException>(() => log.AppendAsync(Upsert("y", 1), "key-1", "hash-b", 0));
        Assert.Equal("Idempotency-Key 'key-1' was first used for a different request (sequence 2)", conflict.Message);
        Assert.True(await log.CountsAsync((await log.TryReadBatchAsync(2))!, 2));
    }

    [Theory]
    [InlineData("folder")]
    [InlineData("azure")]
    public async Task ARetryAfterAWriterStoppedBetweenItsBatchAndItsRecordFindsTheBatch(string kind)
    {
        var log = Log(kind);
        for (int i = 0; i < 5; i++) await log.AppendAsync(Upsert("old", i), null, "h", 0);
        // The first attempt created its record and wrote its batch at 6, then died before settling the record; two
        // other writers appended after it.
        var hash = WriteLog.HashKey("retry-me");
        var store = Store(kind);
        await store.WriteAsync(log.KeyName(hash), System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(
            new KeyRecord("req", 5, null, DateTimeOffset.UtcNow)), WriteCondition.IfNotExists);
        await store.WriteAsync(log.BatchName(6), (Upsert("k", 9) with { KeyHash = hash }).ToJson(), WriteCondition.IfNotExists);
        await log.AppendAsync(Upsert("after", 1), null, "h", 0);
        await log.AppendAsync(Upsert("after", 2), null, "h", 0);

        // Reads below the record's From would mean the retry scanned the log from its start.
        var counting = new CountingStore(Store(kind));
        var retry = await new WriteLog(counting, "products").AppendAsync(Upsert("k", 9), "retry-me", "req", 0);
        Assert.Equal(new WriteLog.AppendResult(6, true), retry);
        Assert.DoesNotContain(counting.Reads, n => n.StartsWith("products/log/batches/", StringComparison.Ordinal) && n.CompareTo(log.BatchName(6)) < 0);
        Assert.Equal(8, await log.LatestSequenceAsync());
        Assert.Equal(6, (await log.ReadKeyAsync(hash, default))!.Value.Record.Sequence);
    }

    [Theory]
    [InlineData("folder")]
    [InlineData("azure")]
    public async Task ConcurrentAttemptsWithOneKeyAgreeOnOneSequenceAndOnlyThatBatchCounts(string kind)
    {
        var log = Log(kind);
        await log.AppendAsync(Upsert("old", 0), null, "h", 0);
        var answers = await Task.WhenAll(Enumerable.Range(0, 6).Select(_ => Task.Run(() => Log(kind).AppendAsync(Upsert("same", 5), "one-key", "req", 0))));
        long chosen = answers[0].Sequence;
        Assert.All(answers, a => Assert.Equal(chosen, a.Sequence));
        // However many attempts landed a batch, a reader in sequence order counts exactly one of them: the chosen one.
        long latest = await log.LatestSequenceAsync();
        var counted = new List<long>();
        for (long s = 1; s <= latest; s++)
        {
            var batch = (await log.TryReadBatchAsync(s))!;
            if (batch.KeyHash is not null && await log.CountsAsync(batch, s)) counted.Add(s);
        }
        Assert.Equal([chosen], counted);
    }

    [Theory]
    [InlineData("folder")]
    [InlineData("azure")]
    public async Task AReaderSettlesAnUnrecordedBatchSoALaterRetryAgreesWithIt(string kind)
    {
        var log = Log(kind);
        var hash = WriteLog.HashKey("k");
        var store = Store(kind);
        await store.WriteAsync(log.KeyName(hash), System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(new KeyRecord("req", 0, null, DateTimeOffset.UtcNow)), WriteCondition.IfNotExists);
        await store.WriteAsync(log.BatchName(1), (Upsert("k", 1) with { KeyHash = hash }).ToJson(), WriteCondition.IfNotExists);
        // A second landed attempt at 2 (its writer also died before settling).
        await store.WriteAsync(log.BatchName(2), (Upsert("k", 1) with { KeyHash = hash }).ToJson(), WriteCondition.IfNotExists);
        Assert.True(await log.CountsAsync((await log.TryReadBatchAsync(1))!, 1));
        Assert.False(await log.CountsAsync((await log.TryReadBatchAsync(2))!, 2));
        Assert.Equal(new WriteLog.AppendResult(1, true), await log.AppendAsync(Upsert("k", 1), "k", "req", 0));
        Assert.Equal(2, await log.LatestSequenceAsync());
    }

    [Theory]
    [InlineData("folder")]
    [InlineData("azure")]
    public async Task KeyGcDeletesOnlySettledRecordsAtOrBelowTheBoundAndOlderThanTheCutoff(string kind)
    {
        var log = Log(kind);
        for (int i = 1; i <= 3; i++) Assert.Equal(i, (await log.AppendAsync(Upsert("k", i), $"key-{i}", $"req-{i}", 0)).Sequence);
        // A writer that created its record and stopped before its batch: the record is never settled.
        var unsettled = WriteLog.HashKey("stopped");
        await Store(kind).WriteAsync(log.KeyName(unsettled), System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(
            new KeyRecord("req", 3, null, DateTimeOffset.UtcNow)), WriteCondition.IfNotExists);

        Assert.Equal(0, await log.DeleteSettledKeysAsync(3, DateTimeOffset.UtcNow.AddHours(-1))); // all younger than the cutoff
        var later = DateTimeOffset.UtcNow.AddMinutes(1);
        Assert.Equal(2, await log.DeleteSettledKeysAsync(2, later)); // key-3's batch is above the bound
        Assert.Null(await log.ReadKeyAsync(WriteLog.HashKey("key-1"), default));
        Assert.Null(await log.ReadKeyAsync(WriteLog.HashKey("key-2"), default));
        Assert.Equal(3, (await log.ReadKeyAsync(WriteLog.HashKey("key-3"), default))!.Value.Record.Sequence);
        Assert.NotNull(await log.ReadKeyAsync(unsettled, default));
        // A reader meeting a batch whose record was collected counts it.
        Assert.True(await log.CountsAsync((await log.TryReadBatchAsync(1))!, 1));
    }

    /// <summary>
    /// A build from files has watermark 0 and takes the log again on top of the files; once gc deleted the log's oldest
    /// batches, it takes the log from the oldest batch left. gc deletes oldest first, so one stopped halfway leaves an
    /// unbroken run of batches to the end. Above 0 the watermark is where reading starts, whatever gc did.
    /// </summary>
    [Theory]
    [InlineData("folder")]
    [InlineData("azure")]
    public async Task ABuildFromFilesReadsTheLogFromItsOldestBatchLeftAfterGc(string kind)
    {
        var log = Log(kind);
        Assert.Equal(0, await log.TailStartsAfterAsync(0));
        for (int i = 0; i < 8; i++) await log.AppendAsync(Upsert("a", i), null, "h", 0);
        Assert.Equal(0, await log.TailStartsAfterAsync(0));

        var stopping = new StopsAfterDeletes(Store(kind), 2);
        await Assert.ThrowsAsync<IOException>(() => new WriteLog(stopping, "products").DeleteBatchesThroughAsync(6));
        Assert.Equal(["products/log/batches/000000000001", "products/log/batches/000000000002"], stopping.Deleted);
        Assert.Equal(2, await log.TailStartsAfterAsync(0));
        Assert.Equal(4, await log.DeleteBatchesThroughAsync(6));
        Assert.Equal(6, await log.TailStartsAfterAsync(0));
        Assert.Equal(7, await log.TailStartsAfterAsync(7));
        Assert.Equal(3, await log.TailStartsAfterAsync(3));
    }

    /// <summary>A store whose deletes fail after the first <paramref name="deletes"/>: a gc stopped halfway.</summary>
    private sealed class StopsAfterDeletes(IBlobStore inner, int deletes) : IBlobStore
    {
        public List<string> Deleted { get; } = [];
        public string Description => inner.Description;
        public Task<byte[]> ReadAllAsync(string name, CancellationToken ct = default) => inner.ReadAllAsync(name, ct);
        public Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken ct = default) => inner.ReadRangeAsync(name, offset, length, ct);
        public Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken ct = default) => inner.WriteAsync(name, data, condition, ct);
        public Task<BlobInfo?> GetInfoAsync(string name, CancellationToken ct = default) => inner.GetInfoAsync(name, ct);
        public IAsyncEnumerable<BlobInfo> ListAsync(string prefix, CancellationToken ct = default) => inner.ListAsync(prefix, ct);
        public Task<bool> DeleteAsync(string name, CancellationToken ct = default)
        {
            if (Deleted.Count == deletes) throw new IOException("stopped");
            Deleted.Add(name);
            return inner.DeleteAsync(name, ct);
        }
    }

    /// <summary>Records the names of whole reads.</summary>
    private sealed class CountingStore(IBlobStore inner) : IBlobStore
    {
        public System.Collections.Concurrent.ConcurrentQueue<string> Reads { get; } = new();
        public string Description => inner.Description;
        public Task<byte[]> ReadAllAsync(string name, CancellationToken ct = default) { Reads.Enqueue(name); return inner.ReadAllAsync(name, ct); }
        public Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken ct = default) => inner.ReadRangeAsync(name, offset, length, ct);
        public int LostCreates => _lostCreates;
        private int _lostCreates;
        public int InfoChecks => _infoChecks;
        private int _infoChecks;
        public async Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken ct = default)
        {
            try
            {
                return await inner.WriteAsync(name, data, condition, ct);
            }
            catch (BlobConditionFailedException)
            {
                Interlocked.Increment(ref _lostCreates);
                throw;
            }
        }
        public Task<BlobInfo?> GetInfoAsync(string name, CancellationToken ct = default) { Interlocked.Increment(ref _infoChecks); return inner.GetInfoAsync(name, ct); }
        public IAsyncEnumerable<BlobInfo> ListAsync(string prefix, CancellationToken ct = default) => inner.ListAsync(prefix, ct);
        public Task<bool> DeleteAsync(string name, CancellationToken ct = default) => inner.DeleteAsync(name, ct);
    }
}
