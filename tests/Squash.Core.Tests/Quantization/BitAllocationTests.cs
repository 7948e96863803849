using FsCheck.Xunit;
using Squash.Core.Quantization;

namespace Squash.Core.Tests.Quantization;

public class BitAllocationTests
{
    [Fact]
    public void PaperExample()
    {
        Assert.Equal([3, 1, 0], BitAllocation.Allocate([16.0, 4.0, 1.0], 4));
    }

    [Fact]
    public void CappedDimensionsDoNotWasteBudget()
    {
        // After dim 0 hits its cap of 2 the remaining bits must still be spent on dim 1.
        Assert.Equal([2, 2], BitAllocation.Allocate([100.0, 1.0], 4, maxBitsPerDim: 2));
        // maxCells = 5 → at most 2 bits (4 cells); 8 cells would exceed the 5 training values.
        Assert.Equal([2, 2], BitAllocation.Allocate([100.0, 1.0], 4, maxCells: 5));
    }

    [Fact]
    public void NonPositiveEnergyGetsNothingEvenWithBudgetLeft()
    {
        Assert.Equal([0, 8, 0, 0], BitAllocation.Allocate([0.0, 1e-30, -5.0, 0.0], 100));
    }

    [Fact]
    public void TiesGoToTheLowestIndex()
    {
        Assert.Equal([1, 1, 0], BitAllocation.Allocate([2.0, 2.0, 2.0], 2));
        // 16/4 ties with 4: dim 0 (second bit) comes before dim 1.
        Assert.Equal([2, 0], BitAllocation.Allocate([16.0, 4.0], 2));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(33)]
    [InlineData(65)]
    [InlineData(129)]
    [InlineData(784)]
    public void MatchesNaiveGreedyOnRandomEnergies(int dims)
    {
        var random = new Random(17 + dims);
        for (int trial = 0; trial < 20; trial++)
        {
            // Mix of continuous energies, exact ties (small integers) and non-positive ones.
            var energies = new double[dims];
            for (int d = 0; d < dims; d++)
            {
                energies[d] = (trial % 3) switch
                {
                    0 => random.NextDouble() * 100,
                    1 => random.Next(-1, 5),
                    _ => Math.Exp(random.NextDouble() * 20 - 10),
                };
            }

            int budget = random.Next(0, (4 * dims) + 10);
            int maxBits = random.Next(0, 9);
            int maxCells = trial % 2 == 0 ? int.MaxValue : random.Next(1, 300);
            int[] widths = BitAllocation.Allocate(energies, budget, maxBits, maxCells);

            Assert.Equal(NaiveGreedy(energies, budget, maxBits, maxCells), widths);
            CheckInvariants(energies, budget, maxBits, maxCells, widths);
        }
    }

    [Property(MaxTest = 300)]
    public bool MatchesNaiveGreedyOnArbitraryIntegerEnergies(int[] energyValues, byte budget, byte maxBitsRaw, ushort maxCellsRaw)
    {
        double[] energies = Array.ConvertAll(energyValues, e => (double)e);
        int maxBits = maxBitsRaw % 9;
        int maxCells = maxCellsRaw + 1;
        int[] widths = BitAllocation.Allocate(energies, budget, maxBits, maxCells);
        CheckInvariants(energies, budget, maxBits, maxCells, widths);
        return NaiveGreedy(energies, budget, maxBits, maxCells).AsSpan().SequenceEqual(widths);
    }

    [Fact]
    public void InvalidArgumentsNameTheParameter()
    {
        Assert.Equal("budgetBits", Assert.ThrowsAny<ArgumentException>(() => BitAllocation.Allocate([1.0], -1)).ParamName);
        Assert.Equal("maxBitsPerDim", Assert.ThrowsAny<ArgumentException>(() => BitAllocation.Allocate([1.0], 1, 9)).ParamName);
        Assert.Equal("maxBitsPerDim", Assert.ThrowsAny<ArgumentException>(() => BitAllocation.Allocate([1.0], 1, -1)).ParamName);
        Assert.Equal("maxCells", Assert.ThrowsAny<ArgumentException>(() => BitAllocation.Allocate([1.0], 1, 8, 0)).ParamName);
        Assert.Equal("energies", Assert.ThrowsAny<ArgumentException>(() => BitAllocation.Allocate([1.0, double.NaN], 1)).ParamName);
    }

    private static void CheckInvariants(double[] energies, int budget, int maxBits, int maxCells, int[] widths)
    {
        Assert.Equal(energies.Length, widths.Length);
        long capacity = 0;
        for (int d = 0; d < energies.Length; d++)
        {
            Assert.InRange(widths[d], 0, maxBits);
            Assert.True((1L << widths[d]) <= maxCells, $"dim {d}: {widths[d]} bits exceed {maxCells} cells");
            if (energies[d] <= 0)
            {
                Assert.Equal(0, widths[d]);
            }
            else
            {
                int cap = 0;
                while (cap < maxBits && (1L << (cap + 1)) <= maxCells)
                {
                    cap++;
                }

                capacity += cap;
            }
        }

        Assert.Equal(Math.Min(budget, capacity), widths.Sum());
    }

    /// <summary>O(B·D) reference: scan for the largest e/4^w among eligible dimensions, lowest index on ties.</summary>
    private static int[] NaiveGreedy(double[] energies, int budget, int maxBits, int maxCells)
    {
        var widths = new int[energies.Length];
        for (int step = 0; step < budget; step++)
        {
            int bestDim = -1;
            double bestValue = 0;
            for (int d = 0; d < energies.Length; d++)
            {
                bool eligible = energies[d] > 0 && widths[d] < maxBits && (1L << (widths[d] + 1)) <= maxCells;
                double value = energies[d] / Math.Pow(4, widths[d]);
                if (eligible && (bestDim < 0 || value > bestValue))
                {
                    bestDim = d;
                    bestValue = value;
                }
            }

            if (bestDim < 0)
            {
                break;
            }

            widths[bestDim]++;
        }

        return widths;
    }
}
