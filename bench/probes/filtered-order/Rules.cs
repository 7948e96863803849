using System.Globalization;
using Squash.Core.Collections;
using Squash.Core.Kernels;
using Squash.Search;
using Squash.Storage;
using static Data;

/// <summary>Coverage of the filtered true top-10 (own label, label + 1) by the partitions each planning rule picks, per CF: args IDX FMDIR QUERIES.</summary>
internal static class Rules
{
    public static async Task Run(string[] args)
    {
        // The rules (dv: distance to the centroid of the partition's rows with the filter's label; d0: nearest partition centroid):
        //   current       the engine's filtered plan and its later passes (R 4)
        //   value CF*d    partitions by dv, while dv <= CF x the nearest dv (and until 2k matches)
        //   value margin  partitions by dv, while dv <= sqrt(dv_nearest^2 + (CF^2 - 1) d0^2)
        //   value, count  as many partitions as "current" plans, taken by dv
        //   value dense   partitions by dv, while dv <= CF x dv of the nearest one holding >= 0.5 x the label's index-wide share
        //   max dense     key max(centroid distance, dv), anchored as "value dense"
        //   max margin    key as "max dense", while key <= sqrt(key_anchor^2 + (CF^2 - 1) d0^2)
        string idx = args[0], fm = args[1]; int nq = int.Parse(args[2], CultureInfo.InvariantCulture);
        var index = await OpenedIndex.OpenAsync(new IndexStore(new FolderBlobStore(idx)), true);
        var engine = new SearchEngine(index);
        var queries = Fvecs(Path.Combine(fm, "query.fvecs"));
        var qlabels = Ivecs(Path.Combine(fm, "query.labels.ivecs")).Select(r => r[0]).ToArray();
        var baseLabels = Ivecs(Path.Combine(fm, "base.labels.ivecs")).Select(r => r[0]).ToArray();
        int P = index.PartitionCount, D = index.Manifest.InternalDimensions, L = 10, K = 10;
        var partOf = new int[baseLabels.Length]; var rowVec = new float[baseLabels.Length][];
        var vc = new double[P * L * D]; var cnt = new int[P * L];
        for (int p = 0; p < P; p++)
        {
            var c = index.Codes(p); var v = index.Vectors(p);
            for (int i = 0; i < c.Count; i++) { int row = c.Ids[i]; partOf[row] = p; rowVec[row] = v.Row(i).ToArray(); int l = baseLabels[row]; cnt[p * L + l]++; var x = v.Row(i); for (int j = 0; j < D; j++) vc[(p * L + l) * D + j] += x[j]; }
        }
        var cent = new float[P * L * D];
        for (int pl = 0; pl < P * L; pl++) if (cnt[pl] > 0) for (int j = 0; j < D; j++) cent[pl * D + j] = (float)(vc[pl * D + j] / cnt[pl]);
        var byLabel = Enumerable.Range(0, L).Select(l => Enumerable.Range(0, baseLabels.Length).Where(r => baseLabels[r] == l).ToArray()).ToArray();
        double[] cfs = [1.05, 1.1, 1.15, 1.2, 1.3, 1.5];
        string[] rules = ["current", "value CF*d", "value margin", "value, count", "value dense", "max dense", "max margin"];
        var cov = new double[2, rules.Length, cfs.Length]; var vis = new double[2, rules.Length, cfs.Length];
        var lockObj = new object();
        // "max dense" at each CF, split by the dense anchor's key over the nearest centroid distance: a signal the planner could band by.
        double[] ratioEdges = [1.02, 1.1, 1.25, double.PositiveInfinity];
        var byRatio = new double[2, cfs.Length, ratioEdges.Length]; var inRatio = new int[2, cfs.Length, ratioEdges.Length];
        var byRatioNow = new double[2, cfs.Length, ratioEdges.Length]; var inRatioNow = new int[2, cfs.Length, ratioEdges.Length];
        Parallel.For(0, nq, qi =>
        {
            var ctx = new QueryContext(index, queries[qi]);
            var (order, dist) = engine.RankPartitions(ctx);
            for (int fam = 0; fam < 2; fam++)
            {
                int label = fam == 0 ? qlabels[qi] : (qlabels[qi] + 1) % L;
                // exact filtered top-K
                var top = new TopK(K);
                foreach (int r in byLabel[label]) top.TryAdd(r, SquaredL2.Distance(ctx.Internal, rowVec[r]));
                var truthParts = top.ToSortedArray().Select(n => partOf[n.Id]).ToArray();
                var filter = index.Filters.Compile($"{{\"label\":{label}}}");
                var est = FilterEstimates.Of(filter, index.Manifest);
                var anchors = SearchEngine.FilteredAnchors.Of(index.Manifest, order, dist, est, K);
                var matchesBefore = new int[P + 1];
                for (int i = 0; i < P; i++) matchesBefore[i + 1] = matchesBefore[i] + cnt[order[i] * L + label];
                var plans = engine.PlanFiltered(anchors, new SearchOptions { K = K, RerankFactor = 4, Filter = filter }, cfs);
                var dv = new double[P];
                for (int p = 0; p < P; p++) dv[p] = cnt[p * L + label] > 0 ? Math.Sqrt(SquaredL2.Distance(ctx.Internal, cent.AsSpan((p * L + label) * D, D))) : double.PositiveInfinity;
                var ordV = Enumerable.Range(0, P).Where(p => cnt[p * L + label] > 0).OrderBy(p => dv[p]).ToArray();
                double d0 = dist[order[0]];
                for (int g = 0; g < cfs.Length; g++)
                {
                    var plan = plans[g];
                    var set = new HashSet<int>(plan.Partitions);
                    if (plan.Strategy == "partitions") { int Found() => (int)Math.Min(plan.Target, set.Sum(x => (long)cnt[x * L + label])); for (var pass = engine.NextPass(plan, Found()); pass.Length > 0; pass = engine.NextPass(plan, Found())) foreach (var x in pass) set.Add(x); }
                    else set = Enumerable.Range(0, P).ToHashSet();
                    {
                // the same split for the current rule: its dense anchor's centroid distance over the nearest one
                int bucketNow = Array.FindIndex(ratioEdges, e => dist[order[Math.Max(0, anchors.Dense)]] / d0 < e);
                lock (lockObj) { byRatioNow[fam, g, bucketNow] += truthParts.Count(set.Contains) / (double)K; inRatioNow[fam, g, bucketNow]++; }
            }
            var sets = new HashSet<int>[7]; sets[0] = set; sets[3] = ordV.Take(set.Count(x => cnt[x * L + label] > 0)).ToHashSet();
                    for (int rule = 1; rule < 3; rule++)
                    {
                        double limit = rule == 1 ? cfs[g] * dv[ordV[0]] : Math.Sqrt(dv[ordV[0]] * dv[ordV[0]] + (cfs[g] * cfs[g] - 1) * d0 * d0);
                        var s = new HashSet<int>(); long m = 0;
                        foreach (int p in ordV) { if (dv[p] > limit && m >= 2 * K) break; s.Add(p); m += cnt[p * L + label]; }
                        sets[rule] = s;
                    }
                    {
                        double density = byLabel[label].Length / (double)baseLabels.Length;
                        int anchor = ordV.FirstOrDefault(p => cnt[p * L + label] >= 0.5 * density * index.Manifest.Partitions[p].Count, ordV[0]);
                        double limit = cfs[g] * dv[anchor];
                        var s = new HashSet<int>(); long m = 0;
                        foreach (int p in ordV) { if (dv[p] > limit && m >= 2 * K) break; s.Add(p); m += cnt[p * L + label]; }
                        sets[4] = s;
                    }
                    {
                        double density = byLabel[label].Length / (double)baseLabels.Length;
                        var key = new double[P]; for (int p = 0; p < P; p++) key[p] = Math.Max(dist[p], dv[p]);
                        var ordM = ordV.OrderBy(p => key[p]).ToArray();
                        int anchor = ordM.FirstOrDefault(p => cnt[p * L + label] >= 0.5 * density * index.Manifest.Partitions[p].Count, ordM[0]);
                        double limit = cfs[g] * key[anchor];
                        var s = new HashSet<int>(); long m = 0;
                        foreach (int p in ordM) { if (key[p] > limit && m >= 2 * K) break; s.Add(p); m += cnt[p * L + label]; }
                        sets[5] = s;
                int bucket = Array.FindIndex(ratioEdges, e => key[anchor] / d0 < e);
                lock (lockObj) { byRatio[fam, g, bucket] += truthParts.Count(s.Contains) / (double)K; inRatio[fam, g, bucket]++; }
                        double limit2 = Math.Sqrt(key[anchor] * key[anchor] + (cfs[g] * cfs[g] - 1) * d0 * d0);
                        var s2 = new HashSet<int>(); long m2 = 0;
                        foreach (int p in ordM) { if (key[p] > limit2 && m2 >= 2 * K) break; s2.Add(p); m2 += cnt[p * L + label]; }
                        sets[6] = s2;
                    }
                    lock (lockObj)
                        for (int rule = 0; rule < 7; rule++) { cov[fam, rule, g] += truthParts.Count(sets[rule].Contains) / (double)K; vis[fam, rule, g] += sets[rule].Count; }
                }
            }
        });
        for (int rule = 0; rule < rules.Length; rule++)
        {
            Console.Write($"{rules[rule],-13}");
            for (int g = 0; g < cfs.Length; g++) Console.Write($" | CF {cfs[g]}: own {cov[0, rule, g] / nq:F4} ({vis[0, rule, g] / nq:F1}) +1 {cov[1, rule, g] / nq:F4} ({vis[1, rule, g] / nq:F1})");
            Console.WriteLine();
        }
        foreach (int g in new[] { 1, 2 })
        {
            Console.Write($"current, CF {cfs[g]}, by dense anchor / nearest centroid distance:");
            for (int b = 0; b < ratioEdges.Length; b++)
                Console.Write($" | < {ratioEdges[b]}: own {byRatioNow[0, g, b] / Math.Max(1, inRatioNow[0, g, b]):F4} ({inRatioNow[0, g, b]}) +1 {byRatioNow[1, g, b] / Math.Max(1, inRatioNow[1, g, b]):F4} ({inRatioNow[1, g, b]})");
            Console.WriteLine();
        }
        foreach (int g in new[] { 1, 2 })
        {
            Console.Write($"max dense, CF {cfs[g]}, by anchor key / nearest centroid distance:");
            for (int b = 0; b < ratioEdges.Length; b++)
                Console.Write($" | < {ratioEdges[b]}: own {byRatio[0, g, b] / Math.Max(1, inRatio[0, g, b]):F4} ({inRatio[0, g, b]}) +1 {byRatio[1, g, b] / Math.Max(1, inRatio[1, g, b]):F4} ({inRatio[1, g, b]})");
            Console.WriteLine();
        }
    }
}
