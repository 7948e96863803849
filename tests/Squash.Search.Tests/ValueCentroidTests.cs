using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Squash.Core.Kernels;
using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.Index.Model;
using Squash.Search.Filters;

namespace Squash.Search.Tests;

/// <summary>
/// Per-partition, per-value centroids (the routing data's <see cref="ValueCentroids"/>) and the filtered planner's value
/// key: the stored centroids against a recomputation from the stored rows, the plan's order against a brute-force ranking
/// by the key, and an index written without them (an older build) planning and answering as before.
/// </summary>
public class ValueCentroidTests
{
    private const int Dims = 16, N = 4000, K = 10, Classes = 6;

    /// <summary>
    /// Clustered rows; "label" follows the vectors (nearest of six base rows), "shade" has 3 values at random, "grade" is an
    /// integer that follows the label (label mod 4), "u" a number with too many values for value centroids.
    /// </summary>
    private static TestData.TempIndex Build(int seed)
    {
        var data = TestData.Clustered(N, Dims, clusters: 20, seed: seed);
        var rng = new Random(seed);
        var jsonl = new StringBuilder();
        for (int i = 0; i < N; i++)
        {
            int label = 0;
            double best = double.PositiveInfinity;
            for (int c = 0; c < Classes; c++)
            {
                double d = SquaredL2.Distance(data.AsSpan(i * Dims, Dims), data.AsSpan(c * 131 * Dims, Dims));
                if (d < best) { best = d; label = c; }
            }
            jsonl.Append(CultureInfo.InvariantCulture, $"{{\"attributes\":{{\"label\":\"c{label}\",\"shade\":\"s{rng.Next(3)}\",\"grade\":{label % 4},\"u\":{rng.Next(1000)}}}}}\n");
        }
        var table = AttributeReader.ReadJsonLines(new StringReader(jsonl.ToString()), "rows.jsonl");
        return new TestData.TempIndex(data, N, Dims, new IndexBuildOptions { Partitions = 24, Seed = seed, Attributes = table });
    }

    [Fact]
    public void ValueCentroidsEqualARecomputationFromTheStoredRows()
    {
        using var idx = Build(5);
        var index = idx.Index;
        var schema = index.Manifest.Attributes!;
        int d = index.Manifest.InternalDimensions;
        // Both category attributes and the integer qualify (few values); the number with 1,000 values does not.
        Assert.Equal(new[] { schema.IndexOf("label"), schema.IndexOf("shade"), schema.IndexOf("grade") }.Order(), index.Routing.ValueCentroids.Select(v => v.Attribute));
        foreach (var vc in index.Routing.ValueCentroids)
        {
            Assert.Equal(schema.Attributes[vc.Attribute].Values?.Length ?? 4, vc.Values);
            for (int p = 0; p < index.PartitionCount; p++)
            {
                var ids = Slots(index, p, vc.Attribute);
                var rows = index.Vectors(p);
                for (int v = 0; v < vc.Values; v++)
                {
                    var sum = new double[d];
                    int n = 0;
                    for (int i = 0; i < ids.Length; i++)
                    {
                        if (ids[i] != v) continue;
                        n++;
                        var row = rows.Row(i);
                        for (int j = 0; j < d; j++) sum[j] += row[j];
                    }
                    Assert.Equal(n, vc.CountOf(p, v));
                    if (n == 0) continue;
                    var stored = vc.CentroidOf(p, v, d);
                    for (int j = 0; j < d; j++)
                        Assert.True(stored[j] == (float)(sum[j] / n), $"partition {p}, value {v}, dim {j}: stored {stored[j]}, recomputed {(float)(sum[j] / n)}");
                }
            }
        }
    }

    /// <summary>Each row's value slot: a category's code, a number's or integer's cell.</summary>
    private static int[] Slots(OpenedIndex index, int p, int a)
    {
        var column = index.Attributes(p)!.Columns[a];
        return column.Ids ?? column.Codes!.Select(c => (int)c).ToArray();
    }

    [Fact]
    public void TheFilteredPlanFollowsTheValueKeyRankedByBruteForce()
    {
        using var idx = Build(9);
        var index = idx.Index;
        var engine = idx.Engine;
        var schema = index.Manifest.Attributes!;
        int d = index.Manifest.InternalDimensions;
        var queries = TestData.Clustered(60, Dims, clusters: 20, seed: 99);
        var label = schema.Attributes[schema.IndexOf("label")].Values!.Select((s, i) => (s, i)).ToDictionary(x => x.s, x => x.i);
        var grade = schema.Attributes[schema.IndexOf("grade")];
        int Label(int c) => label[$"c{c}"];
        int Grade(long g) => Array.IndexOf(grade.Boundaries!, (double)g); // one cell per value: its lower boundary
        var filters = new (string Json, string? Attribute, int[]? Slots)[]
        {
            ("""{"label":"c2"}""", "label", [Label(2)]),
            ("""{"label":{"$in":["c0","c4"]}}""", "label", [Label(0), Label(4)]),
            ("""{"$and":[{"u":{"$lt":500}},{"label":"c1"}]}""", "label", [Label(1)]),
            ("""{"grade":3}""", "grade", [Grade(3)]),
            ("""{"grade":{"$lte":1}}""", "grade", [Grade(0), Grade(1)]),
            ("""{"label":{"$ne":"c3"}}""", null, null), // no value term: centroid order
            ("""{"u":{"$lt":300}}""", null, null),
        };
        int keyed = 0;
        for (int q = 0; q < 60; q++)
        {
            var ctx = new QueryContext(index, queries.AsSpan(q * Dims, Dims));
            var (centroidOrder, dist) = engine.RankPartitions(ctx);
            foreach (var (json, attribute, values) in filters)
            {
                var filter = index.Filters.Compile(json);
                var options = new SearchOptions { K = K, CentroidFactor = 1.2, Filter = filter };
                var plan = engine.Plan(ctx, options);
                var estimates = FilterEstimates.Of(filter, index.Manifest);
                int[] expected;
                if (values is null) expected = centroidOrder;
                else
                {
                    // The key from the stored rows: max(centroid distance, distance to the nearest of the values' row means).
                    var key = new double[index.PartitionCount];
                    for (int p = 0; p < index.PartitionCount; p++)
                    {
                        double best = double.PositiveInfinity;
                        var ids = Slots(index, p, schema.IndexOf(attribute!));
                        foreach (int v in values)
                        {
                            var mean = new double[d];
                            int n = 0;
                            for (int i = 0; i < ids.Length; i++)
                                if (ids[i] == v) { n++; var row = index.Vectors(p).Row(i); for (int j = 0; j < d; j++) mean[j] += row[j]; }
                            if (n == 0) continue;
                            double s = 0;
                            for (int j = 0; j < d; j++) { double x = ctx.Internal[j] - mean[j] / n; s += x * x; }
                            best = Math.Min(best, Math.Sqrt(s));
                        }
                        key[p] = double.IsPositiveInfinity(best) ? dist[p] : Math.Max(dist[p], best);
                    }
                    expected = Enumerable.Range(0, index.PartitionCount).OrderBy(p => key[p]).ThenBy(p => p).ToArray();
                    keyed++;
                }
                // The first pass is the first matching partitions of that order (float keys may swap near-ties only).
                var wanted = expected.Where(p => estimates.CanMatch[p]).Take(plan.Partitions.Length).ToArray();
                if (plan.Strategy == "partitions")
                    Assert.True(wanted.SequenceEqual(plan.Partitions) || NearTie(wanted, plan.Partitions),
                        $"query {q}, {json}: planned [{string.Join(",", plan.Partitions)}], key order [{string.Join(",", wanted)}]");
                Assert.Equal(values is null, engine.ValueOrder(ctx.Internal, centroidOrder, dist, filter) is null);
            }
        }
        Assert.Equal(60 * 5, keyed);
        static bool NearTie(int[] a, int[] b) => a.Length == b.Length && a.Order().SequenceEqual(b.Order()) && a[..^1].Order().SequenceEqual(b[..^1].Order());
    }

    [Fact]
    public async Task AnIndexWithoutValueCentroidsReadsAndPlansByCentroidAsBefore()
    {
        using var idx = Build(3);
        var fresh = idx.Index;
        // Rewrite the version's routing as a build before value centroids wrote it, and its manifest's byte count to match.
        var folder = Directory.GetDirectories(Path.Combine(idx.Folder, "versions")).Single();
        var old = new RoutingData
        {
            GlobalTransform = fresh.Routing.GlobalTransform, Centroids = fresh.Routing.Centroids, Radii = fresh.Routing.Radii,
            PartitionSizes = fresh.Routing.PartitionSizes,
        }.ToSegment();
        File.WriteAllBytes(Path.Combine(folder, "routing.seg"), old);
        var manifestPath = Path.Combine(folder, "manifest.json");
        var json = JsonNode.Parse(File.ReadAllText(manifestPath))!;
        json["routing"]!["bytes"] = old.LongLength;
        File.WriteAllText(manifestPath, json.ToJsonString());
        var opened = await OpenedIndex.OpenAsync(new Squash.Storage.IndexStore(new Squash.Storage.FolderBlobStore(idx.Folder)));
        Assert.Empty(opened.Routing.ValueCentroids);
        Assert.NotEmpty(fresh.Routing.ValueCentroids);
        var engine = new SearchEngine(opened);
        var queries = TestData.Clustered(40, Dims, clusters: 20, seed: 41);
        var filter = opened.Filters.Compile("""{"label":"c1"}""");
        int differs = 0;
        for (int q = 0; q < 40; q++)
        {
            var vector = queries.AsSpan(q * Dims, Dims);
            var ctx = new QueryContext(opened, vector);
            var (order, dist) = engine.RankPartitions(ctx);
            var options = new SearchOptions { K = K, CentroidFactor = 1.15, Filter = filter };
            // Today's plan: the centroid order, no keys.
            var byCentroid = engine.PlanFiltered(order, dist, FilterEstimates.Of(filter, opened.Manifest), options);
            Assert.Equal(byCentroid.Partitions, engine.Plan(ctx, options).Partitions);
            var answer = engine.Search(vector, options);
            var top = engine.NewTopK(options);
            for (var pass = byCentroid.Partitions; pass.Length > 0; pass = engine.NextPass(byCentroid, top.Count))
                engine.ScanPartitions(ctx, pass, byCentroid.CentroidDistances, byCentroid.NodeOptions(), top, byCentroid.Stats);
            Assert.Equal(top.ToSortedArray().Select(x => x.Id), answer.Ids);
            var freshPlan = new SearchEngine(fresh).Plan(new QueryContext(fresh, vector), options);
            if (!freshPlan.Partitions.SequenceEqual(byCentroid.Partitions)) differs++;
        }
        // The same index with its value centroids plans some of these queries differently (else the test proves nothing).
        Assert.True(differs > 0, "the value key changed no plan");
    }
}
