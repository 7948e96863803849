using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Azure.Storage.Blobs;
using Azure.Storage.Queues;
using Squash.LocalHost;
using Squash.Storage.Builds;
using Squash.Testing;

namespace Squash.Cli.Tests;

/// <summary>
/// The local function host over a fresh Azurite container, as <c>squash serve --store azure:…</c> runs it: the function
/// app as processes, and the builder pool taking the build stages from the Azurite queues. It holds the stage queues
/// against other test processes while the tests that use it run (<see cref="BuildQueueLock"/>).
/// </summary>
public sealed class QueueBuildHost : IAsyncLifetime
{
    private BuildQueueLock? _queues;

    public LocalFunctionHost Host { get; private set; } = null!;
    public string Container { get; } = $"cli-builds-{Guid.NewGuid():N}"[..32];
    public string Store => "azure:" + AzuriteTestStore.ConnectionString;
    public string Endpoint => Host.BaseAddress.ToString().TrimEnd('/');

    public async Task InitializeAsync()
    {
        _queues = new BuildQueueLock();
        // Messages another run left behind would name builds this container does not have.
        foreach (var stage in BuildStages.All)
            foreach (var name in new[] { BuildStages.QueueName(stage), BuildStages.QueueName(stage) + "-poison" })
            {
                var queue = new QueueClient(AzuriteTestStore.ConnectionString, name, StorageBuildQueues.NewOptions());
                await queue.CreateIfNotExistsAsync();
                await queue.ClearMessagesAsync();
            }
        Host = new LocalFunctionHost(new LocalHostOptions
        {
            Store = Store, Container = Container, Port = FreePorts.Next(),
            ProcessorPools = 1, MaxInstancesPerPool = 1, MaxBuilderInstances = 2, QueueMaxPollingInterval = TimeSpan.FromMilliseconds(200),
            Log = _ => { },
        });
        await Host.StartAsync();
    }

    public async Task DisposeAsync()
    {
        await Host.DisposeAsync();
        _queues?.Dispose();
    }
}

/// <summary>
/// <c>squash build --endpoint</c> and <c>squash builds</c> through the real path: files uploaded into Azurite, the build
/// submitted to the local host, run by its builder pool from the Azurite queues, and queried through the function tree.
/// </summary>
public sealed class QueueBuildCommandTests(QueueBuildHost service) : IClassFixture<QueueBuildHost>
{
    private const int Count = 3000, Dims = 16;
    /// <summary>A command that outlives this has hung (the builds here take seconds).</summary>
    private static readonly TimeSpan Deadline = TimeSpan.FromMinutes(4);

    private static Task<(int Exit, string Out, string Err)> Run(params string[] args) => CliRunner.RunAsync(args).WaitAsync(Deadline);

    private string[] Endpoint(params string[] args) => [.. args, "--endpoint", service.Endpoint];

    private string[] Upload(params string[] args) => [.. args, "--endpoint", service.Endpoint, "--store", service.Store, "--container", service.Container];

    private static string BlobFor(string index, string path) =>
        $"{index}/uploads/{Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path)))[..32]}/{Path.GetFileName(path)}";

    /// <summary>(row, distance) of every answer in <c>query --json</c> output, query by query.</summary>
    /// <summary>Each answer's results; an answer the endpoint marks incomplete (a branch failed) fails here, with its body.</summary>
    private static List<(long Row, float Distance)[]> Answers(string json) =>
        json.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line =>
            {
                var root = JsonDocument.Parse(line).RootElement;
                if (root.TryGetProperty("complete", out var complete) && !complete.GetBoolean()) Assert.Fail($"an incomplete answer: {line}");
                return root.GetProperty("results").EnumerateArray()
                    .Select(r => (r.GetProperty("row").GetInt64(), r.GetProperty("distance").GetSingle())).ToArray();
            })
            .ToList();

    [Fact]
    public async Task AQueueBuildOfAnUploadedFileAnswersAsTheInProcessBuildOfTheSameFileAndSeed()
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(Count, Dims, 11));
        var queries = dir.Fvecs("q.fvecs", TempDir.Random(25, Dims, 12));
        var attributes = dir.File("labels.csv");
        File.WriteAllLines(attributes, ["label", .. Enumerable.Range(0, Count).Select(i => (i % 5).ToString())]);
        // Calibrated on the user's own queries and one family of their filters, uploaded beside the vectors.
        var calibration = dir.Fvecs("cal.fvecs", TempDir.Random(40, Dims, 13));
        var filters = dir.File("labels.jsonl");
        File.WriteAllLines(filters, Enumerable.Range(0, 40).Select(q => q % 5 == 0 ? "null" : $"{{\"label\":{q % 5}}}"));
        string[] options = ["--partitions", "6", "--seed", "3", "--attributes", attributes, "--schema", "label:integer",
            "--calibration-queries", calibration, "--calibration-filters", filters];

        var (exit, output, err) = await Run(Upload(["build", "--index", "same", "--vectors", vectors, "--chunk-rows", "1000", .. options]));
        Assert.True(exit == 0, err);
        var built = Regex.Match(output, @"^built same version (v\S+) \(current\) through the queue: 3,000 × 16 vectors, 6 partitions, build (b\S+): ");
        Assert.True(built.Success, output);
        var (version, buildId) = (built.Groups[1].Value, built.Groups[2].Value);
        // The file went into the service's store under its content's name, as a whole block blob.
        var blob = BlobFor("same", vectors);
        Assert.Contains($"uploaded {vectors} as blob {blob}: ", err);
        var stored = await new BlobContainerClient(AzuriteTestStore.ConnectionString, service.Container).GetBlobClient(blob).DownloadContentAsync();
        Assert.Equal(File.ReadAllBytes(vectors), stored.Value.Content.ToArray());

        Assert.Contains($"uploaded {attributes} as blob {BlobFor("same", attributes)}: ", err);
        Assert.Contains($"uploaded {calibration} as blob {BlobFor("same", calibration)}: ", err);
        Assert.Contains($"uploaded {filters} as blob {BlobFor("same", filters)}: ", err);

        var (inExit, _, inErr) = await Run(["build", "--index", dir.File("inproc"), "--vectors", vectors, .. options]);
        Assert.True(inExit == 0, inErr);
        // The same answers: at the default recall target, with the sparsest plan (one partition's nearest rows: answers that
        // depend on the partitions and codes, not only on the data), and filtered on the uploaded attributes.
        foreach (var (filter, plan) in new[] { ("{}", new string[0]), ("{}", ["--cf", "1", "--r", "1"]), ("""{"label":{"$in":[1,2]}}""", []) })
        {
            var (qExit, viaQueue, qErr) = await Run(Endpoint(["query", "--index", "same", "--vectors", queries, "--json", "--filter", filter, .. plan]));
            Assert.True(qExit == 0, qErr);
            var (lExit, inProcess, lErr) = await Run(["query", "--index", dir.File("inproc"), "--vectors", queries, "--json", "--filter", filter, .. plan]);
            Assert.True(lExit == 0, lErr);
            var (a, b) = (Answers(viaQueue), Answers(inProcess));
            Assert.Equal(25, a.Count);
            for (int q = 0; q < a.Count; q++)
            {
                Assert.Equal(10, a[q].Length);
                if (filter != "{}") Assert.All(a[q], x => Assert.True(x.Row % 5 is 1 or 2, $"row {x.Row} does not match {filter}"));
                Assert.Equal(b[q].Select(x => x.Row), a[q].Select(x => x.Row));
                for (int j = 0; j < a[q].Length; j++) Assert.Equal(b[q][j].Distance, a[q][j].Distance, 1e-5f);
            }
        }

        // builds show / list report the same build; cancelling a finished build is refused by the service.
        var (sExit, shown, sErr) = await Run(Endpoint("builds", "show", buildId, "--index", "same", "--json"));
        Assert.True(sExit == 0, sErr);
        var view = JsonDocument.Parse(shown).RootElement;
        Assert.Equal("succeeded", view.GetProperty("status").GetString());
        Assert.Equal(version, view.GetProperty("version").GetString());
        Assert.True(view.GetProperty("current").GetBoolean());
        Assert.Equal(blob, view.GetProperty("source").GetProperty("vectors").GetString());
        Assert.Equal(BlobFor("same", calibration), view.GetProperty("source").GetProperty("calibrationQueries").GetString());
        Assert.Equal([BlobFor("same", filters)], view.GetProperty("source").GetProperty("calibrationFilters").EnumerateArray().Select(x => x.GetString()));
        var (tExit, table, tErr) = await Run(Endpoint("builds", "show", buildId, "--index", "same"));
        Assert.True(tExit == 0, tErr);
        Assert.Matches($@"(?m)^version\s+{version} \(current\)\s*$", table);
        var (listExit, list, listErr) = await Run(Endpoint("builds", "list", "--index", "same", "--json"));
        Assert.True(listExit == 0, listErr);
        Assert.Equal(new[] { buildId }, JsonDocument.Parse(list).RootElement.GetProperty("builds").EnumerateArray().Select(x => x.GetProperty("buildId").GetString()!));
        var (cExit, _, cErr) = await Run(Endpoint("builds", "cancel", buildId, "--index", "same"));
        CliRunner.AssertOneErrorLine(cExit, cErr, $"The build cannot be cancelled (409): build {buildId} has already succeeded");

        // A 400 names the flag that set the field.
        var (pExit, _, pErr) = await Run(Endpoint("build", "--index", "same", "--source", blob, "--partitions", "5000"));
        CliRunner.AssertOneErrorLine(pExit, pErr, "--partitions: (5000) cannot exceed the number of vectors (3,000)");
        var (mExit, _, mErr) = await Run(Endpoint("build", "--index", "same", "--source", "same/uploads/nothing.fvecs"));
        CliRunner.AssertOneErrorLine(mExit, mErr, "--source: no blob named 'same/uploads/nothing.fvecs' and no blobs under 'same/uploads/nothing.fvecs/' in the store");
        var (cqExit, _, cqErr) = await Run(Endpoint("build", "--index", "same", "--source", blob, "--calibration-queries", "same/uploads/none.fvecs"));
        CliRunner.AssertOneErrorLine(cqExit, cqErr, "--calibration-queries: no blob named 'same/uploads/none.fvecs' in the store");
        var (fExit, _, fErr) = await Run(Endpoint("build", "--index", "same", "--source", blob, "--attributes", BlobFor("same", attributes),
            "--calibration-queries", BlobFor("same", calibration), "--calibration-filters", BlobFor("same", filters), "--calibration-filters", "same/uploads/none.jsonl"));
        CliRunner.AssertOneErrorLine(fExit, fErr, "--calibration-filters (the second one): no blob named 'same/uploads/none.jsonl' in the store");
    }

    [Fact]
    public async Task AnUnknownBuildIsA404Line()
    {
        var (exit, _, err) = await Run(Endpoint("builds", "show", "b20261203-121530123-000000000000", "--index", "same"));
        CliRunner.AssertOneErrorLine(exit, err, "Build not found (404): index 'same' has no build 'b20261203-121530123-000000000000'");
        (exit, _, err) = await Run(Endpoint("builds", "cancel", "not-an-id", "--index", "same"));
        CliRunner.AssertOneErrorLine(exit, err, "ID: 'not-an-id' is not a build id (such as b20261203-121530123-3f9a1c0b7e2d)");
    }

    [Fact]
    public async Task ABuildThatFailsExitsWithTheJobsErrorNamingTheTask()
    {
        using var dir = new TempDir();
        var rows = TempDir.Random(500, 6, 5).ToArray();
        rows[321][4] = float.NaN;
        var vectors = dir.Fvecs("bad.fvecs", rows);
        var (exit, output, err) = await Run(Upload("build", "--index", "nan", "--vectors", vectors, "--partitions", "2"));
        Assert.True(exit == 1, $"exit {exit}: {output}{err}");
        var last = err.Split('\n', StringSplitOptions.RemoveEmptyEntries)[^1].TrimEnd('\r');
        var id = Regex.Match(err, @"submitted build (b\S+) ").Groups[1].Value;
        Assert.Equal($"error: build {id} failed in train[0]: bad-source: {BlobFor("nan", vectors)}: NaN at row 321, column 4", last);
        Assert.Equal("", output);
    }

    /// <summary>
    /// Ids the write API could never name fail a queue build in its train task, before anything is published, with the
    /// message `squash build` gives for the same file (the repeat spans chunks that different assign tasks read).
    /// </summary>
    [Theory]
    [InlineData("duplicate", ": id 'r10' is given to rows 10 and 250; an id names one vector (an upsert or delete of it must find one row)")]
    [InlineData("long", " row 200: id is 300 characters; at most 256 (the write API could not name it)")]
    [InlineData("control", " row 120: id must not contain control characters")]
    public async Task IdsTheWriteApiCannotNameFailTheQueueBuildAsTheyFailTheInProcessBuild(string kind, string expected)
    {
        using var dir = new TempDir();
        const int n = 300;
        var vectors = dir.Fvecs("v.fvecs", TempDir.Random(n, 4, 41));
        string Id(int i) => kind switch
        {
            "duplicate" => i == 250 ? "r10" : $"r{i}",
            "long" => i == 200 ? new string('x', 300) : $"r{i}",
            _ => i == 120 ? "r\\u0001" : $"r{i}",
        };
        var attributes = dir.File("ids.jsonl");
        await File.WriteAllLinesAsync(attributes, Enumerable.Range(0, n).Select(i => $"{{\"id\":\"{Id(i)}\",\"attributes\":{{\"n\":{i}}}}}"));

        var (local, _, localErr) = await Run("build", "--index", dir.File("local"), "--vectors", vectors, "--attributes", attributes, "--no-calibration");
        CliRunner.AssertOneErrorLine(local, localErr, $"--attributes: '{attributes}'{expected}");

        string index = "ids-" + kind;
        var (exit, output, err) = await Run(Upload("build", "--index", index, "--vectors", vectors, "--attributes", attributes,
            "--partitions", "2", "--chunk-rows", "50", "--no-calibration"));
        Assert.True(exit == 1, $"exit {exit}: {output}{err}");
        var id = Regex.Match(err, @"submitted build (b\S+) ").Groups[1].Value;
        var last = err.Split('\n', StringSplitOptions.RemoveEmptyEntries)[^1].TrimEnd('\r');
        Assert.Equal($"error: build {id} failed in train[0]: bad-input: the attributes blob '{BlobFor(index, attributes)}'{expected}", last);
        var container = new BlobContainerClient(AzuriteTestStore.ConnectionString, service.Container);
        Assert.False((await container.GetBlobClient($"{index}/current").ExistsAsync()).Value, "a version was published");
    }

    [Fact]
    public async Task CtrlCStopsFollowingButNotTheBuildAndARerunWithTheSameKeyFollowsIt()
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(Count, Dims, 21));
        string[] args = Upload("build", "--index", "ctrlc", "--vectors", vectors, "--partitions", "4", "--idempotency-key", "ctrlc-" + Guid.NewGuid().ToString("N"));

        var (exit, _, err) = await CliRunner.RunAsync(args, interruptAfter: "following it").WaitAsync(Deadline);
        Assert.True(exit == 130, $"exit {exit}: {err}");
        var id = Regex.Match(err, @"submitted build (b\S+) ").Groups[1].Value;
        var last = err.Split('\n', StringSplitOptions.RemoveEmptyEntries)[^1].TrimEnd('\r');
        Assert.Equal($"error: stopped following build {id}, which continues on the service; follow it with: squash builds show {id} --endpoint {service.Endpoint} --index ctrlc; " +
                     $"cancel it with: squash builds cancel {id} --endpoint {service.Endpoint} --index ctrlc", last);

        // The same command again: the file is already there, the key returns the same job, and it is followed to its end.
        var (again, output, againErr) = await Run(args);
        Assert.True(again == 0, againErr);
        Assert.Contains($"is already in the store as blob {BlobFor("ctrlc", vectors)} (same SHA-256): not uploaded again", againErr);
        Assert.Contains($"submitted build {id} ", againErr);
        Assert.Matches($@"^built ctrlc version v\S+ \(current\) through the queue: 3,000 × 16 vectors, 4 partitions, build {id}: ", output);
        var (listExit, list, listErr) = await Run(Endpoint("builds", "list", "--index", "ctrlc", "--json"));
        Assert.True(listExit == 0, listErr);
        Assert.Equal(new[] { id }, JsonDocument.Parse(list).RootElement.GetProperty("builds").EnumerateArray().Select(x => x.GetProperty("buildId").GetString()!));
    }

    /// <summary>
    /// One build's job record damaged: builds list still prints the index's other build, and the damaged one as a row of
    /// its own in its place (status "damaged", the problem naming the record); --json carries it under "damaged". Before,
    /// the whole list was the 500 "Build record damaged".
    /// </summary>
    [Fact]
    public async Task BuildsListShowsADamagedRecordBesideTheOtherBuilds()
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(200, 4, 41));
        var ids = new List<string>();
        foreach (var seed in new[] { "1", "2" })
        {
            var (exit, output, err) = await Run(Upload("build", "--index", "damaged", "--vectors", vectors, "--partitions", "2", "--seed", seed, "--no-wait"));
            Assert.True(exit == 0, err);
            ids.Add(output.Trim());
        }
        var record = $"damaged/builds/{ids[0]}/job.json";
        var container = new BlobContainerClient(AzuriteTestStore.ConnectionString, service.Container);
        await container.GetBlobClient(record).UploadAsync(BinaryData.FromString("not json"), overwrite: true);

        var (listExit, table, listErr) = await Run(Endpoint("builds", "list", "--index", "damaged"));
        Assert.True(listExit == 0, listErr);
        var rows = table.Split('\n').Where(l => l.Contains(ids[0], StringComparison.Ordinal) || l.Contains(ids[1], StringComparison.Ordinal)).ToArray();
        Assert.Equal(2, rows.Length);
        Assert.Contains(ids[1], rows[0]);
        Assert.Contains(ids[0], rows[1]);
        Assert.Matches($@"{ids[0]}\W+damaged\W.*build record '{Regex.Escape(record)}' is not valid", rows[1]);

        var (jsonExit, json, jsonErr) = await Run(Endpoint("builds", "list", "--index", "damaged", "--json"));
        Assert.True(jsonExit == 0, jsonErr);
        var answer = JsonDocument.Parse(json).RootElement;
        Assert.Equal([ids[1]], answer.GetProperty("builds").EnumerateArray().Select(x => x.GetProperty("buildId").GetString()!).ToArray());
        var damaged = Assert.Single(answer.GetProperty("damaged").EnumerateArray().ToArray());
        Assert.Equal((ids[0], record), (damaged.GetProperty("buildId").GetString(), damaged.GetProperty("record").GetString()));
    }

    [Fact]
    public async Task NoWaitPrintsTheBuildIdAndBuildsCancelStopsIt()
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(Count, Dims, 31));
        var (exit, output, err) = await Run(Upload("build", "--index", "nowait", "--vectors", vectors, "--no-wait"));
        Assert.True(exit == 0, err);
        var id = output.Trim();
        Assert.Matches("^b[0-9]{8}-[0-9]{9}-[0-9a-f]{12}$", id);
        var (cExit, cancelled, cErr) = await Run(Endpoint("builds", "cancel", id, "--index", "nowait", "--json"));
        // The build may have finished first on a fast machine; then the service refuses, and says so.
        if (cExit == 0)
            Assert.Equal("cancelled", JsonDocument.Parse(cancelled).RootElement.GetProperty("status").GetString());
        else
            Assert.Matches($"^error: The build cannot be cancelled \\(409\\): build {id} (has already succeeded|is publishing its version; it can no longer be cancelled)$", cErr.Trim());
    }
}

/// <summary>What a build through the queue refuses before it sends anything, and the endpoint flags' errors.</summary>
public sealed class QueueBuildFlagTests
{
    [Theory]
    [InlineData(new[] { "--vectors", "V" }, "--vectors with --endpoint needs --store: the service's blob store (azure:CONNECTION_STRING or azure:https://ACCOUNT.blob.core.windows.net) to upload the file into; or name a blob already there with --source")]
    [InlineData(new[] { "--vectors", "V", "--store", "dir:/tmp" }, "--store must be the service's azure:… store to upload --vectors into: builds through the queue read their source from it (a dir: store has no queue)")]
    [InlineData(new[] { "--source", "a.fvecs", "--store", "dir:/tmp" }, "--store is only used to upload --vectors: with --source the service reads the blob from its own store")]
    [InlineData(new string[0], "--endpoint needs --vectors FILE (uploaded into --store) or --source BLOB (a blob already in the service's store)")]
    [InlineData(new[] { "--vectors", "V", "--source", "a.fvecs" }, "--vectors and --source cannot be combined: upload a file, or name a blob already in the store")]
    [InlineData(new[] { "--source", "a.fvecs", "--calibration-queries", "V", "--no-calibration" }, "--calibration-queries cannot be combined with --no-calibration")]
    [InlineData(new[] { "--source", "a.fvecs", "--calibration-filters", "V" }, "--calibration-filters needs --calibration-queries (line i is the filter of query i)")]
    [InlineData(new[] { "--source", "a.fvecs", "--calibration-queries", "q.fvecs", "--calibration-filters", "f.jsonl" }, "--calibration-filters needs --attributes: the filters name attributes")]
    [InlineData(new[] { "--vectors", "V", "--calibration-queries", "missing.fvecs" }, "--calibration-queries: file 'missing.fvecs' does not exist")]
    [InlineData(new[] { "--source", "a.fvecs", "--attributes", "a.jsonl", "--calibration-queries", "q.fvecs", "--calibration-filters", "x/f.jsonl", "--calibration-filters", "y/f.jsonl" },
        "--calibration-filters: 'x/f.jsonl' and 'y/f.jsonl' have the same file name, which names a family: rename one")]
    [InlineData(new[] { "--vectors", "V", "--attributes", "V", "--calibration-queries", "V", "--calibration-filters", "missing.jsonl" }, "--calibration-filters: file 'missing.jsonl' does not exist")]
    [InlineData(new[] { "--vectors", "V", "--attributes", "V", "--calibration-queries", "V", "--calibration-filters", "F" }, "--calibration-filters: 'F' has 3 filters; --calibration-queries has 10 queries (one filter per query, null for none)")]
    [InlineData(new[] { "--source", "a.fvecs", "--schema", "price:number" }, "--schema needs --attributes")]
    [InlineData(new[] { "--source", "a.fvecs", "--chunk-rows", "-1" }, "--chunk-rows must be ≥ 0 (0 picks about 32 MB of vectors per task), got -1")]
    [InlineData(new[] { "--source", "a.fvecs", "--max-bits", "9" }, "--max-bits must be between 1 and 8, got 9")]
    [InlineData(new[] { "--source", "a.fvecs", "--idempotency-key", "two words" }, "--idempotency-key must be 1 to 200 visible ASCII characters")]
    [InlineData(new[] { "--source", "a.fvecs", "--function-key", "a\tb" }, "--function-key must be visible ASCII characters (a function key has no spaces or control characters)")]
    public async Task ABadBuildThroughTheQueueIsOneLineBeforeAnythingIsSent(string[] flags, string expected)
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(10, 4, 1));
        var filters = dir.File("three.jsonl");
        File.WriteAllLines(filters, ["null", "", """{"label":1}""", "null"]);
        // Nothing listens there: a check that let the command through would fail with "cannot connect" instead.
        string[] args = ["build", "--endpoint", $"http://127.0.0.1:{FreePorts.Next()}", "--index", "x", .. flags.Select(a => a switch { "V" => vectors, "F" => filters, _ => a })];
        var (exit, _, err) = await CliRunner.RunAsync(args);
        CliRunner.AssertOneErrorLine(exit, err, expected.Replace("'F'", $"'{filters}'"));
    }

    [Fact]
    public async Task AnIndexNameTheServiceCannotTakeIsRefusedBeforeTheUpload()
    {
        var (exit, _, err) = await CliRunner.RunAsync("build", "--endpoint", "http://127.0.0.1:9", "--index", "My_Index", "--source", "a.fvecs");
        CliRunner.AssertOneErrorLine(exit, err, "--index: with --endpoint it names an index of the service (lower-case letters, digits and '-', at most 63 characters), got 'My_Index'");
    }

    [Theory]
    [InlineData("--source")]
    [InlineData("--chunk-rows")]
    [InlineData("--idempotency-key")]
    [InlineData("--function-key")]
    public async Task QueueFlagsWithoutAnEndpointAreRefused(string flag)
    {
        using var dir = new TempDir();
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(10, 4, 1));
        var (exit, _, err) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, flag, "5");
        CliRunner.AssertOneErrorLine(exit, err, $"{flag} is for a build through the queue: it needs --endpoint");
    }

    [Theory]
    [InlineData("build", "--source", "a.fvecs")]
    [InlineData("builds", "list")]
    [InlineData("builds", "show", "b20261203-121530123-3f9a1c0b7e2d")]
    public async Task AnUnreachableEndpointIsOneLineNamingTheFlag(params string[] command)
    {
        int port = FreePorts.Next();
        var endpoint = $"http://127.0.0.1:{port}";
        var (exit, _, err) = await CliRunner.RunAsync([.. command, "--endpoint", endpoint, "--index", "x"]);
        CliRunner.AssertOneErrorLine(exit, err, $"--endpoint {endpoint}: cannot connect: Connection refused (127.0.0.1:{port})");
    }

    [Fact]
    public void TheReproduceLineHidesAFunctionKey()
    {
        Assert.Equal("reproduce: squash bench --endpoint http://h --function-key '***' --index x",
            Commands.BenchCommand.ReproduceLine(["bench", "--endpoint", "http://h", "--function-key", "s3cret", "--index", "x"]));
        Assert.Equal("reproduce: squash bench '--function-key=***'", Commands.BenchCommand.ReproduceLine(["bench", "--function-key=s3cret"]));
    }
}

/// <summary>A service with function keys and a folder store: the key is sent when given, and builds are refused with 503.</summary>
public sealed class EndpointKeyTests
{
    [Fact]
    public async Task AKeyIsSentWhenGivenAndAServiceWithoutAQueueRefusesBuilds()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("store"));
        var queries = dir.Fvecs("q.fvecs", TempDir.Random(1, 4, 1));
        await using var host = new LocalFunctionHost(new LocalHostOptions
        {
            Store = "dir:" + dir.File("store"), Port = FreePorts.Next(), ProcessorPools = 1, MaxInstancesPerPool = 1,
            FunctionKeys = new Dictionary<string, string> { ["coordinator"] = "coordinator-key", ["p0"] = "pool-key" }, Log = _ => { },
        });
        await host.StartAsync();
        var endpoint = host.BaseAddress.ToString().TrimEnd('/');

        var (exit, _, err) = await CliRunner.RunAsync("builds", "list", "--endpoint", endpoint, "--index", "x");
        Assert.Equal("error: Function key required (401): function 'builds' of app 'coordinator' needs a key: send it in the x-functions-key header or the code query parameter " +
                     "(pass the key with --function-key or SQUASH_FUNCTION_KEY)", err.Trim());
        Assert.Equal(1, exit);
        (exit, _, err) = await CliRunner.RunAsync("builds", "list", "--endpoint", endpoint, "--index", "x", "--function-key", "coordinator-key");
        Assert.Equal((1, "error: Builds are not available (503): builds need a queue (serve with --store azure:...)"), (exit, err.Trim()));
        (exit, _, err) = await CliRunner.RunAsync("build", "--endpoint", endpoint, "--index", "x", "--source", "a.fvecs", "--function-key", "coordinator-key");
        Assert.Equal((1, "error: Builds are not available (503): builds need a queue (serve with --store azure:...)"), (exit, err.Trim()));

        // query --endpoint sends it too: without it the host refuses (401); with it the app answers (no such index: 404).
        (exit, _, err) = await CliRunner.RunAsync("query", "--endpoint", endpoint, "--index", "x", "--vectors", queries);
        Assert.True(exit == 1 && err.StartsWith("error: query 0: the endpoint answered 401:", StringComparison.Ordinal), err);
        (exit, _, err) = await CliRunner.RunAsync("query", "--endpoint", endpoint, "--index", "x", "--vectors", queries, "--function-key", "coordinator-key");
        Assert.True(exit == 1 && err.StartsWith("error: query 0: the endpoint answered 404:", StringComparison.Ordinal), err);
    }
}
