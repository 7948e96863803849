namespace Squash.Cli.Tests;

/// <summary>`squash serve` refuses bad flags with a message naming the flag, before starting anything.</summary>
public sealed class ServeCommandTests
{
    [Theory]
    [InlineData("--store", "s3:bucket", "--store must be dir:PATH or azure:CONNECTION|ACCOUNT_URL, got 's3:bucket'")]
    [InlineData("--app", "/nonexistent/functionapp", "--app: no function app at '/nonexistent/functionapp' (expected a published folder, Squash.Functions or Squash.Functions.dll)")]
    [InlineData("--port", "70000", "--port must be 1..65535, got 70000")]
    public async Task BadServeFlagsAreNamed(string flag, string value, string expected)
    {
        var (exit, _, err) = await CliRunner.RunAsync("serve", flag, value);
        Assert.Equal(1, exit);
        Assert.Equal($"error: {expected}", err.Trim());
    }
}
