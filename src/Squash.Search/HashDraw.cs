namespace Squash.Search;

/// <summary>Turns a 64-bit hash into a place in [0, 1), for choices that must come out the same in every process.</summary>
internal static class HashDraw
{
    /// <summary>The hash's top 53 bits as a double in [0, 1) (every value a double can hold exactly, evenly spaced).</summary>
    public static double UnitInterval(ulong hash) => (hash >> 11) * (1.0 / (1UL << 53));
}
