using Squash.Index.Model;
using Squash.Storage.Builds;

namespace Squash.Search.Builds;

/// <summary>The build stages as the queue functions run them, one task at a time.</summary>
public sealed class QueueStageWork : IBuildStageWork
{
    public Task<int> PrepareStageAsync(BuildTaskContext context, string stage) => throw new NotImplementedException();
    public Task<StageResult> TrainAsync(BuildTaskContext context) => throw new NotImplementedException();
    public Task<StageResult> AssignAsync(BuildTaskContext context, int chunk) => throw new NotImplementedException();
    public Task<StageResult> EncodeAsync(BuildTaskContext context, int partition) => throw new NotImplementedException();
    public Task<IndexManifest> PrepareManifestAsync(BuildTaskContext context) => throw new NotImplementedException();
}
