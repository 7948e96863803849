using Squash.Cli.Datasets;
using Squash.Core.Collections;
using Squash.Core.Kernels;
using static Data;

/// <summary>
/// Label families for `squash bench`: args FMDIR OUTDIR writes filters.own.jsonl and groundtruth.own.ivecs (label = own
/// label, exact top-100); with <c>other</c>, filters.other.jsonl and groundtruth.other.ivecs (label = one of the nine
/// other labels, drawn uniformly with seed 1: the population the build's "other value" family samples).
/// </summary>
internal static class Own
{
    public static void Run(string[] args, bool other = false)
    {
        string fm = args[0], outDir = args[1];
        var queries = Fvecs(Path.Combine(fm, "query.fvecs"));
        var base_ = Fvecs(Path.Combine(fm, "base.fvecs"));
        var qlabels = Ivecs(Path.Combine(fm, "query.labels.ivecs")).Select(r => r[0]).ToArray();
        var blabels = Ivecs(Path.Combine(fm, "base.labels.ivecs")).Select(r => r[0]).ToArray();
        if (other)
        {
            var rng = new Random(1);
            qlabels = qlabels.Select(l => (l + 1 + rng.Next(9)) % 10).ToArray();
        }
        var byLabel = blabels.Select((l, i) => (l, i)).ToLookup(x => x.l, x => x.i);
        var gt = new int[queries.Length][];
        Parallel.For(0, queries.Length, qi =>
        {
            var top = new TopK(100);
            foreach (int r in byLabel[qlabels[qi]]) top.TryAdd(r, SquaredL2.Distance(queries[qi], base_[r]));
            gt[qi] = top.ToSortedArray().Select(n => (int)n.Id).ToArray();
        });
        Directory.CreateDirectory(outDir);
        string name = other ? "other" : "own";
        File.WriteAllLines(Path.Combine(outDir, $"filters.{name}.jsonl"), qlabels.Select(l => $"{{\"label\":{l}}}"));
        VectorFile.WriteIvecs(Path.Combine(outDir, $"groundtruth.{name}.ivecs"), gt);
    }
}
