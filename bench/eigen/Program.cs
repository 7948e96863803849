using System.Diagnostics;
using Squash.Core.Linalg;

// Times SymmetricEigen.Decompose (wall and CPU: the machine may be shared) on a dense symmetric matrix at each size given, default 256 1024 2048 4096, and prints the residual of the leading eigenpair as a sanity check.
// With --mathnet, times MathNet's managed EVD (the implementation before HouseholderQl) instead.
// Usage: dotnet run -c Release --project bench/eigen -- [--mathnet] [sizes...]
bool mathNet = args.Contains("--mathnet");
var numbers = args.Where(a => a != "--mathnet").ToArray();
int[] sizes = numbers.Length > 0 ? numbers.Select(int.Parse).ToArray() : [256, 1024, 2048, 4096];
Console.WriteLine(mathNet ? "MathNet.Numerics managed EVD" : "SymmetricEigen.Decompose");
Console.WriteLine($"cores: {Environment.ProcessorCount}");
Console.WriteLine("| n | decompose, wall (s) | CPU (s) | max abs(A v0 − λ0 v0) / λ0 |");
Console.WriteLine("| ---: | ---: | ---: | ---: |");
foreach (int n in sizes)
{
    // Dense symmetric: a decaying diagonal (a PCA-like spread of eigenvalues) plus a random symmetric part.
    var rng = new Random(n);
    var cov = new double[(long)n * n];
    for (int i = 0; i < n; i++)
    {
        cov[i * n + i] = 1.0 / (1 + i);
        for (int j = i + 1; j < n; j++)
            cov[i * n + j] = cov[j * n + i] = (rng.NextDouble() - 0.5) / Math.Sqrt(n);
    }
    var cpu = Process.GetCurrentProcess().TotalProcessorTime;
    var sw = Stopwatch.StartNew();
    var (values, vectors) = mathNet ? MathNetDecompose(cov, n) : SymmetricEigen.Decompose(cov, n);
    double seconds = sw.Elapsed.TotalSeconds;
    double cpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
    double worst = 0;
    for (int i = 0; i < n; i++)
    {
        double av = 0;
        for (int k = 0; k < n; k++) av += cov[i * n + k] * vectors[k * n];
        worst = Math.Max(worst, Math.Abs(av - values[0] * vectors[i * n]));
    }
    Console.WriteLine($"| {n} | {seconds:F2} | {cpuSeconds:F2} | {worst / Math.Abs(values[0]):E1} |");
}

// Leading eigenpair first, vectors row-major with eigenvector j in column j (as SymmetricEigen returns them).
static (double[] Values, double[] Vectors) MathNetDecompose(double[] a, int n)
{
    var evd = MathNet.Numerics.LinearAlgebra.Double.DenseMatrix.OfColumnMajor(n, n, a).Evd(MathNet.Numerics.LinearAlgebra.Symmetricity.Symmetric);
    var order = Enumerable.Range(0, n).OrderByDescending(j => evd.EigenValues[j].Real).ToArray();
    var vectors = new double[(long)n * n];
    for (int c = 0; c < n; c++)
        for (int i = 0; i < n; i++)
            vectors[i * n + c] = evd.EigenVectors[i, order[c]];
    return (order.Select(j => evd.EigenValues[j].Real).ToArray(), vectors);
}
