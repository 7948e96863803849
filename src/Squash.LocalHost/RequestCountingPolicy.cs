using Azure.Core;
using Azure.Core.Pipeline;

namespace Squash.LocalHost;

/// <summary>
/// Counts the requests an Azure SDK client sends, retries included (each is a billed operation): added per retry to the
/// queue listeners' clients so that the meter bills their polls, lease renewals, deletes and poison moves.
/// </summary>
public sealed class RequestCountingPolicy : HttpPipelineSynchronousPolicy
{
    private long _requests;

    public long Requests => Interlocked.Read(ref _requests);

    public override void OnSendingRequest(HttpMessage message) => Interlocked.Increment(ref _requests);
}
