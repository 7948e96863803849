namespace Squash.Storage.Tests;

/// <summary>Construction is offline: nothing is contacted until the first operation.</summary>
public sealed class AzureBlobStoreConstructionTests
{
    [Fact]
    public void AnAccountUrlUsesEntraIdAndDescribesAccountAndContainer()
    {
        var store = new AzureBlobStore(new Uri("https://myaccount.blob.core.windows.net/"), "segments");
        Assert.Equal("azure:myaccount/segments", store.Description);
        Assert.Equal(new Uri("https://myaccount.blob.core.windows.net/segments"), store.Container.Uri);
    }

    [Fact]
    public void AConnectionStringNamesTheAccount()
    {
        var store = new AzureBlobStore("UseDevelopmentStorage=true", "squash");
        Assert.Equal("azure:devstoreaccount1/squash", store.Description);
    }

    [Fact]
    public void AMalformedConnectionStringIsRejectedAtOnce() =>
        Assert.ThrowsAny<Exception>(() => new AzureBlobStore("not a connection string", "squash"));
}
