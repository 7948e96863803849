using System.CommandLine;
using Squash.Search;

namespace Squash.Cli.Commands;

/// <summary>The query knobs shared by query and bench, with their defaults from <see cref="SearchOptions"/>.</summary>
public sealed class SearchFlags
{
    private static readonly SearchOptions Defaults = new();

    public Option<int> K { get; } = new("--k") { Description = $"Neighbours per query (1..{SearchOptions.MaxK:N0}).", DefaultValueFactory = _ => 10 };
    /// <summary>Part of a plan set by hand, like --cf and --r (query only: bench sweeps CF and R).</summary>
    public Option<int?> MaxPartitions { get; } = new("--max-partitions") { Description = "The most partitions an unfiltered query scans, never fewer than hold k vectors (expert: part of the plan --cf and --r set; not with --recall or --filter)." };
    public Option<bool> Exact { get; } = new("--exact") { Description = "Exact mode: every partition, no pruning beyond safe bounds; equals brute force." };

    public void AddK(Command c) => c.Options.Add(K);

    public static int ValidateK(int k)
    {
        CliErrors.Require(k >= 1 && k <= SearchOptions.MaxK, $"--k must be between 1 and {SearchOptions.MaxK:N0}, got {k}");
        return k;
    }

    /// <summary>
    /// The query options from the flags: a recall target (<paramref name="recall"/>, or the default target when neither
    /// it nor --cf/--r was given), or the plan --cf and --r set (<paramref name="planGiven"/>).
    /// </summary>
    /// <param name="maxPartitions">--max-partitions, part of a plan set by hand (null: no cap).</param>
    public static SearchOptions Options(int k, double cf, double h, int r, bool exact, double? recall = null, bool planGiven = true, int? maxPartitions = null)
    {
        ValidateK(k);
        if (recall is { } target)
        {
            CliErrors.Require(target > 0 && target <= 1, $"--recall must be in (0, 1], got {target}");
            CliErrors.Require(!planGiven, "--recall cannot be combined with --cf, --r or --max-partitions: ask for a recall target, or set the plan yourself");
        }
        CliErrors.Require(cf >= 1 && cf <= SearchOptions.MaxCentroidFactor, $"--cf must be between 1 and {SearchOptions.MaxCentroidFactor:N0}, got {cf}");
        CliErrors.Require(h > 0 && h <= 100, $"--h must be in (0, 100], got {h}");
        CliErrors.Require(r >= 1 && r <= SearchOptions.MaxRerankFactor, $"--r must be between 1 and {SearchOptions.MaxRerankFactor:N0}, got {r}");
        CliErrors.Require(maxPartitions is not < 1, $"--max-partitions must be at least 1, got {maxPartitions}");
        return new SearchOptions
        {
            K = k, CentroidFactor = cf, HammingKeepPercent = h, RerankFactor = r, Exact = exact, MaxPartitions = maxPartitions,
            Recall = planGiven ? null : recall ?? SearchOptions.DefaultRecall,
        };
    }

    /// <summary>Whether the user typed the option (not just its default).</summary>
    public static bool Given(ParseResult pr, Option option) => pr.GetResult(option) is { Implicit: false };

    public static double DefaultCf => Defaults.CentroidFactor;
    public static double DefaultH => Defaults.HammingKeepPercent;
    public static int DefaultR => Defaults.RerankFactor;
}
