using Squash.Storage;

namespace Squash.Functions;

/// <summary>
/// The one price model behind <c>stats.cost</c>, the local host's meter and every benchmark's cost column: Azure
/// Functions Flex Consumption (on demand, East US) and Azure Storage (hot tier, LRS) list prices in USD.
/// Where each figure comes from, when it was looked up and which ones could not be checked: docs/cost.md.
/// </summary>
/// <remarks>
/// Flex Consumption bills per instance: the instance's memory × the time it is actively executing anything, where an
/// activity period runs from the first invocation starting on an idle instance to the last one ending, and each period
/// is billed at least <see cref="MinimumPeriodMs"/> and otherwise rounded up to <see cref="PeriodRoundingMs"/>.
/// </remarks>
public static class PriceTable
{
    /// <summary>On-demand execution time, per GB-s of instance memory while active.</summary>
    public const double PerGbSecond = 0.000026;
    /// <summary>On-demand executions, per million.</summary>
    public const double PerMillionExecutions = 0.40;
    /// <summary>Always-ready baseline, per GB-s of an always-ready instance's memory whether it runs or not.</summary>
    public const double AlwaysReadyBaselinePerGbSecond = 0.000004;
    /// <summary>Always-ready execution time, per GB-s while an always-ready instance is active.</summary>
    public const double AlwaysReadyPerGbSecond = 0.000016;
    /// <summary>Always-ready executions, per million.</summary>
    public const double AlwaysReadyPerMillionExecutions = 0.40;

    /// <summary>An activity period shorter than this is billed as this long.</summary>
    public const double MinimumPeriodMs = 1000;
    /// <summary>Past the minimum, a period is rounded up to a multiple of this.</summary>
    public const double PeriodRoundingMs = 100;

    /// <summary>Blob Storage, hot LRS: write operations (Put Blob, Put Block, Put Block List, …), per 10,000.</summary>
    public const double BlobWritePer10k = 0.055;
    /// <summary>Blob Storage, hot LRS: read operations (Get Blob, ranged or whole), per 10,000.</summary>
    public const double BlobReadPer10k = 0.0044;
    /// <summary>Blob Storage, hot LRS: List Blobs and Create Container, per 10,000.</summary>
    public const double BlobListPer10k = 0.055;
    /// <summary>Blob Storage, hot LRS: all other operations (Get Blob Properties, …), per 10,000.</summary>
    public const double BlobOtherPer10k = 0.0044;
    /// <summary>Blob Storage: delete is free.</summary>
    public const double BlobDeletePer10k = 0;
    /// <summary>Queue Storage, LRS: class 1 and class 2 operations, per 10,000.</summary>
    public const double QueuePer10k = 0.0004;
    /// <summary>Blob Storage, hot LRS capacity, per GB-month (first 50 TB).</summary>
    public const double BlobHotPerGbMonth = 0.0184;

    /// <summary>
    /// What Flex bills for one activity period of <paramref name="activeMs"/>: at least 1,000 ms (an instant one too), else
    /// rounded up to 100 ms (3 ms → 1,000; 1,001 → 1,100).
    /// </summary>
    public static double BilledMilliseconds(double activeMs)
    {
        if (!(activeMs >= 0)) throw new ArgumentOutOfRangeException(nameof(activeMs), activeMs, "an activity period cannot be negative");
        // A float sum such as 1,100.0000000001 ms is 1,100 ms, not 1,200.
        double steps = Math.Ceiling(Math.Round(activeMs / PeriodRoundingMs, 6));
        return Math.Max(MinimumPeriodMs, steps * PeriodRoundingMs);
    }

    /// <summary>On-demand compute for <paramref name="billedMs"/> of billed activity on an instance of <paramref name="memoryMb"/>.</summary>
    public static double ComputeCost(double billedMs, int memoryMb) => billedMs / 1000 * memoryMb / 1024.0 * PerGbSecond;

    public static double ExecutionsCost(long executions) => executions * PerMillionExecutions / 1e6;

    public static double StorageCost(StorageOperations ops) =>
        (ops.BlobReads * BlobReadPer10k + ops.BlobWrites * BlobWritePer10k + ops.BlobLists * BlobListPer10k
         + ops.BlobOther * BlobOtherPer10k + ops.BlobDeletes * BlobDeletePer10k + ops.QueueOperations * QueuePer10k) / 10_000;

    /// <summary>The price per 10,000 operations of a billing class as <see cref="StorageOperations.Classes"/> names it.</summary>
    public static double Per10k(string storageClass) => storageClass switch
    {
        "blob read" => BlobReadPer10k,
        "blob write" => BlobWritePer10k,
        "blob list" => BlobListPer10k,
        "blob other" => BlobOtherPer10k,
        "blob delete" => BlobDeletePer10k,
        "queue" => QueuePer10k,
        _ => throw new ArgumentOutOfRangeException(nameof(storageClass), storageClass, "not a storage billing class"),
    };

    /// <summary>
    /// Compute (already-billed milliseconds, e.g. from <see cref="BilledMilliseconds"/>) + executions. Unlike the busy-time
    /// estimate this replaced, the caller decides the periods: summing raw invocation times would ignore the minimum.
    /// </summary>
    public static double Cost(double billedMs, int memoryMb, long executions) => ComputeCost(billedMs, memoryMb) + ExecutionsCost(executions);

    public static string Describe(int memoryMb) =>
        $"Flex Consumption on demand ${PerGbSecond:0.######}/GB-s per activity period (≥ {MinimumPeriodMs:N0} ms, rounded up to {PeriodRoundingMs:N0} ms) "
        + $"of {memoryMb:N0} MB instances, ${PerMillionExecutions:F2}/million executions; storage per 10,000: blob read ${BlobReadPer10k}, "
        + $"write ${BlobWritePer10k}, list ${BlobListPer10k}, other ${BlobOtherPer10k}, queue ${QueuePer10k} (docs/cost.md)";
}
