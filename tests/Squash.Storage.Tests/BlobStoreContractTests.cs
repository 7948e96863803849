namespace Squash.Storage.Tests;

/// <summary>
/// The blob-store contract, run against every implementation: whatever passes here can carry the
/// publish protocol and the search path.
/// </summary>
public abstract class BlobStoreContractTests : IAsyncLifetime
{
    private IBlobStore? _store;
    protected IBlobStore Store => _store ?? throw new InvalidOperationException("store not created");
    protected IBlobStore? CreatedStore => _store;

    protected abstract IBlobStore CreateStore();
    protected virtual Task DestroyStoreAsync() => Task.CompletedTask;

    public Task InitializeAsync()
    {
        _store = CreateStore();
        return Task.CompletedTask;
    }

    public Task DisposeAsync() => DestroyStoreAsync();

    private static byte[] Bytes(int n, int seed = 1)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public async Task WholeReadsReturnWhatWasWritten()
    {
        var data = Bytes(1000);
        var info = await Store.WriteAsync("a/b.seg", data, WriteCondition.Overwrite);
        Assert.Equal("a/b.seg", info.Name);
        Assert.Equal(1000, info.Length);
        Assert.Equal(data, await Store.ReadAllAsync("a/b.seg"));
        await Store.WriteAsync("empty", ReadOnlyMemory<byte>.Empty, WriteCondition.Overwrite);
        Assert.Empty(await Store.ReadAllAsync("empty"));
        Assert.Equal(0, (await Store.GetInfoAsync("empty"))!.Length);
    }

    [Fact]
    public async Task RangedReadsCoverBothEndsAndZeroLengthRanges()
    {
        var data = Bytes(1000, 2);
        await Store.WriteAsync("r", data, WriteCondition.Overwrite);
        Assert.Equal(data[..10], await Store.ReadRangeAsync("r", 0, 10));
        Assert.Equal(data[990..], await Store.ReadRangeAsync("r", 990, 10));
        Assert.Equal(data[999..], await Store.ReadRangeAsync("r", 999, 1));
        Assert.Equal(data[123..457], await Store.ReadRangeAsync("r", 123, 334));
        Assert.Equal(data, await Store.ReadRangeAsync("r", 0, 1000));
        Assert.Empty(await Store.ReadRangeAsync("r", 0, 0));
        Assert.Empty(await Store.ReadRangeAsync("r", 500, 0));
        Assert.Empty(await Store.ReadRangeAsync("r", 1000, 0));
    }

    [Theory]
    [InlineData(995, 10)]
    [InlineData(1000, 1)]
    [InlineData(5000, 10)]
    [InlineData(1001, 0)]
    public async Task ARangePastTheEndIsAnError(long offset, int length)
    {
        await Store.WriteAsync("r", Bytes(1000), WriteCondition.Overwrite);
        var e = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => Store.ReadRangeAsync("r", offset, length));
        Assert.Contains("'r'", e.Message);
    }

    [Fact]
    public async Task NegativeRangesAreRejected()
    {
        await Store.WriteAsync("r", Bytes(10), WriteCondition.Overwrite);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => Store.ReadRangeAsync("r", -1, 5));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => Store.ReadRangeAsync("r", 0, -5));
    }

    [Fact]
    public async Task MissingBlobsAreNotFoundEverywhere()
    {
        Assert.Equal("missing", (await Assert.ThrowsAsync<BlobNotFoundException>(() => Store.ReadAllAsync("missing"))).BlobName);
        await Assert.ThrowsAsync<BlobNotFoundException>(() => Store.ReadRangeAsync("missing", 0, 10));
        await Assert.ThrowsAsync<BlobNotFoundException>(() => Store.ReadRangeAsync("dir/missing", 0, 0));
        Assert.Null(await Store.GetInfoAsync("missing"));
        Assert.False(await Store.DeleteAsync("missing"));
        var listed = new List<BlobInfo>();
        await foreach (var b in Store.ListAsync("missing")) listed.Add(b);
        Assert.Empty(listed);
    }

    [Fact]
    public async Task ConditionalWritesFailWhenTheyMust()
    {
        var first = await Store.WriteAsync("p", new byte[] { 1 }, WriteCondition.IfNotExists);
        await Assert.ThrowsAsync<BlobConditionFailedException>(() => Store.WriteAsync("p", new byte[] { 2 }, WriteCondition.IfNotExists));
        var second = await Store.WriteAsync("p", new byte[] { 3, 3 }, WriteCondition.IfMatch(first.ETag));
        Assert.NotEqual(first.ETag, second.ETag);
        var e = await Assert.ThrowsAsync<BlobConditionFailedException>(() => Store.WriteAsync("p", new byte[] { 4 }, WriteCondition.IfMatch(first.ETag)));
        Assert.Contains("ETag mismatch", e.Message);
        Assert.Equal("p", e.BlobName);
        await Assert.ThrowsAsync<BlobConditionFailedException>(() => Store.WriteAsync("q", new byte[] { 4 }, WriteCondition.IfMatch(first.ETag)));
        Assert.Null(await Store.GetInfoAsync("q"));
        Assert.Equal(new byte[] { 3, 3 }, await Store.ReadAllAsync("p"));
    }

    [Fact]
    public async Task TheETagChangesWithEveryWriteAndMatchesGetInfo()
    {
        var a = await Store.WriteAsync("e", new byte[] { 1, 2 }, WriteCondition.Overwrite);
        Assert.Equal(a.ETag, (await Store.GetInfoAsync("e"))!.ETag);
        var b = await Store.WriteAsync("e", new byte[] { 1, 2 }, WriteCondition.Overwrite);
        Assert.NotEqual(a.ETag, b.ETag);
        var info = await Store.GetInfoAsync("e");
        Assert.Equal(b.ETag, info!.ETag);
        Assert.Equal(2, info.Length);
        // An IfMatch with the ETag GetInfo reported is the compare-and-swap the publish protocol relies on.
        var c = await Store.WriteAsync("e", new byte[] { 9 }, WriteCondition.IfMatch(info.ETag));
        Assert.NotEqual(b.ETag, c.ETag);
    }

    [Fact]
    public async Task OnlyOneOfManyConcurrentCreatorsWins()
    {
        var tasks = Enumerable.Range(0, 8).Select(async i =>
        {
            try
            {
                await Store.WriteAsync("race", new[] { (byte)i }, WriteCondition.IfNotExists);
                return true;
            }
            catch (BlobConditionFailedException)
            {
                return false;
            }
        }).ToArray();
        var results = await Task.WhenAll(tasks);
        Assert.Equal(1, results.Count(r => r));
    }

    [Fact]
    public async Task ListsByPrefixInOrdinalOrder()
    {
        foreach (var n in new[] { "x/2", "x/1", "y/1", "x10", "x/0/z", "X/1", "x/10" })
            await Store.WriteAsync(n, Bytes(3), WriteCondition.Overwrite);
        async Task<List<string>> List(string prefix)
        {
            var names = new List<string>();
            await foreach (var b in Store.ListAsync(prefix)) names.Add(b.Name);
            return names;
        }
        Assert.Equal(new[] { "x/0/z", "x/1", "x/10", "x/2" }, await List("x/"));
        Assert.Equal(new[] { "x/0/z", "x/1", "x/10", "x/2", "x10" }, await List("x"));
        Assert.Equal(new[] { "X/1", "x/0/z", "x/1", "x/10", "x/2", "x10", "y/1" }, await List(""));
        Assert.Empty(await List("z"));
        await foreach (var b in Store.ListAsync("x/1"))
        {
            Assert.Equal(3, b.Length);
            Assert.Equal((await Store.GetInfoAsync(b.Name))!.ETag, b.ETag);
        }
    }

    [Fact]
    public async Task DeleteRemovesOnlyTheNamedBlob()
    {
        await Store.WriteAsync("d/1", Bytes(5), WriteCondition.Overwrite);
        await Store.WriteAsync("d/2", Bytes(5), WriteCondition.Overwrite);
        Assert.True(await Store.DeleteAsync("d/1"));
        Assert.False(await Store.DeleteAsync("d/1"));
        Assert.Null(await Store.GetInfoAsync("d/1"));
        await Assert.ThrowsAsync<BlobNotFoundException>(() => Store.ReadAllAsync("d/1"));
        Assert.NotNull(await Store.GetInfoAsync("d/2"));
        // A deleted name can be created again, create-only.
        await Store.WriteAsync("d/1", Bytes(2), WriteCondition.IfNotExists);
    }

    [Fact]
    public async Task LargeBlobsRoundTripAndConditionsHoldForThem()
    {
        // Bigger than the Azure subclass's single-shot limit: goes up as parallel blocks.
        var data = Bytes(1_500_000, 7);
        var first = await Store.WriteAsync("big", data, WriteCondition.IfNotExists);
        Assert.Equal(data.Length, first.Length);
        Assert.Equal(data, await Store.ReadAllAsync("big"));
        Assert.Equal(data[1_234_567..1_300_000], await Store.ReadRangeAsync("big", 1_234_567, 1_300_000 - 1_234_567));
        await Assert.ThrowsAsync<BlobConditionFailedException>(() => Store.WriteAsync("big", data, WriteCondition.IfNotExists));
        await Assert.ThrowsAsync<BlobConditionFailedException>(() => Store.WriteAsync("big", data, WriteCondition.IfMatch("\"0x1\"")));
        Assert.Equal(first.ETag, (await Store.GetInfoAsync("big"))!.ETag);
    }

    [Theory]
    [InlineData("../escape")]
    [InlineData("/abs")]
    [InlineData("a//b")]
    [InlineData("")]
    public async Task RejectsNamesThatMeanDifferentThingsPerStore(string name)
    {
        await Assert.ThrowsAsync<ArgumentException>(() => Store.ReadAllAsync(name));
        await Assert.ThrowsAsync<ArgumentException>(() => Store.WriteAsync(name, new byte[] { 1 }, WriteCondition.Overwrite));
    }
}

public sealed class FolderBlobStoreContractTests : BlobStoreContractTests
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "squash-store-" + Guid.NewGuid().ToString("N"));

    protected override IBlobStore CreateStore() => new FolderBlobStore(_root);

    protected override Task DestroyStoreAsync()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
        return Task.CompletedTask;
    }

    [Fact]
    public void DescribesItselfByFolder() => Assert.StartsWith("dir:", Store.Description);

    /// <summary>A reading command given a mistyped folder must leave none behind, or a later serve would take it for a store.</summary>
    [Fact]
    public async Task AMissingRootReadsAsAnEmptyStoreAndIsNotCreated()
    {
        Assert.False(Directory.Exists(_root));
        Assert.Equal("blob 'n/x.seg' does not exist", (await Assert.ThrowsAsync<BlobNotFoundException>(() => Store.ReadAllAsync("n/x.seg"))).Message);
        await Assert.ThrowsAsync<BlobNotFoundException>(() => Store.ReadRangeAsync("current", 0, 1));
        Assert.Null(await Store.GetInfoAsync("current"));
        Assert.Empty(await Store.ListAsync("").ToListAsync());
        Assert.False(await Store.DeleteAsync("current"));
        Assert.False(Directory.Exists(_root));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task TheFirstWriteCreatesTheRootAndItsParents(bool conditional)
    {
        var nested = Path.Combine(_root, "a", "b");
        var store = new FolderBlobStore(nested);
        Assert.False(Directory.Exists(_root));
        // A conditional write also takes the lock file in the root, so both paths must make it first.
        await store.WriteAsync("current", new byte[] { 7 }, conditional ? WriteCondition.IfNotExists : WriteCondition.Overwrite);
        Assert.Equal(new byte[] { 7 }, await store.ReadAllAsync("current"));
        Assert.Equal(["current"], (await store.ListAsync("").ToListAsync()).Select(b => b.Name));
    }
}

/// <summary>The same contract against Azurite (started by scripts/test.sh; fails without it).</summary>
public sealed class AzureBlobStoreContractTests : BlobStoreContractTests
{
    protected override IBlobStore CreateStore() => Azurite.NewStore("contract");

    protected override async Task DestroyStoreAsync()
    {
        if (CreatedStore is AzureBlobStore a) await a.Container.DeleteIfExistsAsync();
    }

    [Fact]
    public void DescribesItselfByAccountAndContainer() =>
        Assert.Matches("^azure:devstoreaccount1/contract-[0-9a-f]{32}$", Store.Description);

    [Fact]
    public async Task CreatesTheContainerOnFirstUse()
    {
        var store = (AzureBlobStore)Store;
        Assert.False((await store.Container.ExistsAsync()).Value);
        await store.WriteAsync("x", new byte[] { 1 }, WriteCondition.Overwrite);
        Assert.True((await store.Container.ExistsAsync()).Value);
    }
}
