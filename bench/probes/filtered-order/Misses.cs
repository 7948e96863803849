using System.Globalization;
using Squash.Core.Collections;
using Squash.Core.Kernels;
using Squash.Search;
using Squash.Storage;
using static Data;

/// <summary>Where the anti-correlated family's missed neighbours lie: args IDX FMDIR TARGET [QUERIES].</summary>
internal static class Misses
{
    public static async Task Run(string[] args)
    {
        string idx = args[0], fm = args[1]; double target = double.Parse(args[2], CultureInfo.InvariantCulture);
        var index = await OpenedIndex.OpenAsync(new IndexStore(new FolderBlobStore(idx)), true);
        var engine = new SearchEngine(index);
        var queries = Fvecs(Path.Combine(fm, "query.fvecs"));
        var gt = Ivecs(Path.Combine(fm, "groundtruth.filtered.ivecs"));
        var baseLabels = Ivecs(Path.Combine(fm, "base.labels.ivecs")).Select(r => r[0]).ToArray();
        var filterLines = File.ReadAllLines(Path.Combine(fm, "filters.jsonl"));
        int P = index.PartitionCount, D = index.Manifest.InternalDimensions, L = 10, K = 10;
        var partOf = new int[baseLabels.Length];
        var vc = new double[P * L * D]; var cnt = new int[P * L];
        for (int p = 0; p < P; p++)
        {
            var c = index.Codes(p); var v = index.Vectors(p);
            for (int i = 0; i < c.Count; i++) { int row = c.Ids[i]; partOf[row] = p; int l = baseLabels[row]; cnt[p * L + l]++; var x = v.Row(i); for (int j = 0; j < D; j++) vc[(p * L + l) * D + j] += x[j]; }
        }
        var cent = new float[P * L * D];
        for (int pl = 0; pl < P * L; pl++) if (cnt[pl] > 0) for (int j = 0; j < D; j++) cent[pl * D + j] = (float)(vc[pl * D + j] / cnt[pl]);
        int nq = Math.Min(queries.Length, args.Length > 3 ? int.Parse(args[3], CultureInfo.InvariantCulture) : queries.Length);
        long missPlanned = 0, missUnplanned = 0, total = 0; var beyond = new long[6]; long kthBelowBound = 0;
        var covC = new double[P + 1]; var covV = new double[P + 1]; double plannedSum = 0;
        var missRankV = new long[6];
        for (int qi = 0; qi < nq; qi++)
        {
            int label = int.Parse(filterLines[qi].Split(':')[1].TrimEnd('}'), CultureInfo.InvariantCulture);
            var filter = index.Filters.Compile(filterLines[qi]);
            var ctx = new QueryContext(index, queries[qi]);
            var opt = new SearchOptions { K = K, Recall = target, Filter = filter };
            var plan = engine.Plan(ctx, opt);
            var top = engine.NewTopK(opt); var no = plan.NodeOptions();
            var planned = new HashSet<int>();
            for (var pass = plan.Partitions; pass.Length > 0; pass = engine.NextPass(plan, top.Count)) { foreach (var p in pass) planned.Add(p); engine.ScanPartitions(ctx, pass, plan.CentroidDistances, no, top, plan.Stats); }
            var res = top.ToSortedArray(); var got = res.Select(n => n.Id).ToHashSet(); float kth = res.Length == K ? res[^1].Distance : float.PositiveInfinity;
            plannedSum += planned.Count;
            // orders: centroid (matching partitions only) and per-value centroid
            var (order, dist) = engine.RankPartitions(ctx);
            var ordC = order.Where(p => cnt[p * L + label] > 0).ToArray();
            var dv = new float[P]; for (int p = 0; p < P; p++) dv[p] = cnt[p * L + label] > 0 ? SquaredL2.Distance(ctx.Internal, cent.AsSpan((p * L + label) * D, D)) : float.PositiveInfinity;
            var ordV = Enumerable.Range(0, P).Where(p => cnt[p * L + label] > 0).OrderBy(p => dv[p]).ToArray();
            var posC = new int[P]; var posV = new int[P]; for (int i = 0; i < ordC.Length; i++) posC[ordC[i]] = i; for (int i = 0; i < ordV.Length; i++) posV[ordV[i]] = i;
            var g = gt[qi].Take(K).ToArray();
            var hC = new int[P + 1]; var hV = new int[P + 1];
            foreach (int id in g) { hC[posC[partOf[id]] + 1]++; hV[posV[partOf[id]] + 1]++; }
            int aC = 0, aV = 0; for (int n = 0; n <= P; n++) { aC += hC[n]; aV += hV[n]; covC[n] += aC / (double)K; covV[n] += aV / (double)K; }
            int plannedMatching = planned.Count;
            foreach (int id in g)
            {
                total++;
                if (got.Contains(id)) continue;
                int p = partOf[id];
                if (planned.Contains(p)) { missPlanned++; continue; }
                missUnplanned++;
                int b = posC[p] - plannedMatching; beyond[b < 0 ? 0 : b < 1 ? 1 : b < 2 ? 2 : b < 4 ? 3 : b < 8 ? 4 : 5]++;
                int r = posV[p]; missRankV[r < plannedMatching / 2 ? 0 : r < plannedMatching ? 1 : r < plannedMatching + 2 ? 2 : r < plannedMatching + 4 ? 3 : r < plannedMatching + 8 ? 4 : 5]++;
                float gap = dist[p] - index.Routing.Radii[p]; if (gap <= 0 || gap * gap < kth) kthBelowBound++;
            }
        }
        Console.WriteLine($"queries {nq} target {target} recall {1 - (missPlanned + missUnplanned) / (double)total:F4} planned {plannedSum / nq:F2} | missed: in planned partitions {missPlanned}, in unplanned {missUnplanned}");
        Console.WriteLine($"  unplanned misses by centroid-order position past the plan's count [<0, +0, +1, +2..3, +4..7, 8+]: {string.Join(" ", beyond)}");
        Console.WriteLine($"  same misses by per-value-centroid rank [<n/2, <n, n..n+1, +2..3, +4..7, 8+] (n = partitions planned): {string.Join(" ", missRankV)}");
        Console.WriteLine($"  unplanned misses whose partition bound < k-th distance found (a k-th-distance second pass would visit): {kthBelowBound}");
        Console.Write("  coverage by first N matching partitions, centroid / per-value:");
        foreach (int n in new[] { 1, 2, 4, 6, 8, 10, 12, 16, 20 }) Console.Write($" {n}:{covC[n] / nq:F3}/{covV[n] / nq:F3}");
        Console.WriteLine();
    }
}
