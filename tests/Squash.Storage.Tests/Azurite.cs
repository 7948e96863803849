using Azure.Storage;

namespace Squash.Storage.Tests;

/// <summary>The Azurite that scripts/test.sh starts; tests fail (never skip) without it.</summary>
public static class Azurite
{
    public const string Variable = "SQUASH_TEST_AZURITE";

    public static string ConnectionString =>
        Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } cs
            ? cs
            : throw new InvalidOperationException($"{Variable} is not set: run the tests through scripts/test.sh, which starts Azurite and sets it");

    /// <summary>A store over a fresh container, with small blocks so that parallel block upload is exercised.</summary>
    public static AzureBlobStore NewStore(string prefix = "t") =>
        new(ConnectionString, $"{prefix}-{Guid.NewGuid():N}"[..Math.Min(63, prefix.Length + 33)],
            new StorageTransferOptions { InitialTransferSize = 256 << 10, MaximumTransferSize = 128 << 10, MaximumConcurrency = 4 });
}
