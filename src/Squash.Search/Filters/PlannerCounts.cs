using System.Runtime.CompilerServices;
using Squash.Index.Attributes;
using Squash.Index.Model;

namespace Squash.Search.Filters;

/// <summary>
/// The manifest's per-partition code counts rearranged for planning every partition at once: for a number or
/// integer attribute, cumulative counts in cell-major order, <c>[c · P + p]</c> = vectors of partition p whose code
/// is below c (code 255, "missing", last). A range's estimate for all P partitions then reads four contiguous
/// rows of P ints instead of binary searches in P scattered arrays, whose cache misses dominated planning
/// (bench/filters.md). Built once per manifest and attribute, on first use.
/// </summary>
internal sealed class PlannerCounts
{
    private const int Codes = 256;
    private static readonly ConditionalWeakTable<IReadOnlyList<PartitionEntry>, PlannerCounts> Cache = new();
    private readonly IReadOnlyList<PartitionEntry> _partitions;
    private readonly int[]?[] _cumulative;

    private PlannerCounts(IReadOnlyList<PartitionEntry> partitions)
    {
        _partitions = partitions;
        Partitions = partitions.Count;
        Sizes = partitions.Select(e => e.Count).ToArray();
        _cumulative = new int[partitions.Count == 0 ? 0 : partitions[0].AttributeStats?.Count ?? 0][];
    }

    public int Partitions { get; }
    public int[] Sizes { get; }

    public static PlannerCounts For(IReadOnlyList<PartitionEntry> partitions) => Cache.GetValue(partitions, p => new PlannerCounts(p));

    /// <summary>For every partition p: its vectors whose code (a one-byte cell) is below <paramref name="code"/>.</summary>
    public ReadOnlySpan<int> Row(int attribute, int code) => (_cumulative[attribute] ??= Build(attribute)).AsSpan(code * Partitions, Partitions);

    private int[] Build(int a)
    {
        var c = new int[(Codes + 1) * Partitions];
        var counts = new int[Codes];
        for (int p = 0; p < Partitions; p++)
        {
            var s = _partitions[p].AttributeStats![a];
            Array.Clear(counts);
            for (int j = 0; j < s.Codes.Length; j++) counts[s.Codes[j]] = s.Counts[j];
            counts[AttributeEncoding.MissingCode] += s.Missing;
            int sum = 0;
            for (int code = 0; code < Codes; code++) { c[code * Partitions + p] = sum; sum += counts[code]; }
            c[Codes * Partitions + p] = sum;
        }
        return c; // a race only builds the same array twice
    }
}
