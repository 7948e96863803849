namespace Squash.Core.Vectors;

/// <summary>
/// A dense block of <see cref="Count"/> vectors of <see cref="Dimensions"/> floats, stored row-major in one
/// array so readers, writers and the brute-force search can work on contiguous spans.
/// </summary>
public sealed class VectorSet
{
    public VectorSet(float[] data, int count, int dims)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfLessThan(dims, 1);
        if ((long)count * dims != data.Length)
        {
            throw new ArgumentException(
                $"data has {data.Length} floats but {count} x {dims} = {(long)count * dims} were declared.", nameof(data));
        }

        Data = data;
        Count = count;
        Dimensions = dims;
    }

    public int Count { get; }

    public int Dimensions { get; }

    /// <summary>Row-major storage, <see cref="Count"/> × <see cref="Dimensions"/>.</summary>
    public float[] Data { get; }

    public ReadOnlySpan<float> Row(int i)
    {
        // Checked here so a bad index names the row rather than surfacing as a slice error.
        if ((uint)i >= (uint)Count)
        {
            throw new ArgumentOutOfRangeException(nameof(i), i, $"row index must be in [0, {Count}).");
        }

        return new ReadOnlySpan<float>(Data, i * Dimensions, Dimensions);
    }
}
