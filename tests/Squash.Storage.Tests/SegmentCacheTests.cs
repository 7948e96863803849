namespace Squash.Storage.Tests;

public sealed class SegmentCacheTests
{
    private static SegmentKey Key(int p, CacheEntryKind kind = CacheEntryKind.Codes) => new("idx", "v000001", p, kind);

    private sealed class Blob(long size)
    {
        public long Size { get; } = size;
    }

    [Theory]
    [InlineData(CacheEvictionPolicy.Lru)]
    [InlineData(CacheEvictionPolicy.S3Fifo)]
    public async Task ManyConcurrentRequestsForOneKeyLoadItOnce(CacheEvictionPolicy policy)
    {
        var cache = new SegmentCache(new SegmentCacheOptions { CapacityBytes = 1000, Policy = policy });
        int loads = 0;
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        async Task<Blob> Load(CancellationToken ct)
        {
            Interlocked.Increment(ref loads);
            await gate.Task;
            return new Blob(100);
        }
        var callers = Enumerable.Range(0, 64)
            .Select(_ => Task.Run(() => cache.GetOrLoadAsync(Key(1), Load, b => b.Size)))
            .ToArray();
        // Let every caller arrive while the one load is still running.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (cache.Stats.Requests < 64 && DateTime.UtcNow < deadline) await Task.Delay(1);
        Assert.True(cache.Stats.Requests == 64, $"only {cache.Stats.Requests} of 64 callers reached the cache within 30 s");
        gate.SetResult();
        var results = await Task.WhenAll(callers);
        Assert.Equal(1, loads);
        Assert.All(results, r => Assert.Same(results[0], r));
        var s = cache.Stats;
        Assert.Equal((63L, 1L, 100L, 100L), (s.Hits, s.Misses, s.BytesLoaded, s.CurrentBytes));
        // And a later request is a plain hit.
        Assert.Same(results[0], await cache.GetOrLoadAsync(Key(1), Load, b => b.Size));
        Assert.Equal(1, loads);
    }

    [Fact]
    public async Task DifferentKindsOfOnePartitionAreDifferentEntries()
    {
        var cache = new SegmentCache(new SegmentCacheOptions { CapacityBytes = 1000 });
        var codes = await cache.GetOrLoadAsync(Key(3, CacheEntryKind.Codes), _ => Task.FromResult(new Blob(1)), b => b.Size);
        var vectors = await cache.GetOrLoadAsync(Key(3, CacheEntryKind.Vectors), _ => Task.FromResult(new Blob(2)), b => b.Size);
        Assert.NotSame(codes, vectors);
        var other = await cache.GetOrLoadAsync(new SegmentKey("idx", "v000002", 3, CacheEntryKind.Codes), _ => Task.FromResult(new Blob(4)), b => b.Size);
        Assert.Equal(4, other.Size);
        Assert.Equal(3, cache.Stats.Misses);
    }

    [Fact]
    public async Task AFailedLoadIsNotCachedAndEveryWaiterSeesTheError()
    {
        var cache = new SegmentCache(new SegmentCacheOptions { CapacityBytes = 1000 });
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        async Task<Blob> Failing(CancellationToken ct)
        {
            await gate.Task;
            throw new IOException("blob 'x' unreadable");
        }
        var a = cache.GetOrLoadAsync(Key(1), Failing, b => b.Size);
        var b = cache.GetOrLoadAsync(Key(1), Failing, b => b.Size);
        gate.SetResult();
        await Assert.ThrowsAsync<IOException>(() => a);
        await Assert.ThrowsAsync<IOException>(() => b);
        var ok = await cache.GetOrLoadAsync(Key(1), _ => Task.FromResult(new Blob(5)), x => x.Size);
        Assert.Equal(5, ok.Size);
        Assert.Equal(2, cache.Stats.Misses);
        Assert.Equal(5, cache.Stats.CurrentBytes);
    }

    [Fact]
    public async Task AWaiterCanStopWaitingWithoutCancellingTheLoad()
    {
        var cache = new SegmentCache(new SegmentCacheOptions { CapacityBytes = 1000 });
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        async Task<Blob> Slow(CancellationToken ct)
        {
            await gate.Task;
            return new Blob(7);
        }
        using var cts = new CancellationTokenSource();
        var first = cache.GetOrLoadAsync(Key(1), Slow, b => b.Size, cts.Token);
        var second = cache.GetOrLoadAsync(Key(1), Slow, b => b.Size);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first);
        gate.SetResult();
        Assert.Equal(7, (await second).Size);
        Assert.Equal(7, cache.Stats.CurrentBytes);
    }

    [Theory]
    [InlineData(CacheEvictionPolicy.Lru)]
    [InlineData(CacheEvictionPolicy.S3Fifo)]
    public async Task TheByteBoundHoldsUnderAStreamBiggerThanItAndTheCountersAddUp(CacheEvictionPolicy policy)
    {
        const long capacity = 10_000;
        var cache = new SegmentCache(new SegmentCacheOptions { CapacityBytes = capacity, Policy = policy });
        var rng = new Random(11);
        long requests = 0, loaded = 0;
        var sizes = Enumerable.Range(0, 200).Select(_ => (long)rng.Next(1, 1500)).ToArray();
        for (int i = 0; i < 5000; i++)
        {
            int k = rng.Next(rng.Next(2) == 0 ? 20 : 200);
            requests++;
            await cache.GetOrLoadAsync(Key(k), _ =>
            {
                loaded += sizes[k];
                return Task.FromResult(new Blob(sizes[k]));
            }, b => b.Size);
            Assert.InRange(cache.Stats.CurrentBytes, 0, capacity);
        }
        // Values bigger than the whole cache are served and not kept.
        await cache.GetOrLoadAsync(Key(999), _ => Task.FromResult(new Blob(capacity + 1)), b => b.Size);
        requests++;
        loaded += capacity + 1;
        var s = cache.Stats;
        Assert.Equal(requests, s.Hits + s.Misses);
        Assert.Equal(loaded, s.BytesLoaded);
        Assert.True(s.Evictions > 0);
        // Every miss was kept (but the oversized one), and every kept entry is resident or was evicted.
        Assert.Equal(s.Misses - 1, s.Entries + s.Evictions);
        Assert.InRange(s.CurrentBytes, 0, capacity);
        Assert.True(s.Hits > 0);
    }

    [Fact]
    public void BadOptionsAreRejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new SegmentCache(new SegmentCacheOptions { CapacityBytes = -1 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new SegmentCache(new SegmentCacheOptions { SmallQueueFraction = 1 }));
    }
}
