// Diagnostics for the filtered planner's partition order on Fashion-MNIST (bench/recall.md, "Where the anti-correlated
// family's misses lie"). Not part of the solution: build against a Release build of the CLI.
//   dotnet run -c Release -- misses IDX FMDIR TARGET [QUERIES]
//   dotnet run -c Release -- rules IDX FMDIR QUERIES
//   dotnet run -c Release -- own FMDIR OUTDIR   (own-label filters and their exact ground truth, for squash bench)
//   dotnet run -c Release -- other FMDIR OUTDIR (a uniformly drawn other label per query, likewise)
switch (args.FirstOrDefault())
{
    case "misses": await Misses.Run(args[1..]); break;
    case "rules": await Rules.Run(args[1..]); break;
    case "own": Own.Run(args[1..]); break;
    case "other": Own.Run(args[1..], other: true); break;
    default: Console.Error.WriteLine("usage: misses IDX FMDIR TARGET [QUERIES] | rules IDX FMDIR QUERIES | own FMDIR OUTDIR | other FMDIR OUTDIR"); return 2;
}
return 0;
