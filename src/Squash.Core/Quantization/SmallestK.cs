using System.Buffers;
using System.Numerics.Tensors;

namespace Squash.Core.Quantization;

/// <summary>
/// Selects the <c>keep</c> smallest small-integer keys (Hamming distances) by counting sort: O(n + maxKey),
/// no comparisons, stable, so ties keep the lower index first.
/// </summary>
public static class SmallestK
{
    // Histograms up to this many buckets live on the stack; larger ones are rented.
    private const int StackBuckets = 2048;

    /// <summary>
    /// Writes the indices of the min(<paramref name="keep"/>, keys.Length) smallest keys to
    /// <paramref name="selectedIndices"/>, ordered by key then index, and returns how many were written.
    /// </summary>
    public static int Select(ReadOnlySpan<ushort> keys, int keep, Span<int> selectedIndices)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(keep);
        int take = Math.Min(keep, keys.Length);
        if (selectedIndices.Length < take)
        {
            throw new ArgumentException("Destination is shorter than min(keep, keys.Length).", nameof(selectedIndices));
        }

        if (take == 0)
        {
            return 0;
        }

        int buckets = TensorPrimitives.Max(keys) + 1;
        int[]? rented = null;
        Span<int> counts = buckets <= StackBuckets
            ? stackalloc int[StackBuckets]
            : (rented = ArrayPool<int>.Shared.Rent(buckets));
        counts = counts[..buckets];
        counts.Clear();
        try
        {
            foreach (ushort key in keys)
            {
                counts[key]++;
            }

            // Threshold key: everything below it is taken, and `atThreshold` keys equal to it (lowest indices).
            int threshold = 0;
            int below = 0;
            while (below + counts[threshold] < take)
            {
                below += counts[threshold];
                threshold++;
            }

            int atThreshold = take - below;

            // counts[k] becomes the output position of the next index with key k (k < threshold);
            // keys equal to the threshold go after all smaller ones.
            int position = 0;
            for (int k = 0; k < threshold; k++)
            {
                int c = counts[k];
                counts[k] = position;
                position += c;
            }

            int thresholdPosition = below;
            for (int i = 0; i < keys.Length; i++)
            {
                int key = keys[i];
                if (key < threshold)
                {
                    selectedIndices[counts[key]++] = i;
                }
                else if (key == threshold && atThreshold > 0)
                {
                    selectedIndices[thresholdPosition++] = i;
                    atThreshold--;
                }
            }

            return take;
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<int>.Shared.Return(rented);
            }
        }
    }
}
