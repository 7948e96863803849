using Squash.Index.Build;
using Squash.Index.Model;
using Squash.Storage.Writes;

namespace Squash.Storage;

/// <summary>Builds an index into a new version and publishes it; a failed build removes the blobs it wrote.</summary>
public static class IndexPublisher
{
    /// <summary>
    /// Builds a new version and moves <c>current</c> to it, unless a build with a newer version id was
    /// published meanwhile (then this version stays complete but unpublished: compare the manifest's
    /// version with <see cref="IndexStore.GetCurrentAsync"/>). Any number of builds of one index may run
    /// at once, in any processes.
    /// </summary>
    /// <param name="beforePublish">Runs on the built, still unpublished version (its segments written, its manifest
    /// not) and returns the manifest to publish: how the search layer adds its recall calibration.</param>
    public static async Task<IndexManifest> BuildAndPublishAsync(
        IndexStore store, float[] vectors, int count, int dims, IndexBuildOptions options,
        IProgress<BuildProgress>? progress = null, CancellationToken cancellationToken = default,
        Func<IndexManifest, CancellationToken, Task<IndexManifest>>? beforePublish = null)
    {
        options.Validate(count, dims);
        var sink = store.CreateSink(IndexStore.NewVersionId());
        try
        {
            var manifest = await IndexBuilder.BuildAsync(vectors, count, dims, options, sink.Version, sink, progress, cancellationToken).ConfigureAwait(false);
            if (beforePublish is not null) manifest = await beforePublish(manifest, cancellationToken).ConfigureAwait(false);
            // Checked again here, not only before the build: writes of another shape may have reached the log meanwhile; and
            // once more under a reservation of the pointer as it moves, for writes landing between this check and the move.
            bool hasIds = manifest.Attributes is { HasIds: true };
            await WriteLogConflict.ThrowIfAnyAsync(store, manifest.Dimensions, hasIds, cancellationToken).ConfigureAwait(false);
            await store.PublishAsync(sink, manifest, verifiedBase: null, WriteLogConflict.PublishGuard(store, manifest.Version, manifest.Dimensions, hasIds), cancellationToken).ConfigureAwait(false);
            return manifest;
        }
        catch
        {
            await DeleteUnpublishedAsync(store, sink).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Best effort, and only the blobs this build wrote. Skipped when the pointer may name this version:
    /// a pointer write whose answer was lost can still have landed.
    /// </summary>
    private static async Task DeleteUnpublishedAsync(IndexStore store, IndexStore.VersionSink sink)
    {
        try
        {
            var current = await store.GetCurrentAsync(CancellationToken.None).ConfigureAwait(false);
            if (current?.Version == sink.Version) return;
            await sink.DeleteWrittenAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Leftovers are harmless: nothing names them, and gc removes them after the grace period.
        }
    }
}
