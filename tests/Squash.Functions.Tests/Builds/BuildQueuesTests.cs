using Squash.Storage.Builds;
using Squash.Testing;

namespace Squash.Functions.Tests.Builds;

/// <summary>The app's queue clients: a queue whose creation failed is created again on the next use.</summary>
[Collection(nameof(BuildQueueCollection))]
public sealed class BuildQueuesTests
{
    [Fact]
    public async Task AQueueWhoseCreationFailedIsCreatedAgainOnTheNextUse()
    {
        await using var proxy = await CountingQueueProxy.StartAsync(AzuriteTestStore.ConnectionString);
        var queues = StorageBuildQueues.FromSettings(key => key == "AzureWebJobsStorage" ? proxy.ConnectionString : null)!;
        string name = "squash-recreate-" + Guid.NewGuid().ToString("N")[..12];
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(120));

        // Every try of the first creation is refused (503), so the SDK's retries give up.
        proxy.RefuseNext(1000);
        await Assert.ThrowsAsync<Azure.RequestFailedException>(() => queues.QueueNamedAsync(name, deadline.Token));
        long refused = proxy.Requests;
        Assert.True(refused >= 2, $"{refused} requests: the SDK should have retried");

        proxy.RefuseNext(0);
        var queue = await queues.QueueNamedAsync(name, deadline.Token);
        Assert.True(proxy.Requests > refused, "the second use sent the creation again");
        Assert.True((await queue.ExistsAsync(deadline.Token)).Value);
        await queue.DeleteAsync(deadline.Token);
    }
}
