using System.CommandLine;
using Squash.Cli.Datasets;
using Squash.Search;
using Squash.Search.Writes;

namespace Squash.Cli.Commands;

/// <summary>
/// <c>squash calibrate</c>: measures an index's recall calibration again on the user's queries (and filter families) without a
/// rebuild, and publishes it as a manifest-only version (<see cref="UserCalibration"/>).
/// </summary>
public static class CalibrateCommand
{
    public static Command Create()
    {
        var index = new Option<string>("--index") { Description = "Folder that holds the index; with --store, the index's name inside the store.", Required = true };
        var queries = new Option<string>("--calibration-queries")
        {
            Description = "Queries like the ones the index serves (.fvecs, .bvecs or .npy): the first ones (as many as a build's base sample: one per 80 vectors, 300 to 1,200) are measured, as squash build --calibration-queries measures them.",
            Required = true,
        };
        var filters = new Option<string[]>("--calibration-filters")
        {
            Description = "Filters like the ones the index serves, one JSON filter per line, line i for query i (null: none), as many as the query file has queries; each file is measured as its own family in place of filters drawn from the attributes. Give it once per kind of filter.",
            Arity = ArgumentArity.ZeroOrMore,
        };
        var cmd = new Command("calibrate", "Measure the recall calibration of an index's current version again on your own queries (and filters), without a rebuild, and publish it as a new version of the same rows; later recalibrations after writes measure these queries.") { index, queries, filters };
        IndexLocation.AddStoreOptions(cmd);
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            var store = IndexLocation.Open(pr, pr.GetValue(index));
            var m = await store.OpenCurrentAsync(ct);
            var queryPath = pr.GetValue(queries)!;
            CliErrors.RequireFile("--calibration-queries", queryPath);
            var q = VectorFile.Read(queryPath);
            CliErrors.Require(q.Dimensions == m.Dimensions, $"--calibration-queries: '{queryPath}' has {q.Dimensions} dimensions; the index has {m.Dimensions}");
            CliErrors.Require(m.Calibration is not null,
                $"--index: version {m.Version} has no recall calibration (built with --no-calibration, or too small to calibrate): rebuild it to calibrate");
            int take = Math.Min(q.Count, RecallCalibrator.BuildQueries(m.Count));
            var paths = pr.GetValue(filters) ?? [];
            CliErrors.Require(paths.Length == 0 || m.Attributes is not null, "--calibration-filters needs an index with attributes: the filters name attributes");
            var files = BuildCommand.ReadCalibrationFilters(paths, q.Count, take);
            if (files is not null) BuildCommand.CheckCalibrationFilters(files, m.Attributes!);
            var families = files?.Select(g => g.Family).ToArray() ?? [];
            var given = new CalibrationQueries(q.Data[..(take * q.Dimensions)], take, q.Dimensions, null, "queries", Filters: families.Length > 0 ? families : null);
            Console.Error.WriteLine($"measuring version {m.Version} ({m.Count:N0} vectors) on {take:N0} of {q.Count:N0} queries from {queryPath}" +
                (families.Length > 0 ? $" and {families.Length} filter famil{(families.Length == 1 ? "y" : "ies")}" : "") + " ...");
            var result = await UserCalibration.CalibrateCurrentAsync(store, given, ct: ct);
            if (result.Run.Status != CalibrationStatus.Published)
            {
                Console.Error.WriteLine($"error: not published: {result.Run.Detail ?? result.Run.Summary}; run it again");
                return 1;
            }
            var published = await store.ReadManifestAsync(result.Run.PublishedVersion!, ct);
            Console.WriteLine($"calibrated {pr.GetValue(index)} version {m.Version} on your queries → version {published.Version} (current)");
            foreach (var line in BuildCommand.CalibrationLines(published)) Console.WriteLine(line);
            return 0;
        }));
        return cmd;
    }
}
