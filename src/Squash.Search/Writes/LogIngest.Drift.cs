using Squash.Index.Attributes;
using Squash.Index.Build;
using Squash.Index.Model;

namespace Squash.Search.Writes;

public static partial class LogIngest
{
    /// <summary>
    /// A rewritten partition drifted, and is split (each part fitted afresh, with its own centroid), when the quantizer it
    /// carries has an expected error this many times that of a fresh fit to the same rows. Rows that ingest appended with
    /// the old quantizer, and outer cells it widened to hold them, raise the error; a fresh fit measured on the rows it was
    /// fitted to is a little optimistic, so the ratio sits a little above 1 even when the writes come from the data's own
    /// distribution, and the bound leaves room for that (bench/writes.md has the ratios measured).
    /// </summary>
    public const double DriftRatio = 1.2;

    /// <summary>What the drift check found for a rewritten partition: whether it drifted, the ratio it judged by, the error to record.</summary>
    private sealed record DriftCheck(bool Drifted, double Ratio, double? FitError);

    /// <summary>
    /// Whether a rewritten partition's rows drifted from the quantizer it carries (<see cref="DriftRatio"/>), by
    /// <see cref="PartitionCodes.ExpectedError"/>. A carried error within the ratio of the last fresh fit's
    /// (<see cref="PartitionEntry.FitError"/>) needs no fit: most rewrites stop there, and a fit costs a KLT and Lloyd cells
    /// per partition. Otherwise the rows are fitted afresh, as a build would fit them, and they drifted when the carried
    /// error is past the ratio of the fresh one's (rows that are only noisier raise both alike).
    /// </summary>
    private static DriftCheck CheckDrift(IndexManifest m, RoutingData routing, PartitionEntry entry, Rewritten rows)
    {
        if (rows.Codes.Count < 2) return new(false, 1, entry.FitError);
        double carried = rows.Codes.ExpectedError();
        if (entry.FitError is { } last && carried <= DriftRatio * last) return new(false, last > 0 ? carried / last : 1, last);
        var fresh = EncodeFresh(m, routing, rows.Codes.Id, rows, Enumerable.Range(0, rows.Codes.Count).ToArray(), m.Attributes).Rows.Codes.ExpectedError();
        double ratio = fresh <= 0 ? (carried > 0 ? double.PositiveInfinity : 1) : carried / fresh;
        return new(ratio > DriftRatio, ratio, fresh);
    }

    /// <summary>
    /// Rows <paramref name="members"/> of a rewritten partition encoded as a build encodes a partition (its own KLT, bit
    /// allocation and Lloyd cells), in their order, with their attributes; the routing centroid is their mean.
    /// </summary>
    private static SplitPart EncodeFresh(IndexManifest m, RoutingData routing, int id, Rewritten whole, int[] members, IndexAttributes? attributeInfo)
    {
        int d = m.InternalDimensions, k = members.Length;
        var x = whole.Vectors.Data;
        var hx = new float[(long)k * d];
        for (int i = 0; i < k; i++) x.AsSpan(members[i] * d, d).CopyTo(hx.AsSpan(i * d, d));
        var ids = members.Select(i => whole.Codes.Ids[i]).ToArray();
        var (encoded, centroid, radius) = PartitionEncoder.EncodeRows(id, ids, hx, d, routing.GlobalTransform, m.Build.BudgetBits, m.Build.MaxBitsPerDimension);
        var attributes = whole.Attributes is null || attributeInfo is null ? null
            : PartitionAttributes.Gather(attributeInfo, [whole.Attributes], members.Select(i => (0, i)).ToArray());
        return new SplitPart(new Rewritten(encoded.Codes, encoded.Vectors, attributes), centroid, radius);
    }
}
