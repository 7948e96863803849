using Squash.Index.Build;
using Squash.Index.Format;

namespace Squash.Storage.Tests;

public sealed class ResilientBlobStoreTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-resilient-" + Guid.NewGuid().ToString("N"));
    private readonly FaultInjectingBlobStore _faulty;
    private readonly ResilientBlobStore _store;

    // Tiny delays keep the tests fast; the behaviour does not depend on the sizes.
    private static readonly ResilienceOptions Fast = new()
    {
        MaxAttempts = 3,
        AttemptTimeout = TimeSpan.FromSeconds(1), // generous: a slow shared CI machine must not turn a normal call into a retry
        BaseDelay = TimeSpan.FromMilliseconds(1),
        MaxDelay = TimeSpan.FromMilliseconds(5),
    };

    public ResilientBlobStoreTests()
    {
        _faulty = new FaultInjectingBlobStore(new FolderBlobStore(_root));
        _store = new ResilientBlobStore(_faulty, Fast);
    }

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    private static byte[] Bytes(int n)
    {
        var b = new byte[n];
        new Random(n).NextBytes(b);
        return b;
    }

    [Fact]
    public async Task TransientErrorsAreRetriedAndTheDataIsRight()
    {
        var data = Bytes(5000);
        _faulty.FailNext = 2;
        await _store.WriteAsync("a", data, WriteCondition.IfNotExists);
        Assert.Equal(3, _faulty.Calls);
        _faulty.FailNext = 2;
        Assert.Equal(data, await _store.ReadAllAsync("a"));
        _faulty.FailNext = 1;
        Assert.Equal(data[100..200], await _store.ReadRangeAsync("a", 100, 100));
        _faulty.FailNext = 2;
        Assert.Equal(5000, (await _store.GetInfoAsync("a"))!.Length);
        _faulty.FailNext = 2;
        var listed = new List<string>();
        await foreach (var b in _store.ListAsync("")) listed.Add(b.Name);
        Assert.Equal(new[] { "a" }, listed);
    }

    [Fact]
    public async Task AHungCallTimesOutAndIsRetried()
    {
        var data = Bytes(100);
        await _store.WriteAsync("h", data, WriteCondition.Overwrite);
        _faulty.HangNext = 2;
        var before = _faulty.Calls;
        Assert.Equal(data, await _store.ReadAllAsync("h"));
        Assert.Equal(3, _faulty.Calls - before);
    }

    [Fact]
    public async Task ATryThatMovesMoreBytesGetsLongerBeforeItIsCancelled()
    {
        // 0.5 s a try, plus 1 s per 500 bytes moved: a 3,000-byte write may take 6.5 s, a whole read of unknown size 0.5 s
        // (margins of seconds either side of the 2.5 s a slow call takes, for a machine busy with another copy of the suite).
        var store = new ResilientBlobStore(_faulty, Fast with { AttemptTimeout = TimeSpan.FromMilliseconds(500), SlowestBytesPerSecond = 500 });
        Assert.Equal(TimeSpan.FromMilliseconds(6500), store.Options.AttemptTimeoutFor(3000));
        var data = Bytes(3000);
        _faulty.SlowBy = TimeSpan.FromMilliseconds(2500);

        _faulty.SlowNext = 1;
        var before = _faulty.Calls;
        await store.WriteAsync("slow", data, WriteCondition.IfNotExists);
        Assert.Equal(1, _faulty.Calls - before); // slow but within its budget: not cancelled and tried again

        _faulty.SlowNext = 1;
        before = _faulty.Calls;
        Assert.Equal(data[..2000], await store.ReadRangeAsync("slow", 0, 2000));
        Assert.Equal(1, _faulty.Calls - before);

        _faulty.SlowNext = 1;
        before = _faulty.Calls;
        Assert.Equal(data, await store.ReadAllAsync("slow"));
        Assert.Equal(2, _faulty.Calls - before); // size unknown: the plain timeout cancelled the slow try
    }

    [Fact]
    public async Task ATruncatedRangedReadIsDetectedAndRetried()
    {
        var data = Bytes(4000);
        await _store.WriteAsync("t", data, WriteCondition.Overwrite);
        _faulty.TruncateNext = 1;
        Assert.Equal(data[1000..3000], await _store.ReadRangeAsync("t", 1000, 2000));
    }

    [Fact]
    public async Task ExhaustedRetriesGiveOneClearErrorNamingTheBlobAndOperation()
    {
        await _store.WriteAsync("versions/v1/p0.codes.seg", Bytes(10), WriteCondition.Overwrite);
        _faulty.FailNext = 100;
        var before = _faulty.Calls;
        var e = await Assert.ThrowsAsync<IOException>(() => _store.ReadAllAsync("versions/v1/p0.codes.seg"));
        Assert.Equal(3, _faulty.Calls - before);
        Assert.Contains("read of blob 'versions/v1/p0.codes.seg'", e.Message);
        Assert.Contains("after 3 attempt", e.Message);
        Assert.Contains(_store.Description, e.Message);

        _faulty.FailNext = 0;
        _faulty.HangNext = 100;
        var t = await Assert.ThrowsAsync<IOException>(() => _store.ReadRangeAsync("versions/v1/p0.codes.seg", 0, 5));
        Assert.Contains("ranged read (0+5) of blob 'versions/v1/p0.codes.seg'", t.Message);
        _faulty.HangNext = 0;
    }

    [Fact]
    public async Task ConditionFailuresNotFoundAndBadRangesAreNeverRetried()
    {
        await _store.WriteAsync("c", Bytes(10), WriteCondition.IfNotExists);
        int before = _faulty.Calls;
        await Assert.ThrowsAsync<BlobConditionFailedException>(() => _store.WriteAsync("c", Bytes(10), WriteCondition.IfNotExists));
        await Assert.ThrowsAsync<BlobConditionFailedException>(() => _store.WriteAsync("c", Bytes(10), WriteCondition.IfMatch("\"nope\"")));
        await Assert.ThrowsAsync<BlobNotFoundException>(() => _store.ReadAllAsync("missing"));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => _store.ReadRangeAsync("c", 5, 10));
        Assert.Equal(4, _faulty.Calls - before);
    }

    [Fact]
    public async Task AConditionalWriteWhoseAnswerWasLostCountsAsDoneOnlyIfTheBlobHoldsOurBytes()
    {
        var data = Bytes(300);
        _faulty.LoseAnswerNext = 1;
        var created = await _store.WriteAsync("lost", data, WriteCondition.IfNotExists);
        Assert.Equal(300, created.Length);
        Assert.Equal(data, await _store.ReadAllAsync("lost"));

        var next = Bytes(301);
        _faulty.LoseAnswerNext = 1;
        var swapped = await _store.WriteAsync("lost", next, WriteCondition.IfMatch(created.ETag));
        Assert.NotEqual(created.ETag, swapped.ETag);

        // Someone else's bytes under the name: a real conflict, still reported.
        await Assert.ThrowsAsync<BlobConditionFailedException>(() => _store.WriteAsync("lost", data, WriteCondition.IfNotExists));
        // A store that answers properly never gets the read-back.
        await _store.WriteAsync("other", data, WriteCondition.Overwrite);
        int before = _faulty.Calls;
        await Assert.ThrowsAsync<BlobConditionFailedException>(() => _store.WriteAsync("other", data, WriteCondition.IfNotExists));
        Assert.Equal(1, _faulty.Calls - before);
    }

    [Fact]
    public async Task APublishSurvivesLostAnswers()
    {
        var index = new IndexStore(_store, "idx");
        _faulty.LoseAnswerNext = 100; // every write's first answer is lost: each one is retried and read back
        var m = await IndexPublisher.BuildAndPublishAsync(index, Data(200, 4, 2), 200, 4, new IndexBuildOptions { Partitions = 2 });
        _faulty.LoseAnswerNext = 0;
        Assert.Equal(m.Version, (await index.OpenCurrentAsync()).Version);
    }

    [Fact]
    public async Task TheCallersCancellationIsNotRetried()
    {
        await _store.WriteAsync("x", Bytes(10), WriteCondition.Overwrite);
        _faulty.HangNext = 1;
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(50));
        var store = new ResilientBlobStore(_faulty, Fast with { AttemptTimeout = TimeSpan.FromSeconds(30) });
        int before = _faulty.Calls;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => store.ReadAllAsync("x", cts.Token));
        Assert.Equal(1, _faulty.Calls - before);
    }

    [Fact]
    public async Task TheTotalTimeoutBoundsAllTriesTogether()
    {
        await _store.WriteAsync("slow", Bytes(10), WriteCondition.Overwrite);
        // Every try hangs; alone, 100 tries of 30 s each would take 50 minutes.
        var bounded = new ResilientBlobStore(_faulty, Fast with { MaxAttempts = 100, AttemptTimeout = TimeSpan.FromSeconds(30), TotalTimeout = TimeSpan.FromMilliseconds(300) });
        _faulty.HangNext = 1000;
        int before = _faulty.Calls;
        var e = await Assert.ThrowsAsync<IOException>(() => bounded.ReadAllAsync("slow"));
        _faulty.HangNext = 0;
        Assert.Equal(1, _faulty.Calls - before);
        Assert.Contains("after 1 attempt(s)", e.Message);
    }

    [Fact]
    public void TheTotalTimeoutComesFromTheEnvironment()
    {
        Assert.Null(ResilienceOptions.FromEnvironment(_ => null).TotalTimeout);
        Assert.Equal(TimeSpan.FromSeconds(90), ResilienceOptions.FromEnvironment(v => v == "SQUASH_STORAGE_TIMEOUT" ? "1m30s" : null).TotalTimeout);
        var e = Assert.Throws<ArgumentException>(() => ResilienceOptions.FromEnvironment(_ => "soon"));
        Assert.Equal("SQUASH_STORAGE_TIMEOUT must be a positive duration such as 10s or 2m, got 'soon'", e.Message);
        Assert.Throws<ArgumentException>(() => ResilienceOptions.FromEnvironment(_ => "0"));
    }

    [Fact]
    public void TransientClassificationFollowsTheStatusCodes()
    {
        Assert.True(ResilientBlobStore.IsTransient(new Azure.RequestFailedException(503, "x")));
        Assert.True(ResilientBlobStore.IsTransient(new Azure.RequestFailedException(429, "x")));
        Assert.True(ResilientBlobStore.IsTransient(new Azure.RequestFailedException(408, "x")));
        Assert.True(ResilientBlobStore.IsTransient(new HttpRequestException("reset")));
        Assert.True(ResilientBlobStore.IsTransient(new TimeoutException()));
        Assert.False(ResilientBlobStore.IsTransient(new Azure.RequestFailedException(403, "x")));
        Assert.False(ResilientBlobStore.IsTransient(new Azure.RequestFailedException(412, "x")));
        Assert.False(ResilientBlobStore.IsTransient(new BlobNotFoundException("b")));
        Assert.False(ResilientBlobStore.IsTransient(new CorruptIndexException("c")));
    }

    private static float[] Data(int n, int d, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n * d).Select(_ => (float)rng.NextDouble()).ToArray();
    }

    [Fact]
    public async Task AnIndexReadsBackCorrectlyThroughTransientFaults()
    {
        var index = new IndexStore(_store, "idx");
        var m = await IndexPublisher.BuildAndPublishAsync(index, Data(300, 5, 1), 300, 5, new IndexBuildOptions { Partitions = 3 });
        var clean = new IndexStore(new FolderBlobStore(_root), "idx");
        _faulty.FailNext = 2;
        var opened = await index.OpenCurrentAsync();
        Assert.Equal(m.Version, opened.Version);
        _faulty.FailNext = 2;
        var codes = await index.ReadCodesAsync(opened, opened.Partitions[1]);
        var expected = await clean.ReadCodesAsync(opened, opened.Partitions[1]);
        Assert.Equal(expected.Count, codes.Count);
    }

    [Fact]
    public async Task ATruncatedWholeReadOfASegmentIsACorruptIndexErrorNamingIt()
    {
        var index = new IndexStore(_store, "idx");
        var m = await IndexPublisher.BuildAndPublishAsync(index, Data(300, 5, 1), 300, 5, new IndexBuildOptions { Partitions = 3 });
        foreach (var p in m.Partitions)
        {
            _faulty.TruncateNext = 1;
            var e = await Assert.ThrowsAsync<CorruptIndexException>(() => index.ReadCodesAsync(m, p));
            Assert.Contains(p.Codes.Name, e.Message);
            _faulty.TruncateNext = 1;
            var v = await Assert.ThrowsAsync<CorruptIndexException>(() => index.ReadVectorsAsync(m, p));
            Assert.Contains(p.Vectors.Name, v.Message);
        }
        _faulty.TruncateNext = 1;
        var r = await Assert.ThrowsAsync<CorruptIndexException>(() => index.ReadRoutingAsync(m));
        Assert.Contains(m.Routing.Name, r.Message);
        _faulty.TruncateNext = 1;
        await Assert.ThrowsAsync<CorruptIndexException>(() => index.ReadManifestAsync(m.Version));
    }
}
