namespace Squash.Cli.Datasets;

/// <summary>
/// xoshiro256** generator with a polar-method normal sampler. Owned here rather than System.Random so the
/// sequence for a seed is fixed by this code, not by whichever algorithm a runtime version picks.
/// </summary>
internal struct Xoshiro256
{
    private ulong _s0, _s1, _s2, _s3;
    private double _spareNormal;
    private bool _hasSpare;

    /// <summary>Seeds from (seed, stream, index) via SplitMix64 so parallel chunks get independent, reproducible streams.</summary>
    public Xoshiro256(long seed, ulong stream, ulong index)
    {
        // Hash the three parts in sequence so different (seed, stream, index) triples do not line up.
        ulong state = Finalise(Finalise(Finalise((ulong)seed) ^ stream) ^ index);
        _s0 = SplitMix(ref state);
        _s1 = SplitMix(ref state);
        _s2 = SplitMix(ref state);
        _s3 = SplitMix(ref state);
        _spareNormal = 0;
        _hasSpare = false;
    }

    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Standard normal via Marsaglia's polar method (no trigonometry; the pair's second value is kept).</summary>
    public double NextNormal()
    {
        if (_hasSpare)
        {
            _hasSpare = false;
            return _spareNormal;
        }

        double u, v, s;
        do
        {
            u = 2 * NextDouble() - 1;
            v = 2 * NextDouble() - 1;
            s = u * u + v * v;
        }
        while (s >= 1 || s == 0);

        double factor = Math.Sqrt(-2 * Math.Log(s) / s);
        _spareNormal = v * factor;
        _hasSpare = true;
        return u * factor;
    }

    private static ulong SplitMix(ref ulong state) => Finalise(state += 0x9E37_79B9_7F4A_7C15UL);

    private static ulong Finalise(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EBUL;
        return z ^ (z >> 31);
    }
}
