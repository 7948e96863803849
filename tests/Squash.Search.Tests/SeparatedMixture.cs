namespace Squash.Search.Tests;

/// <summary>
/// Far-apart Gaussian clusters, each with its own random rotation and a within-cluster spectrum decaying like
/// i^-1.2: the between-cluster spread dominates the total variance while the neighbours of a point are decided
/// by the within-cluster axes. The centres and rotations depend on the seed only; <see cref="Sample"/> draws rows.
/// </summary>
public sealed class SeparatedMixture
{
    private readonly int _dims, _clusters;
    private readonly double[] _centres;    // clusters × dims
    private readonly double[] _rotations;  // clusters × dims × dims, rows orthonormal
    private readonly double[] _scales;     // per within-cluster axis: (i + 1)^-0.6, i.e. variance (i + 1)^-1.2

    public SeparatedMixture(int dims, int clusters, double centreSpread, int seed)
    {
        _dims = dims;
        _clusters = clusters;
        var rng = new Random(seed);
        _centres = new double[clusters * dims];
        for (int i = 0; i < _centres.Length; i++) _centres[i] = centreSpread * TestData.Gaussian(rng);
        _rotations = new double[(long)clusters * dims * dims];
        for (int c = 0; c < clusters; c++) RandomRotation(rng, dims, _rotations.AsSpan(c * dims * dims, dims * dims));
        _scales = new double[dims];
        for (int i = 0; i < dims; i++) _scales[i] = Math.Pow(i + 1, -0.6);
    }

    /// <summary>Sum of the within-cluster variances (the total variance is this plus the centres' spread).</summary>
    public double WithinClusterVariance => _scales.Sum(s => s * s);

    public float[] Sample(int n, int seed)
    {
        var rng = new Random(seed);
        var data = new float[(long)n * _dims];
        var local = new double[_dims];
        for (int i = 0; i < n; i++)
        {
            int c = rng.Next(_clusters);
            for (int k = 0; k < _dims; k++) local[k] = _scales[k] * TestData.Gaussian(rng);
            var rotation = _rotations.AsSpan(c * _dims * _dims, _dims * _dims);
            for (int j = 0; j < _dims; j++)
            {
                double v = _centres[c * _dims + j];
                for (int k = 0; k < _dims; k++) v += rotation[k * _dims + j] * local[k];
                data[i * _dims + j] = (float)v;
            }
        }
        return data;
    }

    // Gram–Schmidt on Gaussian rows: a uniformly random orthonormal basis.
    private static void RandomRotation(Random rng, int dims, Span<double> rows)
    {
        for (int r = 0; r < dims; r++)
        {
            var row = rows.Slice(r * dims, dims);
            while (true)
            {
                for (int j = 0; j < dims; j++) row[j] = TestData.Gaussian(rng);
                for (int p = 0; p < r; p++)
                {
                    var prev = rows.Slice(p * dims, dims);
                    double dot = 0;
                    for (int j = 0; j < dims; j++) dot += row[j] * prev[j];
                    for (int j = 0; j < dims; j++) row[j] -= dot * prev[j];
                }
                double norm = 0;
                foreach (double v in row) norm += v * v;
                norm = Math.Sqrt(norm);
                if (norm < 1e-6) continue;
                for (int j = 0; j < dims; j++) row[j] /= norm;
                break;
            }
        }
    }
}
