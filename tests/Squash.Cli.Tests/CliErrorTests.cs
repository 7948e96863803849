using System.Net;
using System.Net.Sockets;
using Azure;
using Squash.Cli.Commands;

namespace Squash.Cli.Tests;

/// <summary>Every CLI failure is one "error: …" line on stderr and exit code 1: no stack traces, no help dumps.</summary>
public sealed class CliErrorTests
{
    /// <summary>A loopback port with nothing listening on it (taken from the OS, then released).</summary>
    private static int ClosedPort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    [Theory]
    [InlineData("query")]
    [InlineData("bench")]
    public async Task AnUnreachableEndpointIsOneLineNamingTheFlag(string command)
    {
        using var dir = new TempDir();
        var queries = dir.Fvecs("q.fvecs", TempDir.Random(3, 4, 1));
        File.WriteAllBytes(dir.File("gt.ivecs"), [.. Enumerable.Range(0, 3).SelectMany(_ => BitConverter.GetBytes(1).Concat(BitConverter.GetBytes(0)))]);
        int port = ClosedPort();
        var endpoint = $"http://127.0.0.1:{port}";
        string[] args = command == "query"
            ? ["query", "--endpoint", endpoint, "--index", "x", "--vectors", queries]
            : ["bench", "--endpoint", endpoint, "--index", "x", "--queries", queries, "--ground-truth", dir.File("gt.ivecs"), "--k", "1", "--cold-samples", "0"];
        var (exit, _, err) = await CliRunner.RunAsync(args);
        CliRunner.AssertOneErrorLine(exit, err, $"--endpoint {endpoint}: cannot connect: Connection refused (127.0.0.1:{port})");
    }

    /// <summary>
    /// A write run's key leaves room under the service's Idempotency-Key limit (200) for the "-n" each request appends:
    /// 180 characters at most, refused as one line before anything is read or sent.
    /// </summary>
    [Theory]
    [InlineData("upsert", 181)]
    [InlineData("delete", 181)]
    [InlineData("upsert", 0)]
    public async Task AWriteRunKeyWithoutRoomForTheRequestNumberIsOneLine(string command, int length)
    {
        var key = length == 0 ? "two words" : new string('k', length);
        string[] args = command == "upsert"
            ? ["upsert", "--endpoint", "http://127.0.0.1:1", "--index", "shop", "--vectors", "missing.fvecs", "--idempotency-key", key]
            : ["delete", "--endpoint", "http://127.0.0.1:1", "--index", "shop", "--ids", "1", "--idempotency-key", key];
        var (exit, _, err) = await CliRunner.RunAsync(args);
        CliRunner.AssertOneErrorLine(exit, err, "--idempotency-key must be 1 to 180 visible ASCII characters");
        // The longest key accepted, with the longest request number, is still one the service takes.
        Assert.True(180 + $"-{int.MaxValue}".Length <= Squash.Functions.Builds.BuildEndpoints.MaxIdempotencyKey);
    }

    /// <summary>The engine's bounds, checked as flags before anything is read (K·R must not overflow).</summary>
    [Theory]
    [InlineData("--cf", "1001", "--cf must be between 1 and 1,000, got 1001")]
    [InlineData("--cf", "0.5", "--cf must be between 1 and 1,000, got 0.5")]
    [InlineData("--r", "2147483647", "--r must be between 1 and 1,000, got 2147483647")]
    [InlineData("--r", "0", "--r must be between 1 and 1,000, got 0")]
    [InlineData("--recall", "0", "--recall must be in (0, 1], got 0")]
    [InlineData("--recall", "1.2", "--recall must be in (0, 1], got 1.2")]
    [InlineData("--max-partitions", "0", "--max-partitions must be at least 1, got 0")]
    public async Task SearchFlagsOutsideTheEngineBoundsAreOneLine(string flag, string value, string expected)
    {
        using var dir = new TempDir();
        var queries = dir.Fvecs("q.fvecs", TempDir.Random(3, 4, 1));
        var (exit, _, err) = await CliRunner.RunAsync(["query", "--index", dir.File("no-index"), "--vectors", queries, flag, value]);
        CliRunner.AssertOneErrorLine(exit, err, expected);
    }

    /// <summary>A folder where a file belongs was "file '…' does not exist", which sends the user looking for a missing file.</summary>
    [Theory]
    [InlineData("query", "--vectors")]
    [InlineData("build", "--vectors")]
    [InlineData("build", "--attributes")]
    [InlineData("bench", "--ground-truth")]
    [InlineData("bench", "--filters")]
    public async Task AFolderGivenForAFileIsOneLineSayingSo(string command, string flag)
    {
        using var dir = new TempDir();
        var folder = dir.File("a-folder");
        Directory.CreateDirectory(folder);
        var vectors = dir.Fvecs("v.fvecs", TempDir.Random(20, 4, 1));
        File.WriteAllBytes(dir.File("gt.ivecs"), [.. Enumerable.Range(0, 20).SelectMany(_ => BitConverter.GetBytes(1).Concat(BitConverter.GetBytes(0)))]);
        if (command != "build")
            Assert.Equal(0, (await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--partitions", "1")).Exit);
        var args = new Dictionary<string, string> { ["--index"] = dir.File("idx") };
        if (command == "query") args["--vectors"] = vectors;
        if (command == "build") args["--vectors"] = vectors;
        if (command == "bench") { args["--queries"] = vectors; args["--ground-truth"] = dir.File("gt.ivecs"); args["--k"] = "1"; }
        args[flag] = folder;
        var (exit, _, err) = await CliRunner.RunAsync([command, .. args.SelectMany(a => new[] { a.Key, a.Value })]);
        CliRunner.AssertOneErrorLine(exit, err, $"{flag}: '{folder}' is a folder, not a file");
    }

    /// <summary>The enum's own parse error named only its type ("'foo' is not a FilterStrategy value"), not the values to give.</summary>
    [Theory]
    [InlineData("foo")]
    [InlineData("1")]
    [InlineData("")]
    public async Task ABadFilterStrategyListsTheThreeValues(string value)
    {
        using var dir = new TempDir();
        var queries = dir.Fvecs("q.fvecs", TempDir.Random(3, 4, 1));
        File.WriteAllBytes(dir.File("gt.ivecs"), [.. Enumerable.Range(0, 3).SelectMany(_ => BitConverter.GetBytes(1).Concat(BitConverter.GetBytes(0)))]);
        var (exit, _, err) = await CliRunner.RunAsync(["bench", "--index", dir.File("no-index"), "--queries", queries, "--ground-truth", dir.File("gt.ivecs"), "--filter-strategy", value]);
        CliRunner.AssertOneErrorLine(exit, err, $"--filter-strategy must be auto, partitions or direct, got '{value}' (squash bench --help lists the options)");
    }

    [Theory]
    [InlineData("--cf", "1.2")]
    [InlineData("--r", "4")]
    [InlineData("--max-partitions", "4")]
    public async Task ARecallTargetAndAHandSetPlanAreOneLine(string flag, string value)
    {
        using var dir = new TempDir();
        var queries = dir.Fvecs("q.fvecs", TempDir.Random(3, 4, 1));
        var (exit, _, err) = await CliRunner.RunAsync(["query", "--index", dir.File("no-index"), "--vectors", queries, "--recall", "0.9", flag, value]);
        CliRunner.AssertOneErrorLine(exit, err, "--recall cannot be combined with --cf, --r or --max-partitions: ask for a recall target, or set the plan yourself");
    }

    [Theory]
    [InlineData("0", new string[0], "--max-partitions values must be ≥ 1 or 'none', got '0'")]
    [InlineData("4,x", new string[0], "--max-partitions must be a comma-separated list of numbers, got '4,x'")]
    [InlineData("4", new[] { "--recall", "0.9" }, "--max-partitions cannot be combined with --recall: the index's calibration chooses a target's cap")]
    [InlineData("4", new[] { "--cold" }, "--max-partitions sweeps the in-process engine: not with --endpoint or --cold")]
    [InlineData("4", new[] { "--filters", "f.jsonl" }, "--max-partitions applies to unfiltered queries only: not with --filters")]
    public async Task ABenchPartitionCapOutsideItsUseIsOneLine(string caps, string[] extra, string expected)
    {
        using var dir = new TempDir();
        var queries = dir.Fvecs("q.fvecs", TempDir.Random(3, 4, 1));
        File.WriteAllBytes(dir.File("gt.ivecs"), [.. Enumerable.Range(0, 3).SelectMany(_ => BitConverter.GetBytes(1).Concat(BitConverter.GetBytes(0)))]);
        File.WriteAllText(dir.File("f.jsonl"), "null\nnull\nnull\n");
        var args = extra.Select(a => a == "f.jsonl" ? dir.File(a) : a);
        var (exit, _, err) = await CliRunner.RunAsync(["bench", "--index", dir.File("no-index"), "--queries", queries, "--ground-truth", dir.File("gt.ivecs"),
            "--max-partitions", caps, .. args]);
        CliRunner.AssertOneErrorLine(exit, err, expected);
    }

    [Fact]
    public async Task APartitionCapWithAFilterIsOneLine()
    {
        using var dir = new TempDir();
        var queries = dir.Fvecs("q.fvecs", TempDir.Random(3, 4, 1));
        var (exit, _, err) = await CliRunner.RunAsync(["query", "--index", dir.File("no-index"), "--vectors", queries, "--max-partitions", "4", "--filter", "{\"a\":1}"]);
        CliRunner.AssertOneErrorLine(exit, err, "--max-partitions applies to unfiltered queries only: a filtered query's plan walks the partitions until its filter's estimated matches are reached");
    }

    [Fact]
    public async Task CalibrationQueriesOfAnotherDimensionAreOneLine()
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("v.fvecs", TempDir.Random(300, 4, 2));
        var queries = dir.Fvecs("q.fvecs", TempDir.Random(5, 6, 3));
        var (exit, _, err) = await CliRunner.RunAsync(["build", "--index", dir.File("idx"), "--vectors", vectors, "--calibration-queries", queries]);
        CliRunner.AssertOneErrorLine(exit, err, $"--calibration-queries: '{queries}' has 6 dimensions; the vectors have 4");
        Assert.False(Directory.Exists(dir.File("idx/versions")), "a rejected build wrote a version");
    }

    /// <summary>--calibration-filters: a file per kind of filter, a filter per calibration query, each checked against the attributes before the build starts.</summary>
    [Theory]
    [InlineData("no-queries", "--calibration-filters needs --calibration-queries (line i is the filter of query i)")]
    [InlineData("no-attributes", "--calibration-filters needs --attributes: the filters name attributes")]
    [InlineData("missing", "--calibration-filters: file 'DIR/none.jsonl' does not exist")]
    [InlineData("short", "--calibration-filters: 'DIR/f.jsonl' has 4 filters; --calibration-queries has 5 queries (one filter per query, null for none)")]
    [InlineData("unknown", "--calibration-filters: 'DIR/f.jsonl' line 4: filter $.colour: unknown attribute 'colour'")]
    [InlineData("not-json", "--calibration-filters: 'DIR/f.jsonl' line 4: filter $: not valid JSON: '}' is an invalid start of a value. LineNumber: 0 | BytePositionInLine: 0.")]
    [InlineData("same-name", "--calibration-filters: 'DIR/f.jsonl' and 'DIR/sub/f.jsonl' have the same file name, which names a family: rename one")]
    public async Task CalibrationFiltersThatCannotBeUsedAreOneLine(string kind, string expected)
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("v.fvecs", TempDir.Random(300, 4, 2));
        var queries = dir.Fvecs("q.fvecs", TempDir.Random(5, 4, 3));
        File.WriteAllText(dir.File("a.jsonl"), string.Concat(Enumerable.Range(0, 300).Select(i => $"{{\"attributes\":{{\"label\":{i % 3}}}}}\n")));
        // Where line 3 is blank (skipped), the bad third filter is named by its line: 4.
        string[] lines = kind switch
        {
            "short" => ["{\"label\":1}", "null", "{\"label\":2}", "{\"label\":0}"],
            "unknown" => ["{\"label\":1}", "null", "", "{\"colour\":\"red\"}", "{\"label\":0}", "{\"label\":2}"],
            "not-json" => ["{\"label\":1}", "null", "", "}", "{\"label\":0}", "{\"label\":2}"],
            _ => ["{\"label\":1}", "null", "{\"label\":2}", "{\"label\":0}", "{\"label\":1}"],
        };
        File.WriteAllText(dir.File("f.jsonl"), string.Join("\n", lines) + "\n");
        string filters = kind == "missing" ? dir.File("none.jsonl") : dir.File("f.jsonl");
        var args = new List<string> { "build", "--index", dir.File("idx"), "--vectors", vectors, "--calibration-filters", filters };
        if (kind == "same-name")
        {
            Directory.CreateDirectory(dir.File("sub"));
            File.Copy(dir.File("f.jsonl"), dir.File("sub/f.jsonl"));
            args.AddRange(["--calibration-filters", dir.File("sub/f.jsonl")]);
        }
        if (kind != "no-queries") args.AddRange(["--calibration-queries", queries]);
        if (kind != "no-attributes") args.AddRange(["--attributes", dir.File("a.jsonl")]);
        var (exit, _, err) = await CliRunner.RunAsync([.. args]);
        CliRunner.AssertOneErrorLine(exit, err, expected.Replace("DIR", dir.Path, StringComparison.Ordinal));
        Assert.False(Directory.Exists(dir.File("idx/versions")), "a rejected build wrote a version");
    }

    /// <summary>Each command that takes a store, given a file where a folder of indexes belongs.</summary>
    [Theory]
    [InlineData("build")]
    [InlineData("query")]
    [InlineData("bench")]
    [InlineData("inspect")]
    [InlineData("gc")]
    public async Task AStoreThatIsAFileIsOneLineNamingTheFlag(string command)
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("v.fvecs", TempDir.Random(20, 4, 2));
        File.WriteAllText(dir.File("gt.ivecs"), "");
        var store = "dir:" + vectors;
        string[] args = command switch
        {
            "build" or "query" => [command, "--store", store, "--index", "a", "--vectors", vectors],
            "bench" => [command, "--store", store, "--index", "a", "--queries", vectors, "--ground-truth", dir.File("gt.ivecs")],
            _ => [command, "--store", store, "--index", "a"],
        };
        var (exit, _, err) = await CliRunner.RunAsync(args);
        CliRunner.AssertOneErrorLine(exit, err, $"--store {store} is a file, not a folder of indexes");
    }

    /// <summary>A folder path that runs through a file (FILE/sub), for the index or the store: one line naming the flag and the file.</summary>
    [Theory]
    [InlineData("build", "--index")]
    [InlineData("query", "--index")]
    [InlineData("build", "--store")]
    [InlineData("inspect", "--store")]
    public async Task AFolderUnderAFileIsOneLineNamingTheFlag(string command, string flag)
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("v.fvecs", TempDir.Random(20, 4, 2));
        var under = Path.Combine(vectors, "sub");
        var location = flag == "--index" ? new[] { "--index", under } : ["--store", "dir:" + under, "--index", "a"];
        string[] args = command == "inspect" ? [command, .. location] : [command, .. location, "--vectors", vectors];
        var (exit, _, err) = await CliRunner.RunAsync(args);
        CliRunner.AssertOneErrorLine(exit, err, flag == "--index"
            ? $"--index {under}: '{vectors}' is a file, not a folder"
            : $"--store dir:{under}: '{vectors}' is a file, not a folder");
    }

    /// <summary>
    /// An output folder (--out; serve's --log-dir: ServeStoreTests) that is a file, or lies under one: one line naming the flag, before any work (bench's sweep
    /// once ran to the end and then failed with "The file … already exists.").
    /// </summary>
    [Theory]
    [InlineData("dataset generate", false)]
    [InlineData("dataset generate", true)]
    [InlineData("dataset fashion-mnist", false)]
    [InlineData("bench", false)]
    [InlineData("bench", true)]
    [InlineData("bench-builds", false)]
    public async Task AnOutputFolderThatCannotBeOneIsOneLineNamingTheFlag(string command, bool underTheFile)
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("v.fvecs", TempDir.Random(200, 4, 2));
        Assert.Equal(0, (await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--no-calibration")).Exit);
        File.WriteAllBytes(dir.File("gt.ivecs"), [.. Enumerable.Range(0, 200).SelectMany(i => BitConverter.GetBytes(1).Concat(BitConverter.GetBytes(i)))]);
        var file = dir.File("taken");
        File.WriteAllText(file, "");
        var output = underTheFile ? Path.Combine(file, "sub") : file;
        const string flag = "--out";
        // fashion-mnist reads its source from a folder holding the four IDX files; only their presence is checked before --out.
        Directory.CreateDirectory(dir.File("fm"));
        foreach (var name in new[] { "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz" })
            File.WriteAllText(Path.Combine(dir.File("fm"), name), "");
        string[] args = command switch
        {
            "dataset generate" => ["dataset", "generate", "--n", "50", "--dim", "4", "--seed", "1", "--queries", "5", "--gt-k", "5", "--out", output],
            "dataset fashion-mnist" => ["dataset", "fashion-mnist", "--source", dir.File("fm"), "--out", output],
            "bench" => ["bench", "--index", dir.File("idx"), "--queries", vectors, "--ground-truth", dir.File("gt.ivecs"), "--k", "1", "--runs", "1", "--out", output],
            _ => ["bench-builds", "--vectors", vectors, "--store", "azure:UseDevelopmentStorage=true", "--out", output],
        };
        var (exit, _, err) = await CliRunner.RunAsync(args).WaitAsync(TimeSpan.FromMinutes(2));
        CliRunner.AssertOneErrorLine(exit, err, underTheFile
            ? $"{flag} {output}: '{file}' is a file, not a folder"
            : $"{flag} {output} is a file, not a folder");
    }

    /// <summary>bench-writes names the one flag that is out of range (it once listed six flags for any of them).</summary>
    [Theory]
    [InlineData("--rate", "0")]
    [InlineData("--timeout", "-1")]
    [InlineData("--tail", "0")]
    public async Task ABenchWritesCountBelowOneIsOneLineNamingItsFlag(string flag, string value)
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("v.fvecs", TempDir.Random(20, 4, 2));
        var (exit, _, err) = await CliRunner.RunAsync("bench-writes", "--endpoint", $"http://127.0.0.1:{ClosedPort()}", "--store", "dir:" + dir.Path, "--index", "a",
            "--base", vectors, "--pool", vectors, "--queries", vectors, flag, value);
        CliRunner.AssertOneErrorLine(exit, err, $"{flag} must be ≥ 1, got {value}");
    }

    /// <summary>The Azure SDK reports an unreachable account as an AggregateException of one failure per try.</summary>
    [Fact]
    public void AnUnreachableAzureStoreIsOneLineNamingTheStoreWithoutItsKey()
    {
        var store = "azure:DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=c2VjcmV0LWtleQ==;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1";
        var parse = Program.BuildRoot().Parse(["inspect", "--store", store, "--index", "a"]);
        var refused = new HttpRequestException("Connection refused (127.0.0.1:9)", new SocketException((int)SocketError.ConnectionRefused));
        var failure = new AggregateException("Retry failed after 6 tries. (Connection refused (127.0.0.1:9)) (Connection refused (127.0.0.1:9))",
            new RequestFailedException("Connection refused (127.0.0.1:9)", refused), new RequestFailedException("Connection refused (127.0.0.1:9)", refused));
        Assert.Equal("--store azure:DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=***;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1: "
                     + "cannot connect: Connection refused (127.0.0.1:9)", CliErrors.Describe(failure, parse));
    }

    /// <summary>The same end to end: an account whose endpoint refuses connections (slow: the retries run out first).</summary>
    [Fact]
    public async Task AnUnreachableAzureStoreEndToEndIsOneLine()
    {
        int port = ClosedPort();
        var store = $"azure:DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=c2VjcmV0LWtleQ==;BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1";
        var (exit, _, err) = await CliRunner.RunAsync("inspect", "--store", store, "--index", "a").WaitAsync(TimeSpan.FromMinutes(3));
        CliRunner.AssertOneErrorLine(exit, err, $"--store azure:DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=***;BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1: "
                                      + $"cannot connect: Connection refused (127.0.0.1:{port})");
    }

    [Fact]
    public void AnAzureRefusalIsOneLineWithItsStatus()
    {
        var parse = Program.BuildRoot().Parse(["gc", "--store", "azure:https://acct.blob.core.windows.net?sv=2024&sig=abc", "--index", "a"]);
        var refused = new RequestFailedException(403, "Server failed to authenticate the request.\nRequestId:1\nTime:now", "AuthenticationFailed", null);
        Assert.Equal("--store azure:https://acct.blob.core.windows.net?***: Azure Storage answered 403 AuthenticationFailed: Server failed to authenticate the request.",
            CliErrors.Describe(refused, parse));
    }

    [Fact]
    public async Task ServeOnAPortInUseIsOneLine()
    {
        using var dir = new TempDir();
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        int port = ((IPEndPoint)taken.LocalEndpoint).Port;
        var (exit, _, err) = await CliRunner.RunAsync("serve", "--store", "dir:" + dir.Path, "--port", port.ToString(), "--log-dir", dir.File("logs"))
            .WaitAsync(TimeSpan.FromSeconds(60)); // a serve that started would run until Ctrl+C
        CliRunner.AssertOneErrorLine(exit, err, $"--port {port}: 127.0.0.1:{port} is already in use (another squash serve?); choose a free port with --port");
    }

    /// <summary>A bug is one line too: its message and type, and the stack only when SQUASH_DEBUG asks for it.</summary>
    [Fact]
    public void AnUnexpectedExceptionIsOneLineWithItsTypeAndTheStackOnlyUnderSquashDebug()
    {
        var old = Environment.GetEnvironmentVariable(CliErrors.DebugVariable);
        var oldErr = Console.Error;
        try
        {
            var bug = new NullReferenceException("Object reference not set to an instance of an object.");
            Environment.SetEnvironmentVariable(CliErrors.DebugVariable, null);
            var quiet = new StringWriter();
            Console.SetError(quiet);
            Assert.Equal(1, CliErrors.Report(bug));
            CliRunner.AssertOneErrorLine(1, quiet.ToString(), "Object reference not set to an instance of an object. (NullReferenceException; run with SQUASH_DEBUG=1 for details)");

            Environment.SetEnvironmentVariable(CliErrors.DebugVariable, "1");
            var loud = new StringWriter();
            Console.SetError(loud);
            try { throw new InvalidOperationException("state is broken; AccountKey=c2VjcmV0"); }
            catch (Exception e) { Assert.Equal(1, CliErrors.Report(e)); }
            var lines = loud.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal("error: state is broken; AccountKey=*** (InvalidOperationException)", lines[0].TrimEnd('\r'));
            Assert.Contains(lines, l => l.TrimStart().StartsWith("at ", StringComparison.Ordinal));
            Assert.DoesNotContain("c2VjcmV0", loud.ToString());
        }
        finally
        {
            Console.SetError(oldErr);
            Environment.SetEnvironmentVariable(CliErrors.DebugVariable, old);
        }
    }

    [Theory]
    [InlineData(new[] { "query", "--vectors", "q.fvecs" }, "Option '--index' is required (squash query --help lists the options)")]
    [InlineData(new[] { "query", "--index", "a", "--vectors", "q.fvecs", "--k", "many" }, "--k: 'many' is not an integer (squash query --help lists the options)")]
    [InlineData(new string[0], "no command given (squash --help lists the commands)")]
    public async Task ParseErrorsAreOneLine(string[] args, string expected)
    {
        var (exit, output, err) = await CliRunner.RunAsync(args);
        CliRunner.AssertOneErrorLine(exit, err, expected);
        Assert.Equal("", output);
    }

    [Fact]
    public async Task HelpIsStillHelp()
    {
        var (exit, output, _) = await CliRunner.RunAsync("query", "--help");
        Assert.Equal(0, exit);
        Assert.Contains("--endpoint", output);
    }
}
