using Squash.Core.Bounds;

namespace Squash.Core.Tests.Bounds;

public class CellBoundsTests
{
    /// <summary>Random cells and boundaries over every dimension count 0..140 (hits the kernels' bodies and tails).</summary>
    [Fact]
    public void TableLowerBoundEqualsTheScalarReferenceAndBracketsPointsInsideTheCells()
    {
        var rng = new Random(4);
        for (int dims = 0; dims <= 140; dims++)
        {
            var widths = Enumerable.Range(0, dims).Select(_ => rng.Next(0, 9)).ToArray();
            var offsets = new int[dims];
            var boundaries = new List<float>();
            var cells = new byte[dims];
            var x = new float[dims];
            for (int d = 0; d < dims; d++)
            {
                offsets[d] = boundaries.Count;
                int c = 1 << widths[d];
                float b = (float)(rng.NextDouble() * -10);
                for (int j = 0; j <= c; j++) { boundaries.Add(b); b += (float)rng.NextDouble() + 0.01f; }
                cells[d] = (byte)rng.Next(c);
                float lo = boundaries[offsets[d] + cells[d]], hi = boundaries[offsets[d] + cells[d] + 1];
                x[d] = lo + (hi - lo) * (float)rng.NextDouble();
            }
            var q = Enumerable.Range(0, dims).Select(_ => (float)(rng.NextDouble() * 30 - 15)).ToArray();
            var bs = boundaries.ToArray();
            double reference = CellBounds.LowerBoundReference(q, cells, bs, offsets);
            var table = new float[bs.Length];
            LowerBoundTable.Build(q, bs, offsets, table);
            // Both kernels (the process uses the one it measured faster) give the reference sum.
            float chosen = LowerBoundTable.LowerBound(cells, table, offsets, 0.5f, float.PositiveInfinity);
            Assert.Equal(reference + 0.5, chosen, 1e-3 * (1 + reference));
            Assert.Equal(reference + 0.5, LowerBoundTable.LowerBoundLoads(cells, table, offsets, 0.5f, float.PositiveInfinity), 1e-3 * (1 + reference));
            if (System.Runtime.Intrinsics.X86.Avx2.IsSupported)
                Assert.Equal(reference + 0.5, LowerBoundTable.LowerBoundGather(cells, table, offsets, 0.5f, float.PositiveInfinity), 1e-3 * (1 + reference));
            double exact = 0;
            for (int d = 0; d < dims; d++) exact += (q[d] - (double)x[d]) * (q[d] - x[d]);
            Assert.True(reference <= exact + 1e-6 * (1 + exact), $"dims {dims}: LB {reference} > exact {exact}");
            Assert.True(CellBounds.UpperBound(q, cells, bs, offsets) >= exact - 1e-6 * (1 + exact));
            // Early exit: a bar below the bound stops with something above the bar.
            if (reference > 1)
            {
                Assert.True(LowerBoundTable.LowerBound(cells, table, offsets, 0, (float)(reference / 2)) > reference / 2);
                Assert.True(LowerBoundTable.LowerBoundLoads(cells, table, offsets, 0, (float)(reference / 2)) > reference / 2);
                if (System.Runtime.Intrinsics.X86.Avx2.IsSupported)
                    Assert.True(LowerBoundTable.LowerBoundGather(cells, table, offsets, 0, (float)(reference / 2)) > reference / 2);
            }
        }
    }

    /// <summary>The kernel choice rests on a measured ratio: a positive, finite one wherever AVX2 runs, gathers only under 0.9.</summary>
    [Fact]
    public void TheKernelChoiceFollowsTheMeasuredGatherTimeRatio()
    {
        double ratio = LowerBoundTable.GatherTimeRatio;
        if (!System.Runtime.Intrinsics.X86.Avx2.IsSupported)
        {
            Assert.True(double.IsNaN(ratio));
            Assert.True(double.IsNaN(LowerBoundTable.LoadsNanosecondsPerDimension));
            Assert.False(LowerBoundTable.UsesGather);
            return;
        }
        Assert.True(double.IsFinite(ratio) && ratio > 0, $"ratio {ratio}");
        double ns = LowerBoundTable.LoadsNanosecondsPerDimension;
        Assert.True(double.IsFinite(ns) && ns > 0, $"loads {ns} ns a dimension");
        Assert.Equal(ratio < 0.9, LowerBoundTable.UsesGather);
    }
}
