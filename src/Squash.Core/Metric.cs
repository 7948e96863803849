namespace Squash.Core;

/// <summary>
/// Similarity metrics. Internally every metric is answered as squared L2 in a transformed space:
/// cosine normalises vectors to unit length (so ‖a−b‖² = 2 − 2·cos), inner product appends one
/// coordinate sqrt(M² − ‖x‖²) to each stored vector and 0 to the query (so ‖q−x‖² = ‖q‖² + M² − 2·q·x,
/// which orders candidates exactly as −q·x does).
/// </summary>
public enum Metric
{
    L2,
    Cosine,
    InnerProduct,
}
