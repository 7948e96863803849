namespace Squash.Index.Model;

/// <summary>
/// What recall each query plan reached on this index, measured at build time (the manifest's record, read by the
/// query planner to turn a recall target into a plan). Only the plans on the cost–recall frontier are kept: for
/// any target the cheapest plan that reaches it is among them.
/// </summary>
public sealed record RecallCalibration
{
    /// <summary>Neighbours per calibration query (recall@K).</summary>
    public required int K { get; init; }
    /// <summary>Calibration queries searched.</summary>
    public required int Queries { get; init; }
    /// <summary>"base-sample": base vectors searched leave-one-out; "queries": a file of the user's queries; "live-sample": live rows searched leave-one-out, measured again after writes.</summary>
    public required string Source { get; init; }
    public double Seconds { get; init; }
    /// <summary>The frontier, by ascending cost (and so ascending recall).</summary>
    public required IReadOnlyList<CalibratedPlan> Plans { get; init; }
    /// <summary>
    /// Frontiers for filtered queries, one per band of selectivity (a filter's estimated matches / vectors); null
    /// when the index has no attributes to filter on (or was calibrated before filtered calibration existed).
    /// </summary>
    public IReadOnlyList<FilteredCalibration>? Filtered { get; init; }
    /// <summary>
    /// Unfiltered frontiers measured at other K (recall@K: below K as K is measured, past it over the first exactly measured queries), by ascending K, none at
    /// <see cref="K"/>: a query of k neighbours plans with the frontier of the smallest K that reaches k, this one's
    /// included (the largest past them all), since a plan's recall@k moves with k (the plan that finds 95 % of the 10
    /// nearest finds fewer of the 100 nearest, and a smaller share of the single nearest). Null (left out of the JSON):
    /// none measured (an index calibrated before they existed), and every k plans with <see cref="Plans"/>.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<KCalibration>? ByK { get; init; }
    /// <summary>
    /// The filtered bands measured at other K (recall@K on the same filtered queries, the same bands as <see cref="Filtered"/>),
    /// by ascending K, none at <see cref="K"/>: a filtered query of k neighbours plans with the bands of the smallest K that
    /// reaches k, as an unfiltered one does with <see cref="ByK"/>. Null (left out of the JSON): none measured, and every
    /// filtered query plans with <see cref="Filtered"/>.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<FilteredKCalibration>? FilteredByK { get; init; }
    /// <summary>
    /// Rows ingest upserted or deleted since these plans were measured (0, and left out of the JSON, for a calibration that
    /// has seen every row): ingest measures the plans again once this passes a share of the index, since new rows are coded
    /// with quantizers fitted to other data and the recall a plan reaches moves with them.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)]
    public long RowsChangedSince { get; init; }
    /// <summary>
    /// The user's calibration queries (an .fvecs blob, <see cref="QueriesBlobName"/>), kept with the index when it was
    /// calibrated on them, so that a calibration measured again after writes measures the same queries rather than a
    /// sample of the rows; its <see cref="SegmentRef.Version"/> is always set (versions after it reference it where it
    /// was written). Null for a base-sample calibration.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public SegmentRef? QueriesBlob { get; init; }

    /// <summary>
    /// With <see cref="QueriesBlob"/>: the user's filter families calibrated on, each a filter file of one line per kept
    /// query (<see cref="FilterBlobName"/>), measured again with the queries after writes and by a full rebuild; null without.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<SegmentRef>? FilterBlobs { get; init; }

    /// <summary>The name the user's calibration queries are kept under in a version's folder.</summary>
    public const string QueriesBlobName = "calibration-queries.fvecs";

    /// <summary>Where family <paramref name="index"/> (its file named <paramref name="family"/>) is kept in a version's folder: the file name stays the family's name.</summary>
    public static string FilterBlobName(int index, string family) => $"calibration-filters/{index}/{family}";

    /// <summary>The family a kept filter blob holds: the file name <see cref="FilterBlobName"/> kept.</summary>
    public static string FamilyOf(SegmentRef filterBlob) => filterBlob.Name[(filterBlob.Name.LastIndexOf('/') + 1)..];

    /// <summary>Throws <see cref="Format.CorruptIndexException"/> when the record cannot have come from a calibration.</summary>
    public void Validate(string manifestName)
    {
        if (K < 1 || Queries < 1 || Plans.Count == 0)
            throw new Format.CorruptIndexException($"manifest '{manifestName}': the recall calibration is empty");
        if (QueriesBlob is { } kept && (kept.Name != QueriesBlobName || kept.Version is null || kept.Offset is not null || kept.Bytes < 8))
            throw new Format.CorruptIndexException($"manifest '{manifestName}': the recall calibration names its queries as an impossible blob ('{kept.Name}', {kept.Bytes} bytes)");
        for (int f = 0; f < (FilterBlobs?.Count ?? 0); f++)
        {
            var filters = FilterBlobs![f];
            string prefix = FilterBlobName(f, "");
            if (QueriesBlob is null || !filters.Name.StartsWith(prefix, StringComparison.Ordinal) || filters.Name.Length == prefix.Length
                || filters.Name.IndexOf('/', prefix.Length) >= 0 || filters.Name.EndsWith('.') || filters.Version is null || filters.Offset is not null || filters.Bytes < 1)
                throw new Format.CorruptIndexException($"manifest '{manifestName}': the recall calibration names its filter family {f} as an impossible blob ('{filters.Name}', {filters.Bytes} bytes)");
        }
        foreach (var p in Plans)
            if (!p.IsPossible(filtered: false))
                throw new Format.CorruptIndexException($"manifest '{manifestName}': the recall calibration holds an impossible plan ({p})");
        int previousK = 0;
        foreach (var atK in ByK ?? [])
        {
            if (atK.K <= previousK || atK.K == K || atK.Queries < 1 || atK.Plans is not { Count: > 0 })
                throw new Format.CorruptIndexException($"manifest '{manifestName}': the recall calibration holds an impossible frontier at K {atK.K}");
            foreach (var p in atK.Plans)
                if (!p.IsPossible(filtered: false))
                    throw new Format.CorruptIndexException($"manifest '{manifestName}': the recall calibration at K {atK.K} holds an impossible plan ({p})");
            previousK = atK.K;
        }
        ValidateBands(manifestName, Filtered, "");
        previousK = 0;
        if (FilteredByK is { Count: > 0 } && Filtered is null)
            throw new Format.CorruptIndexException($"manifest '{manifestName}': the filtered recall calibration has bands at other K but none at K {K}");
        foreach (var atK in FilteredByK ?? [])
        {
            if (atK.K <= previousK || atK.K == K || atK.Bands is not { Count: > 0 })
                throw new Format.CorruptIndexException($"manifest '{manifestName}': the filtered recall calibration holds impossible bands at K {atK.K}");
            ValidateBands(manifestName, atK.Bands, $" at K {atK.K}");
            previousK = atK.K;
        }
    }

    private static void ValidateBands(string manifestName, IReadOnlyList<FilteredCalibration>? bands, string at)
    {
        foreach (var band in bands ?? [])
        {
            if (!(band.MinSelectivity >= 0 && band.MinSelectivity < band.MaxSelectivity && band.MaxSelectivity <= 1) || band.Queries < 1
                || band.Plans is not { Count: > 0 } || band.Families is not { Count: > 0 })
                throw new Format.CorruptIndexException($"manifest '{manifestName}': the filtered recall calibration{at} holds an impossible band");
            if ((band.MinAnchorRatio is { } lo && !(lo >= 0)) || (band.MaxAnchorRatio is { } hi && !(hi > (band.MinAnchorRatio ?? 0))))
                throw new Format.CorruptIndexException($"manifest '{manifestName}': the filtered recall calibration{at} holds an impossible anchor-ratio range");
            foreach (var p in band.Plans)
                if (!p.IsPossible(filtered: true))
                    throw new Format.CorruptIndexException($"manifest '{manifestName}': the filtered recall calibration{at} holds an impossible plan ({p})");
        }
    }
}

/// <summary>An unfiltered frontier measured at recall@<see cref="K"/> on <see cref="Queries"/> queries (exactly measured, or with the two-phase estimate over every calibration query).</summary>
public sealed record KCalibration(int K, int Queries, IReadOnlyList<CalibratedPlan> Plans);

/// <summary>The filtered bands measured at recall@<see cref="K"/>: the same bands, on the same queries, as the calibration's own K.</summary>
public sealed record FilteredKCalibration(int K, IReadOnlyList<FilteredCalibration> Bands);

/// <summary>
/// The frontier for filtered queries whose estimated selectivity lies in [<see cref="MinSelectivity"/>,
/// <see cref="MaxSelectivity"/>): each plan's recall is the lowest over the filter families calibrated in the band
/// (e.g. ranges independent of the vectors, equality on another value than the query's own), with that family's
/// standard error, so a target holds for each kind of filter measured, not just on their average.
/// </summary>
public sealed record FilteredCalibration
{
    public required double MinSelectivity { get; init; }
    public required double MaxSelectivity { get; init; }
    /// <summary>Filtered calibration queries in the band (over all families).</summary>
    public required int Queries { get; init; }
    /// <summary>The families measured, as "name: median selectivity".</summary>
    public required IReadOnlyList<string> Families { get; init; }
    public required IReadOnlyList<CalibratedPlan> Plans { get; init; }
    /// <summary>
    /// With both set, the band holds only queries whose anchor ratio (the dense anchor's key over the nearest centroid
    /// distance) lies in [<see cref="MinAnchorRatio"/>, <see cref="MaxAnchorRatio"/>): a selectivity band split where filters
    /// whose matches lie away from the query need their own frontier. Null (left out of the JSON): any ratio.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public double? MinAnchorRatio { get; init; }
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public double? MaxAnchorRatio { get; init; }

    /// <summary>Whether <paramref name="ratio"/> falls in this band's anchor-ratio range (always, without one).</summary>
    public bool HoldsRatio(double ratio) =>
        (MinAnchorRatio is not { } lo || ratio >= lo) && (MaxAnchorRatio is not { } hi || ratio < hi);
}

/// <summary>
/// One measured plan: CF and R, the mean recall@K over the calibration queries with its standard error, and the
/// mean work per query as the bytes it reads (partition rotations and codes, re-ranked raw vectors).
/// </summary>
/// <param name="FilterMargin">A filtered plan's margin (estimated matches to walk to, in K) when not the default 2; null
/// (left out of the JSON): the default. Only filtered bands have such plans: they are cheaper than any CF where a few
/// partitions already hold 2·K matches (bench/recall.md).</param>
/// <param name="MaxPartitions">The most partitions the plan scans (never fewer than hold K rows); null (left out of the JSON):
/// as many as CF selects. Only unfiltered plans have a cap.</param>
public sealed record CalibratedPlan(double CentroidFactor, int RerankFactor, double Recall, double RecallStdError, double Cost,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    double? FilterMargin = null,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    int? MaxPartitions = null)
{
    /// <summary>
    /// Whether a calibration could have measured this plan: CF ≥ 1, R ≥ 1, recall in [0, 1], a standard error and a cost ≥ 0,
    /// a filter margin only on a filtered band's plan, finite and ≥ 1 (what a query's options accept), and a partition cap
    /// only on an unfiltered plan, ≥ 1.
    /// </summary>
    public bool IsPossible(bool filtered) =>
        CentroidFactor >= 1 && RerankFactor >= 1 && Recall is >= 0 and <= 1 && RecallStdError >= 0 && Cost >= 0
        && (FilterMargin is not { } m || (filtered && m >= 1 && double.IsFinite(m)))
        && (MaxPartitions is not { } cap || (!filtered && cap >= 1));
}
