using Squash.Index.Build;

namespace Squash.Search.Tests;

/// <summary>Invariant 1: for every stored vector x and query q, LB(q, code(x)) ≤ ‖q − x‖² ≤ UB(q, code(x)).</summary>
public class BoundInvariantTests
{
    [Theory]
    [InlineData(1, 300, 2.0)]
    [InlineData(7, 400, 4.0)]
    [InlineData(33, 500, 4.0)]
    [InlineData(65, 500, 2.5)]
    [InlineData(129, 600, 4.0)]
    [InlineData(784, 300, 4.0)]
    [InlineData(33, 500, 8.0)]
    [InlineData(65, 400, 0.5)]
    public void LowerBoundNeverExceedsTrueDistanceAndUpperBoundNeverFallsBelowIt(int dims, int n, double bitsPerDim)
    {
        var data = TestData.Clustered(n, dims, clusters: 5, seed: dims * 31 + n);
        using var idx = new TestData.TempIndex(data, n, dims, new IndexBuildOptions { Partitions = 3, BitsPerDimension = bitsPerDim, Seed = 1 });
        var queries = TestData.Clustered(8, dims, clusters: 5, seed: 999 + dims);
        // Also a query far outside the data, where cells are all on one side.
        for (int j = 0; j < dims; j++) queries[j] = 1000f;
        int checkedPairs = 0;
        for (int qi = 0; qi < 8; qi++)
        {
            var q = queries.AsSpan(qi * dims, dims);
            var ctx = new QueryContext(idx.Index, q);
            for (int p = 0; p < idx.Index.PartitionCount; p++)
            {
                var codes = idx.Index.Codes(p);
                for (int row = 0; row < codes.Count; row++)
                {
                    long id = codes.Ids[row];
                    double exact = 0;
                    for (int j = 0; j < dims; j++) { double v = q[j] - (double)data[id * dims + j]; exact += v * v; }
                    var (lower, upper) = PartitionScanner.Bounds(ctx, codes, row);
                    double tolerance = 1e-4 * exact + 1e-3;
                    Assert.True(lower <= exact + tolerance, $"dims {dims}: LB² {lower} > exact² {exact} for row {id}");
                    Assert.True(upper >= exact - tolerance, $"dims {dims}: UB² {upper} < exact² {exact} for row {id}");
                    checkedPairs++;
                }
            }
        }
        Assert.Equal(8 * n, checkedPairs);
    }
}
