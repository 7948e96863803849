using Squash.Storage.Builds;

namespace Squash.Functions.Tests;

/// <summary>A build queue held in this process: the tests deliver its messages one at a time, in the order they were sent.</summary>
internal sealed class InOrderBuildQueue : IBuildQueue
{
    public Queue<BuildTaskMessage> Pending { get; } = new();
    /// <summary>Train messages sent: one per job started.</summary>
    public int Trains { get; private set; }

    public Task SendAsync(BuildTaskMessage message, CancellationToken ct)
    {
        lock (Pending)
        {
            Pending.Enqueue(message);
            if (message.Stage == BuildStages.Train) Trains++;
        }
        return Task.CompletedTask;
    }
}
