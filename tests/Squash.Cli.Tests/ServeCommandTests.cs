namespace Squash.Cli.Tests;

/// <summary>`squash serve` refuses bad flags with a message naming the flag, before starting anything.</summary>
public sealed class ServeCommandTests
{
    [Theory]
    [InlineData("--store", "s3:bucket", "--store must be dir:PATH or azure:CONNECTION|ACCOUNT_URL, got 's3:bucket'")]
    [InlineData("--app", "/nonexistent/functionapp", "--app: no function app at '/nonexistent/functionapp' (expected a published folder, Squash.Functions or Squash.Functions.dll)")]
    [InlineData("--port", "70000", "--port must be 1..65535, got 70000")]
    [InlineData("--max-builders", "0", "--max-builders must be 1..256, got 0")]
    [InlineData("--function-key", "a key", "--function-key must be visible ASCII characters (a function key has no spaces or control characters)")]
    [InlineData("--function-key", "", "--function-key must be visible ASCII characters (a function key has no spaces or control characters)")]
    public async Task BadServeFlagsAreNamed(string flag, string value, string expected)
    {
        var (exit, _, err) = await CliRunner.RunAsync("serve", flag, value);
        Assert.Equal(1, exit);
        Assert.Equal($"error: {expected}", err.Trim());
    }
}

/// <summary>`squash serve` checks its store before it starts: a folder that is not there is a typo, not an empty store.</summary>
public sealed class ServeStoreTests
{
    /// <summary>A serve that wrongly started would run until Ctrl+C: the test fails instead of hanging.</summary>
    private static Task<(int Exit, string Out, string Err)> Serve(params string[] args) =>
        CliRunner.RunAsync(["serve", .. args]).WaitAsync(TimeSpan.FromSeconds(60));

    [Fact]
    public async Task AMissingStoreFolderIsAnErrorNamingTheFlagAndIsNotCreated()
    {
        using var dir = new TempDir();
        var missing = dir.File("indxes");
        var (exit, output, err) = await Serve("--store", "dir:" + missing, "--log-dir", dir.File("logs"));
        Assert.Equal(1, exit);
        Assert.Equal($"error: --store dir:{missing}: the folder does not exist (build an index there first: squash build --store dir:{missing} --index NAME --vectors FILE)", err.Trim());
        Assert.Equal("", output);
        Assert.False(Directory.Exists(missing));
    }

    [Fact]
    public async Task AStoreThatIsAFileIsAnError()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("notes.txt"), "x");
        var (exit, _, err) = await Serve("--store", "dir:" + dir.File("notes.txt"));
        Assert.Equal(1, exit);
        Assert.Equal($"error: --store dir:{dir.File("notes.txt")} is a file, not a folder of indexes", err.Trim());
    }

    /// <summary>A --log-dir that is a file: refused before anything starts (serve once ran on, losing every instance's output).</summary>
    [Fact]
    public async Task ALogFolderThatIsAFileIsAnErrorNamingTheFlag()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("notes.txt"), "x");
        var (exit, output, err) = await Serve("--store", "dir:" + dir.Path, "--port", Squash.Testing.FreePorts.Next().ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--log-dir", dir.File("notes.txt"));
        CliRunner.AssertOneErrorLine(exit, err, $"--log-dir {dir.File("notes.txt")} is a file, not a folder");
        Assert.Equal("", output);
    }

    /// <summary>A rejected spec is echoed without its credentials (a mistyped prefix in front of a connection string).</summary>
    [Theory]
    [InlineData("azur:DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0LWtleQ==;EndpointSuffix=core.windows.net",
        "--store must be dir:PATH or azure:CONNECTION|ACCOUNT_URL, got 'azur:DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=***;EndpointSuffix=core.windows.net'")]
    [InlineData("https://acct.blob.core.windows.net/squash?sv=2024-08-04&sp=r&sig=c2lnbmF0dXJl",
        "--store must be dir:PATH or azure:CONNECTION|ACCOUNT_URL, got 'https://acct.blob.core.windows.net/squash?***'")]
    [InlineData("azure:SharedAccessSignature=sv=2024-08-04&sig=c2lnbmF0dXJl",
        "--store azure:… is neither a valid Azure Storage connection string nor an account URL")]
    public async Task ARejectedStoreIsEchoedWithoutItsSecrets(string store, string expected)
    {
        var (exit, _, err) = await Serve("--store", store);
        Assert.Equal(1, exit);
        Assert.StartsWith($"error: {expected}", err.Trim());
        Assert.DoesNotContain("c2Vj", err);
        Assert.DoesNotContain("c2ln", err);
    }
}
