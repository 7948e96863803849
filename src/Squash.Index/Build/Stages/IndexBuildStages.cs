using System.Text.Json;
using System.Text.Json.Serialization;
using Squash.Core;
using Squash.Core.Linalg;
using Squash.Index.Attributes;
using Squash.Index.Format;
using Squash.Index.Model;

namespace Squash.Index.Build.Stages;

/// <summary>What training fitted, shared by every later task: the metric mapping and the partition training.</summary>
public sealed record BuildPlan(Metric Metric, int Dimensions, double MaxNorm, PartitionTraining Training)
{
    private const uint HeadSection = 1, ClusteringMean = 2, ClusteringBasis = 3, ClusteringEigen = 4, CentroidSection = 5,
        GlobalMean = 6, GlobalBasis = 7, GlobalEigen = 8;

    public MetricSpace Space => new(Metric, Dimensions, MaxNorm);
    public int InternalDimensions => Space.InternalDimensions;
    public int Partitions => Training.Partitions;

    /// <summary>A checksummed blob, so that every task reads the plan exactly as training wrote it.</summary>
    public byte[] ToBytes()
    {
        var t = Training;
        long[] head = [(long)Metric, Dimensions, BitConverter.DoubleToInt64Bits(MaxNorm), t.Partitions, t.BudgetBits,
            t.Clustering.InputDims, t.Clustering.OutputDims, t.Clustering.Eigenvalues.Length, t.Global.OutputDims, t.Global.Eigenvalues.Length];
        return SegmentFile.Write(SegmentKind.BuildRun, t.Partitions, InternalDimensions,
        [
            (HeadSection, SegmentFile.Bytes(head)),
            (ClusteringMean, SegmentFile.Bytes(t.Clustering.Mean)), (ClusteringBasis, SegmentFile.Bytes(t.Clustering.Basis)),
            (ClusteringEigen, SegmentFile.Bytes(t.Clustering.Eigenvalues)), (CentroidSection, SegmentFile.Bytes(t.Centroids)),
            (GlobalMean, SegmentFile.Bytes(t.Global.Mean)), (GlobalBasis, SegmentFile.Bytes(t.Global.Basis)), (GlobalEigen, SegmentFile.Bytes(t.Global.Eigenvalues)),
        ]);
    }

    public static BuildPlan FromBytes(byte[] bytes, string name)
    {
        var v = SegmentFile.Open(bytes, name, SegmentKind.BuildRun);
        var h = v.Array<long>(HeadSection, 10);
        int d = v.Columns, partitions = (int)h[3], cd = (int)h[6], m = (int)h[8];
        var clustering = Klt.FromParts(v.Array<float>(ClusteringMean, d), v.Array<float>(ClusteringBasis, (long)cd * d), v.Array<double>(ClusteringEigen, h[7]), d, cd);
        var global = Klt.FromParts(v.Array<float>(GlobalMean, d), v.Array<float>(GlobalBasis, (long)m * d), v.Array<double>(GlobalEigen, h[9]), d, m);
        var training = new PartitionTraining(clustering, v.Array<float>(CentroidSection, (long)partitions * cd), partitions, global, (int)h[4]);
        return new BuildPlan((Metric)h[0], (int)h[1], BitConverter.Int64BitsToDouble(h[2]), training);
    }
}

/// <summary>One encoded partition: its segments, its manifest entry, and its centroid and radius for the routing data.</summary>
public sealed record EncodedPartition(PartitionEntry Entry, byte[] Codes, byte[] Vectors, byte[]? Attributes, float[] Centroid, float Radius, ValueMeans? Values = null);

/// <summary>
/// One partition's per-value means for the routing data's <see cref="ValueCentroids"/>: for each chosen attribute (ascending)
/// with its dictionary size, counts (Σ values) and means (Σ values × internal dimensions).
/// </summary>
public sealed record ValueMeans(int[] Attributes, int[] Values, int[] Counts, float[] Means);

/// <summary>An encoded partition without its segments (written already): what the finishing step needs.</summary>
/// <remarks>
/// <see cref="CellMin"/> and <see cref="CellMax"/>: per number or integer attribute, the partition's smallest and largest
/// value in each cell it uses (in the order of its <see cref="AttributeStats.Codes"/>), for <see cref="IndexBuildStages.MergeCells"/>.
/// </remarks>
public sealed record PartitionSummary(PartitionEntry Entry, float[] Centroid, float Radius, double[]?[]? CellMin = null, double[]?[]? CellMax = null, ValueMeans? Values = null)
{
    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, StageJson.Default.PartitionSummary);

    public static PartitionSummary Parse(byte[] json, string name) =>
        JsonSerializer.Deserialize(json, StageJson.Default.PartitionSummary) ?? throw new CorruptIndexException($"'{name}' is empty");

    /// <summary>Several partitions' summaries in one blob (what one encode task wrote).</summary>
    public static byte[] ToJson(PartitionSummary[] summaries) => JsonSerializer.SerializeToUtf8Bytes(summaries, StageJson.Default.PartitionSummaryArray);

    public static PartitionSummary[] ParseMany(byte[] json, string name)
    {
        try
        {
            return JsonSerializer.Deserialize(json, StageJson.Default.PartitionSummaryArray) ?? throw new CorruptIndexException($"'{name}' is empty");
        }
        catch (JsonException e)
        {
            throw new CorruptIndexException($"'{name}' is not valid: {e.Message}");
        }
    }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(PartitionSummary))]
[JsonSerializable(typeof(PartitionSummary[]))]
internal sealed partial class StageJson : JsonSerializerContext;

/// <summary>
/// The build as four steps that hold only their own share of the data: train (a bounded sample), assign (one chunk of
/// rows), encode (one partition's rows) and finish (routing and manifest). The in-process build runs them one after
/// the other over vectors in memory and a distributed build runs them as queue tasks over blobs; the same steps on the
/// same rows give byte-identical segments either way. Every step depends only on its inputs (row order included), never
/// on how the rest of the data was split.
/// </summary>
public static class IndexBuildStages
{
    /// <summary>Rows per assign chunk in the in-process build (a distributed build's chunk size is its own; labels do not depend on it).</summary>
    public const int AssignChunkRows = 65_536;

    /// <summary>The partition count a build aims for (before partitions no row chose are dropped).</summary>
    public static int TargetPartitions(IndexBuildOptions options, long count, int dims) =>
        options.Partitions > 0 ? options.Partitions : IndexBuildOptions.DefaultPartitions(count, dims);

    /// <summary>Maps user-space rows into the internal space.</summary>
    public static float[] Map(MetricSpace space, ReadOnlySpan<float> rows, int count)
    {
        int dims = space.InputDimensions, d = space.InternalDimensions;
        var x = new float[(long)count * d];
        if (space.Metric == Metric.L2) { rows[..(count * dims)].CopyTo(x); return x; }
        for (int i = 0; i < count; i++) space.MapStored(rows.Slice(i * dims, dims), x.AsSpan(i * d, d));
        return x;
    }

    /// <summary>
    /// Train: fits the partitioning on the training rows (user space, at <see cref="PartitionTraining.TrainingRows"/>);
    /// <paramref name="maxNorm"/> is the largest row norm of the whole source (inner product only, else 0).
    /// </summary>
    public static BuildPlan Train(float[] trainingRows, int count, int dims, double maxNorm, int partitions, IndexBuildOptions options,
        IProgress<double>? kmeansProgress = null, CancellationToken cancellationToken = default, IProgress<BuildProgress>? eigenProgress = null)
    {
        var space = new MetricSpace(options.Metric, dims, maxNorm);
        // L2 needs no mapping: the rows are used as they are (Fit only reads them), which saves a copy of the whole sample.
        var x = space.Metric == Metric.L2 && trainingRows.LongLength == (long)count * dims ? trainingRows : Map(space, trainingRows, count);
        var training = PartitionTraining.Fit(x, count, space.InternalDimensions, partitions, options, kmeansProgress, cancellationToken, eigenProgress);
        return new BuildPlan(options.Metric, dims, space.MaxNorm, training);
    }

    /// <summary>Assign: one chunk's rows (user space) mapped into the internal space, and each row's nearest partition.</summary>
    public static (float[] Internal, int[] Labels) Assign(BuildPlan plan, ReadOnlySpan<float> rows, int count)
    {
        var x = Map(plan.Space, rows, count);
        var labels = new int[count];
        plan.Training.Assign(x, count, labels);
        return (x, labels);
    }

    /// <summary>
    /// Renumbers partitions so that only those some row chose remain, in their order: for each kept partition, the
    /// trained partition it was (what the encode steps are numbered by).
    /// </summary>
    public static int[] KeptPartitions(IReadOnlyList<long> sizes) => Enumerable.Range(0, sizes.Count).Where(p => sizes[p] > 0).ToArray();

    /// <summary>
    /// Encode: partition <paramref name="id"/> from its rows' ids (ascending) and internal-space vectors
    /// (<paramref name="x"/>, in the same order); attributes when the index has them.
    /// </summary>
    /// <param name="encodedAttributes">The partition's attributes already encoded (a distributed build's, joined from its chunks); else encoded from <paramref name="attributes"/>.</param>
    public static EncodedPartition Encode(BuildPlan plan, int id, int[] ids, float[] x, int maxBits,
        AttributeTable? attributes = null, IndexAttributes? attributeInfo = null, PartitionAttributes? encodedAttributes = null)
    {
        int n = ids.Length;
        var (encoded, centroid, radius) = PartitionEncoder.EncodeRows(id, ids, x, plan.InternalDimensions, plan.Training.Global, plan.Training.BudgetBits, maxBits);
        var codes = encoded.Codes.ToSegment();
        var vectors = encoded.Vectors.ToSegment();
        byte[]? attributeBytes = null;
        AttributeStats[]? stats = null;
        if (encodedAttributes is not null || (attributes is not null && attributeInfo is not null))
        {
            encodedAttributes ??= PartitionAttributes.Encode(attributes!, attributeInfo!, ids);
            if (encodedAttributes.Count != n) throw new ArgumentException($"{encodedAttributes.Count} attribute rows for {n} vectors", nameof(encodedAttributes));
            attributeBytes = encodedAttributes.ToSegment();
            stats = encodedAttributes.Statistics();
        }
        ValueMeans? values = null;
        if (encodedAttributes is not null && attributeInfo is not null
            && ValueCentroids.Chosen(attributeInfo, plan.Partitions, plan.InternalDimensions) is { Length: > 0 } chosen)
        {
            var sizes = chosen.Select(a => ValueCentroids.SlotsOf(attributeInfo.Attributes[a])).ToArray();
            var (counts, means) = ValueCentroids.Of(encodedAttributes, x, plan.InternalDimensions, chosen, sizes);
            values = new ValueMeans(chosen, sizes, counts, means);
        }
        var entry = new PartitionEntry
        {
            Id = id,
            Count = encoded.Codes.Count,
            CodedDimensions = encoded.Codes.CodedDimensions,
            BitsPerVector = encoded.Codes.BitsPerVector,
            Codes = new SegmentRef(CodesName(id), codes.LongLength),
            Vectors = new SegmentRef(VectorsName(id), vectors.LongLength),
            Attributes = attributeBytes is null ? null : new SegmentRef(AttributesName(id), attributeBytes.LongLength),
            AttributeStats = stats,
            FitError = encoded.Codes.ExpectedError(),
        };
        return new EncodedPartition(entry, codes, vectors, attributeBytes, centroid, radius, values);
    }

    /// <summary>
    /// The index-wide attribute info from the encoders (boundaries and dictionaries) and every partition's cell figures:
    /// equal to <see cref="AttributeEncoding.Fit"/> of the whole table (counts add up; minima and maxima are order-free).
    /// </summary>
    public static IndexAttributes MergeCells(IndexAttributes encoders, IReadOnlyList<PartitionSummary> partitions)
    {
        var infos = encoders.Attributes.ToArray();
        for (int a = 0; a < infos.Length; a++)
        {
            if (infos[a].Boundaries is null) continue;
            var cells = new CellRanges(infos[a].Cells);
            foreach (var part in partitions)
            {
                var stats = part.Entry.AttributeStats?[a] ?? throw new ArgumentException($"partition {part.Entry.Id} has no attribute figures");
                var min = part.CellMin?[a] ?? throw new ArgumentException($"partition {part.Entry.Id} has no cell ranges for attribute {a}");
                var max = part.CellMax![a]!;
                for (int i = 0; i < stats.Codes.Length; i++) cells.Add(stats.Codes[i], min[i], max[i], stats.Counts[i]);
            }
            infos[a] = cells.Complete(infos[a]);
        }
        return encoders with { Attributes = infos };
    }

    /// <summary>Every partition's <see cref="ValueMeans"/> laid out per attribute (partition-major); all partitions must agree on the attributes.</summary>
    private static ValueCentroids[] ValueCentroidsOf(IReadOnlyList<PartitionSummary> partitions, int d)
    {
        if (partitions.Count == 0 || partitions[0].Values is not { } first) return [];
        int p = partitions.Count;
        var result = new ValueCentroids[first.Attributes.Length];
        int at = 0;
        for (int i = 0; i < result.Length; i++)
        {
            int values = first.Values[i];
            var counts = new int[p * values];
            var centroids = new float[(long)p * values * d];
            for (int q = 0; q < p; q++)
            {
                var v = partitions[q].Values;
                if (v is null || !v.Attributes.AsSpan().SequenceEqual(first.Attributes) || !v.Values.AsSpan().SequenceEqual(first.Values)
                    || v.Counts.Length != first.Counts.Length || v.Means.LongLength != (long)first.Counts.Length * d)
                    throw new ArgumentException($"partition {q}'s value means do not match partition 0's");
                v.Counts.AsSpan(at, values).CopyTo(counts.AsSpan(q * values, values));
                v.Means.AsSpan(at * d, values * d).CopyTo(centroids.AsSpan(q * values * d, values * d));
            }
            result[i] = new ValueCentroids(first.Attributes[i], values, counts, centroids);
            at += values;
        }
        return result;
    }

    public static string CodesName(int p) => $"p{p:D5}.codes.seg";
    public static string VectorsName(int p) => $"p{p:D5}.vectors.seg";
    public static string AttributesName(int p) => $"p{p:D5}.attributes.seg";
    /// <summary>A partition's deletion mask (written by ingest, never by a build).</summary>
    public static string DeletionMaskName(int p) => $"p{p:D5}.deleted.seg";
    public const string RoutingName = "routing.seg";

    /// <summary>Finish: the routing data (write it before the manifest) and the manifest to publish, from every partition in id order.</summary>
    public static (byte[] Routing, IndexManifest Manifest) Finish(BuildPlan plan, IReadOnlyList<PartitionSummary> partitions, long count,
        string version, IndexBuildOptions options, IndexAttributes? attributeInfo, double buildSeconds)
    {
        int d = plan.InternalDimensions, p = partitions.Count;
        var centroids = new float[(long)p * d];
        var radii = new float[p];
        for (int i = 0; i < p; i++)
        {
            if (partitions[i].Entry.Id != i) throw new ArgumentException($"partition {i} is missing (found {partitions[i].Entry.Id} in its place)");
            partitions[i].Centroid.CopyTo(centroids, (long)i * d);
            radii[i] = partitions[i].Radius;
        }
        var routing = new RoutingData
        {
            GlobalTransform = plan.Training.Global,
            Centroids = centroids,
            Radii = radii,
            PartitionSizes = partitions.Select(x => x.Entry.Count).ToArray(),
            ValueCentroids = ValueCentroidsOf(partitions, d),
        }.ToSegment();
        var manifest = new IndexManifest
        {
            Version = version,
            CreatedUtc = DateTimeOffset.UtcNow,
            Dimensions = plan.Dimensions,
            InternalDimensions = d,
            Metric = MetricSpace.Name(plan.Metric),
            MaxNorm = plan.MaxNorm,
            Count = count,
            GlobalDimensions = plan.Training.Global.OutputDims,
            Build = new BuildParameters
            {
                Partitions = p,
                BitsPerDimension = options.BitsPerDimension,
                BudgetBits = plan.Training.BudgetBits,
                MaxBitsPerDimension = options.MaxBitsPerDimension,
                Seed = options.Seed,
                Balance = options.Balance,
                KMeansIterations = options.KMeansIterations,
                EnergyKept = options.EnergyKept,
                BuildSeconds = Math.Round(buildSeconds, 3),
                PartitionTarget = (int)Math.Max(1, (count + p - 1) / p),
            },
            Routing = new SegmentRef(RoutingName, routing.LongLength),
            Partitions = partitions.Select(x => x.Entry).ToArray(),
            Attributes = attributeInfo,
        };
        return (routing, manifest);
    }

}
