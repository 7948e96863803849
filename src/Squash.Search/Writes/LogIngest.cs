using System.Globalization;
using System.Text.Json;
using Squash.Core;
using Squash.Core.Linalg;
using Squash.Core.Quantization;
using Squash.Index.Attributes;
using Squash.Index.Build.Stages;
using Squash.Index.Format;
using Squash.Index.Model;
using Squash.Search.Filters;
using Squash.Storage;
using Squash.Storage.Writes;

namespace Squash.Search.Writes;

/// <summary>What one ingest run did.</summary>
/// <param name="Version">The version it wrote (null when the log had nothing past the watermark).</param>
/// <param name="Published">True when <c>current</c> names <paramref name="Version"/> (false: a newer version got there first).</param>
public sealed record IngestResult(string? Version, bool Published, long FromSequence, long ToSequence, int Batches, int Upserts, int Deleted,
    int TouchedPartitions, int Partitions);

/// <summary>
/// Applies the write-ahead log past the current version's watermark, in sequence order, and publishes a new version that
/// rewrites only the partitions the log touched (survivors copied, new rows appended, deleted and replaced rows left out)
/// and references the segments of every other partition in the folder they already live in. New rows go to their nearest
/// centroid and are encoded with that partition's existing KLT, widths and cells (no retraining); a value beyond the
/// partition's outer cell boundaries moves that boundary out, which keeps every stored code and keeps the cell's lower
/// bound a true bound. Attribute values the index has never seen extend the category dictionaries and widen the edge cells
/// of numbers (raw values stay for the exact recheck). The new version starts from the published one, so a run that dies
/// before its pointer moves leaves nothing behind that counts: the next run applies the same batches again.
/// </summary>
public static class LogIngest
{
    /// <summary>Batches one run applies at most (a larger backlog takes several runs, each publishing).</summary>
    public const int DefaultMaxBatches = 2_000;
    /// <summary>How long an ingest holds the index's lease between renewals (a run renews after each version it publishes).</summary>
    public static readonly TimeSpan DefaultLease = TimeSpan.FromMinutes(2);

    /// <summary>What a triggered ingest did: nothing when another held the lease (<paramref name="Busy"/>), else one result per version it wrote.</summary>
    public sealed record LeasedRun(bool Busy, IReadOnlyList<IngestResult> Rounds);

    /// <summary>
    /// Takes the index's lease (or returns <c>Busy</c> at once: the holder is applying the log), then ingests until the log is
    /// applied up to where it ended when the last round started, at most <paramref name="maxRounds"/> versions; releases it.
    /// </summary>
    public static async Task<LeasedRun> RunLeasedAsync(IndexStore store, WriteLog log, TimeSpan? lease = null, int maxRounds = 10,
        int maxBatches = DefaultMaxBatches, TimeProvider? clock = null, CancellationToken ct = default)
    {
        var held = await IngestLease.TryAcquireAsync(store.Blobs, log.Index, lease ?? DefaultLease, clock, ct).ConfigureAwait(false);
        if (held is null) return new LeasedRun(true, []);
        var rounds = new List<IngestResult>();
        try
        {
            for (int round = 0; round < maxRounds; round++)
            {
                var result = await RunAsync(store, log, maxBatches, clock, ct).ConfigureAwait(false);
                if (result.Version is null) break;
                rounds.Add(result);
                if (!await held.RenewAsync(ct).ConfigureAwait(false)) break; // lost it: the new holder carries on
            }
        }
        finally
        {
            await held.ReleaseAsync(CancellationToken.None).ConfigureAwait(false);
        }
        return new LeasedRun(false, rounds);
    }

    public static async Task<IngestResult> RunAsync(IndexStore store, WriteLog log, int maxBatches = DefaultMaxBatches, TimeProvider? clock = null,
        CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatches, 1);
        var m = await store.OpenCurrentAsync(ct).ConfigureAwait(false);
        long from = m.IndexedSequence;
        long latest = await log.LatestSequenceAsync(from, ct).ConfigureAwait(false);
        if (latest <= from) return new IngestResult(null, false, from, from, 0, 0, 0, 0, m.Partitions.Count);
        long to = Math.Min(latest, from + maxBatches);

        var batches = new WriteBatch?[to - from];
        await Parallel.ForEachAsync(Enumerable.Range(0, batches.Length), new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = ct }, async (i, t) =>
        {
            long s = from + 1 + i;
            var batch = await log.TryReadBatchAsync(s, t).ConfigureAwait(false)
                ?? throw new InvalidDataException($"log batch {s} of index '{log.Index}' is missing although a later one exists");
            batches[i] = await log.CountsAsync(batch, s, t).ConfigureAwait(false) ? batch : null;
        }).ConfigureAwait(false);

        var routing = await store.ReadRoutingAsync(m, ct).ConfigureAwait(false);
        int partitions = m.Partitions.Count;
        var codes = new PartitionCodes[partitions];
        var vectors = new PartitionVectors?[partitions];
        var attributes = new PartitionAttributes?[partitions];
        await Parallel.ForEachAsync(Enumerable.Range(0, partitions), new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = ct }, async (p, t) =>
        {
            codes[p] = await store.ReadCodesAsync(m, m.Partitions[p], t).ConfigureAwait(false);
            if (m.Attributes is not null) attributes[p] = await store.ReadAttributesAsync(m, m.Partitions[p], t).ConfigureAwait(false);
        }).ConfigureAwait(false);

        var state = new State(m, codes, attributes);
        int upserts = 0;
        foreach (var batch in batches)
        {
            if (batch is null) continue;
            if (batch.DeleteWhere is { } where) state.DeleteWhere(where);
            foreach (var id in batch.Deletes ?? []) state.Delete(id);
            foreach (var u in batch.Upserts ?? []) { state.Upsert(u); upserts++; }
        }

        var space = new MetricSpace(MetricSpace.Parse(m.Metric), m.Dimensions, m.MaxNorm);
        int d = m.InternalDimensions;
        // New rows: internal vectors and nearest centroid.
        var added = state.Pending.Values.ToArray();
        var addedX = new float[(long)added.Length * d];
        var addedPartition = new int[added.Length];
        for (int i = 0; i < added.Length; i++)
        {
            var x = addedX.AsSpan(i * d, d);
            space.MapStored(added[i].Vector, x);
            addedPartition[i] = Nearest(routing.Centroids, partitions, d, x);
        }
        var addedRows = state.RowNumbers(added);

        var touched = new bool[partitions];
        for (int p = 0; p < partitions; p++) touched[p] = state.Deleted[p] is not null;
        foreach (int p in addedPartition) touched[p] = true;

        // Newer than the version it extends even when this machine's clock is behind the one that wrote it: the pointer
        // moves forward in id order only, so an older id would never publish.
        var now = (clock ?? TimeProvider.System).GetUtcNow();
        if (VersionIds.StartedUtc(m.Version) is { } based && based.AddMilliseconds(1) > now) now = based.AddMilliseconds(1);
        var version = VersionIds.New(now);
        var sink = store.CreateSink(version);
        var schema = m.Attributes is null ? null : new SchemaGrowth(m.Attributes);
        var entries = new PartitionEntry[partitions];
        var radii = (float[])routing.Radii.Clone();
        var sizes = (int[])routing.PartitionSizes.Clone();
        try
        {
            for (int p = 0; p < partitions; p++)
            {
                var entry = m.Partitions[p];
                if (!touched[p])
                {
                    entries[p] = entry with
                    {
                        Codes = Referenced(entry.Codes, m), Vectors = Referenced(entry.Vectors, m),
                        Attributes = entry.Attributes is null ? null : Referenced(entry.Attributes, m),
                    };
                    continue;
                }
                ct.ThrowIfCancellationRequested();
                vectors[p] = await store.ReadVectorsAsync(m, entry, ct).ConfigureAwait(false);
                var mine = Enumerable.Range(0, added.Length).Where(i => addedPartition[i] == p).ToArray();
                var rewritten = Rewrite(m, routing, p, codes[p], vectors[p]!, attributes[p], state.Deleted[p], mine, added, addedX, addedRows, schema, ref radii[p]);
                sizes[p] = rewritten.Codes.Count;
                var codeBytes = rewritten.Codes.ToSegment();
                var vectorBytes = rewritten.Vectors.ToSegment();
                await sink.WriteAsync(IndexBuildStages.CodesName(p), codeBytes, ct).ConfigureAwait(false);
                await sink.WriteAsync(IndexBuildStages.VectorsName(p), vectorBytes, ct).ConfigureAwait(false);
                byte[]? attributeBytes = rewritten.Attributes?.ToSegment();
                if (attributeBytes is not null) await sink.WriteAsync(IndexBuildStages.AttributesName(p), attributeBytes, ct).ConfigureAwait(false);
                entries[p] = entry with
                {
                    Count = rewritten.Codes.Count,
                    Codes = new SegmentRef(IndexBuildStages.CodesName(p), codeBytes.LongLength),
                    Vectors = new SegmentRef(IndexBuildStages.VectorsName(p), vectorBytes.LongLength),
                    Attributes = attributeBytes is null ? null : new SegmentRef(IndexBuildStages.AttributesName(p), attributeBytes.LongLength),
                    AttributeStats = rewritten.Attributes?.Statistics() ?? entry.AttributeStats,
                };
            }
            var routingBytes = new RoutingData { GlobalTransform = routing.GlobalTransform, Centroids = routing.Centroids, Radii = radii, PartitionSizes = sizes }.ToSegment();
            await sink.WriteAsync(IndexBuildStages.RoutingName, routingBytes, ct).ConfigureAwait(false);
            var manifest = m with
            {
                Version = version,
                CreatedUtc = (clock ?? TimeProvider.System).GetUtcNow(),
                Count = entries.Sum(e => (long)e.Count),
                Routing = new SegmentRef(IndexBuildStages.RoutingName, routingBytes.LongLength),
                Partitions = entries,
                Attributes = schema?.Result() ?? m.Attributes,
                IndexedSequence = to,
                NextRow = state.NextRow,
            };
            var published = await store.PublishAsync(sink, manifest, ct).ConfigureAwait(false);
            return new IngestResult(version, published.Published, from, to, batches.Count(b => b is not null), upserts, state.DeletedCount,
                touched.Count(t => t), partitions);
        }
        catch (Exception) when (!ct.IsCancellationRequested)
        {
            // Nothing of this version was published; what it wrote is ours to remove (gc would, later).
            try { await sink.DeleteWrittenAsync(CancellationToken.None).ConfigureAwait(false); } catch (Exception) { /* gc removes it */ }
            throw;
        }
    }

    private static SegmentRef Referenced(SegmentRef s, IndexManifest m) => s with { Version = s.Version ?? m.Version };

    private static int Nearest(float[] centroids, int partitions, int d, ReadOnlySpan<float> x)
    {
        int best = 0;
        float bestDistance = float.PositiveInfinity;
        for (int p = 0; p < partitions; p++)
        {
            float dist = System.Numerics.Tensors.TensorPrimitives.Distance(centroids.AsSpan(p * d, d), x);
            if (dist < bestDistance) { bestDistance = dist; best = p; }
        }
        return best;
    }

    private sealed record Rewritten(PartitionCodes Codes, PartitionVectors Vectors, PartitionAttributes? Attributes);

    /// <summary>One partition: its surviving rows, then the new rows encoded with its quantizer, in ascending row number.</summary>
    private static Rewritten Rewrite(IndexManifest m, RoutingData routing, int p, PartitionCodes old, PartitionVectors oldVectors, PartitionAttributes? oldAttributes,
        bool[]? deleted, int[] mine, UpsertItem[] added, float[] addedX, long[] addedRows, SchemaGrowth? schema, ref float radius)
    {
        int d = m.InternalDimensions, gm = old.GlobalDimensions, md = old.CodedDimensions, words = old.SignWords;
        var boundaries = (float[])old.Boundaries.Clone();
        var global = routing.GlobalTransform;
        var local = Klt.FromParts(old.Mean, old.Rotation, old.Eigenvalues, gm, md);

        // Encode the new rows first (their cells can widen the outer boundaries).
        int k = mine.Length;
        var newCells = new byte[(long)k * md];
        var newSigns = new ulong[(long)k * words];
        var newResidual = new float[k];
        var y = new float[gm];
        var z = new float[Math.Max(1, md)];
        for (int j = 0; j < k; j++)
        {
            var x = addedX.AsSpan(mine[j] * d, d);
            global.Project(x, y);
            double outside = 0, inside = 0, coded = 0;
            for (int t = 0; t < d; t++) { double v = x[t] - (double)global.Mean[t]; outside += v * v; }
            foreach (float v in y) outside -= (double)v * v;
            for (int t = 0; t < gm; t++) { double v = y[t] - (double)old.Mean[t]; inside += v * v; }
            if (md > 0) local.Project(y, z);
            for (int t = 0; t < md; t++)
            {
                coded += (double)z[t] * z[t];
                int w = old.Widths[t], off = old.BoundaryOffsets[t], top = off + (1 << w);
                if (z[t] < boundaries[off]) boundaries[off] = z[t];
                if (z[t] >= boundaries[top]) boundaries[top] = MathF.BitIncrement(z[t]);
                newCells[(long)j * md + t] = (byte)LloydBoundaries.Encode(boundaries.AsSpan(off, (1 << w) + 1), z[t]);
            }
            SignCodes.Encode(z.AsSpan(0, md), newSigns.AsSpan(j * words, words));
            newResidual[j] = (float)Math.Sqrt(Math.Max(0, outside + inside - coded));
            var centroid = routing.Centroids.AsSpan(p * d, d);
            float reach = System.Numerics.Tensors.TensorPrimitives.Distance(centroid, x);
            radius = Math.Max(radius, (float)(reach * (1 + 1e-6) + 1e-6));
        }

        // Rows in the new partition: (row number, old position or −1 − new index), ascending by row number.
        var order = new List<(long Row, int Source)>(old.Count + k);
        for (int i = 0; i < old.Count; i++) if (deleted is null || !deleted[i]) order.Add((old.Ids[i], i));
        for (int j = 0; j < k; j++) order.Add((addedRows[mine[j]], -1 - j));
        order.Sort((a, b) => a.Row.CompareTo(b.Row));
        int n = order.Count;

        var cells = new byte[(long)n * md];
        var signs = new ulong[(long)n * words];
        var residual = new float[n];
        var ids = new int[n];
        var raw = new float[(long)n * d];
        for (int i = 0; i < n; i++)
        {
            var (row, source) = order[i];
            ids[i] = checked((int)row);
            if (source >= 0)
            {
                old.Cells.AsSpan(source * md, md).CopyTo(cells.AsSpan(i * md, md));
                old.Signs.AsSpan(source * words, words).CopyTo(signs.AsSpan(i * words, words));
                residual[i] = old.ResidualNorms[source];
                oldVectors.Row(source).CopyTo(raw.AsSpan(i * d, d));
            }
            else
            {
                int j = -1 - source;
                newCells.AsSpan(j * md, md).CopyTo(cells.AsSpan(i * md, md));
                newSigns.AsSpan(j * words, words).CopyTo(signs.AsSpan(i * words, words));
                residual[i] = newResidual[j];
                addedX.AsSpan(mine[j] * d, d).CopyTo(raw.AsSpan(i * d, d));
            }
        }
        var codes = new PartitionCodes
        {
            Id = old.Id, Count = n, GlobalDimensions = gm, CodedDimensions = md, Mean = old.Mean, Rotation = old.Rotation, Eigenvalues = old.Eigenvalues,
            Widths = old.Widths, Boundaries = boundaries, BoundaryOffsets = old.BoundaryOffsets, Signs = signs, SignWords = words, Cells = cells,
            ResidualNorms = residual, Ids = ids,
        };
        var vectors = new PartitionVectors { Count = n, Dimensions = d, Data = raw };
        PartitionAttributes? attrs = null;
        if (oldAttributes is not null && schema is not null)
            attrs = schema.Encode(oldAttributes, order.Select(o => o.Source >= 0 ? (o.Source, (UpsertItem?)null) : (-1, added[mine[-1 - o.Source]])).ToArray());
        return new Rewritten(codes, vectors, attrs);
    }

    /// <summary>The log applied to the published rows: which rows are gone, which upserts are still live, and where ids live.</summary>
    private sealed class State
    {
        private readonly IndexManifest _m;
        private readonly PartitionCodes[] _codes;
        private readonly PartitionAttributes?[] _attributes;
        private readonly Dictionary<string, (int P, int Pos)> _where = new(StringComparer.Ordinal);
        private readonly FilterCompiler _filters;

        public State(IndexManifest m, PartitionCodes[] codes, PartitionAttributes?[] attributes)
        {
            _m = m;
            _codes = codes;
            _attributes = attributes;
            _filters = new FilterCompiler(m.Attributes);
            Deleted = new bool[]?[codes.Length];
            NextRow = m.RowLimit;
            bool hasIds = m.Attributes is { HasIds: true };
            for (int p = 0; p < codes.Length; p++)
                for (int i = 0; i < codes[p].Count; i++)
                {
                    string? key = hasIds ? attributes[p]!.Keys![i] : codes[p].Ids[i].ToString(CultureInfo.InvariantCulture);
                    if (key is not null) _where[key] = (p, i);
                }
        }

        public bool[]?[] Deleted { get; }
        public int DeletedCount { get; private set; }
        public long NextRow { get; private set; }
        /// <summary>Live upserts not yet in the index, in the order they were (last) written.</summary>
        public Dictionary<string, UpsertItem> Pending { get; } = new(StringComparer.Ordinal);

        private void Remove(int p, int pos)
        {
            var mask = Deleted[p] ??= new bool[_codes[p].Count];
            if (!mask[pos]) { mask[pos] = true; DeletedCount++; }
        }

        public void Delete(string id)
        {
            Pending.Remove(id);
            if (_where.Remove(id, out var at)) Remove(at.P, at.Pos);
        }

        public void Upsert(UpsertItem u)
        {
            Delete(u.Id);
            Pending[u.Id] = u;
        }

        public void DeleteWhere(JsonElement where)
        {
            var filter = _filters.Compile(where);
            foreach (var (id, at) in _where.ToArray())
            {
                bool match = filter.MatchesAll || (_attributes[at.P] is { } a && filter.Matches(a, at.Pos));
                if (match) { _where.Remove(id); Remove(at.P, at.Pos); }
            }
            foreach (var u in Pending.Values.ToArray())
                if (TailFilter.Matches(where, u.Attributes, _m.Attributes)) Pending.Remove(u.Id);
        }

        /// <summary>Row numbers for the new rows: an index without ids names a row by its number; one with ids takes fresh numbers.</summary>
        public long[] RowNumbers(UpsertItem[] added)
        {
            var rows = new long[added.Length];
            bool hasIds = _m.Attributes is { HasIds: true };
            for (int i = 0; i < added.Length; i++)
            {
                if (hasIds) rows[i] = NextRow++;
                else
                {
                    // The write API takes only row numbers as ids for such an index.
                    if (!int.TryParse(added[i].Id, NumberStyles.None, CultureInfo.InvariantCulture, out int row))
                        throw new InvalidDataException($"upsert id '{added[i].Id}' is not a row number, and the index has no ids");
                    rows[i] = row;
                    NextRow = Math.Max(NextRow, row + 1L);
                }
            }
            return rows;
        }
    }

    /// <summary>
    /// The attribute schema as the log grows it: category and tag dictionaries extended by values they lacked, number cells'
    /// min/max widened and counts raised by the values that land in them (the codes clamp to the edge cells).
    /// </summary>
    private sealed class SchemaGrowth
    {
        private readonly IndexAttributes _info;
        private readonly List<string>?[] _values;
        private readonly Dictionary<string, int>?[] _lookup;
        private readonly double[]?[] _min, _max;
        private readonly long[]?[] _counts;
        private readonly bool[] _lossy;

        public SchemaGrowth(IndexAttributes info)
        {
            _info = info;
            int a = info.Attributes.Count;
            _values = new List<string>?[a];
            _lookup = new Dictionary<string, int>?[a];
            _min = new double[]?[a];
            _max = new double[]?[a];
            _counts = new long[]?[a];
            _lossy = new bool[a];
            for (int i = 0; i < a; i++)
            {
                var def = info.Attributes[i];
                _lossy[i] = def.Lossy;
                if (def.Type is AttributeType.Category or AttributeType.Tags)
                {
                    _values[i] = [.. def.Values ?? []];
                    _lookup[i] = new Dictionary<string, int>(StringComparer.Ordinal);
                    for (int v = 0; v < _values[i]!.Count; v++) _lookup[i]![_values[i]![v]] = v;
                }
                else if (def.Type is AttributeType.Number or AttributeType.Integer)
                {
                    _min[i] = (double[])def.CellMin!.Clone();
                    _max[i] = (double[])def.CellMax!.Clone();
                    _counts[i] = (long[])def.CellCounts!.Clone();
                }
            }
        }

        public IndexAttributes Result() => _info with
        {
            Attributes = _info.Attributes.Select((def, i) => def.Type switch
            {
                AttributeType.Category or AttributeType.Tags => def with { Values = [.. _values[i]!] },
                AttributeType.Number or AttributeType.Integer => def with { CellMin = _min[i], CellMax = _max[i], CellCounts = _counts[i], Lossy = _lossy[i] },
                _ => def,
            }).ToArray(),
        };

        private int Intern(int a, string value)
        {
            if (!_lookup[a]!.TryGetValue(value, out int id))
            {
                id = _lookup[a]![value] = _values[a]!.Count;
                _values[a]!.Add(value);
            }
            return id;
        }

        private byte NumberCode(int a, double v)
        {
            var def = _info.Attributes[a];
            int c = AttributeEncoding.Encode(def.Boundaries, v);
            if (_counts[a]![c]++ == 0) { _min[a]![c] = v; _max[a]![c] = v; }
            else { _min[a]![c] = Math.Min(_min[a]![c], v); _max[a]![c] = Math.Max(_max[a]![c], v); }
            return (byte)c;
        }

        /// <summary>A partition's attributes from its surviving rows (position in <paramref name="old"/>) and new rows (JSON), in order.</summary>
        public PartitionAttributes Encode(PartitionAttributes old, (int Source, UpsertItem? Item)[] rows)
        {
            int n = rows.Length;
            var columns = new PartitionAttributeColumn[_info.Attributes.Count];
            for (int a = 0; a < columns.Length; a++)
            {
                var def = _info.Attributes[a];
                var was = old.Columns[a];
                JsonElement? Value(UpsertItem u) =>
                    u.Attributes is { ValueKind: JsonValueKind.Object } o && o.TryGetProperty(def.Name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;
                switch (def.Type)
                {
                    case AttributeType.Number:
                    case AttributeType.Integer:
                    {
                        var codes = new byte[n];
                        double[]? numbers = def.Type == AttributeType.Number ? new double[n] : null;
                        long[]? integers = def.Type == AttributeType.Integer ? new long[n] : null;
                        for (int i = 0; i < n; i++)
                        {
                            var (source, item) = rows[i];
                            if (source >= 0)
                            {
                                codes[i] = was.Codes![source];
                                if (numbers is not null) numbers[i] = was.Numbers![source]; else integers![i] = was.Integers![source];
                                continue;
                            }
                            if (Value(item!) is not { } v) { codes[i] = AttributeEncoding.MissingCode; continue; }
                            double x;
                            if (numbers is not null) x = numbers[i] = v.GetDouble();
                            else
                            {
                                x = integers![i] = v.GetInt64();
                                _lossy[a] |= Math.Abs(x) >= 9007199254740992d;
                            }
                            codes[i] = NumberCode(a, x);
                        }
                        columns[a] = new PartitionAttributeColumn { Type = def.Type, Codes = codes, Numbers = numbers, Integers = integers };
                        break;
                    }
                    case AttributeType.Bool:
                    {
                        var codes = new byte[n];
                        for (int i = 0; i < n; i++)
                        {
                            var (source, item) = rows[i];
                            codes[i] = source >= 0 ? was.Codes![source] : Value(item!) is { } v ? (byte)(v.GetBoolean() ? 1 : 0) : AttributeEncoding.MissingCode;
                        }
                        columns[a] = new PartitionAttributeColumn { Type = def.Type, Codes = codes };
                        break;
                    }
                    case AttributeType.Category:
                    {
                        var ids = new int[n];
                        for (int i = 0; i < n; i++)
                        {
                            var (source, item) = rows[i];
                            ids[i] = source >= 0 ? was.Ids![source] : Value(item!) is { } v ? Intern(a, v.GetString()!) : -1;
                        }
                        columns[a] = new PartitionAttributeColumn { Type = def.Type, Ids = ids };
                        break;
                    }
                    default:
                    {
                        var present = new byte[n];
                        var offsets = new int[n + 1];
                        var tags = new List<int>();
                        for (int i = 0; i < n; i++)
                        {
                            offsets[i] = tags.Count;
                            var (source, item) = rows[i];
                            if (source >= 0)
                            {
                                present[i] = was.Present![source];
                                if (present[i] != 0) tags.AddRange(was.Tags(source).ToArray());
                            }
                            else if (Value(item!) is { } v)
                            {
                                present[i] = 1;
                                tags.AddRange(new SortedSet<int>(v.EnumerateArray().Select(t => Intern(a, t.GetString()!))));
                            }
                        }
                        offsets[n] = tags.Count;
                        columns[a] = new PartitionAttributeColumn { Type = def.Type, Present = present, TagOffsets = offsets, TagIds = tags.ToArray() };
                        break;
                    }
                }
            }
            string?[]? keys = null;
            if (old.Keys is not null)
            {
                keys = new string?[n];
                for (int i = 0; i < n; i++) keys[i] = rows[i].Source >= 0 ? old.Keys[rows[i].Source] : rows[i].Item!.Id;
            }
            return new PartitionAttributes { Count = n, Columns = columns, Keys = keys };
        }
    }
}
