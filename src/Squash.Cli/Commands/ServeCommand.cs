using System.CommandLine;
using Squash.LocalHost;
using Squash.Storage;

namespace Squash.Cli.Commands;

/// <summary>Runs the local function host: the function app as real processes behind a front end on loopback.</summary>
public static class ServeCommand
{
    // The host's own defaults, so that the CLI and LocalHostOptions cannot drift apart.
    private static readonly LocalHostOptions Defaults = new() { Store = "" };

    public static Command Create()
    {
        var store = new Option<string>("--store") { Description = "Where indexes live: dir:PATH (each index is a folder named after it) or azure:CONNECTION_STRING|ACCOUNT_URL (Azurite or Azure).", DefaultValueFactory = _ => "dir:data/indexes" };
        var container = new Option<string>("--container") { Description = "Blob container with an azure: store.", DefaultValueFactory = _ => Defaults.Container };
        var preload = new Option<string>("--preload") { Description = "Index names (comma-separated) every instance opens in the background as it starts: shorter cold starts.", DefaultValueFactory = _ => "" };
        var app = new Option<string?>("--app") { Description = "The function app to run: a published folder (scripts/publish.sh, Native AOT: ~80 ms to listening), its executable, or a dll. Default: the build beside squash." };
        var port = new Option<int>("--port") { Description = "Public loopback port (the Functions front end).", DefaultValueFactory = _ => Defaults.Port };
        var branching = new Option<int>("--branching") { Description = "Invocation tree branching factor b.", DefaultValueFactory = _ => Defaults.Branching };
        var depth = new Option<int>("--depth") { Description = "Invocation tree depth L (0: the coordinator scans everything).", DefaultValueFactory = _ => Defaults.Depth };
        var pools = new Option<int>("--pools") { Description = "Processor pools (separate function apps on Azure).", DefaultValueFactory = _ => Defaults.ProcessorPools };
        var instances = new Option<int>("--max-instances") { Description = "Instance cap per pool.", DefaultValueFactory = _ => Defaults.MaxInstancesPerPool };
        var concurrency = new Option<int>("--concurrency") { Description = "Concurrent invocations per instance (Flex per-instance HTTP concurrency; the default is what a Squash deployment sets, since tree nodes mostly wait on children and blob reads).", DefaultValueFactory = _ => Defaults.InstanceConcurrency };
        var logDir = new Option<string?>("--log-dir") { Description = "Folder for the instances' output, one file per pool (coordinator.log, p0.log, …; rotated at 4 MiB). Default: squash-serve-PORT in the temp folder." };
        var builders = new Option<int>("--max-builders") { Description = "Instance cap of the builder pool, which runs the queue-triggered functions (index builds, ingest of the write log, recalibration) with an azure: store.", DefaultValueFactory = _ => Defaults.MaxBuilderInstances };
        var functionKey = new Option<string?>(EndpointFlags.FunctionKeyFlag)
        {
            Description = "Check function keys as Azure does: the functions with authLevel function (query, index info, builds, vectors, and scan between the pools) answer 401 "
                        + $"without this key in the {EndpointFlags.KeyHeader} header or the code query parameter (what --function-key of the other commands sends). Default: no keys checked.",
        };
        var keepAlive = new Option<int>("--keep-alive") { Description = "Seconds an idle instance is kept before it is recycled.", DefaultValueFactory = _ => (int)Defaults.KeepAlive.TotalSeconds };
        var cmd = new Command("serve", "Run the HTTP API and a local function host (coordinator and processor pools as OS processes) until Ctrl+C.")
        {
            store, container, port, branching, depth, pools, instances, builders, concurrency, keepAlive, app, preload, logDir, functionKey,
        };
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            var s = pr.GetValue(store)!;
            // The spec is echoed redacted: a mistyped prefix must not print the account key that follows it.
            CliErrors.Require(s.StartsWith("dir:", StringComparison.Ordinal) && s.Length > "dir:".Length || s.StartsWith("azure:", StringComparison.Ordinal) && s.Length > "azure:".Length,
                $"--store must be dir:PATH or azure:CONNECTION|ACCOUNT_URL, got '{SecretRedaction.Redact(s)}'");
            string? appPath = pr.GetValue(app);
            if (appPath is not null)
            {
                try { appPath = LocalFunctionHost.ResolveApp(appPath); }
                catch (FileNotFoundException) { throw new UsageException($"--app: no function app at '{appPath}' (expected a published folder, Squash.Functions or Squash.Functions.dll)"); }
            }
            int p = pr.GetValue(port), b = pr.GetValue(branching), l = pr.GetValue(depth), np = pr.GetValue(pools),
                mi = pr.GetValue(instances), c = pr.GetValue(concurrency), ka = pr.GetValue(keepAlive), mb = pr.GetValue(builders);
            CliErrors.Require(p is > 0 and < 65536, $"--port must be 1..65535, got {p}");
            CliErrors.Require(b is >= 1 and <= 64, $"--branching must be 1..64, got {b}");
            CliErrors.Require(l is >= 0 and <= 6, $"--depth must be 0..6, got {l}");
            CliErrors.Require(np is >= 1 and <= 64, $"--pools must be 1..64, got {np}");
            CliErrors.Require(mi is >= 1 and <= 256, $"--max-instances must be 1..256, got {mi}");
            CliErrors.Require(c is >= 1 and <= 1000, $"--concurrency must be 1..1000, got {c}");
            CliErrors.Require(ka >= 1, $"--keep-alive must be ≥ 1 second, got {ka}");
            CliErrors.Require(mb is >= 1 and <= 256, $"--max-builders must be 1..256, got {mb}");
            // Created now: a --log-dir that cannot be a folder would otherwise lose every instance's output while serve runs on.
            if (pr.GetValue(logDir) is { } logFolder) OutputFolder.Create("--log-dir", logFolder);
            var key = pr.GetValue(functionKey);
            CliErrors.Require(key is null || key.Length > 0 && key.All(ch => ch is >= '!' and <= '~'),
                $"{EndpointFlags.FunctionKeyFlag} must be visible ASCII characters (a function key has no spaces or control characters)");
            // One key stands for every app's default host key: the coordinator's is the one callers send; the processor pools'
            // are used only by the instances among themselves.
            var keys = key is null ? null : new[] { "coordinator" }.Concat(Enumerable.Range(0, np).Select(i => $"p{i}")).ToDictionary(app => app, _ => key);
            string where;
            if (s.StartsWith("dir:", StringComparison.Ordinal))
            {
                // Not created: a mistyped path would otherwise serve an empty store and answer 404 to every query.
                var root = Path.GetFullPath(s[4..]);
                if (File.Exists(root)) throw new UsageException($"--store dir:{root} is a file, not a folder of indexes");
                CliErrors.Require(Directory.Exists(root),
                    $"--store dir:{root}: the folder does not exist (build an index there first: squash build --store dir:{root} --index NAME --vectors FILE)");
                s = "dir:" + root;
                where = root;
            }
            else
            {
                // Checked here, where the error can name the flag, rather than in every instance as it starts.
                where = IndexLocation.OpenStore(s, pr.GetValue(container)!).Description;
            }
            await using var host = new LocalFunctionHost(new LocalHostOptions
            {
                Store = s, Container = pr.GetValue(container)!, AppPath = appPath, Preload = pr.GetValue(preload)!, Port = p, Branching = b, Depth = l, ProcessorPools = np,
                MaxInstancesPerPool = mi, MaxBuilderInstances = mb, InstanceConcurrency = c, KeepAlive = TimeSpan.FromSeconds(ka), LogFolder = pr.GetValue(logDir),
                FunctionKeys = keys, Log = line => Console.Error.WriteLine(line),
            });
            try
            {
                await host.StartAsync(ct);
            }
            catch (PortInUseException)
            {
                throw new UsageException($"--port {p}: 127.0.0.1:{p} is already in use (another squash serve?); choose a free port with --port");
            }
            catch (InvalidDataException e)
            {
                // A function.json or host.json the Functions host would refuse (a bad queue name or queue setting).
                throw new UsageException($"--app: {e.Message}");
            }
            Console.WriteLine($"squash is serving {where} at {host.BaseAddress} (tree b={b}, L={l}; {np} processor pools × ≤{mi} instances × {c} slots)");
            Console.WriteLine($"  POST {host.BaseAddress}api/indexes/{{index}}/query   GET {host.BaseAddress}api/indexes/{{index}}   GET {host.BaseAddress}admin/instances");
            Console.WriteLine($"  instance logs: {host.LogFolder}{Path.DirectorySeparatorChar} (coordinator.log, p0.log, …)");
            if (keys is not null) Console.WriteLine($"  function keys are checked: send {EndpointFlags.FunctionKeyFlag} (the {EndpointFlags.KeyHeader} header) to the query, index and builds functions");
            if (host.QueueTriggers is { } queues)
            {
                Console.WriteLine($"  queue-triggered functions run on the builder pool (≤{mb} instances): {string.Join(", ", queues.Queues.Select(q => $"{q.Function} ← {q.Queue}"))}");
                Console.WriteLine($"  build an index through them: squash build --endpoint {host.BaseAddress.ToString().TrimEnd('/')} --index NAME --vectors FILE --store azure:… (this store)");
            }
            else if (QueueTriggerHost.ConnectionStringOf(s) is null)
                Console.WriteLine($"  builds need a queue store: serve with --store azure:CONNECTION_STRING (Azurite or Azure) to run queue-triggered functions; a {(s.StartsWith("dir:", StringComparison.Ordinal) ? "folder" : "account URL")} store has none here");
            try { await Task.Delay(Timeout.Infinite, ct); } catch (OperationCanceledException) { }
            var snap = host.Snapshot();
            Console.WriteLine($"stopped: {snap.TotalExecutions} executions, estimated cost ${snap.TotalCostUsd:G4} ({snap.PriceTable})");
            return 0;
        }));
        return cmd;
    }
}
