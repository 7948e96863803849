using Squash.Core;

namespace Squash.Search;

/// <summary>
/// Per-query work shared by every partition: the query in the internal space, its global KLT
/// coordinates, and the energy outside the global subspace (for the residual bound).
/// </summary>
public sealed class QueryContext
{
    public QueryContext(OpenedIndex index, ReadOnlySpan<float> query)
    {
        var space = index.Space;
        if (query.Length != space.InputDimensions)
            throw new ArgumentException($"the query has {query.Length} dimensions; the index has {space.InputDimensions}");
        foreach (float v in query)
            if (!float.IsFinite(v)) throw new ArgumentException("the query contains NaN or an infinite value");
        VectorHash = RecallPlanner.VectorHash(query);
        Internal = new float[space.InternalDimensions];
        space.MapQuery(query, Internal);
        double qn = 0;
        foreach (float v in query) qn += (double)v * v;
        InputSquaredNorm = qn;

        var g = index.Routing.GlobalTransform;
        Global = new float[g.OutputDims];
        g.Project(Internal, Global);
        double centered = 0, inside = 0;
        for (int j = 0; j < Internal.Length; j++) { double v = Internal[j] - (double)g.Mean[j]; centered += v * v; }
        foreach (float v in Global) inside += (double)v * v;
        OutsideGlobal = Math.Max(0, centered - inside);
        CenteredSquaredNorm = centered;
    }

    /// <summary>A hash of the query vector's bytes: with the filter's key it picks the plan of a mixed recall target (<see cref="RecallPlanner.Draw"/>).</summary>
    public ulong VectorHash { get; }
    public float[] Internal { get; }
    public float[] Global { get; }
    public double OutsideGlobal { get; }
    /// <summary>‖q − μ_g‖² in the internal space: what <see cref="OutsideGlobal"/> was computed from by subtraction (its rounding scales with it).</summary>
    public double CenteredSquaredNorm { get; }
    public double InputSquaredNorm { get; }
}
