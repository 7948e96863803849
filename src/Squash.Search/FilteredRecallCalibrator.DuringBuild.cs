using Squash.Core;
using Squash.Core.Collections;
using Squash.Index.Attributes;
using Squash.Index.Model;
using Squash.Search.Filters;

namespace Squash.Search;

public static partial class FilteredRecallCalibrator
{
    /// <summary>
    /// The filtered families' exact neighbours, found from the build's input while the index is being built, as
    /// <see cref="ExactNeighboursDuringBuild"/> finds the unfiltered ones: families, matches and distances depend only on
    /// the input's vectors and attributes, and the attribute encoding (<see cref="AttributeEncoding.Fit"/>) the build
    /// writes into the manifest. A lowest-priority thread draws the families (the same <see cref="ColumnSample"/> and draw
    /// as <see cref="ByPartition.StartAsync"/>, over every row), then scores chunks of consecutive rows, one at a time,
    /// every block of queries (<see cref="ByPartition.ScoreBlock"/>) against each, as the build leaves a core idle;
    /// <see cref="FinishAsync"/> scores the chunks it has not reached on every core. Only the match counts per partition
    /// wait for the partitions (<see cref="DrawnNeighbours.Distribute"/>). The neighbours are the ones the partition-by-partition pass
    /// finds: a top-K does not depend on the order its rows were offered in, and each distance is the same sum.
    /// </summary>
    public sealed class NeighboursDuringBuild : IDisposable
    {
        /// <summary>
        /// Rows per chunk: about 4 MiB of vectors, which stays in the last-level cache while every block scores it (a block
        /// reading its matches from all of memory instead cost twice as much).
        /// </summary>
        private const int ChunkBytes = 4 << 20;

        private readonly AttributeTable _table;
        private readonly IndexAttributes _encoding;
        private readonly float[] _vectors;
        private readonly int _count, _dims, _dense, _k;
        private readonly Metric _metric;
        private readonly CalibrationQueries _queries;
        private readonly BackgroundWork _background;
        /// <summary>Set by <see cref="FinishAsync"/>: the background thread stops after its chunk.</summary>
        private volatile bool _finishing;
        /// <summary>The background thread's draw, once drawn.</summary>
        private DrawnNeighbours? _drawn;

        /// <param name="encoding">The attribute encoding the build writes (<see cref="AttributeTable.Encoding"/>), fitted by the
        /// caller: fitted on the background thread, the build would wait for it there.</param>
        /// <param name="vectors">The build's input, <paramref name="count"/> × <paramref name="dims"/>.</param>
        /// <param name="queries">The calibration's queries; the first <paramref name="dense"/> are the ones every family filters.</param>
        public NeighboursDuringBuild(AttributeTable table, IndexAttributes encoding, float[] vectors, int count, int dims, Metric metric, CalibrationQueries queries, int dense, int k,
            CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(table);
            ArgumentNullException.ThrowIfNull(encoding);
            ArgumentNullException.ThrowIfNull(vectors);
            ArgumentNullException.ThrowIfNull(queries);
            if (table.Count != count) throw new ArgumentException($"{table.Count} attribute rows for {count} vectors", nameof(table));
            if (queries.Dimensions != dims) throw new ArgumentException($"queries have {queries.Dimensions} dimensions; the vectors have {dims}", nameof(queries));
            _table = table;
            _encoding = encoding;
            _vectors = vectors;
            _count = count;
            _dims = dims;
            _metric = metric;
            _queries = queries;
            _dense = Math.Min(queries.Count, dense);
            _k = k;
            _background = new BackgroundWork(stop =>
            {
                if (_finishing) return;
                var drawn = _drawn = Draw(parallel: false, stop);
                while (!_finishing && ScoreNextChunk(drawn, parallel: false, stop)) { }
            }, cancellationToken);
        }

        /// <summary>
        /// Every family's exact neighbours (null when none can be drawn): the background thread ends its chunk, and the
        /// chunks it has not reached are scored now on every core. A background thread that has not ended within
        /// <see cref="BackgroundPriority.Handover"/> (on a busy machine it can wait minutes for a core) is left, with
        /// its draw, and everything is drawn and scored here.
        /// </summary>
        public async Task<DrawnNeighbours?> FinishAsync(CancellationToken cancellationToken = default)
        {
            cancellationToken.ThrowIfCancellationRequested();
            _finishing = true;
            var drawn = await _background.HandedOverAsync(cancellationToken).ConfigureAwait(false) ? _drawn : null;
            // A build that ended before the background thread began, or without it, draws here.
            drawn ??= Draw(parallel: true, cancellationToken);
            while (ScoreNextChunk(drawn, parallel: true, cancellationToken)) { }
            return drawn.Families.Count == 0 ? null : drawn;
        }

        /// <summary>Every block's share of the next chunk of rows; false when none is left. One chunk at a time: blocks share queries.</summary>
        private bool ScoreNextChunk(DrawnNeighbours drawn, bool parallel, CancellationToken cancellationToken)
        {
            int c = drawn.ScoredChunks;
            if (c >= drawn.Chunks.Length || drawn.Families.Count == 0) return false;
            var (rows, attributes) = drawn.Chunks[c];
            var vectors = _metric == Metric.L2 ? PartitionVectors.View(_vectors, rows, _dims) : Mapped(drawn.Space, rows);
            int d = vectors.Dimensions;
            void Score(int b, ByPartition.TruthScratch scratch)
            {
                scratch.Fit(rows.Length);
                var (start, length) = drawn.Blocks[b];
                ByPartition.ScoreBlock(0, new ReadOnlySpan<TruthQuery>(drawn.ByPlace, start, length), rows, vectors, attributes, drawn.Tile, d, scratch);
            }
            if (parallel)
                Parallel.For(0, drawn.Blocks.Count, new ParallelOptions { CancellationToken = cancellationToken }, () => new ByPartition.TruthScratch(),
                    (b, _, scratch) => { Score(b, scratch); return scratch; }, _ => { });
            else
            {
                var scratch = new ByPartition.TruthScratch();
                for (int b = 0; b < drawn.Blocks.Count; b++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    Score(b, scratch);
                }
            }
            drawn.ScoredChunks = c + 1;
            return true;
        }

        /// <summary>The families, drawn as from the built index's partitions, and one query per family and query to score.</summary>
        private DrawnNeighbours Draw(bool parallel, CancellationToken cancellationToken)
        {
            var info = _encoding;
            // As the build maps them (its largest norm too, under inner product).
            double maxNorm = _metric == Metric.InnerProduct ? MetricSpace.MaxRowNorm(_vectors.AsSpan(0, _count * _dims), _dims) : 0;
            var space = new MetricSpace(_metric, _dims, maxNorm);
            int d = space.InternalDimensions;
            int rowsPerChunk = Math.Max(256, ChunkBytes / (d * sizeof(float)));
            var chunks = new (int[] Rows, PartitionAttributes Attributes)[(_count + rowsPerChunk - 1) / rowsPerChunk];
            int count = _queries.Count;
            var sample = new ColumnSample(info, _count, _queries, count);
            void EncodeChunk(int c)
            {
                var rows = new int[Math.Min(rowsPerChunk, _count - c * rowsPerChunk)];
                for (int i = 0; i < rows.Length; i++) rows[i] = c * rowsPerChunk + i;
                chunks[c] = (rows, PartitionAttributes.Encode(_table, info, rows));
            }
            // On the background thread, one thread: the pool's workers would run at the build's priority.
            if (parallel) Parallel.For(0, chunks.Length, new ParallelOptions { CancellationToken = cancellationToken }, EncodeChunk);
            else for (int c = 0; c < chunks.Length; c++) EncodeChunk(c);
            foreach (var (rows, attributes) in chunks)
            {
                sample.Add(rows, attributes);
                cancellationToken.ThrowIfCancellationRequested();
            }
            var families = DrawFamilies(info, sample, _queries, count, _dense, _k, parallel);

            int depth = TruthDepth(_k, _count);
            var queries = new TruthQuery?[families.Count * count];
            var internals = new float[count][];
            for (int f = 0; f < families.Count; f++)
                for (int q = 0; q < count; q++)
                {
                    if (families[f].Filters[q] is not { } filter) continue;
                    if (internals[q] is null)
                        space.MapQuery(_queries.Data.AsSpan(q * _dims, _dims), internals[q] = new float[d]);
                    queries[f * count + q] = new TruthQuery
                    {
                        Family = f, Query = q, Filter = filter, Self = _queries.SelfIds?[q] ?? -1, Internal = internals[q],
                        Matches = new int[1], Truth = new TopK(depth),
                    };
                }
            var byPlace = ByPlace(queries.OfType<TruthQuery>(), families);
            return new DrawnNeighbours(info, families, sample.Own, queries, chunks, _count)
            {
                Source = _queries, Dense = _dense, Depth = depth, ByPlace = byPlace, Blocks = ByPartition.Blocks(byPlace), Tile = ByPartition.TileRows(d), Space = space,
            };
        }

        private PartitionVectors Mapped(MetricSpace space, int[] rows)
        {
            int d = space.InternalDimensions;
            var data = new float[(long)rows.Length * d];
            for (int i = 0; i < rows.Length; i++) space.MapStored(_vectors.AsSpan(rows[i] * _dims, _dims), data.AsSpan(i * d, d));
            return new PartitionVectors { Count = rows.Length, Dimensions = d, Data = data, RowsPerBlock = PartitionVectors.RowsPerBlockFor(d) };
        }

        /// <summary>Stops the background thread (a build that failed or was cancelled does not wait for it).</summary>
        public void Dispose() => _background.Dispose();
    }

    /// <summary>
    /// The families drawn from a build's input and their exact neighbours over every row (<see cref="NeighboursDuringBuild"/>),
    /// for <see cref="Measure"/> to plan on the built index.
    /// </summary>
    public sealed class DrawnNeighbours
    {
        internal DrawnNeighbours(IndexAttributes attributes, List<Family> families, double[]?[] own, TruthQuery?[] queries,
            (int[] Rows, PartitionAttributes Attributes)[] chunks, int rows)
        {
            Attributes = attributes;
            Families = families;
            Own = own;
            Queries = queries;
            Chunks = chunks;
            RowCount = rows;
        }

        /// <summary>The attribute encoding the families were drawn and compiled with: the build's manifest must hold the same.</summary>
        public IndexAttributes Attributes { get; }
        internal List<Family> Families { get; }
        internal double[]?[] Own { get; }
        /// <summary>Family-major (family × query count + query), null where the family drew no filter.</summary>
        internal TruthQuery?[] Queries { get; }
        /// <summary>Every row, in chunks of consecutive rows, with their attributes encoded.</summary>
        internal (int[] Rows, PartitionAttributes Attributes)[] Chunks { get; }
        internal int RowCount { get; }
        /// <summary>The queries the families filter, and how many of the first ones the dense families filter.</summary>
        internal CalibrationQueries Source { get; init; } = null!;
        internal int Dense { get; init; }
        /// <summary>Exact neighbours found per query (<see cref="TruthDepth"/>).</summary>
        internal int Depth { get; init; }

        /// <summary>The queries in <see cref="ByPlace"/> order, in blocks that share a filter (<see cref="ByPartition.Blocks"/>).</summary>
        internal TruthQuery[] ByPlace { get; init; } = null!;
        internal List<(int Start, int Count)> Blocks { get; init; } = null!;
        internal MetricSpace Space { get; init; } = null!;
        internal int Tile { get; init; }
        /// <summary>How many of <see cref="Chunks"/> every block has scored.</summary>
        internal int ScoredChunks { get; set; }

        /// <summary>
        /// Whether these are the families <see cref="ByPartition.StartAsync"/> would draw from <paramref name="index"/> for
        /// <paramref name="queries"/>, with as many neighbours as a calibration at <paramref name="k"/> measures.
        /// </summary>
        public bool DrawnFor(OpenedIndex index, CalibrationQueries queries, int dense, int k) =>
            ReferenceEquals(Source, queries) && Dense == dense && RowCount == index.Manifest.Count && Depth == TruthDepth(k, index.Manifest.Count)
            && index.Manifest.Attributes is { } encoding && encoding.EncodesAs(Attributes);

        /// <summary>
        /// Each query's matches counted per partition (its own row left out), and the partition of each row its top-K holds:
        /// what <see cref="ByPartition.Truth"/> leaves in a query, here from one pass over every row.
        /// </summary>
        internal void Distribute(int[] partitionOfRow, int partitions, CancellationToken cancellationToken)
        {
            if (partitionOfRow.Length < RowCount || partitionOfRow.AsSpan(0, RowCount).Contains(-1))
                throw new ArgumentException($"a row of the build's {RowCount} is in no partition", nameof(partitionOfRow));
            var filters = Queries.OfType<TruthQuery>().Select(q => q.Filter).Distinct(ReferenceEqualityComparer.Instance).Cast<CompiledFilter>().ToArray();
            var counts = new int[filters.Length][];
            Parallel.For(0, filters.Length, new ParallelOptions { CancellationToken = cancellationToken }, () => Array.Empty<int>(), (i, _, rows) =>
            {
                var filter = filters[i];
                var perPartition = new int[partitions];
                foreach (var (ids, attributes) in Chunks)
                {
                    var (candidates, indexed, exact) = ByPartition.CandidateRows(filter, attributes, ref rows);
                    for (int c = 0; c < indexed; c++)
                    {
                        int row = candidates[c];
                        if (exact || filter.Matches(attributes, row)) perPartition[partitionOfRow[ids[row]]]++;
                    }
                }
                counts[i] = perPartition;
                return rows;
            }, _ => { });
            var countsOf = new Dictionary<CompiledFilter, int[]>(ReferenceEqualityComparer.Instance);
            for (int i = 0; i < filters.Length; i++) countsOf[filters[i]] = counts[i];
            foreach (var q in Queries)
            {
                if (q is null) continue;
                q.Matches = (int[])countsOf[q.Filter].Clone();
                if (q.Self >= 0 && q.Self < RowCount && SelfMatches(q)) q.Matches[partitionOfRow[q.Self]]--;
                var where = new Dictionary<long, int>();
                foreach (var n in q.Truth.Items) where[n.Id] = partitionOfRow[n.Id];
                q.TruthPartition = where;
            }
        }

        /// <summary>
        /// Every filtered query's exact neighbours and match count (its own row left out), by family and query number, as
        /// <see cref="ByPartition.ExactNeighbours"/> gives them; the counts are the per-partition ones once <see cref="Measure"/> has placed them.
        /// </summary>
        public IEnumerable<(int Family, int Query, CompiledFilter Filter, long[] Neighbours, long Matches)> ExactNeighbours() =>
            Queries.OfType<TruthQuery>().Select(q => (q.Family, q.Query, q.Filter, q.Truth.ToSortedArray().Select(n => n.Id).ToArray(), q.Matches.Sum(x => (long)x)));

        /// <summary>Whether a query's own row matches its filter (it is left out of its matches).</summary>
        private bool SelfMatches(TruthQuery q)
        {
            int perChunk = Chunks[0].Rows.Length;
            var (_, attributes) = Chunks[q.Self / perChunk];
            return q.Filter.Matches(attributes, (int)(q.Self % perChunk));
        }
    }
}
