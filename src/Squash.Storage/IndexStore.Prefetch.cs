using System.Collections.Concurrent;
using Squash.Index.Format;
using Squash.Index.Model;

namespace Squash.Storage;

public sealed partial class IndexStore
{
    /// <summary>Gap between two wanted ranges of one blob up to which <see cref="PrefetchedAsync"/> reads across it.</summary>
    private const long CoalesceGap = 256 << 10;
    /// <summary>The longest range <see cref="PrefetchedAsync"/> sends in one request.</summary>
    private const long CoalesceSpan = 32 << 20;
    /// <summary>Requests <see cref="PrefetchedAsync"/> keeps in flight.</summary>
    private const int PrefetchConcurrency = 8;

    /// <summary>Segments read ahead, by (blob, offset or null for a whole blob, bytes); a view's reads of them come from here.</summary>
    private IReadOnlyDictionary<(string Blob, long? Offset, long Bytes), byte[]>? _prefetched;

    /// <summary>
    /// A view of this store whose reads of <paramref name="segments"/> (of version <paramref name="m"/>) are served from
    /// memory, fetched now with as few requests as their layout allows: ranges of one blob lying near each other are read
    /// by one request. Reading many partitions whole needs it: a partition ingest has extended is its base segment, up to
    /// <c>MaxAppendedSegments</c> appended ones in other runs' packs and a deletion mask, each one ranged read when read
    /// alone, so a whole version of 10⁶ rows is tens of thousands of small requests; a run's pack holds the segments of
    /// neighbouring partitions side by side, so reading many partitions at once takes a few requests per pack. Reads of
    /// anything else go to the store as usual; bytes fetched are counted on this store.
    /// </summary>
    public async Task<IndexStore> PrefetchedAsync(IndexManifest m, IEnumerable<SegmentRef> segments, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(m);
        ArgumentNullException.ThrowIfNull(segments);
        var wanted = segments.Select(s => (Blob: BlobName(m, s), s.Offset, s.Bytes)).Distinct().ToList();
        var held = new ConcurrentDictionary<(string Blob, long? Offset, long Bytes), byte[]>();
        var spans = new List<(string Blob, long Start, long End, List<(string Blob, long? Offset, long Bytes)> Members)>();
        foreach (var group in wanted.Where(w => w.Offset is not null).GroupBy(w => w.Blob, StringComparer.Ordinal))
        {
            (string Blob, long Start, long End, List<(string, long?, long)> Members)? span = null;
            foreach (var w in group.OrderBy(w => w.Offset))
            {
                long start = w.Offset!.Value, end = start + w.Bytes;
                if (span is { } open && start - open.End <= CoalesceGap && end - open.Start <= CoalesceSpan)
                {
                    open.Members.Add(w);
                    span = open with { End = Math.Max(open.End, end) };
                    continue;
                }
                if (span is { } done) spans.Add(done);
                span = (group.Key, start, end, [w]);
            }
            if (span is { } last) spans.Add(last);
        }
        var options = new ParallelOptions { MaxDegreeOfParallelism = PrefetchConcurrency, CancellationToken = ct };
        await Parallel.ForEachAsync(spans, options, async (span, t) =>
        {
            var bytes = await ReadRangeCountedAsync(span.Blob, span.Start, checked((int)(span.End - span.Start)), t).ConfigureAwait(false);
            if (bytes.LongLength != span.End - span.Start)
                throw new CorruptIndexException($"blob '{span.Blob}' is shorter than the index says: {bytes.LongLength} bytes at {span.Start}, {span.End - span.Start} named");
            foreach (var w in span.Members)
                held[w] = bytes.AsSpan(checked((int)(w.Offset!.Value - span.Start)), checked((int)w.Bytes)).ToArray();
        }).ConfigureAwait(false);
        await Parallel.ForEachAsync(wanted.Where(w => w.Offset is null), options, async (w, t) =>
            held[w] = await ReadCountedAsync(w.Blob, t).ConfigureAwait(false)).ConfigureAwait(false);
        return new IndexStore(Blobs, Name) { Decoded = Decoded, RangedReads = RangedReads, _prefetched = held };
    }

    /// <summary>A segment's bytes when this view fetched them ahead (<see cref="PrefetchedAsync"/>).</summary>
    private bool TryPrefetched(string blob, SegmentRef segment, out byte[] bytes)
    {
        bytes = [];
        return _prefetched is { } held && held.TryGetValue((blob, segment.Offset, segment.Bytes), out bytes!);
    }
}
