namespace Squash.Functions;

/// <summary>
/// Azure Functions Flex Consumption list prices (on demand, East US, 2025, from the Azure Functions pricing page), the
/// one table behind the per-query estimate in query stats, the local host's meter and the bench output.
/// Billing is per instance: provisioned memory × seconds the instance is executing anything, plus executions.
/// </summary>
public static class PriceTable
{
    public const double PerGbSecond = 0.000026;
    public const double PerMillionExecutions = 0.40;

    public static double Cost(double busySeconds, int memoryMb, long executions) =>
        busySeconds * memoryMb / 1024.0 * PerGbSecond + executions * PerMillionExecutions / 1e6;

    public static string Describe(int memoryMb) =>
        $"Flex Consumption on demand ${PerGbSecond:0.######}/GB-s, ${PerMillionExecutions:F2}/million executions, {memoryMb:N0} MB instances (Azure Functions pricing, on demand)";
}
