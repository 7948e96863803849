using System.Reflection;
using System.Text.Json;
using Squash.Functions;

namespace Squash.Infra.Tests;

/// <summary>
/// What the compiled template deploys, evaluated offline for given parameters (<see cref="ArmTemplate"/>): the apps and
/// their plans, identities and role assignments, settings, and the functions each app runs.
/// </summary>
public sealed class DeploymentTests
{
    /// <summary>Every resource of the deployment, modules opened, with the module it came from.</summary>
    private static List<(string Module, Deployed Resource)> All(ArmTemplate t, string module = "")
    {
        var all = new List<(string, Deployed)>();
        foreach (var r in t.Resources())
        {
            all.Add((module, r));
            if (r.Nested is { } nested) all.AddRange(All(nested, r.Name));
        }
        return all;
    }

    private static List<Deployed> Sites(ArmTemplate t) => All(t).Select(x => x.Resource).Where(r => r.Type == "Microsoft.Web/sites").ToList();

    private static Dictionary<string, string> SettingsOf(Deployed site)
    {
        var list = (List<object?>)site.At("siteConfig.appSettings")!;
        var settings = new Dictionary<string, string>();
        foreach (Dictionary<string, object?> s in list.Cast<Dictionary<string, object?>>())
        {
            var name = (string)s["name"]!;
            Assert.False(settings.ContainsKey(name), $"{site.Name}: setting {name} twice");
            settings[name] = s["value"]?.ToString() ?? "";
        }
        return settings;
    }

    private static string[] FunctionsOf(Deployed site) => SettingsOf(site)
        .Where(s => s.Key.StartsWith("AzureFunctionsJobHost__functions__", StringComparison.Ordinal))
        .OrderBy(s => int.Parse(s.Key["AzureFunctionsJobHost__functions__".Length..])).Select(s => s.Value).ToArray();

    private static Deployed Site(ArmTemplate t, string prefix) => Sites(t).Single(s => s.Name.StartsWith(prefix, StringComparison.Ordinal));

    private static string Token(ArmTemplate t) => Site(t, "func-coord-").Name["func-coord-".Length..];

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(5)]
    public void FlexConsumptionAppsOnePerProcessorPool(int pools)
    {
        var t = Bicep.Evaluate(new() { ["poolCount"] = (long)pools });
        var all = All(t).Select(x => x.Resource).ToList();
        var sites = Sites(t);
        var token = Token(t);
        Assert.Equal(
            new[] { $"func-build-{token}", $"func-coord-{token}" }.Concat(Enumerable.Range(0, pools).Select(i => $"func-pool{i}-{token}")).Order(),
            sites.Select(s => s.Name).Order());
        // Flex hosts one app per plan: one FC1 Linux plan per app.
        var plans = all.Where(r => r.Type == "Microsoft.Web/serverfarms").ToList();
        Assert.Equal(sites.Count, plans.Count);
        foreach (var plan in plans)
        {
            Assert.Equal("""{"tier":"FlexConsumption","name":"FC1"}""", JsonSerializer.Serialize(plan.Sku));
            Assert.Equal(true, plan.At("reserved"));
        }
        foreach (var site in sites)
        {
            Assert.Equal("functionapp,linux", site.Kind);
            Assert.Equal(true, site.At("httpsOnly"));
            Assert.Equal("1.2", site.At("siteConfig.minTlsVersion"));
            Assert.Equal(64L, site.At("functionAppConfig.scaleAndConcurrency.triggers.http.perInstanceConcurrency"));
            Assert.Equal(site.Name.StartsWith("func-build-", StringComparison.Ordinal) ? 4096L : 2048L, site.At("functionAppConfig.scaleAndConcurrency.instanceMemoryMB"));
            Assert.Equal("custom", site.At("functionAppConfig.runtime.name"));
            Assert.Empty((List<object?>)site.At("functionAppConfig.scaleAndConcurrency.alwaysReady")!);
            // The package comes from the app's own container, read with the app's identity.
            Assert.Equal("UserAssignedIdentity", site.At("functionAppConfig.deployment.storage.authentication.type"));
            Assert.EndsWith("deploy-" + site.Name.Split('-')[1], site.At("functionAppConfig.deployment.storage.value")!.ToString());
        }
        // Publishing with a user name and password is off for every app.
        var basicAuth = all.Where(r => r.Type == "Microsoft.Web/sites/basicPublishingCredentialsPolicies").ToList();
        Assert.Equal(2 * sites.Count, basicAuth.Count);
        Assert.All(basicAuth, p => Assert.Equal(false, p.At("allow")));
    }

    [Fact]
    public void AlwaysReadyIsOnlyForTheCoordinatorAndOnlyWhenAsked()
    {
        var t = Bicep.Evaluate(new() { ["coordinatorAlwaysReady"] = 1L });
        foreach (var site in Sites(t))
            Assert.Equal(site.Name.StartsWith("func-coord-", StringComparison.Ordinal) ? """[{"name":"http","instanceCount":1}]""" : "[]",
                JsonSerializer.Serialize(site.At("functionAppConfig.scaleAndConcurrency.alwaysReady")));
        // Its cost is stated where the parameter is chosen.
        var description = Bicep.Main["parameters"]!["coordinatorAlwaysReady"]!["metadata"]!["description"]!.GetValue<string>();
        Assert.Contains("$20.74 per instance per 30-day month", description);
    }

    [Fact]
    public void StorageIsReachedOnlyThroughEntraIdAndHoldsTheContainersAndQueuesTheAppsUse()
    {
        var all = All(Bicep.Evaluate()).Select(x => x.Resource).ToList();
        var account = all.Single(r => r.Type == "Microsoft.Storage/storageAccounts");
        Assert.Equal(false, account.At("allowSharedKeyAccess"));
        Assert.Equal(false, account.At("allowBlobPublicAccess"));
        Assert.Equal("TLS1_2", account.At("minimumTlsVersion"));
        Assert.Equal(true, account.At("supportsHttpsTrafficOnly"));
        var containers = all.Where(r => r.Type == "Microsoft.Storage/storageAccounts/blobServices/containers").Select(r => r.Name.Split('/')[^1]).ToHashSet();
        Assert.Superset(new HashSet<string> { "squash", "build-sources", "azure-webjobs-hosts", "azure-webjobs-secrets", "deploy-coord", "deploy-build", "deploy-pool0", "deploy-pool1" }, containers);
        Assert.All(all.Where(r => r.Type == "Microsoft.Storage/storageAccounts/blobServices/containers"), c => Assert.Equal("None", c.At("publicAccess")));
        var queues = all.Where(r => r.Type == "Microsoft.Storage/storageAccounts/queueServices/queues").Select(r => r.Name.Split('/')[^1]).Order().ToArray();
        var contract = new[] { "squash-build-train", "squash-build-assign", "squash-build-encode", "squash-build-publish", "squash-ingest", "squash-calibrate" };
        Assert.Equal(contract.Concat(contract.Select(q => q + "-poison")).Order(), queues);
    }

    /// <summary>Whether a value was computed with a list*() function (listKeys and the like: secrets).</summary>
    private static bool CallsList(object? value) => value switch
    {
        Unknown u => u.Text.StartsWith("list", StringComparison.OrdinalIgnoreCase) || u.Text.Contains("<list", StringComparison.OrdinalIgnoreCase),
        string s => s.Contains("<list", StringComparison.OrdinalIgnoreCase),
        Dictionary<string, object?> d => d.Values.Any(CallsList),
        List<object?> l => l.Any(CallsList),
        _ => false,
    };

    /// <summary>Keys and connection strings with secrets appear nowhere in settings or outputs; the pool keys only go into Key Vault.</summary>
    [Fact]
    public void NoSecretInSettingsOrOutputs()
    {
        var t = Bicep.Evaluate();
        foreach (var site in Sites(t))
        {
            var settings = SettingsOf(site);
            foreach (var (name, value) in settings)
            {
                Assert.DoesNotContain("AccountKey", value, StringComparison.OrdinalIgnoreCase);
                Assert.DoesNotContain("SharedAccessSignature", value, StringComparison.OrdinalIgnoreCase);
                Assert.False(value.Contains("<list", StringComparison.OrdinalIgnoreCase), $"{site.Name}: {name} is filled from a list*() call");
            }
            // Flex Consumption rejects these; AzureWebJobsStorage itself would be a connection string.
            foreach (var forbidden in new[] { "AzureWebJobsStorage", "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE" })
                Assert.False(settings.ContainsKey(forbidden), $"{site.Name} sets {forbidden}");
            Assert.Equal("managedidentity", settings["AzureWebJobsStorage__credential"]);
            foreach (var needed in new[] { "AzureWebJobsStorage__blobServiceUri", "AzureWebJobsStorage__queueServiceUri", "AzureWebJobsStorage__clientId", "AZURE_CLIENT_ID", "APPLICATIONINSIGHTS_CONNECTION_STRING" })
                Assert.True(settings.ContainsKey(needed), $"{site.Name} lacks {needed}");
            Assert.Equal(settings["AZURE_CLIENT_ID"], settings["AzureWebJobsStorage__clientId"]);
            Assert.Equal($"ClientId={settings["AZURE_CLIENT_ID"]};Authorization=AAD", settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]);
        }
        // list*() is called in exactly one place: the Key Vault secrets that hold the pools' keys.
        var listers = All(t).Select(x => x.Resource).Where(r => CallsList(r.Properties)).ToList();
        Assert.All(listers, r => Assert.Equal("Microsoft.KeyVault/vaults/secrets", r.Type));
        Assert.Equal(2, listers.Count);
        Assert.All(listers, r => Assert.Contains("/host/default", r.At("value")!.ToString()));
        foreach (var (module, r) in All(t).Where(x => x.Resource.Nested is not null).Select(x => (x.Resource.Name, x.Resource.Nested!)).Append(("main", t)))
            foreach (var (name, value) in r.Outputs())
                Assert.False(CallsList(value), $"output {name} of {module} comes from a list*() call");
        // Application Insights takes telemetry only with an Entra ID token.
        Assert.Equal(true, All(t).Select(x => x.Resource).Single(r => r.Type == "Microsoft.Insights/components").At("DisableLocalAuth"));
    }

    /// <summary>
    /// Every FunctionSettings property is either set on Azure or deliberately left at its default: a new setting fails
    /// this test until it is decided. Each Squash__ setting names a real property, and the values agree with the template.
    /// </summary>
    [Fact]
    public void EveryAppSettingTheCodeReadsIsSet()
    {
        var properties = typeof(FunctionSettings).GetProperties(BindingFlags.Public | BindingFlags.Instance).Select(p => p.Name).ToHashSet();
        var setOnQueryApps = new HashSet<string> { "Store", "Container", "Pools", "Branching", "Depth", "MaxTreeNodes", "CacheMb", "InstanceMemoryMb", "Preload" };
        var leftAtDefault = new Dictionary<string, string>
        {
            ["ScanUrl"] = "Pools names the pools with their keys",
            ["ScanUrls"] = "Pools names the pools with their keys",
            ["CacheBytes"] = "an exact bound for tests; CacheMb is set",
            ["ChildTimeout"] = "the default (10 s) fits HTTP calls within a region",
            ["HedgingDelay"] = "the default (500 ms) is the measured setting",
            ["MaxRequestBytes"] = "the default (4 MB) is below the Functions host's own limit",
            ["MaxMaskedRows"] = "the default (2²² rows, ≤ 16 MiB of excludedRows on top of MaxRequestBytes) is the most a node keeps decoded, and within the Functions host's limit",
            ["MaxBatch"] = "the default (256) bounds a request's work",
            ["CurrentRecheck"] = "the default (1 s) bounds how long a new version waits to be seen; tests set 0",
            ["WakePoolsOnStart"] = "true on the coordinator only (checked below)",
            ["Objective"] = "empty: the fixed Branching/Depth shape, until a deployment opts into the cost planner (docs/cost.md)",
            ["P99TargetMs"] = "read only with Objective=cost",
            ["CostCapUsd"] = "read only with Objective=latency",
            ["HopMs"] = "the planner's prior until the coordinator has measured its hops, read only with an Objective",
            ["PartitionScanMs"] = "the planner's prior until the coordinator has measured its scans, read only with an Objective",
        };
        Assert.Equal(properties.Order(), setOnQueryApps.Concat(leftAtDefault.Keys).Order());

        const int pools = 3;
        var t = Bicep.Evaluate(new() { ["poolCount"] = (long)pools });
        var poolSites = Sites(t).Where(s => s.Name.StartsWith("func-pool", StringComparison.Ordinal)).OrderBy(s => s.Name).ToList();
        var token = Token(t);
        foreach (var site in Sites(t))
        {
            var settings = SettingsOf(site);
            bool builder = site.Name.StartsWith("func-build-", StringComparison.Ordinal);
            foreach (var name in settings.Keys.Where(k => k.StartsWith("Squash__", StringComparison.Ordinal)))
            {
                var property = name.Split("__")[1];
                Assert.True(properties.Contains(property), $"{site.Name}: {name} is not a FunctionSettings property");
            }
            var expected = builder ? new[] { "Store", "Container", "InstanceMemoryMb", "CacheMb" } : setOnQueryApps.Except(["Pools"]).ToArray();
            foreach (var property in expected)
                Assert.True(settings.ContainsKey("Squash__" + property), $"{site.Name} does not set Squash__{property}");
            Assert.Equal("squash", settings["Squash__Container"]);
            Assert.StartsWith("azure:<reference(", settings["Squash__Store"]);
            Assert.Contains(".outputs.blobEndpoint", settings["Squash__Store"]);
            Assert.Equal(site.At("functionAppConfig.scaleAndConcurrency.instanceMemoryMB")!.ToString(), settings["Squash__InstanceMemoryMb"]);
            Assert.True(int.Parse(settings["Squash__CacheMb"]) < int.Parse(settings["Squash__InstanceMemoryMb"]), site.Name);
            Assert.Equal(site.Name.StartsWith("func-coord-", StringComparison.Ordinal) ? "true" : null, settings.GetValueOrDefault("Squash__WakePoolsOnStart"));
            if (builder)
            {
                Assert.DoesNotContain(settings.Keys, k => k.StartsWith("Squash__Pools__", StringComparison.Ordinal));
                continue;
            }
            // Pool i is the i-th pool app, called with the key Key Vault holds for it.
            var poolSettings = settings.Keys.Where(k => k.StartsWith("Squash__Pools__", StringComparison.Ordinal)).ToList();
            Assert.Equal(2 * pools, poolSettings.Count);
            for (int i = 0; i < pools; i++)
            {
                Assert.Equal($"https://{poolSites[i].Name}.azurewebsites.net", settings[$"Squash__Pools__{i}__Url"]);
                Assert.Equal($"@Microsoft.KeyVault(VaultName=kv-{token};SecretName=scan-key-{i})", settings[$"Squash__Pools__{i}__Key"]);
            }
        }
        // The secrets those references name exist, one per pool, each from its own pool app's host keys.
        var secrets = All(t).Select(x => x.Resource).Where(r => r.Type == "Microsoft.KeyVault/vaults/secrets").OrderBy(r => r.Name).ToList();
        Assert.Equal(Enumerable.Range(0, pools).Select(i => $"kv-{token}/scan-key-{i}"), secrets.Select(s => s.Name));
        for (int i = 0; i < pools; i++)
        {
            Assert.Contains($"(Microsoft.Web/sites, {poolSites[i].Name})>/host/default", secrets[i].At("value")!.ToString());
            Assert.EndsWith(".functionKeys.default>", secrets[i].At("value")!.ToString());
        }
    }

    private static readonly string[] BuildContractFunctions = ["builds", "build-train", "build-assign", "build-encode", "build-publish"];

    /// <summary>The function folders of the package, from functions/*/function.json: name → (trigger type, queueName).</summary>
    private static Dictionary<string, (string Trigger, string? Queue)> PackageFunctions() =>
        Directory.EnumerateFiles(Path.Combine(Bicep.RepoRoot, "functions"), "function.json", SearchOption.AllDirectories).ToDictionary(
            f => Path.GetFileName(Path.GetDirectoryName(f)!),
            f =>
            {
                using var doc = JsonDocument.Parse(File.ReadAllText(f));
                var trigger = doc.RootElement.GetProperty("bindings").EnumerateArray().Single(b => b.GetProperty("type").GetString()!.EndsWith("Trigger", StringComparison.Ordinal));
                return (trigger.GetProperty("type").GetString()!, trigger.TryGetProperty("queueName", out var q) ? q.GetString() : null);
            });

    /// <summary>Each app runs its part of the one package, and every function of the package runs somewhere.</summary>
    [Fact]
    public void EveryFunctionOfThePackageRunsOnTheAppMeantForIt()
    {
        var t = Bicep.Evaluate();
        var package = PackageFunctions();
        var coordinator = FunctionsOf(Site(t, "func-coord-"));
        var builder = FunctionsOf(Site(t, "func-build-"));
        var pools = Sites(t).Where(s => s.Name.StartsWith("func-pool", StringComparison.Ordinal)).Select(FunctionsOf).ToList();
        Assert.All(pools, p => Assert.Equal(["health", "scan"], p));
        Assert.Equal(["health", "index-info", "openapi", "query", "builds", "vectors"], coordinator);
        var running = coordinator.Concat(builder).Concat(pools.SelectMany(p => p)).ToHashSet();
        foreach (var name in package.Keys) Assert.True(running.Contains(name), $"functions/{name} runs on no app");
        foreach (var name in running)
            Assert.True(package.ContainsKey(name) || BuildContractFunctions.Contains(name), $"an app runs '{name}', which the package does not have");
        var queues = All(t).Select(x => x.Resource).Where(r => r.Type == "Microsoft.Storage/storageAccounts/queueServices/queues").Select(r => r.Name.Split('/')[^1]).ToHashSet();
        foreach (var (name, (trigger, queue)) in package)
        {
            if (trigger != "queueTrigger") continue;
            Assert.True(builder.Contains(name) && !coordinator.Contains(name), $"queue function {name} must run on the builder only");
            Assert.True(queues.Contains(queue!) && queues.Contains(queue + "-poison"), $"{name} listens on '{queue}', which the template does not create with its poison queue");
        }
        Assert.DoesNotContain("scan", coordinator);
        Assert.DoesNotContain(builder, f => f is "query" or "scan");
    }

    private static readonly Dictionary<string, string> RoleNames = new()
    {
        ["2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"] = "Storage Blob Data Reader",
        ["ba92f5b4-2d11-453d-a403-e96b0029c9fe"] = "Storage Blob Data Contributor",
        ["974c5e8b-45b9-4653-ba55-5f855dd0fb88"] = "Storage Queue Data Contributor",
        ["c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"] = "Storage Queue Data Message Sender",
        ["4633458b-17de-408a-b874-0445c86b69e6"] = "Key Vault Secrets User",
        ["3913510d-42f4-4e42-8a64-420c390055eb"] = "Monitoring Metrics Publisher",
    };

    /// <summary>Storage roles per identity: "role on container:x" / "role on queue:x", from the role modules' parameters.</summary>
    private static Dictionary<string, SortedSet<string>> StorageRoles(ArmTemplate t)
    {
        var roles = new Dictionary<string, SortedSet<string>>();
        foreach (var module in t.Resources().Where(r => r.Name.StartsWith("roles-", StringComparison.Ordinal)))
        {
            var n = module.Nested!;
            var set = roles[module.Name["roles-".Length..]] = [];
            foreach (Dictionary<string, object?> r in ((List<object?>)n.Parameter("containerRoles")!).Cast<Dictionary<string, object?>>())
                set.Add($"{RoleNames[(string)r["role"]!]} on container:{r["container"]}");
            foreach (Dictionary<string, object?> r in ((List<object?>)n.Parameter("queueRoles")!).Cast<Dictionary<string, object?>>())
                set.Add($"{RoleNames[(string)r["role"]!]} on queue:{r["queue"]}");
            // Every assignment is scoped to one container or queue, never to the account.
            var resources = n.Json["resources"] is System.Text.Json.Nodes.JsonArray array ? array.Select(x => x!) : n.Json["resources"]!.AsObject().Select(p => p.Value!);
            foreach (var a in resources.Where(r => r["type"]!.GetValue<string>() == "Microsoft.Authorization/roleAssignments"))
                Assert.Matches(@"^\[resourceId\('Microsoft\.Storage/storageAccounts/(blobServices/containers|queueServices/queues)', parameters\('storageName'\), 'default', ", a["scope"]!.GetValue<string>());
        }
        return roles;
    }

    [Fact]
    public void EachRolesIdentityHoldsOnlyTheRightsItsAppsNeed()
    {
        var t = Bicep.Evaluate(new() { ["poolCount"] = 2L, ["principalId"] = "00000000-aaaa-bbbb-cccc-000000000000" });
        var roles = StorageRoles(t);
        string[] Host(string role) => [$"{role} on container:azure-webjobs-hosts", $"{role} on container:azure-webjobs-secrets"];
        const string reader = "Storage Blob Data Reader", contributor = "Storage Blob Data Contributor";
        Assert.Equal(new[] { $"{reader} on container:squash", $"{contributor} on container:deploy-pool0", $"{contributor} on container:deploy-pool1" }
            .Concat(Host(contributor)).Order(StringComparer.Ordinal), roles["pools"]);
        // The coordinator appends to the indexes' write-ahead logs ({index}/log/), so it writes the index container.
        Assert.Equal(new[] { $"{contributor} on container:squash", $"{contributor} on container:build-sources", $"{contributor} on container:deploy-coord",
            "Storage Queue Data Message Sender on queue:squash-build-train", "Storage Queue Data Message Sender on queue:squash-ingest" }.Concat(Host(contributor)).Order(StringComparer.Ordinal), roles["coordinator"]);
        var queues = new[] { "build-train", "build-assign", "build-encode", "build-publish", "ingest", "calibrate" }.SelectMany(s => new[] { $"squash-{s}", $"squash-{s}-poison" });
        Assert.Equal(new[] { $"{contributor} on container:squash", $"{contributor} on container:build-sources", $"{contributor} on container:deploy-build" }
            .Concat(Host(contributor)).Concat(queues.Select(q => $"Storage Queue Data Contributor on queue:{q}")).Order(StringComparer.Ordinal), roles["builder"]);
        Assert.Equal([$"{contributor} on container:build-sources", $"{contributor} on container:squash"], roles["deployer"]);
        // docs/deploy.md's table of roles names every queue an identity is given (it once left out squash-calibrate).
        var doc = File.ReadAllLines(Path.Combine(Bicep.RepoRoot, "docs", "deploy.md"));
        foreach (var (identity, role) in new[] { ("coordinator", "Storage Queue Data Message Sender"), ("builder", "Storage Queue Data Contributor") })
        {
            var row = Assert.Single(doc, l => l.TrimStart().StartsWith($"| {identity} | {role} |", StringComparison.Ordinal));
            foreach (var queue in roles[identity].Where(r => r.StartsWith(role + " on queue:", StringComparison.Ordinal)).Select(r => r.Split("queue:")[1]))
            {
                // "the four build queues" stands for squash-build-*, "and their poison queues" for every -poison twin.
                string bare = queue.EndsWith("-poison", StringComparison.Ordinal) ? queue[..^"-poison".Length] : queue;
                bool named = (bare == queue || row.Contains("their poison queues", StringComparison.Ordinal))
                    && (row.Contains($"`{bare}`", StringComparison.Ordinal) || bare.StartsWith("squash-build-", StringComparison.Ordinal) && row.Contains("the four build queues", StringComparison.Ordinal));
                Assert.True(named, $"docs/deploy.md: the {identity}'s {role} row does not name {queue}: {row}");
            }
        }
        Assert.DoesNotContain("deployer", StorageRoles(Bicep.Evaluate()).Keys);

        // Each app runs as its role's identity, which also resolves its Key Vault references.
        var identities = t.Resources().Where(r => r.Name.StartsWith("identity-", StringComparison.Ordinal)).ToDictionary(r => r.Name, r => r.Nested!.Parameter("name")!.ToString()!);
        Assert.Equal(3, identities.Values.Distinct().Count());
        foreach (var site in Sites(t))
        {
            var role = site.Name.Split('-')[1] switch { "coord" => "identity-coordinator", "build" => "identity-builder", _ => "identity-pools" };
            var identity = (Dictionary<string, object?>)site.Owner.Evaluate(site.Source["identity"])!;
            Assert.Equal("UserAssigned", identity["type"]);
            var assigned = Assert.Single(((Dictionary<string, object?>)identity["userAssignedIdentities"]!).Keys);
            Assert.Contains($"Microsoft.Resources/deployments, {role})", assigned);
            Assert.Equal(assigned, site.At("keyVaultReferenceIdentity")!.ToString());
        }

        // Key Vault: RBAC only; readable by the identities that call pools (coordinator, pools), not by the builder.
        var vault = t.Resources().Single(r => r.Name == "key-vault").Nested!;
        Assert.Equal(true, vault.Resources().Single(r => r.Type == "Microsoft.KeyVault/vaults").At("enableRbacAuthorization"));
        Assert.Equal([identities["identity-coordinator"], identities["identity-pools"]], ((List<object?>)vault.Parameter("readerNames")!).Select(x => x!.ToString()));
        Assert.All(vault.Resources().Where(r => r.Type == "Microsoft.Authorization/roleAssignments"),
            a => Assert.Equal("Key Vault Secrets User", RoleNames[a.At("roleDefinitionId")!.ToString()!.Split(", ")[^1].TrimEnd(')', '>')]));
    }
}
