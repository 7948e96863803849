using Squash.Cli.Commands;

namespace Squash.Cli.Bench;

public static class Plot
{
    /// <summary>Recall against QPS (log scale) for every sweep point, with the brute-force QPS as a reference line.</summary>
    public static void RecallQps(string path, IReadOnlyList<BenchCommand.Point> points, double bruteForceQps, string title)
    {
        var plot = new ScottPlot.Plot();
        var xs = points.Select(p => p.Recall).ToArray();
        var ys = points.Select(p => Math.Log10(Math.Max(1, p.Qps))).ToArray();
        var scatter = plot.Add.ScatterPoints(xs, ys);
        scatter.LegendText = "Squash (CF × H × R sweep)";
        if (bruteForceQps > 0)
        {
            var line = plot.Add.HorizontalLine(Math.Log10(bruteForceQps));
            line.LegendText = $"brute force {bruteForceQps:F0} QPS";
        }
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
        {
            LabelFormatter = v => Math.Pow(10, v).ToString("N0"),
        };
        plot.Title($"recall vs QPS, one thread ({title})");
        plot.XLabel("recall");
        plot.YLabel("queries per second (log)");
        plot.ShowLegend();
        plot.SavePng(path, 900, 600);
    }
}
