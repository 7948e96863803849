// Diagnostics for the filtered planner's partition order on Fashion-MNIST (bench/recall.md, "Where the anti-correlated
// family's misses lie"). Not part of the solution: build against a Release build of the CLI.
//   dotnet run -c Release -- misses IDX FMDIR TARGET [QUERIES]
//   dotnet run -c Release -- rules IDX FMDIR QUERIES
//   dotnet run -c Release -- own FMDIR OUTDIR   (own-label filters and their exact ground truth, for squash bench)
switch (args.FirstOrDefault())
{
    case "misses": await Misses.Run(args[1..]); break;
    case "rules": await Rules.Run(args[1..]); break;
    case "own": Own.Run(args[1..]); break;
    default: Console.Error.WriteLine("usage: misses IDX FMDIR TARGET [QUERIES] | rules IDX FMDIR QUERIES | own FMDIR OUTDIR"); return 2;
}
return 0;
