using Squash.Functions.Tree;

namespace Squash.Functions.Tests;

/// <summary>Cost-budgeted planning (Squash__Objective): the shape chosen against the planner's own model, recomputed here.</summary>
public sealed class ShapePlannerTests
{
    private static FunctionSettings Settings(string objective, double p99 = 100, double cap = 0.00001) =>
        new() { Objective = objective, P99TargetMs = p99, CostCapUsd = cap, MaxTreeNodes = 128 };

    [Fact]
    public void FewPartitionsOnIdlePoolsAreScannedByTheCoordinatorItself()
    {
        var choice = ShapePlanner.Choose(Settings("cost"), partitions: 6, pools: 2, _ => false);
        Assert.Equal((1, 0), (choice.Branching, choice.Depth));
        Assert.Equal("objective:cost", choice.ChosenBy);
        // One execution, nothing woken.
        Assert.Equal(PriceTable.ExecutionsCost(1), choice.PredictedCostUsd!.Value, 15);
    }

    [Fact]
    public void ATightP99TargetBuysATreeAndTheCheapestTreeThatMeetsItWins()
    {
        var s = Settings("cost", p99: 35);
        // 1,000 partitions alone: 2 + 100 ms typical, 306 ms p99: over the target.
        var idle = ShapePlanner.Choose(s, 1000, 2, _ => false);
        Assert.NotEqual(0, idle.Depth);
        Assert.True(3 * idle.PredictedMs!.Value <= 35, $"{idle}");
        // Brute force over the same candidates: nothing that meets the target is cheaper.
        foreach (var (b, l) in new[] { (1, 1), (2, 1), (4, 1), (8, 1), (16, 1), (2, 2), (4, 2) })
        {
            var (cost, ms) = ShapePlanner.Predict(s, b, l, 1000, 2, _ => false);
            if (3 * ms <= 35) Assert.True(cost >= idle.PredictedCostUsd!.Value - 1e-15, $"b={b},L={l} costs {cost}, chosen {idle}");
        }
        // Active pools cost nothing to reach: the same query predicts cheaper.
        var warm = ShapePlanner.Choose(s, 1000, 2, _ => true);
        Assert.True(warm.PredictedCostUsd < idle.PredictedCostUsd, $"{warm} vs {idle}");
    }

    [Fact]
    public void TheLatencyObjectiveTakesTheFastestShapeUnderTheCap()
    {
        var generous = ShapePlanner.Choose(Settings("latency", cap: 1), 1000, 2, _ => false);
        var tight = ShapePlanner.Choose(Settings("latency", cap: 1e-9), 1000, 2, _ => false);
        Assert.True(generous.PredictedMs < tight.PredictedMs, $"{generous} vs {tight}");
        // Nothing fits a cap of 10⁻⁹ $: the cheapest shape.
        Assert.Equal((1, 0), (tight.Branching, tight.Depth));
    }

    [Fact]
    public void BadObjectiveSettingsAreNamed()
    {
        Assert.Null(ShapePlanner.Check(Settings("")));
        Assert.Contains("Squash:Objective", ShapePlanner.Check(Settings("cheap")));
        Assert.Contains("Squash:P99TargetMs", ShapePlanner.Check(Settings("cost", p99: 0)));
        Assert.Contains("Squash:CostCapUsd", ShapePlanner.Check(Settings("latency", cap: double.NaN)));
    }
}
