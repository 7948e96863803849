using System.Runtime.InteropServices;
using Squash.Core.Quantization;
using Squash.Index.Format;

namespace Squash.Index.Model;

/// <summary>
/// One partition's quantized form, decoded for scanning.
/// <para>Coordinates: a stored vector x has global KLT coordinates y = W_g(x − μ_g) (m dims); the
/// partition's own KLT gives z = V_p(y − μ_p) (the first <see cref="CodedDimensions"/> eigenvectors,
/// in decreasing eigenvalue order). Everything outside span(V_p) — the rest of the global subspace and
/// the global residual — is summarised by one number per vector, ‖e_x‖, so that
/// ‖q − x‖² = ‖z_q − z_x‖² + ‖e_q − e_x‖² ≥ Σ_d lb_d² + (‖e_q‖ − ‖e_x‖)².</para>
/// <para>Each coded dimension d has 2^w_d Lloyd cells with the middle boundary pinned at 0, so the top
/// bit of a code is the sign of z_d: the sign codes are the top bit-plane and the OSQ planes hold
/// the remaining w_d − 1 bits. Storage is Σ w_d bits per vector in all.</para>
/// </summary>
public sealed class PartitionCodes
{
    private const uint MeanSection = 1, RotationSection = 2, WidthSection = 3, BoundarySection = 4,
        SignSection = 5, PlaneSection = 6, ResidualSection = 7, IdSection = 8, EigenSection = 9,
        OuterBoundarySection = 10;

    public required int Id { get; init; }
    public required int Count { get; init; }
    /// <summary>m: the global subspace dimension the partition KLT lives in.</summary>
    public required int GlobalDimensions { get; init; }
    public required int CodedDimensions { get; init; }
    /// <summary>μ_p in global KLT coordinates (m floats).</summary>
    public required float[] Mean { get; init; }
    /// <summary>V_p: CodedDimensions × m row-major, rows are eigenvectors by decreasing eigenvalue.</summary>
    public required float[] Rotation { get; init; }
    public required double[] Eigenvalues { get; init; }
    /// <summary>Bits per coded dimension (1..8), non-increasing.</summary>
    public required byte[] Widths { get; init; }
    /// <summary>Cell boundaries of all coded dims, concatenated; dim d starts at <see cref="BoundaryOffsets"/>[d] and has 2^w_d + 1 entries.</summary>
    public required float[] Boundaries { get; init; }
    public required int[] BoundaryOffsets { get; init; }
    /// <summary>Sign codes, Count × SignWords, row-major (bit j = z_j ≥ 0).</summary>
    public required ulong[] Signs { get; init; }
    public required int SignWords { get; init; }
    /// <summary>Decoded cells, Count × CodedDimensions row-major, one byte per dimension (the in-memory form of the bit planes).</summary>
    public required byte[] Cells { get; init; }
    /// <summary>‖e_x‖ per vector.</summary>
    public required float[] ResidualNorms { get; init; }
    /// <summary>Row number of each vector in the index (ascending).</summary>
    public required int[] Ids { get; init; }
    /// <summary>Bytes of the stored segment (what a cold read costs).</summary>
    public long StoredBytes { get; init; }

    public int BitsPerVector => Widths.Sum(w => (int)w);

    /// <summary>
    /// Expected squared error of a row's code, as the bounds see it: per coded dimension the squared width of its cell over
    /// 12 (a value spread evenly over its cell), plus the residual energy the code does not hold at all. From the codes
    /// alone, so one measure compares a quantizer that ingest carried and widened with a fresh fit to the same rows.
    /// </summary>
    public double ExpectedRowError(int row)
    {
        int md = CodedDimensions;
        double e = (double)ResidualNorms[row] * ResidualNorms[row];
        var cells = Cells.AsSpan(row * md, md);
        for (int t = 0; t < md; t++)
        {
            int off = BoundaryOffsets[t] + cells[t];
            double w = (double)Boundaries[off + 1] - Boundaries[off];
            e += w * w / 12;
        }
        return e;
    }

    /// <summary>
    /// An upper bound, over the partition's rows, on ‖x − μ_g‖² + ‖y − μ_p‖²: the sums a stored ‖e_x‖ was computed from by
    /// subtraction (‖e_x‖² = ‖x − μ_g‖² − ‖y‖² + ‖y − μ_p‖² − ‖z‖²), so its float rounding scales with them, not with
    /// ‖e_x‖. From the outer cell boundaries (every coded value lies between them; ingest widens them for far rows), the
    /// largest residual norm and ‖μ_p‖; +∞ when a boundary is not finite. Computed once per decoded partition.
    /// </summary>
    public double MagnitudeBound
    {
        get
        {
            double bound = _magnitudeBound;
            if (bound >= 0) return bound;
            return _magnitudeBound = ComputeMagnitudeBound();
        }
    }

    private double _magnitudeBound = -1;

    private double ComputeMagnitudeBound()
    {
        double coded = 0;
        for (int t = 0; t < CodedDimensions; t++)
        {
            int off = BoundaryOffsets[t];
            double low = Boundaries[off], high = Boundaries[off + (1 << Widths[t])];
            coded += Math.Max(low * low, high * high);
        }
        double residual = 0;
        foreach (float e in ResidualNorms) residual = Math.Max(residual, e);
        double mean = 0;
        foreach (float v in Mean) mean += (double)v * v;
        // ‖y − μ_p‖² ≤ ‖z‖² + ‖e‖²; ‖x − μ_g‖² = ‖y‖² + (energy outside the global subspace, ≤ ‖e‖²) with ‖y‖ ≤ ‖y − μ_p‖ + ‖μ_p‖.
        double inside = coded + residual * residual;
        double centred = Math.Pow(Math.Sqrt(inside) + Math.Sqrt(mean), 2) + residual * residual;
        double total = inside + centred;
        return double.IsFinite(total) ? total : double.PositiveInfinity;
    }

    /// <summary>The mean of <see cref="ExpectedRowError"/> over the rows (0 for none).</summary>
    public double ExpectedError()
    {
        double sum = 0;
        for (int i = 0; i < Count; i++) sum += ExpectedRowError(i);
        return Count == 0 ? 0 : sum / Count;
    }

    /// <summary>Each coded dimension's lowest and highest cell boundary.</summary>
    private float[] Outer()
    {
        var outer = new float[2 * CodedDimensions];
        for (int d = 0; d < CodedDimensions; d++)
        {
            outer[2 * d] = Boundaries[BoundaryOffsets[d]];
            outer[2 * d + 1] = Boundaries[BoundaryOffsets[d] + (1 << Widths[d])];
        }
        return outer;
    }

    /// <summary>
    /// <paramref name="boundaries"/> (a partition's, laid out by <see cref="BoundaryOffsets"/>) as these appended rows left
    /// them: all of this segment's, or only the outer ones of a lean segment.
    /// </summary>
    public void ApplyBoundaries(float[] boundaries)
    {
        if (OuterBoundaries is not { } outer)
        {
            Boundaries.CopyTo(boundaries, 0);
            return;
        }
        for (int d = 0; d < CodedDimensions; d++)
        {
            boundaries[BoundaryOffsets[d]] = outer[2 * d];
            boundaries[BoundaryOffsets[d] + (1 << Widths[d])] = outer[2 * d + 1];
        }
    }

    /// <summary>Lays out boundary offsets for the given widths.</summary>
    public static int[] OffsetsFor(ReadOnlySpan<byte> widths, out int total)
    {
        var offsets = new int[widths.Length];
        total = 0;
        for (int d = 0; d < widths.Length; d++)
        {
            offsets[d] = total;
            total += (1 << widths[d]) + 1;
        }
        return offsets;
    }

    /// <summary>
    /// False for rows decoded from an appended segment written without the quantizer (<see cref="ToAppendedSegment"/>):
    /// <see cref="Mean"/>, <see cref="Rotation"/> and <see cref="Eigenvalues"/> are then empty and the base segment's hold.
    /// </summary>
    public bool HasQuantizer { get; init; } = true;
    /// <summary>
    /// For rows decoded from a lean appended segment (<see cref="HasQuantizer"/> false): each coded dimension's outer cell
    /// boundaries (lowest, highest; 2 × <see cref="CodedDimensions"/>) as these rows left them, and <see cref="Boundaries"/>
    /// is empty. Ingest only ever moves the outer boundaries out, so the base segment's inner ones hold.
    /// </summary>
    public float[]? OuterBoundaries { get; init; }

    /// <summary>Serialises: the cells are stored as sign words plus bit planes of the low w−1 bits.</summary>
    public byte[] ToSegment() => ToSegment(withQuantizer: true);

    /// <summary>
    /// Serialises rows appended to a partition without its KLT (mean, rotation, eigenvalues) and with only the outer cell
    /// boundaries: the rest are the base segment's (ingest moves only the outer boundaries out). At 10^6 × 128 the KLT was
    /// ~30 KB a partition and the boundaries ~7 KB, most of an ingest run's index pack (bench/writes.md).
    /// </summary>
    public byte[] ToAppendedSegment() => ToSegment(withQuantizer: false);

    private byte[] ToSegment(bool withQuantizer)
    {
        int n = Count, md = CodedDimensions;
        var lowWidths = new int[md];
        for (int d = 0; d < md; d++) lowWidths[d] = Widths[d] - 1;
        var layout = new BitPlaneLayout(lowWidths);
        var low = new byte[(long)n * md];
        for (long i = 0; i < low.Length; i++)
        {
            int d = (int)(i % md);
            low[i] = (byte)(Cells[i] & ((1 << lowWidths[d]) - 1));
        }
        var planes = new byte[(long)layout.SegmentCount * n];
        layout.Pack(low, n, planes);
        (uint, ReadOnlyMemory<byte>)[] quantizer = withQuantizer
            ? [(MeanSection, SegmentFile.Bytes(Mean)), (RotationSection, SegmentFile.Bytes(Rotation)), (EigenSection, SegmentFile.Bytes(Eigenvalues))]
            : [];
        return SegmentFile.Write(SegmentKind.Codes, n, md,
        [
            .. quantizer,
            (WidthSection, Widths),
            withQuantizer ? (BoundarySection, SegmentFile.Bytes(Boundaries)) : (OuterBoundarySection, SegmentFile.Bytes(Outer())),
            (SignSection, SegmentFile.Bytes(Signs)),
            (PlaneSection, planes),
            (ResidualSection, SegmentFile.Bytes(ResidualNorms)),
            (IdSection, SegmentFile.Bytes(Ids)),
        ]);
    }

    /// <param name="appended">
    /// The segment holds rows appended to a partition: it may leave the quantizer to the base segment
    /// (<see cref="HasQuantizer"/> false). A base or whole segment without one is corrupt.
    /// </param>
    public static PartitionCodes FromSegment(byte[] file, string name, PartitionEntry entry, int globalDims, bool appended = false)
    {
        var v = SegmentFile.Open(file, name, SegmentKind.Codes);
        int present = (v.HasSection(MeanSection) ? 1 : 0) + (v.HasSection(RotationSection) ? 1 : 0) + (v.HasSection(EigenSection) ? 1 : 0);
        if (present is 1 or 2) throw new CorruptIndexException($"segment '{name}' holds only part of its quantizer (mean, rotation, eigenvalues)");
        bool hasQuantizer = present == 3;
        if (!hasQuantizer && !appended) throw new CorruptIndexException($"segment '{name}' has no quantizer (mean, rotation, eigenvalues); only appended rows may leave it to their base segment");
        // A lean appended segment holds the outer boundaries only; one written with its quantizer, all of them.
        bool outerOnly = !hasQuantizer && v.HasSection(OuterBoundarySection) && !v.HasSection(BoundarySection);
        int n = entry.Count, md = entry.CodedDimensions, m = globalDims;
        if (v.Rows != n || v.Columns != md) throw new CorruptIndexException($"segment '{name}' does not match its manifest entry (rows or coded dimensions)");
        var widths = v.Section(WidthSection).ToArray();
        if (widths.Length != md) throw new CorruptIndexException($"segment '{name}' has {widths.Length} widths for {md} coded dimensions");
        foreach (byte w in widths)
            if (w is < 1 or > 8) throw new CorruptIndexException($"segment '{name}' has a code width of {w} bits (expected 1..8)");
        var offsets = OffsetsFor(widths, out int totalBoundaries);
        int signWords = SignCodes.WordsFor(md);
        var lowWidths = new int[md];
        for (int d = 0; d < md; d++) lowWidths[d] = widths[d] - 1;
        var layout = new BitPlaneLayout(lowWidths);
        var planes = v.Section(PlaneSection);
        if (planes.Length != (long)layout.SegmentCount * n) throw new CorruptIndexException($"segment '{name}' has a bit-plane section of the wrong size");
        var signs = v.Array<ulong>(SignSection, (long)n * signWords);
        var cells = new byte[(long)n * md];
        layout.ExtractAll(planes, n, cells);
        // Put the sign bit back on top of the low bits: cell = sign << (w−1) | low.
        for (int i = 0; i < n; i++)
        {
            var row = cells.AsSpan(i * md, md);
            var sw = signs.AsSpan(i * signWords, signWords);
            for (int d = 0; d < md; d++)
            {
                int sign = (int)(sw[d >> 6] >> (d & 63)) & 1;
                row[d] = (byte)(row[d] | (sign << (widths[d] - 1)));
            }
        }
        var ids = v.Array<int>(IdSection, n);
        return new PartitionCodes
        {
            Id = entry.Id,
            Count = n,
            GlobalDimensions = m,
            CodedDimensions = md,
            Mean = hasQuantizer ? v.Array<float>(MeanSection, m) : [],
            Rotation = hasQuantizer ? v.Array<float>(RotationSection, (long)md * m) : [],
            Eigenvalues = hasQuantizer ? v.Array<double>(EigenSection, m) : [],
            HasQuantizer = hasQuantizer,
            Widths = widths,
            Boundaries = outerOnly ? [] : v.Array<float>(BoundarySection, totalBoundaries),
            OuterBoundaries = outerOnly ? v.Array<float>(OuterBoundarySection, 2L * md) : null,
            BoundaryOffsets = offsets,
            Signs = signs,
            SignWords = signWords,
            Cells = cells,
            ResidualNorms = v.Array<float>(ResidualSection, n),
            Ids = ids,
            StoredBytes = file.LongLength,
        };
    }
}
