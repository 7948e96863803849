using Squash.Core;
using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.Search.Filters;

namespace Squash.Search.Tests;

/// <summary>
/// The filtered calibration's exact neighbours (scored in blocks of queries that share a filter, matches listed once per
/// filter) are those of a brute force over every matching row but the query's own (and, for a live-sample query after
/// writes, its near-copies left out with it), and its match counts leave those rows out.
/// </summary>
public sealed class FilteredTruthTests
{
    [Theory]
    [InlineData(3, false)]
    [InlineData(8, false)]
    [InlineData(5, true)]
    public async Task ExactFilteredNeighboursAreTheBruteForceOnesWithoutTheQuerysOwnRow(int seed, bool nearCopies)
    {
        const int n = 4000, dims = 12, k = 10, sample = 150, dense = 110;
        var data = TestData.Clustered(n, dims, clusters: 15, seed: seed);
        var rng = new Random(seed);
        var table = AttributeReader.ReadJsonLines(new StringReader(string.Concat(Enumerable.Range(0, n).Select(i =>
            $"{{\"attributes\":{{\"label\":{i % 7},\"u\":{rng.Next(100_000)}}}}}\n"))), "attrs.jsonl");
        using var idx = new TestData.TempIndex(data, n, dims, new IndexBuildOptions { Partitions = 30, Seed = seed, Attributes = table });
        var index = idx.Index;
        var rows = CalibratedBuild.CalibrationRows(n, seed, sample, dense)!;
        var queries = CalibrationQueries.FromRows(data, dims, rows);
        // Near-copies as the recalibration after writes groups them: query q's q % 4 nearest rows, left out with it.
        var groups = nearCopies ? rows.Select((row, q) => NearestRows(data, n, dims, row, q % 4)).ToArray() : null;
        if (groups is not null) queries = queries with { LeftOut = groups };
        int d = index.Manifest.InternalDimensions;
        var partitionOf = new Dictionary<long, int>();
        var stored = new float[queries.Count * d];
        for (int p = 0; p < index.PartitionCount; p++)
        {
            var ids = index.Codes(p).Ids;
            for (int i = 0; i < ids.Length; i++)
            {
                partitionOf[ids[i]] = p;
                int q = Array.IndexOf(rows, ids[i]);
                if (q >= 0) index.Vectors(p).Row(i).CopyTo(stored.AsSpan(q * d, d));
            }
        }

        var replay = await FilteredRecallCalibrator.ByPartition.StartAsync(index, queries, partitionOf, stored,
            (p, _) => Task.FromResult((index.Codes(p), index.Attributes(p)!)), k, denseQueries: dense);
        Assert.NotNull(replay);
        for (int p = 0; p < index.PartitionCount; p++)
            if (replay.Wants(p)) replay.Truth(p, index.Codes(p), index.Vectors(p), index.Attributes(p)!);

        var measured = replay.ExactNeighbours().ToList();
        // Both value families and the 10 % and 1 % ranges (0.1 % of 4,000 rows is too few for recall@10).
        Assert.Equal(4, measured.Select(m => m.Family).Distinct().Count());
        Assert.Equal(3 * dense + sample, measured.Count);
        foreach (var (family, query, filter, neighbours, matches) in measured)
        {
            var ctx = new QueryContext(index, queries.Data.AsSpan(query * dims, dims));
            var scored = new List<(double Distance, long Id)>();
            for (int p = 0; p < index.PartitionCount; p++)
            {
                var ids = index.Codes(p).Ids;
                var attributes = index.Attributes(p)!;
                for (int row = 0; row < ids.Length; row++)
                    if (ids[row] != rows[query] && !(groups?[query].Contains(ids[row]) ?? false) && filter.Matches(attributes, row))
                        scored.Add((Distance(ctx.Internal, index.Vectors(p).Row(row)), ids[row]));
            }
            string where = $"seed {seed}, family {family}, query {query} (row {rows[query]})";
            Assert.True(neighbours.Distinct().Count() == neighbours.Length, $"{where}: a row is among the neighbours twice");
            Assert.True(scored.Count == matches, $"{where}: {matches} matches counted, {scored.Count} by brute force");
            // Found as deep as the deepest K the bands are measured at (recall@K takes the first K).
            var expected = scored.OrderBy(x => x.Distance).ThenBy(x => x.Id).Take(FilteredRecallCalibrator.TruthDepth(k, index.Manifest.Count)).ToArray();
            Assert.True(expected.Length == neighbours.Length, $"{where}: {neighbours.Length} neighbours, {expected.Length} by brute force");
            var distanceOf = scored.ToDictionary(x => x.Id, x => x.Distance);
            for (int i = 0; i < expected.Length; i++)
            {
                // The block kernel sums in float, the reference in double: ids may swap only where distances agree to float precision.
                Assert.True(distanceOf.TryGetValue(neighbours[i], out double got), $"{where}: neighbour {neighbours[i]} does not match or is the query's own row or near-copy");
                Assert.True(Math.Abs(got - expected[i].Distance) <= 1e-5 * Math.Max(1, expected[i].Distance),
                    $"{where}, rank {i}: expected row {expected[i].Id} at {expected[i].Distance}, got row {neighbours[i]} at {got}");
            }
        }

        if (groups is not null)
        {
            Assert.Contains(groups, g => g.Length > 0);
            // The replay's candidates leave the group out too: else a near-copy takes a place in the answer of every plan,
            // and even the deepest plan (largest CF, largest R: every partition's every match) misses a neighbour.
            int deepest = (RecallCalibrator.RerankFactors.Length - 1) * FilteredRecallCalibrator.Columns + RecallCalibrator.CentroidFactors.Length - 1;
            foreach (var family in FilteredRecallCalibrator.Measure(index, queries, k, denseQueries: dense))
                for (int q = 0; q < queries.Count; q++)
                    if (!double.IsNaN(family.Selectivity[q]) && groups[q].Length > 0)
                        Assert.True(family.Recall[q, deepest] == 1,
                            $"seed {seed}, family {family.Name}, query {q} with {groups[q].Length} near-copies: recall {family.Recall[q, deepest]} at the deepest plan");
            return; // a build's queries have no near-copies: the pass over its input leaves out their own row only
        }

        // The same from the build's input, in chunks of rows before there are partitions, once the replay has placed them.
        using var during = new FilteredRecallCalibrator.NeighboursDuringBuild(table, table.Encoding, data, n, dims, Metric.L2, queries, dense, k, CancellationToken.None);
        var drawn = await during.FinishAsync();
        Assert.NotNull(drawn);
        Assert.True(drawn.DrawnFor(index, queries, dense, k), $"seed {seed}: drawn for another index or other queries");
        FilteredRecallCalibrator.Measure(index, queries, k, denseQueries: dense, drawn: drawn);
        var fromInput = drawn.ExactNeighbours().ToDictionary(x => (x.Family, x.Query));
        Assert.Equal(measured.Count, fromInput.Count);
        foreach (var (family, query, filter, neighbours, matches) in measured)
        {
            var other = fromInput[(family, query)];
            Assert.Equal(filter.Key, other.Filter.Key);
            Assert.True(neighbours.SequenceEqual(other.Neighbours), $"seed {seed}, family {family}, query {query}: other neighbours from the input");
            Assert.True(matches == other.Matches, $"seed {seed}, family {family}, query {query}: {other.Matches} matches from the input, {matches} by partition");
        }
    }

    /// <summary>The <paramref name="count"/> rows nearest row <paramref name="self"/>, itself aside.</summary>
    private static long[] NearestRows(float[] data, int n, int dims, int self, int count) =>
        Enumerable.Range(0, n).Where(i => i != self)
            .OrderBy(i => Distance(data.AsSpan(self * dims, dims), data.AsSpan(i * dims, dims))).ThenBy(i => i)
            .Take(count).Select(i => (long)i).ToArray();

    private static double Distance(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double sum = 0;
        for (int i = 0; i < a.Length; i++) { double x = (double)a[i] - b[i]; sum += x * x; }
        return sum;
    }
}
