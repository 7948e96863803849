using Azure.Core;
using Azure.Core.Pipeline;

namespace Squash.Storage;

/// <summary>
/// Counts the requests a queue client sends, retries included (each is a billed queue operation), when added per retry:
/// on the local host's listener clients (their polls, lease renewals, deletes and poison moves) and on the app's own
/// (<see cref="Builds.StorageBuildQueues"/>: sends and queue creation). A request sent on an invocation's async flow also
/// goes to that invocation's queue count (<see cref="StorageOperationCounter.Current"/>), so that its answer reports it;
/// the host sets no invocation counter, so its listeners' requests are counted once, in <see cref="Requests"/>.
/// </summary>
public sealed class QueueRequestCountingPolicy : HttpPipelineSynchronousPolicy
{
    private long _requests;

    public long Requests => Interlocked.Read(ref _requests);

    public override void OnSendingRequest(HttpMessage message)
    {
        Interlocked.Increment(ref _requests);
        StorageOperationCounter.Current?.AddQueue();
    }
}
