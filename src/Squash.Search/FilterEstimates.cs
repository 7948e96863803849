using Squash.Index.Model;
using Squash.Search.Filters;

namespace Squash.Search;

/// <summary>
/// A filter's view of the index before any scan: estimated matches per partition (from the manifest's attribute
/// counts), which partitions can match at all, and their total. Computed once per query and reused by every plan
/// the recall calibration replays for it.
/// </summary>
public sealed class FilterEstimates
{
    private FilterEstimates(double[] perPartition, bool[] canMatch, double total, bool indexable)
    {
        PerPartition = perPartition;
        CanMatch = canMatch;
        Total = total;
        Indexable = indexable;
    }

    public double[] PerPartition { get; }
    /// <summary>False where the code-level filter can pass nothing.</summary>
    public bool[] CanMatch { get; }
    public double Total { get; }
    /// <summary>The filter finds its rows in the value index (no pass over a partition's codes).</summary>
    public bool Indexable { get; }

    public static FilterEstimates Of(CompiledFilter filter, IndexManifest manifest)
    {
        ArgumentNullException.ThrowIfNull(filter);
        int p = manifest.Partitions.Count;
        var est = new double[p];
        var upper = new long[p];
        filter.EstimateAll(manifest.Partitions, est, upper);
        var canMatch = new bool[p];
        double total = 0;
        for (int i = 0; i < p; i++)
        {
            canMatch[i] = upper[i] > 0;
            total += est[i];
        }
        return new FilterEstimates(est, canMatch, total, filter.Indexable);
    }
}
