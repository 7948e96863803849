namespace Squash.Cli.Tests;

/// <summary>bench-builds checks its flags before it starts anything: each mistake is one line naming the flag.</summary>
public sealed class BenchBuildsErrorTests
{
    private const string Azurite = "azure:DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=c2VjcmV0LWtleQ==;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1";

    [Fact]
    public async Task BadFlagsAreOneLineEachNamingTheFlag()
    {
        using var dir = new TempDir();
        var vectors = dir.File("v.fvecs");
        await File.WriteAllBytesAsync(vectors, new byte[8]);
        var cases = new (string[] Args, string Error)[]
        {
            (["--vectors", dir.File("missing.fvecs"), "--store", Azurite], $"--vectors: no file '{dir.File("missing.fvecs")}'"),
            (["--vectors", vectors, "--store", "dir:" + dir.Path], $"--store must be azure:CONNECTION_STRING (an Azurite account), got 'dir:{dir.Path}'"),
            (["--vectors", vectors, "--store", Azurite, "--workers", "1,0"], "--workers: '0' is not a worker count (1..64)"),
            (["--vectors", vectors, "--store", Azurite, "--workers", "two"], "--workers: 'two' is not a worker count (1..64)"),
            (["--vectors", vectors, "--store", Azurite, "--partitions", "-1"], "--partitions must be ≥ 0, got -1"),
            (["--vectors", vectors, "--store", Azurite, "--timeout", "0"], "--timeout must be ≥ 1 minute, got 0"),
            (["--vectors", vectors, "--store", Azurite, "--app", dir.File("nothing")], $"--app: no function app at '{dir.File("nothing")}'"),
        };
        foreach (var (args, error) in cases)
        {
            var (exit, _, err) = await CliRunner.RunAsync(["bench-builds", .. args]).WaitAsync(TimeSpan.FromSeconds(60));
            Assert.True(exit == 1, $"exit {exit}: {err}");
            var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.True(lines.Length == 1, $"expected one line, got {lines.Length}:\n{err}");
            Assert.Equal("error: " + error, lines[0].TrimEnd('\r'));
        }
    }
}
