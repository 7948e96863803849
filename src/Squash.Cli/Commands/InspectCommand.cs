using System.CommandLine;
using Spectre.Console;
using Squash.Search;

namespace Squash.Cli.Commands;

/// <summary>Prints what an index holds: manifest, energy spectrum, code widths, partition sizes, recall calibration.</summary>
public static class InspectCommand
{
    public static Command Create()
    {
        var index = new Option<string>("--index") { Description = "Folder that holds the index; with --store, the index's name inside the store.", Required = true };
        var partitions = new Option<bool>("--partitions") { Description = "Also list every partition." };
        var cmd = new Command("inspect", "Describe an index: version, build parameters, spectrum, code widths, partitions, the recall calibration.") { index, partitions };
        IndexLocation.AddStoreOptions(cmd);
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            var store = IndexLocation.Open(pr, pr.GetValue(index));
            var loaded = await OpenedIndex.OpenAsync(store, loadAll: pr.GetValue(partitions), ct);
            var m = loaded.Manifest;
            Console.WriteLine($"version {m.Version} ({m.CreatedUtc:u}), {m.Count:N0} vectors × {m.Dimensions} dims, metric {m.Metric}");
            Console.WriteLine($"build: {m.Build.Partitions} partitions, budget {m.Build.BudgetBits} bits/vector ({m.Build.BitsPerDimension} per dim, ≤ {m.Build.MaxBitsPerDimension}), seed {m.Build.Seed}, {m.Build.BuildSeconds:F1} s");
            var eig = loaded.Routing.GlobalTransform.Eigenvalues;
            double total = eig.Where(e => e > 0).Sum();
            Console.WriteLine($"global KLT: {m.GlobalDimensions} of {m.InternalDimensions} dims kept; total variance {total:G4}");
            double cum = 0;
            int next = 0;
            var marks = new[] { 0.5, 0.8, 0.9, 0.95, 0.99, 0.999 };
            for (int i = 0; i < eig.Length && next < marks.Length; i++)
            {
                cum += Math.Max(0, eig[i]);
                while (next < marks.Length && cum >= marks[next] * total)
                {
                    Console.WriteLine($"  {marks[next]:P1} of the variance in the first {i + 1} components");
                    next++;
                }
            }
            double kept = eig.Take(m.GlobalDimensions).Where(e => e > 0).Sum();
            Console.WriteLine($"  kept components hold {kept / total:P3} of the variance");
            var coded = m.Partitions.Select(p => p.CodedDimensions).ToArray();
            Console.WriteLine($"coded dims per partition: min {coded.Min()}, mean {coded.Average():F0}, max {coded.Max()}; code bytes per vector {loaded.CodeBytesPerVector:F1}");
            var sizes = m.Partitions.Select(p => p.Count).ToArray();
            Console.WriteLine($"partition sizes: min {sizes.Min():N0}, mean {sizes.Average():N0}, max {sizes.Max():N0}");
            foreach (var line in BuildCommand.CalibrationLines(m)) Console.WriteLine(line);
            if (pr.GetValue(partitions))
            {
                var table = new Table().AddColumns("id", "vectors", "coded dims", "bits/vector", "width histogram (1..8 bits)", "radius", "codes KB", "vectors KB");
                foreach (var p in m.Partitions)
                {
                    var codes = loaded.Codes(p.Id);
                    var hist = string.Join(' ', Enumerable.Range(1, 8).Select(w => codes.Widths.Count(x => x == w)));
                    table.AddRow(p.Id.ToString(), p.Count.ToString("N0"), p.CodedDimensions.ToString(), p.BitsPerVector.ToString(), hist,
                        loaded.Routing.Radii[p.Id].ToString("G4"), (p.Codes.Bytes / 1024).ToString("N0"), (p.Vectors.Bytes / 1024).ToString("N0"));
                }
                AnsiConsole.Write(table);
            }
            return 0;
        }));
        return cmd;
    }
}
