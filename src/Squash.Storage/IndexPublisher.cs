using Squash.Index.Build;
using Squash.Index.Model;

namespace Squash.Storage;

/// <summary>Builds an index into a new version and publishes it; a failed build removes its partial version.</summary>
public static class IndexPublisher
{
    public static async Task<IndexManifest> BuildAndPublishAsync(
        IndexStore store, float[] vectors, int count, int dims, IndexBuildOptions options,
        IProgress<BuildProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        options.Validate(count, dims);
        var previous = await store.GetCurrentAsync(cancellationToken).ConfigureAwait(false);
        var version = await store.NewVersionIdAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var manifest = await IndexBuilder.BuildAsync(vectors, count, dims, options, version, store.CreateSink(version), progress, cancellationToken).ConfigureAwait(false);
            await store.PublishAsync(manifest, previous, cancellationToken).ConfigureAwait(false);
            return manifest;
        }
        catch
        {
            // Best effort: the pointer never moved, so readers are unaffected either way.
            try { await store.DeleteVersionAsync(version, CancellationToken.None).ConfigureAwait(false); } catch (Exception) { }
            throw;
        }
    }
}
