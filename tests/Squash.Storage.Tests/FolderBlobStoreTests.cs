namespace Squash.Storage.Tests;

public sealed class FolderBlobStoreTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-store-" + Guid.NewGuid().ToString("N"));
    private readonly FolderBlobStore _store;

    public FolderBlobStoreTests() => _store = new FolderBlobStore(_root);

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    [Fact]
    public async Task WritesReadsWholeAndRangesIncludingTheEnds()
    {
        var data = Enumerable.Range(0, 1000).Select(i => (byte)i).ToArray();
        await _store.WriteAsync("a/b.seg", data, WriteCondition.Overwrite);
        Assert.Equal(data, await _store.ReadAllAsync("a/b.seg"));
        Assert.Equal(data[..10], await _store.ReadRangeAsync("a/b.seg", 0, 10));
        Assert.Equal(data[990..], await _store.ReadRangeAsync("a/b.seg", 990, 10));
        Assert.Empty(await _store.ReadRangeAsync("a/b.seg", 1000, 0));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => _store.ReadRangeAsync("a/b.seg", 995, 10));
        await Assert.ThrowsAsync<BlobNotFoundException>(() => _store.ReadAllAsync("missing"));
    }

    [Fact]
    public async Task ConditionalWritesFailWhenTheyMust()
    {
        var first = await _store.WriteAsync("p", new byte[] { 1 }, WriteCondition.IfNotExists);
        await Assert.ThrowsAsync<BlobConditionFailedException>(() => _store.WriteAsync("p", new byte[] { 2 }, WriteCondition.IfNotExists));
        var second = await _store.WriteAsync("p", new byte[] { 3, 3 }, WriteCondition.IfMatch(first.ETag));
        Assert.NotEqual(first.ETag, second.ETag);
        var e = await Assert.ThrowsAsync<BlobConditionFailedException>(() => _store.WriteAsync("p", new byte[] { 4 }, WriteCondition.IfMatch(first.ETag)));
        Assert.Contains("ETag mismatch", e.Message);
        await Assert.ThrowsAsync<BlobConditionFailedException>(() => _store.WriteAsync("q", new byte[] { 4 }, WriteCondition.IfMatch(first.ETag)));
        Assert.Equal(new byte[] { 3, 3 }, await _store.ReadAllAsync("p"));
    }

    [Fact]
    public async Task ListsByPrefixInOrderAndDeletes()
    {
        foreach (var n in new[] { "x/2", "x/1", "y/1", "x10" })
            await _store.WriteAsync(n, new byte[] { 1 }, WriteCondition.Overwrite);
        var listed = new List<string>();
        await foreach (var b in _store.ListAsync("x/")) listed.Add(b.Name);
        Assert.Equal(new[] { "x/1", "x/2" }, listed);
        Assert.True(await _store.DeleteAsync("x/1"));
        Assert.False(await _store.DeleteAsync("x/1"));
        Assert.Null(await _store.GetInfoAsync("x/1"));
    }

    [Theory]
    [InlineData("../escape")]
    [InlineData("/abs")]
    [InlineData("a//b")]
    public async Task RejectsNamesThatLeaveTheRoot(string name) =>
        await Assert.ThrowsAsync<ArgumentException>(() => _store.ReadAllAsync(name));
}
