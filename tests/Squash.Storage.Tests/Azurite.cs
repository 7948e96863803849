using Azure.Storage;

namespace Squash.Storage.Tests;

/// <summary>The Azurite that scripts/test.sh starts; tests fail (never skip) without it.</summary>
public static class Azurite
{
    /// <summary>The emulator's connection string, once it has answered (see AzuriteTestStore).</summary>
    public static string ConnectionString => Squash.Testing.AzuriteTestStore.ConnectionString;

    /// <summary>A store over a fresh container, with small blocks so that parallel block upload is exercised.</summary>
    public static AzureBlobStore NewStore(string prefix = "t") =>
        Squash.Testing.AzuriteTestStore.NewStore(prefix,
            new StorageTransferOptions { InitialTransferSize = 256 << 10, MaximumTransferSize = 128 << 10, MaximumConcurrency = 4 });
}
