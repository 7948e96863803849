using System.Collections.Concurrent;
using System.Text.Json;
using Squash.Index.Build;
using Squash.Index.Format;
using Squash.Index.Model;

namespace Squash.Storage;

/// <summary>
/// One index inside a blob store, with the publish protocol that keeps readers safe:
/// <code>
/// {index}/versions/{version}/routing.seg, pNNNNN.codes.seg, pNNNNN.vectors.seg   (segments, written first)
/// {index}/versions/{version}/manifest.json                                      (then the manifest, create-only)
/// {index}/current                                                               (last: a pointer moved by compare-and-swap)
/// </code>
/// A reader resolves current → manifest → segments, so an interrupted build leaves the previous
/// version serving.
/// <para>
/// Version ids (<see cref="VersionIds"/>): <c>v</c> + build start time + random, e.g.
/// <c>v20250612-101530123-3f9a1c0b7e2d</c>, so concurrent builds never share a version folder and
/// ordinal order is age order; <c>v000042</c> ids from earlier releases are read and sort first.
/// </para>
/// <para>
/// Concurrent builds: each writes only its own version folder, and a failed build deletes only the
/// blobs it wrote. The pointer moves forward in version-id order only: a build publishes unless
/// <c>current</c> already names a newer id (one started later), retrying the compare-and-swap when
/// another build moved the pointer in between. A version ingest or a calibration derived from an older
/// build counts as that build (its <c>builtFrom</c>), so a build from files replaces it. So once every build is done, <c>current</c> names the
/// newest id that finished, and an older build that finishes last leaves its version complete but
/// unpublished (garbage collection removes it later).
/// </para>
/// <para>
/// Garbage collection (<see cref="CollectGarbageAsync"/>) never deletes the version <c>current</c> names,
/// a version a build may still be writing (one whose id time or newest blob is younger than the grace
/// period), or a version that stopped being current less than the grace period ago. The last rule is
/// how readers pin a version without writing anything: a reader that re-reads <c>current</c> at least
/// once per grace period (the function app does every second, Squash:CurrentRecheck) never loses the version it uses.
/// </para>
/// </summary>
public sealed partial class IndexStore
{
    public const string ManifestName = "manifest.json";

    /// <summary>How many times a build retries the pointer's compare-and-swap when other builds keep moving it.</summary>
    private const int MaxPublishAttempts = 50;

    private long _bytesRead;

    public IndexStore(IBlobStore blobs, string indexName = "")
    {
        Blobs = blobs;
        Name = indexName.Trim('/');
        Prefix = Name.Length == 0 ? "" : Name + "/";
    }

    public IBlobStore Blobs { get; }
    public string Name { get; }
    /// <summary>
    /// Where decoded codes and attributes of single segments are kept across reads (an ingest instance's, which reads every
    /// partition each run); null: every read decodes. Composed partitions are always built afresh from them.
    /// </summary>
    public DecodedSegmentCache? Decoded { get; init; }
    private string Prefix { get; }
    private string CurrentName => Prefix + "current";
    private string VersionsRoot => Prefix + "versions/";

    /// <summary>Bytes read from the blob store by this instance (for per-query statistics).</summary>
    public long BytesRead => Interlocked.Read(ref _bytesRead);

    public string VersionPrefix(string version) => $"{VersionsRoot}{version}/";

    /// <summary>The full blob name of a segment of <paramref name="m"/> (in an earlier version's folder when it references one).</summary>
    public string BlobName(IndexManifest m, SegmentRef segment) => VersionPrefix(segment.Version ?? m.Version) + segment.Name;

    /// <summary>The earlier versions whose segments <paramref name="m"/> references (gc keeps them while it is kept).</summary>
    public static IEnumerable<string> ReferencedVersions(IndexManifest m) => FoldersReferenced(BlobsNamedBy(m), m.Version);

    /// <summary>The other versions' folders <paramref name="segments"/> of version <paramref name="version"/> are in, each once.</summary>
    private static IEnumerable<string> FoldersReferenced(IEnumerable<SegmentRef> segments, string version) =>
        segments.Select(s => s.Version).Where(v => v is not null && v != version).Select(v => v!).Distinct(StringComparer.Ordinal);

    /// <param name="Reserved">
    /// A build of another shape about to replace <paramref name="Version"/> (<see cref="Writes.WriteLogConflict"/>): readers ignore it; a
    /// write that would not fit that shape clears it, which makes the build look at the log again before it publishes.
    /// </param>
    internal sealed record CurrentPointer(string Version, string Manifest, ShapeReservation? Reserved = null);

    /// <summary>The shape a build about to be published has, kept in the pointer while it checks the log for the last time.</summary>
    public sealed record ShapeReservation(string Version, int Dimensions, bool HasIds);

    /// <summary>The pointer as stored: the version it names, its ETag, and the reservation of a build about to replace it (if any).</summary>
    public sealed record PointerState(string Version, string ETag, ShapeReservation? Reserved);

    /// <summary>The pointer with its reservation; null when nothing is published.</summary>
    public async Task<PointerState?> ReadPointerAsync(CancellationToken ct = default)
    {
        var info = await Blobs.GetInfoAsync(CurrentName, ct).ConfigureAwait(false);
        if (info is null) return null;
        byte[] bytes;
        try
        {
            bytes = await Blobs.ReadAllAsync(CurrentName, ct).ConfigureAwait(false);
        }
        catch (BlobNotFoundException)
        {
            return null;
        }
        var pointer = ParsePointer(bytes);
        return new PointerState(pointer.Version, info.ETag, pointer.Reserved);
    }

    /// <summary>
    /// Rewrites the pointer, still naming the same version, with <paramref name="reserved"/> (or none) by compare-and-swap
    /// against <paramref name="etag"/>; returns the new ETag. Throws <see cref="BlobConditionFailedException"/> when the pointer changed.
    /// </summary>
    public async Task<string> SetReservationAsync(string version, string etag, ShapeReservation? reserved, CancellationToken ct = default)
    {
        var pointer = JsonSerializer.SerializeToUtf8Bytes(new CurrentPointer(version, VersionPrefix(version) + ManifestName, reserved), PointerJson.Default.CurrentPointer);
        return (await Blobs.WriteAsync(CurrentName, pointer, WriteCondition.IfMatch(etag), ct).ConfigureAwait(false)).ETag;
    }

    /// <summary>The version the pointer names, with the pointer's ETag; null when nothing is published.</summary>
    public async Task<(string Version, string ETag)?> GetCurrentAsync(CancellationToken ct = default) =>
        await ReadPointerAsync(ct).ConfigureAwait(false) is { } p ? (p.Version, p.ETag) : null;

    private CurrentPointer ParsePointer(byte[] bytes)
    {
        try
        {
            var p = JsonSerializer.Deserialize(bytes, PointerJson.Default.CurrentPointer);
            if (p is null || string.IsNullOrWhiteSpace(p.Version)) throw new CorruptIndexException($"'{CurrentName}' in {Blobs.Description} names no version");
            // A version is one segment of a blob name: a pointer naming a path ('../other/versions/…') is damaged, and is
            // said so here rather than failing later as an invalid blob name that no caller reads as a damaged index.
            if (p.Version is "." or ".." || p.Version.Any(c => c is '/' or '\\' || char.IsControl(c)))
                throw new CorruptIndexException($"'{CurrentName}' in {Blobs.Description} names \"{p.Version}\", which is not a version id");
            return p;
        }
        catch (JsonException e)
        {
            throw new CorruptIndexException($"'{CurrentName}' in {Blobs.Description} is not valid JSON: {e.Message}");
        }
    }

    /// <summary>A fresh version id, unique without asking the store (see <see cref="VersionIds"/>).</summary>
    public static string NewVersionId(TimeProvider? clock = null) => VersionIds.New((clock ?? TimeProvider.System).GetUtcNow());

    /// <summary>A sink that writes the blobs of one version, create-only, and remembers which it wrote.</summary>
    public VersionSink CreateSink(string version) => new(this, version);

    /// <summary>
    /// Writes one version's blobs and records their names, so that a failed build can delete exactly
    /// what it wrote and nothing another writer put there.
    /// </summary>
    public sealed class VersionSink : ISegmentSink
    {
        private readonly IndexStore _store;
        private readonly ConcurrentDictionary<string, byte> _written = new(StringComparer.Ordinal);

        internal VersionSink(IndexStore store, string version)
        {
            _store = store;
            Version = version;
        }

        public string Version { get; }

        /// <summary>Full names of the blobs this sink wrote (or tried to: a write whose answer was lost may have landed).</summary>
        public IReadOnlyCollection<string> Written => [.. _written.Keys];

        public async Task WriteAsync(string name, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            var full = _store.VersionPrefix(Version) + name;
            _written[full] = 0;
            try
            {
                await _store.Blobs.WriteAsync(full, data, WriteCondition.IfNotExists, cancellationToken).ConfigureAwait(false);
            }
            catch (BlobConditionFailedException)
            {
                // Someone else's blob: never ours to delete.
                _written.TryRemove(full, out _);
                throw;
            }
        }

        /// <summary>Deletes every blob this sink wrote; returns how many existed.</summary>
        public async Task<int> DeleteWrittenAsync(CancellationToken ct = default)
        {
            int deleted = 0;
            foreach (var name in Written)
                if (await _store.Blobs.DeleteAsync(name, ct).ConfigureAwait(false)) deleted++;
            return deleted;
        }
    }

    /// <summary>What <see cref="PublishAsync"/> did.</summary>
    /// <param name="Published">True when <c>current</c> now names this version; false when a newer one was already current.</param>
    /// <param name="Current">The version <c>current</c> named when the publish finished.</param>
    public sealed record PublishResult(bool Published, string Current);

    /// <summary>
    /// Writes the manifest through <paramref name="sink"/>, checks that every blob it names is in the
    /// store, and moves <c>current</c> to the version unless <c>current</c> already names a newer one
    /// (see the class comment for why publishing follows version-id order).
    /// </summary>
    public Task<PublishResult> PublishAsync(VersionSink sink, IndexManifest manifest, CancellationToken ct = default) =>
        PublishAsync(sink, manifest, verifiedBase: null, ct);

    /// <summary>
    /// <see cref="PublishAsync(VersionSink, IndexManifest, CancellationToken)"/> for a version derived from
    /// <paramref name="verifiedBase"/>, a published version the caller read as current just before: the segments it names
    /// where the base names them are not listed again (<see cref="VerifyCompleteAsync(IndexManifest, IndexManifest?, CancellationToken)"/>).
    /// </summary>
    public Task<PublishResult> PublishAsync(VersionSink sink, IndexManifest manifest, IndexManifest? verifiedBase, CancellationToken ct = default) =>
        PublishAsync(sink, manifest, verifiedBase, beforeMove: null, ct);

    /// <summary>
    /// <see cref="PublishAsync(VersionSink, IndexManifest, IndexManifest?, CancellationToken)"/> with <paramref name="beforeMove"/>
    /// run before each attempt to move the pointer (see <see cref="MovePointerForwardAsync(string, Func{PointerState, CancellationToken, Task{string}}?, CancellationToken)"/>).
    /// </summary>
    public async Task<PublishResult> PublishAsync(VersionSink sink, IndexManifest manifest, IndexManifest? verifiedBase,
        Func<PointerState, CancellationToken, Task<string>>? beforeMove, CancellationToken ct = default)
    {
        if (sink.Version != manifest.Version) throw new ArgumentException($"the sink writes version {sink.Version} but the manifest is version {manifest.Version}", nameof(manifest));
        await sink.WriteAsync(ManifestName, manifest.ToJson(), ct).ConfigureAwait(false);
        await VerifyCompleteAsync(manifest, verifiedBase, ct).ConfigureAwait(false);
        return await MovePointerForwardAsync(manifest.Version, beforeMove, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Publishes <paramref name="manifest"/> only as the direct successor of <paramref name="expectedCurrent"/>: the pointer
    /// moves by compare-and-swap from that version alone, so a version derived from it (the same rows, say with a calibration
    /// measured on it) never replaces a newer version another writer published meanwhile. Not published when
    /// <c>current</c> names anything else; the manifest written for it is then removed.
    /// </summary>
    public Task<PublishResult> PublishIfCurrentAsync(VersionSink sink, IndexManifest manifest, string expectedCurrent, CancellationToken ct = default) =>
        PublishIfCurrentAsync(sink, manifest, expectedCurrent, verifiedBase: null, ct);

    /// <summary>
    /// <see cref="PublishIfCurrentAsync(VersionSink, IndexManifest, string, CancellationToken)"/> from <paramref name="expectedCurrent"/>'s
    /// manifest, read from the store: the segments the successor names where it names them are not listed again.
    /// </summary>
    public Task<PublishResult> PublishIfCurrentAsync(VersionSink sink, IndexManifest manifest, IndexManifest expectedCurrent, CancellationToken ct = default) =>
        PublishIfCurrentAsync(sink, manifest, expectedCurrent.Version, expectedCurrent, ct);

    /// <summary>
    /// <see cref="PublishIfCurrentAsync(VersionSink, IndexManifest, IndexManifest, CancellationToken)"/>, except that when it is
    /// refused <paramref name="keepWritten"/> leaves what the sink wrote (manifest included) in place: the caller may still
    /// publish those blobs under another manifest that references them, or remove them itself.
    /// </summary>
    public Task<PublishResult> PublishIfCurrentAsync(VersionSink sink, IndexManifest manifest, IndexManifest expectedCurrent, bool keepWritten, CancellationToken ct = default) =>
        PublishIfCurrentAsync(sink, manifest, expectedCurrent.Version, expectedCurrent, ct, keepWritten);

    private async Task<PublishResult> PublishIfCurrentAsync(VersionSink sink, IndexManifest manifest, string expectedCurrent, IndexManifest? verifiedBase, CancellationToken ct,
        bool keepWritten = false)
    {
        if (sink.Version != manifest.Version) throw new ArgumentException($"the sink writes version {sink.Version} but the manifest is version {manifest.Version}", nameof(manifest));
        if (VersionIds.Compare(manifest.Version, expectedCurrent) <= 0) throw new ArgumentException($"version {manifest.Version} is not newer than {expectedCurrent}", nameof(manifest));
        await sink.WriteAsync(ManifestName, manifest.ToJson(), ct).ConfigureAwait(false);
        await VerifyCompleteAsync(manifest, verifiedBase, ct).ConfigureAwait(false);
        var pointer = JsonSerializer.SerializeToUtf8Bytes(new CurrentPointer(manifest.Version, VersionPrefix(manifest.Version) + ManifestName), PointerJson.Default.CurrentPointer);
        var current = await GetCurrentAsync(ct).ConfigureAwait(false);
        if (current is { } c && c.Version == expectedCurrent)
        {
            try
            {
                await Blobs.WriteAsync(CurrentName, pointer, WriteCondition.IfMatch(c.ETag), ct).ConfigureAwait(false);
                return new PublishResult(true, manifest.Version);
            }
            catch (BlobConditionFailedException)
            {
                // Moved between the read and the write: by someone else, so this version is stale.
            }
        }
        var now = await GetCurrentAsync(ct).ConfigureAwait(false);
        if (now?.Version == manifest.Version) return new PublishResult(true, manifest.Version); // our write landed, its answer was lost
        if (!keepWritten) await sink.DeleteWrittenAsync(CancellationToken.None).ConfigureAwait(false);
        return new PublishResult(false, now?.Version ?? "");
    }

    /// <summary>
    /// Every segment a manifest refers to (names inside their version folders): routing, then each partition's. A pack
    /// holds several, so its blob name comes once per segment in it.
    /// </summary>
    public static IEnumerable<SegmentRef> BlobsNamedBy(IndexManifest m)
    {
        var segments = m.Partitions.SelectMany(p => p.Segments()).Prepend(m.Routing);
        return m.Calibration?.QueriesBlob is { } queries ? segments.Append(queries).Concat(m.Calibration.FilterBlobs ?? []) : segments;
    }

    /// <summary>
    /// Throws <see cref="CorruptIndexException"/> unless every segment the manifest names is present with
    /// its recorded size. A build checks this before it publishes, so a version damaged while it was
    /// being written (say, by a gc run with a grace period shorter than the build) is never published.
    /// </summary>
    public Task VerifyCompleteAsync(IndexManifest m, CancellationToken ct = default) => VerifyCompleteAsync(m, verifiedBase: null, ct);

    /// <summary>
    /// <see cref="VerifyCompleteAsync(IndexManifest, CancellationToken)"/>, except for the segments <paramref name="m"/> names
    /// exactly where <paramref name="verifiedBase"/> names them (folder, blob, offset and size): those were checked when the
    /// base was published, blobs are never rewritten, and gc keeps every segment of the current version and of one current
    /// less than its grace period ago. So for a version derived from the one current when the caller looked (an ingest run,
    /// a calibration) only what it wrote, and anything it names that the base does not, is listed: at 10⁶ rows the base
    /// build's folder alone holds thousands of blobs, and listing it took most of an ingest run's publish.
    /// </summary>
    public async Task VerifyCompleteAsync(IndexManifest m, IndexManifest? verifiedBase, CancellationToken ct = default)
    {
        var prefix = VersionPrefix(m.Version);
        var present = new Dictionary<string, long>(StringComparer.Ordinal);
        await foreach (var b in Blobs.ListAsync(prefix, ct).ConfigureAwait(false)) present[b.Name[prefix.Length..]] = b.Length;
        var vouched = verifiedBase is null ? null
            : BlobsNamedBy(verifiedBase).Select(s => s with { Version = s.Version ?? verifiedBase.Version }).ToHashSet();
        var toCheck = BlobsNamedBy(m).Where(s => vouched is null || s.Version is null || s.Version == m.Version || !vouched.Contains(s)).ToList();
        // Referenced folders are listed once each (an ingest's manifest can name thousands of earlier segments).
        var others = new ConcurrentDictionary<string, Dictionary<string, long>>(StringComparer.Ordinal);
        await Parallel.ForEachAsync(FoldersReferenced(toCheck, m.Version), new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = ct }, async (v, t) =>
        {
            var folder = VersionPrefix(v);
            var blobs = new Dictionary<string, long>(StringComparer.Ordinal);
            await foreach (var b in Blobs.ListAsync(folder, t).ConfigureAwait(false)) blobs[b.Name[folder.Length..]] = b.Length;
            others[v] = blobs;
        }).ConfigureAwait(false);
        foreach (var segment in toCheck)
        {
            bool referenced = segment.Version is { } other && other != m.Version;
            bool found = (referenced ? others[segment.Version!] : present).TryGetValue(segment.Name, out long length);
            // A whole-blob segment must have its exact size; a packed one must lie inside its pack.
            bool fits = segment.Offset is { } offset ? length >= offset + segment.Bytes : length == segment.Bytes;
            if (!found || !fits)
                throw new CorruptIndexException($"version {m.Version} in {Blobs.Description} is incomplete: blob '{BlobName(m, segment)}'{(referenced ? " it references" : "")} "
                    + (!found ? "is missing" : segment.Offset is { } o ? $"has {length} bytes, the manifest places a segment at {o}..{o + segment.Bytes}" : $"has {length} bytes, the manifest says {segment.Bytes}"));
        }
        if (!present.ContainsKey(ManifestName))
            throw new CorruptIndexException($"version {m.Version} in {Blobs.Description} has no {ManifestName}");
    }

    /// <summary>
    /// Moves <c>current</c> to <paramref name="version"/> by compare-and-swap unless it already names a
    /// newer id. A lost race is not an error: the pointer is read again and the decision repeated.
    /// </summary>
    public Task<PublishResult> MovePointerForwardAsync(string version, CancellationToken ct = default) => MovePointerForwardAsync(version, beforeMove: null, ct);

    /// <summary>
    /// <see cref="MovePointerForwardAsync(string, CancellationToken)"/>; <paramref name="beforeMove"/>, when given, runs on the
    /// pointer read before each compare-and-swap that would replace a published version, and returns the ETag to swap against
    /// (it may rewrite the pointer itself first, as the write-log check's reservation does, or throw to stop the publish).
    /// </summary>
    public async Task<PublishResult> MovePointerForwardAsync(string version, Func<PointerState, CancellationToken, Task<string>>? beforeMove, CancellationToken ct = default)
    {
        var pointer = JsonSerializer.SerializeToUtf8Bytes(new CurrentPointer(version, VersionPrefix(version) + ManifestName), PointerJson.Default.CurrentPointer);
        for (int attempt = 1; ; attempt++)
        {
            var current = await ReadPointerAsync(ct).ConfigureAwait(false);
            if (current is { } c)
            {
                // Our own write, retried after its answer was lost, or a newer build that got there first.
                if (c.Version == version) return new PublishResult(true, version);
                if (VersionIds.Compare(c.Version, version) > 0 && !await DescendsFromOlderBuildAsync(c.Version, version, ct).ConfigureAwait(false))
                    return new PublishResult(false, c.Version);
            }
            try
            {
                var condition = current is { } prev
                    ? WriteCondition.IfMatch(beforeMove is null ? prev.ETag : await beforeMove(prev, ct).ConfigureAwait(false))
                    : WriteCondition.IfNotExists;
                await Blobs.WriteAsync(CurrentName, pointer, condition, ct).ConfigureAwait(false);
                return new PublishResult(true, version);
            }
            catch (BlobConditionFailedException) when (attempt < MaxPublishAttempts)
            {
                // Another build moved the pointer between our read and our write: wait a moment (jittered,
                // so that racing builds spread out) and decide again against the new value.
                await Task.Delay(TimeSpan.FromMilliseconds(Random.Shared.Next(5, 20 + 10 * Math.Min(attempt, 20))), ct).ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// Whether <paramref name="current"/> is a version ingest or a calibration derived from a build older than
    /// <paramref name="build"/>: such versions take fresh ids as writes arrive, so without this a build from files on an index
    /// taking writes would never be published. It replaces them; their writes stay in the log, which it takes from its start.
    /// </summary>
    private async Task<bool> DescendsFromOlderBuildAsync(string current, string build, CancellationToken ct)
    {
        try
        {
            var m = await ReadManifestAsync(current, ct).ConfigureAwait(false);
            return m.BuiltFrom is { } lineage && VersionIds.Compare(lineage, build) < 0;
        }
        catch (CorruptIndexException)
        {
            return false; // nothing tells where it comes from: left as the newer id
        }
    }

    /// <summary>Every version that has any blob (published, superseded, in progress or left by a failed build), oldest first.</summary>
    public async Task<IReadOnlyList<string>> ListVersionsAsync(CancellationToken ct = default) =>
        (await ListVersionBlobsAsync(ct).ConfigureAwait(false)).Keys.ToList();

    /// <summary>Blobs of every version, keyed by version id in <see cref="VersionIds.Order"/>.</summary>
    private async Task<SortedDictionary<string, List<BlobInfo>>> ListVersionBlobsAsync(CancellationToken ct)
    {
        var root = VersionsRoot;
        var versions = new SortedDictionary<string, List<BlobInfo>>(VersionIds.Order);
        await foreach (var b in Blobs.ListAsync(root, ct).ConfigureAwait(false))
        {
            var rest = b.Name[root.Length..];
            int slash = rest.IndexOf('/');
            if (slash <= 0) continue;
            var v = rest[..slash];
            if (!versions.TryGetValue(v, out var blobs)) versions[v] = blobs = [];
            blobs.Add(b);
        }
        return versions;
    }

    /// <summary>Why garbage collection left a version in place.</summary>
    public enum KeptReason
    {
        /// <summary><c>current</c> names it.</summary>
        Current,
        /// <summary>One of the N newest the caller asked to keep.</summary>
        Newest,
        /// <summary>Its id time or newest blob is younger than the grace period: a build may still be writing it.</summary>
        Recent,
        /// <summary>It stopped being current less than the grace period ago: readers may still use it.</summary>
        RecentlyCurrent,
        /// <summary>A kept version's manifest references some of its segments (an ingest copies none it did not touch).</summary>
        Referenced,
        /// <summary>A full rebuild that ingest has not published yet writes it, or was built from it.</summary>
        Rebuild,
    }

    public sealed record KeptVersion(string Version, KeptReason Reason);

    /// <summary>What <see cref="CollectGarbageAsync"/> deleted and what it kept (oldest first), with the reason.</summary>
    /// <param name="LogIndexedByAllKept">
    /// The smallest write-log watermark among the kept versions: every kept version has indexed the log up to here, so no
    /// reader of them needs those batches (null when some kept version has no readable manifest yet, such as a build in
    /// progress, whose watermark is unknown).
    /// </param>
    public sealed record GarbageCollection(IReadOnlyList<string> Deleted, IReadOnlyList<KeptVersion> Kept, long? LogIndexedByAllKept = null);

    /// <summary>
    /// Deletes every version except the one <c>current</c> names, the <paramref name="keep"/> newest, and
    /// any version younger than <paramref name="grace"/> or superseded less than <paramref name="grace"/>
    /// ago (see the class comment). Age comes from the newer of the id's time and the newest blob's
    /// last-modified time (old counter ids have only the latter); a version stopped being current when the
    /// first newer version wrote its manifest, since a build writes its manifest just before it moves the
    /// pointer. Times are compared with <paramref name="clock"/>, so clocks that disagree by much less
    /// than the grace period are harmless.
    /// </summary>
    public async Task<GarbageCollection> CollectGarbageAsync(int keep, TimeSpan grace, TimeProvider? clock = null, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(keep);
        ArgumentOutOfRangeException.ThrowIfLessThan(grace, TimeSpan.Zero);
        // Read before listing: a version published after this read is young, so the grace rules keep it.
        var current = await GetCurrentAsync(ct).ConfigureAwait(false);
        var versions = await ListVersionBlobsAsync(ct).ConfigureAwait(false);
        // Nothing at all under the index (a mistyped folder or name): say so, as reading commands do, rather than report
        // an empty collection. An index with no version but other blobs (a first build's uploads) is collected as usual.
        if (current is null && versions.Count == 0 && !await HoldsAnyBlobAsync(ct).ConfigureAwait(false))
            throw new IndexNotFoundException($"no index at {Blobs.Description}{(Name.Length > 0 ? " under '" + Name + "'" : "")} (nothing is stored there)");
        var now = (clock ?? TimeProvider.System).GetUtcNow();
        var ids = versions.Keys.ToList();
        // Each version's manifest blob (null: none written, so it never was current), looked up once for the rules below.
        var manifestOf = ids.Select(v => versions[v].FirstOrDefault(b => b.Name.EndsWith("/" + ManifestName, StringComparison.Ordinal))).ToArray();
        // Without a readable pointer to a version that exists, nothing tells which version readers use: refuse rather
        // than collect every published version (keep 0 and grace 0 would delete the whole index). A first build writes
        // its manifest just before the pointer, so a manifest younger than the grace period is a publish in progress,
        // which the grace rule below keeps.
        bool publishing = Enumerable.Range(0, ids.Count)
            .Any(i => manifestOf[i] is { } m && (m.LastModified ?? VersionIds.StartedUtc(ids[i])) is { } w && now - w < grace);
        if (current is null && manifestOf.Any(m => m is not null) && !publishing)
            throw new CorruptIndexException($"'{CurrentName}' in {Blobs.Description} is missing but published versions exist ({ids.Count}, newest {ids[^1]}): gc deletes nothing until the pointer names one of them");
        if (current is { } named && !versions.ContainsKey(named.Version))
            throw new CorruptIndexException($"'{CurrentName}' in {Blobs.Description} names version {named.Version}, which has no blobs: gc deletes nothing until the pointer names an existing version");

        // Newest to oldest: for each version that has a manifest (so may have been current), the earliest
        // manifest among newer versions is when it stopped being current. One without a manifest never was.
        var supersededAt = new DateTimeOffset?[ids.Count];
        DateTimeOffset? earliestNewerManifest = null;
        for (int i = ids.Count - 1; i >= 0; i--)
        {
            if (manifestOf[i] is not { } manifest) continue;
            supersededAt[i] = earliestNewerManifest;
            var written = manifest.LastModified ?? VersionIds.StartedUtc(ids[i]);
            if (written is { } w && (earliestNewerManifest is null || w < earliestNewerManifest)) earliestNewerManifest = w;
        }

        // A rebuild not yet published needs the version it writes, its base, and the log past its position (Writes/RebuildRecord.cs).
        var rebuild = Name.Length == 0 ? null : await Writes.RebuildRecord.ReadAsync(Blobs, Name, ct).ConfigureAwait(false);
        var pinned = rebuild is { Record.IsActive: true } open ? new[] { open.Record.Version, open.Record.BaseVersion } : [];
        var reasons = new KeptReason?[ids.Count];
        for (int i = 0; i < ids.Count; i++)
        {
            var v = ids[i];
            var lastActivity = versions[v].Select(b => b.LastModified).Append(VersionIds.StartedUtc(v)).Max();
            reasons[i] =
                current is { } c && c.Version == v ? KeptReason.Current
                : i >= ids.Count - keep ? KeptReason.Newest
                : lastActivity is { } a && now - a < grace ? KeptReason.Recent
                : supersededAt[i] is { } s && now - s < grace ? KeptReason.RecentlyCurrent
                : pinned.Contains(v) ? KeptReason.Rebuild
                : null;
        }
        // Segments a kept version references in older folders: an ingest's manifest names them instead of copying.
        var referenced = new HashSet<string>(StringComparer.Ordinal);
        long? logIndexed = long.MaxValue;
        for (int i = 0; i < ids.Count; i++)
        {
            if (reasons[i] is null) continue;
            if (manifestOf[i] is null) { logIndexed = null; continue; }
            IndexManifest m;
            try
            {
                m = await ReadManifestAsync(ids[i], ct).ConfigureAwait(false);
            }
            catch (CorruptIndexException)
            {
                logIndexed = null;
                continue; // a damaged manifest is never published, so it pins no segments
            }
            referenced.UnionWith(ReferencedVersions(m));
            if (logIndexed is { } floor) logIndexed = Math.Min(floor, m.IndexedSequence);
        }
        if (logIndexed == long.MaxValue) logIndexed = null;
        if (rebuild is { Record.IsActive: true } active && logIndexed is { } through) logIndexed = Math.Min(through, active.Record.CoversSequence);
        var deleted = new List<string>();
        var kept = new List<KeptVersion>();
        for (int i = 0; i < ids.Count; i++)
        {
            var v = ids[i];
            var blobs = versions[v];
            var reason = reasons[i] ?? (referenced.Contains(v) ? KeptReason.Referenced : null);
            if (reason is { } r)
            {
                kept.Add(new KeptVersion(v, r));
                continue;
            }
            // The names listed above: nothing writes into an old version folder (ids are never reused).
            foreach (var b in blobs) await Blobs.DeleteAsync(b.Name, ct).ConfigureAwait(false);
            deleted.Add(v);
        }
        return new GarbageCollection(deleted, kept, logIndexed);
    }

    /// <summary>Whether any blob lies under the index's prefix (the whole folder for a folder index).</summary>
    private async Task<bool> HoldsAnyBlobAsync(CancellationToken ct)
    {
        await foreach (var _ in Blobs.ListAsync(Prefix, ct).ConfigureAwait(false)) return true;
        return false;
    }

    public async Task<IndexManifest> ReadManifestAsync(string version, CancellationToken ct = default)
    {
        var name = VersionPrefix(version) + "manifest.json";
        var bytes = await ReadCountedAsync(name, ct).ConfigureAwait(false);
        var m = IndexManifest.Parse(bytes, name);
        if (m.Version != version) throw new CorruptIndexException($"manifest '{name}' says it is version {m.Version}");
        return m;
    }

    /// <summary>Resolves current → manifest. Throws <see cref="IndexNotFoundException"/> when nothing is published.</summary>
    public async Task<IndexManifest> OpenCurrentAsync(CancellationToken ct = default)
    {
        var current = await GetCurrentAsync(ct).ConfigureAwait(false)
            ?? throw new IndexNotFoundException($"no index is published at {Blobs.Description}{(Name.Length > 0 ? " under '" + Name + "'" : "")} (no 'current' pointer)");
        return await ReadManifestAsync(current.Version, ct).ConfigureAwait(false);
    }

    public async Task<RoutingData> ReadRoutingAsync(IndexManifest m, CancellationToken ct = default)
    {
        var (bytes, name) = await ReadSegmentAsync(m, m.Routing, ct).ConfigureAwait(false);
        return RoutingData.FromSegment(bytes, name, m);
    }

    public async Task<PartitionCodes> ReadCodesAsync(IndexManifest m, PartitionEntry p, CancellationToken ct = default)
    {
        if (p.IsComposite)
        {
            // Appended rows may leave the quantizer to the base segment (PartitionCodes.ToAppendedSegment): the composition takes the base's.
            var (parts, rows, bytes) = await ReadCompositeAsync(m, p, (e, appended, t) => ReadCodesPartAsync(m, e, appended, t), e => e.Codes.Bytes, ct).ConfigureAwait(false);
            return PartitionComposition.Codes(parts, rows, bytes);
        }
        return await ReadCodesPartAsync(m, p, appended: false, ct).ConfigureAwait(false);
    }

    private async Task<PartitionCodes> ReadCodesPartAsync(IndexManifest m, PartitionEntry p, bool appended, CancellationToken ct)
    {
        async Task<PartitionCodes> Decode(CancellationToken t)
        {
            var (segment, name) = await ReadSegmentAsync(m, p.Codes, t).ConfigureAwait(false);
            return PartitionCodes.FromSegment(segment, name, p, m.GlobalDimensions, appended);
        }
        if (Decoded is not { } cache) return await Decode(ct).ConfigureAwait(false);
        // The decoding depends on the entry's shape and on whether the rows are appended ones, besides the bytes.
        var key = DecodedSegmentCache.KeyOf(Blobs, BlobName(m, p.Codes), p.Codes.Offset, p.Codes.Bytes,
            $"codes {p.Id} {p.Count}x{p.CodedDimensions} of {m.GlobalDimensions}{(appended ? " appended" : "")}");
        return await cache.GetOrDecodeAsync(key, Decode, DecodedBytes, ct).ConfigureAwait(false);
    }

    private static long DecodedBytes(PartitionCodes c) =>
        c.Cells.LongLength + 8L * c.Signs.LongLength + 4L * (c.ResidualNorms.LongLength + c.Ids.LongLength + c.Mean.LongLength + c.Rotation.LongLength
            + c.Boundaries.LongLength + (c.OuterBoundaries?.LongLength ?? 0) + c.BoundaryOffsets.LongLength) + 8L * c.Eigenvalues.LongLength + c.Widths.LongLength;

    public async Task<PartitionVectors> ReadVectorsAsync(IndexManifest m, PartitionEntry p, CancellationToken ct = default)
    {
        if (p.IsComposite)
        {
            var (parts, rows, bytes) = await ReadCompositeAsync(m, p, (e, _, t) => ReadVectorsAsync(m, e, t), e => e.Vectors.Bytes, ct).ConfigureAwait(false);
            return PartitionComposition.Vectors(parts, rows, bytes);
        }
        var (segment, name) = await ReadSegmentAsync(m, p.Vectors, ct).ConfigureAwait(false);
        return PartitionVectors.FromSegment(segment, name, p, m.InternalDimensions);
    }

    public async Task<PartitionAttributes> ReadAttributesAsync(IndexManifest m, PartitionEntry p, CancellationToken ct = default)
    {
        if (m.Attributes is null || p.Attributes is null) throw new CorruptIndexException($"index version {m.Version} has no attributes");
        if (p.IsComposite)
        {
            var (parts, rows, bytes) = await ReadCompositeAsync(m, p, (e, _, t) => ReadAttributesAsync(m, e, t), e => e.Attributes?.Bytes ?? 0, ct).ConfigureAwait(false);
            return PartitionComposition.Attributes(m.Attributes, parts, rows, bytes);
        }
        async Task<PartitionAttributes> Decode(CancellationToken t)
        {
            var (segment, name) = await ReadSegmentAsync(m, p.Attributes, t).ConfigureAwait(false);
            return PartitionAttributes.FromSegment(segment, name, p, m.Attributes);
        }
        if (Decoded is not { } cache) return await Decode(ct).ConfigureAwait(false);
        // Decoding takes the attributes' names, types and cell counts. Dictionary sizes are left out: ingest only grows them,
        // so ids valid against a smaller dictionary stay valid (a rebuild's new dictionaries come with new segments).
        var key = DecodedSegmentCache.KeyOf(Blobs, BlobName(m, p.Attributes), p.Attributes.Offset, p.Attributes.Bytes,
            $"attributes {p.Count} ids {m.Attributes.HasIds} " + string.Join(",", m.Attributes.Attributes.Select(a => $"{a.Name}:{a.Type}:{a.Cells}")));
        return await cache.GetOrDecodeAsync(key, Decode, a => 2 * a.StoredBytes + (a.Keys is null ? 0 : 40L * a.Count), ct).ConfigureAwait(false);
    }

    /// <summary>
    /// A composite partition's deletion mask over its stored rows (base, then appended), or null when none is masked.
    /// </summary>
    public async Task<bool[]?> ReadDeletionMaskAsync(IndexManifest m, PartitionEntry p, CancellationToken ct = default)
    {
        if (p.Deleted is null) return null;
        var (bytes, name) = await ReadSegmentAsync(m, p.Deleted, ct).ConfigureAwait(false);
        return PartitionComposition.MaskFromSegment(bytes, name, p);
    }

    /// <summary>The segments of a composite partition (base, then appended, read in parallel), the rows its mask leaves, and their stored bytes.</summary>
    private async Task<(T[] Parts, (int Part, int Row)[] Rows, long Bytes)> ReadCompositeAsync<T>(IndexManifest m, PartitionEntry p,
        Func<PartitionEntry, bool, CancellationToken, Task<T>> read, Func<PartitionEntry, long> bytesOf, CancellationToken ct)
    {
        var entries = new List<PartitionEntry> { p.BaseEntry() };
        foreach (var a in p.Appended ?? []) entries.Add(a.EntryOf(p));
        var maskTask = ReadDeletionMaskAsync(m, p, ct);
        var parts = await Task.WhenAll(entries.Select((e, i) => read(e, i > 0, ct))).ConfigureAwait(false);
        var mask = await maskTask.ConfigureAwait(false);
        var rows = PartitionComposition.LiveRows(entries.Select(e => e.Count).ToArray(), mask);
        if (rows.Length != p.Count) throw new CorruptIndexException($"partition {p.Id} of version {m.Version} has {rows.Length} live rows; the manifest says {p.Count}");
        return (parts, rows, entries.Sum(bytesOf) + (p.Deleted?.Bytes ?? 0));
    }

    // Cached reads for warm instances. A segment's decoded size is close to its stored size (the
    // arrays are the sections), so the manifest's byte count is the cache charge.

    /// <summary>The partition's codes through <paramref name="cache"/>: read and decoded once per instance.</summary>
    public Task<PartitionCodes> ReadCodesAsync(IndexManifest m, PartitionEntry p, SegmentCache cache, CancellationToken ct = default) =>
        cache.GetOrLoadAsync(new SegmentKey(Name, m.Version, p.Id, CacheEntryKind.Codes), t => ReadCodesAsync(m, p, t), _ => p.Codes.Bytes, ct);

    /// <summary>The partition's raw vectors through <paramref name="cache"/>.</summary>
    public Task<PartitionVectors> ReadVectorsAsync(IndexManifest m, PartitionEntry p, SegmentCache cache, CancellationToken ct = default) =>
        cache.GetOrLoadAsync(new SegmentKey(Name, m.Version, p.Id, CacheEntryKind.Vectors), t => ReadVectorsAsync(m, p, t), _ => p.Vectors.Bytes, ct);

    /// <summary>The partition's attributes through <paramref name="cache"/>.</summary>
    public Task<PartitionAttributes> ReadAttributesAsync(IndexManifest m, PartitionEntry p, SegmentCache cache, CancellationToken ct = default) =>
        cache.GetOrLoadAsync(new SegmentKey(Name, m.Version, p.Id, CacheEntryKind.Attributes), t => ReadAttributesAsync(m, p, t), _ => p.Attributes?.Bytes ?? 0, ct);

    /// <summary>The routing data through <paramref name="cache"/> (partition -1: it belongs to the whole version).</summary>
    public Task<RoutingData> ReadRoutingAsync(IndexManifest m, SegmentCache cache, CancellationToken ct = default) =>
        cache.GetOrLoadAsync(new SegmentKey(Name, m.Version, -1, CacheEntryKind.Routing), t => ReadRoutingAsync(m, t), _ => m.Routing.Bytes, ct);

    /// <summary>
    /// One segment's bytes: the whole blob, or its range of a pack by one ranged read. The name returned is what errors
    /// about the segment say (a packed one's names the pack and the range, so a corrupt section is found).
    /// </summary>
    private async Task<(byte[] Bytes, string Name)> ReadSegmentAsync(IndexManifest m, SegmentRef segment, CancellationToken ct)
    {
        var blob = BlobName(m, segment);
        if (TryPrefetched(blob, segment, out var prefetched)) return (prefetched, segment.Offset is { } at ? PackedName(blob, at, segment.Bytes) : blob);
        if (segment.Offset is not { } offset) return (await ReadCountedAsync(blob, ct).ConfigureAwait(false), blob);
        var name = PackedName(blob, offset, segment.Bytes);
        if (segment.Bytes > int.MaxValue) throw new CorruptIndexException($"segment {name} is larger than a ranged read can fetch");
        return (await ReadRangeCountedAsync(blob, offset, (int)segment.Bytes, ct).ConfigureAwait(false), name);
    }

    /// <summary>How errors name a segment inside a pack: the blob and the byte range.</summary>
    public static string PackedName(string blob, long offset, long bytes) => $"{blob}[{offset}..{offset + bytes})";

    private async Task<byte[]> ReadCountedAsync(string name, CancellationToken ct)
    {
        byte[] bytes;
        try
        {
            bytes = await Blobs.ReadAllAsync(name, ct).ConfigureAwait(false);
        }
        catch (BlobNotFoundException)
        {
            throw new CorruptIndexException($"blob '{name}' named by the index is missing from {Blobs.Description}");
        }
        Interlocked.Add(ref _bytesRead, bytes.LongLength);
        return bytes;
    }
}

public sealed class IndexNotFoundException(string message) : Exception(message);

/// <summary>Source-generated so the function app can be compiled ahead of time; camelCase, the form published pointers are in.</summary>
// Null members are left out: a pointer without a reservation is written exactly as before.
[System.Text.Json.Serialization.JsonSourceGenerationOptions(JsonSerializerDefaults.Web, DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
[System.Text.Json.Serialization.JsonSerializable(typeof(IndexStore.CurrentPointer))]
internal sealed partial class PointerJson : System.Text.Json.Serialization.JsonSerializerContext;
