using System.Text.Json.Nodes;

namespace Squash.Infra.Tests;

/// <summary>Every Bicep file compiles and lints with no diagnostic at all, and the linter's rules that matter fail the build.</summary>
public sealed class BicepLintTests
{
    private static string[] Files() => Directory.EnumerateFiles(Bicep.Infra, "*.bicep*", SearchOption.AllDirectories)
        .Select(f => Path.GetRelativePath(Bicep.RepoRoot, f)).Order(StringComparer.Ordinal).ToArray();

    public static TheoryData<string> BicepFiles() => new(Files());

    [Theory]
    [MemberData(nameof(BicepFiles))]
    public void CompilesAndLintsWithoutAnyDiagnostic(string file)
    {
        var path = Path.Combine(Bicep.RepoRoot, file);
        var build = Bicep.Run(file.EndsWith(".bicepparam", StringComparison.Ordinal) ? "build-params" : "build", "--no-restore", "--stdout", path);
        Assert.True(build.ExitCode == 0 && build.Err.Trim().Length == 0, $"bicep build {file}: exit {build.ExitCode}\n{build.Err}");
        Assert.StartsWith("{", build.Out.TrimStart());
        var lint = Bicep.Run("lint", "--no-restore", path);
        Assert.True(lint.ExitCode == 0 && (lint.Err + lint.Out).Trim().Length == 0, $"bicep lint {file}: exit {lint.ExitCode}\n{lint.Err}{lint.Out}");
    }

    [Fact]
    public void TheFilesCheckedAreAllTheInfraFiles()
    {
        var files = Files();
        Assert.Contains(Path.Combine("infra", "main.bicep"), files);
        Assert.Contains(Path.Combine("infra", "main.bicepparam"), files);
        Assert.Contains(Path.Combine("infra", "modules", "functionApp.bicep"), files);
        Assert.True(files.Length >= 8, string.Join(", ", files));
    }

    /// <summary>The rules whose findings would be deployment bugs are errors, so `bicep build` itself fails on them.</summary>
    [Fact]
    public void TheRulesThatMatterAreErrors()
    {
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(Bicep.Infra, "bicepconfig.json")))!;
        var rules = config["analyzers"]!["core"]!["rules"]!.AsObject();
        Assert.True(config["analyzers"]!["core"]!["enabled"]!.GetValue<bool>());
        foreach (var rule in new[]
        {
            "outputs-should-not-contain-secrets", "secure-secrets-in-params", "use-secure-value-for-secure-inputs", "secure-parameter-default",
            "no-hardcoded-env-urls", "no-hardcoded-location", "no-unused-params", "no-unused-vars", "use-stable-resource-identifiers",
            "no-unnecessary-dependson", "use-resource-symbol-reference", "what-if-short-circuiting",
        })
            Assert.True(rules[rule]?["level"]?.GetValue<string>() == "error", $"bicepconfig.json: {rule} is not at error");
    }

    /// <summary>The configuration is really in force: a file beside it that outputs a storage key fails lint and build.</summary>
    [Fact]
    public void ASecretInAnOutputFailsLintAndBuild()
    {
        var dir = Directory.CreateTempSubdirectory("squash-bicep-");
        try
        {
            File.Copy(Path.Combine(Bicep.Infra, "bicepconfig.json"), Path.Combine(dir.FullName, "bicepconfig.json"));
            var file = Path.Combine(dir.FullName, "leak.bicep");
            File.WriteAllText(file, """
                @description('Account to leak.')
                param storageName string

                resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
                  name: storageName
                }

                output key string = account.listKeys().keys[0].value
                """);
            var lint = Bicep.Run("lint", "--no-restore", file);
            Assert.NotEqual(0, lint.ExitCode);
            Assert.Contains("Error outputs-should-not-contain-secrets", lint.Err + lint.Out);
            var build = Bicep.Run("build", "--no-restore", "--stdout", file);
            Assert.NotEqual(0, build.ExitCode);
        }
        finally { dir.Delete(true); }
    }

    /// <summary>The parameter file sets only parameters main.bicep declares, within their allowed values.</summary>
    [Fact]
    public void TheParameterFileFitsMain()
    {
        var (exit, json, err) = Bicep.Run("build-params", "--no-restore", "--stdout", Path.Combine(Bicep.Infra, "main.bicepparam"));
        Assert.True(exit == 0, err);
        var declared = Bicep.Main["parameters"]!.AsObject();
        var output = JsonNode.Parse(json)!;
        // build-params --stdout wraps the parameters file in { parametersJson, templateJson, ... }.
        var parameters = JsonNode.Parse(output["parametersJson"]!.GetValue<string>())!["parameters"]!.AsObject();
        Assert.NotEmpty(parameters);
        foreach (var (name, value) in parameters)
        {
            Assert.True(declared.ContainsKey(name), $"main.bicepparam sets '{name}', which main.bicep does not declare");
            var declaration = declared[name]!;
            var v = value!["value"]!;
            if (declaration["allowedValues"] is JsonArray allowed)
                Assert.Contains(allowed, a => a!.ToJsonString() == v.ToJsonString());
            if (declaration["minValue"] is { } min) Assert.True(v.GetValue<long>() >= min.GetValue<long>(), name);
            if (declaration["maxValue"] is { } max) Assert.True(v.GetValue<long>() <= max.GetValue<long>(), name);
        }
        foreach (var required in declared.Where(p => p.Value!["defaultValue"] is null).Select(p => p.Key))
            Assert.True(parameters.ContainsKey(required), $"main.bicepparam does not set the required parameter '{required}'");
    }
}
