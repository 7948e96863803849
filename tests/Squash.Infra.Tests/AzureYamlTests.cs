using System.Text.RegularExpressions;
using YamlDotNet.RepresentationModel;

namespace Squash.Infra.Tests;

/// <summary>azure.yaml against the rules of azd's schema that matter here, and against the template it deploys to.</summary>
public sealed class AzureYamlTests
{
    private static YamlMappingNode Load(string text)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(text));
        return (YamlMappingNode)stream.Documents[0].RootNode;
    }

    private static YamlNode? Get(YamlMappingNode map, string key) =>
        map.Children.TryGetValue(new YamlScalarNode(key), out var v) ? v : null;

    private static string? Text(YamlMappingNode map, string key) => (Get(map, key) as YamlScalarNode)?.Value;

    /// <summary>
    /// Problems of an azure.yaml (empty: none), after azd's schema (schemas/v1.0/azure.yaml.json): name pattern; each
    /// service has a host; a function service needs project and must not have image/docker/k8s/apiVersion/env; language is
    /// one azd knows; project folders, the infra module and hook scripts exist relative to <paramref name="root"/>.
    /// </summary>
    public static List<string> Problems(string yaml, string root)
    {
        var problems = new List<string>();
        var doc = Load(yaml);
        var name = Text(doc, "name");
        if (name is null || name.Length < 2 || !Regex.IsMatch(name, "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
            problems.Add($"name '{name}' does not match ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ (2 characters at least)");
        if (Get(doc, "infra") is YamlMappingNode infra)
        {
            var module = Path.Combine(root, Text(infra, "path") ?? "infra", (Text(infra, "module") ?? "main") + ".bicep");
            if (Text(infra, "provider") is { } provider && provider != "bicep") problems.Add($"infra.provider '{provider}' is not bicep");
            if (!File.Exists(module)) problems.Add($"infra module {module} does not exist");
        }
        if (Get(doc, "services") is not YamlMappingNode services) { problems.Add("no services"); return problems; }
        foreach (var (key, node) in services.Children)
        {
            var service = ((YamlScalarNode)key).Value!;
            var s = (YamlMappingNode)node;
            var host = Text(s, "host");
            if (host is null) { problems.Add($"services.{service}: host is required"); continue; }
            if (Text(s, "language") is { } language && !new[] { "dotnet", "csharp", "fsharp", "py", "python", "js", "ts", "java", "go", "golang", "docker" }.Contains(language))
                problems.Add($"services.{service}: language '{language}' is not one azd knows");
            if (host == "function")
            {
                foreach (var forbidden in new[] { "image", "docker", "k8s", "apiVersion", "env" })
                    if (Get(s, forbidden) is not null) problems.Add($"services.{service}: host function does not allow {forbidden}");
                if (Text(s, "project") is not { } project) problems.Add($"services.{service}: host function requires project");
                else if (!Directory.Exists(Path.Combine(root, project)) || !Directory.EnumerateFiles(Path.Combine(root, project), "*.csproj").Any())
                    problems.Add($"services.{service}: project {project} is not a folder with a .csproj");
            }
            if (Get(s, "hooks") is YamlMappingNode hooks)
                foreach (var (hook, h) in hooks.Children)
                    if (Text((YamlMappingNode)h, "run") is { } run && run.StartsWith("./", StringComparison.Ordinal) && !File.Exists(Path.Combine(root, run)))
                        problems.Add($"services.{service}.hooks.{hook}: {run} does not exist");
        }
        return problems;
    }

    private static string Yaml => File.ReadAllText(Path.Combine(Bicep.RepoRoot, "azure.yaml"));

    [Fact]
    public void AzureYamlFollowsTheSchemaRules() => Assert.Empty(Problems(Yaml, Bicep.RepoRoot));

    [Fact]
    public void TheCheckerRejectsWhatAzdRejects()
    {
        var broken = """
            name: Squash_App
            services:
              api:
                language: dotnet
                host: function
                image: squash:latest
              web:
                project: ./src/Squash.Functions
            """;
        Assert.Equal(
            ["name 'Squash_App' does not match ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ (2 characters at least)", "services.api: host function does not allow image",
             "services.api: host function requires project", "services.web: host is required"],
            Problems(broken, Bicep.RepoRoot));
    }

    /// <summary>
    /// The three services are the one function app project, and azd finds exactly one app per service: the one the
    /// template tags azd-service-name (a service deploys to one resource; the pools' hook covers pools 1..P-1).
    /// </summary>
    [Fact]
    public void EachServiceIsTheFunctionAppAndMatchesExactlyOneTaggedApp()
    {
        var services = (YamlMappingNode)Get(Load(Yaml), "services")!;
        Assert.Equal(["coordinator", "pools", "builder"], services.Children.Keys.Select(k => ((YamlScalarNode)k).Value));
        var t = Bicep.Evaluate(new() { ["poolCount"] = 3L });
        var sites = new List<Deployed>();
        void Collect(ArmTemplate template)
        {
            foreach (var r in template.Resources())
            {
                if (r.Type == "Microsoft.Web/sites") sites.Add(r);
                if (r.Nested is { } n) Collect(n);
            }
        }
        Collect(t);
        foreach (var (key, node) in services.Children)
        {
            var s = (YamlMappingNode)node;
            Assert.Equal(("function", "dotnet", "./src/Squash.Functions"), (Text(s, "host"), Text(s, "language"), Text(s, "project")));
            var service = ((YamlScalarNode)key).Value!;
            var tagged = sites.Where(site => site.Tags is Dictionary<string, object?> tags && tags.TryGetValue("azd-service-name", out var v) && (string?)v == service).ToList();
            Assert.True(tagged.Count == 1, $"{tagged.Count} apps tagged azd-service-name: {service}");
        }
        Assert.StartsWith("func-pool0-", sites.Single(s => s.Tags is Dictionary<string, object?> tags && tags.GetValueOrDefault("azd-service-name") as string == "pools").Name);
        // The hook that deploys the other pools reads the pool app names from this output, pool 0 first.
        var outputs = t.Outputs();
        Assert.Equal(string.Join(' ', sites.Where(s => s.Name.StartsWith("func-pool", StringComparison.Ordinal)).Select(s => s.Name).Order()), outputs["AZURE_FUNCTION_APP_POOLS"]);
        Assert.Contains("AZURE_FUNCTION_APP_POOLS", File.ReadAllText(Path.Combine(Bicep.RepoRoot, "scripts", "deploy-pools.sh")));
        Assert.Contains("AZURE_RESOURCE_GROUP", outputs.Keys);
    }
}
