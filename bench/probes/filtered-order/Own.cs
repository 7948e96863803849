using Squash.Cli.Datasets;
using Squash.Core.Collections;
using Squash.Core.Kernels;
using static Data;

/// <summary>The own-label family for `squash bench`: args FMDIR OUTDIR writes filters.own.jsonl and groundtruth.own.ivecs (label = own label, exact top-100).</summary>
internal static class Own
{
    public static void Run(string[] args)
    {
        string fm = args[0], outDir = args[1];
        var queries = Fvecs(Path.Combine(fm, "query.fvecs"));
        var base_ = Fvecs(Path.Combine(fm, "base.fvecs"));
        var qlabels = Ivecs(Path.Combine(fm, "query.labels.ivecs")).Select(r => r[0]).ToArray();
        var blabels = Ivecs(Path.Combine(fm, "base.labels.ivecs")).Select(r => r[0]).ToArray();
        var byLabel = blabels.Select((l, i) => (l, i)).ToLookup(x => x.l, x => x.i);
        var gt = new int[queries.Length][];
        Parallel.For(0, queries.Length, qi =>
        {
            var top = new TopK(100);
            foreach (int r in byLabel[qlabels[qi]]) top.TryAdd(r, SquaredL2.Distance(queries[qi], base_[r]));
            gt[qi] = top.ToSortedArray().Select(n => (int)n.Id).ToArray();
        });
        Directory.CreateDirectory(outDir);
        File.WriteAllLines(Path.Combine(outDir, "filters.own.jsonl"), qlabels.Select(l => $"{{\"label\":{l}}}"));
        VectorFile.WriteIvecs(Path.Combine(outDir, "groundtruth.own.ivecs"), gt);
    }
}
