using System.Diagnostics;
using System.Reflection;
using System.Text.Json.Nodes;

namespace Squash.Infra.Tests;

/// <summary>The repository, and the Bicep CLI restored from NuGet (Azure.Bicep.CommandLine.linux-x64; its props set $(BicepPath)).</summary>
public static class Bicep
{
    public static string RepoRoot { get; } = FindRoot();

    public static string Infra => Path.Combine(RepoRoot, "infra");

    private static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Serverless.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("Serverless.sln not found above " + AppContext.BaseDirectory);
    }

    public static string CliPath { get; } = FindCli();

    private static string FindCli()
    {
        var path = typeof(Bicep).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "BicepPath").Value;
        if (string.IsNullOrEmpty(path) || !File.Exists(path))
            throw new InvalidOperationException($"the Bicep CLI is not where the NuGet package put it ('{path}'); restore tests/Squash.Infra.Tests");
        // The package ships it as rwxr--r--: executable for its owner only.
        if (!OperatingSystem.IsWindows())
        {
            var mode = File.GetUnixFileMode(path);
            if ((mode & UnixFileMode.UserExecute) == 0) File.SetUnixFileMode(path, mode | UnixFileMode.UserExecute);
        }
        return path;
    }

    /// <summary>Runs the CLI (never touching the network: every call passes --no-restore) under a deadline.</summary>
    public static (int ExitCode, string Out, string Err) Run(params string[] args)
    {
        var psi = new ProcessStartInfo(CliPath, args) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = RepoRoot };
        // No telemetry, no update check.
        psi.Environment["BICEP_TELEMETRY_ENABLED"] = "false";
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"bicep {string.Join(' ', args)} did not finish within 2 minutes");
        }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    private static readonly Lazy<JsonObject> CompiledMain = new(() =>
    {
        var (exit, json, err) = Run("build", "--no-restore", "--stdout", Path.Combine(Infra, "main.bicep"));
        if (exit != 0) throw new InvalidOperationException($"bicep build main.bicep failed ({exit}): {err}");
        return JsonNode.Parse(json)!.AsObject();
    });

    /// <summary>infra/main.bicep compiled to ARM JSON (once per test run).</summary>
    public static JsonObject Main => CompiledMain.Value;

    /// <summary>main.bicep evaluated for these parameters (the required ones get test values).</summary>
    public static ArmTemplate Evaluate(Dictionary<string, object?>? overrides = null)
    {
        var parameters = new Dictionary<string, object?> { ["environmentName"] = "test", ["location"] = "eastus" };
        foreach (var (k, v) in overrides ?? []) parameters[k] = v;
        // Defaults from the template for the rest: ArmTemplate fills them in.
        return new ArmTemplate(Main, parameters);
    }
}
