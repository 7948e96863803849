using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Squash.Cli.Datasets;

namespace Squash.Cli.Tests;

/// <summary>The in-process sweep: its summary lines and files, with and without the brute-force baseline.</summary>
public partial class BenchCommandTests
{
    [Fact]
    public async Task TheSweepReportsRecallAgainstTheBaselineAndSaysWhenTheBaselineIsSkipped()
    {
        using var dir = new TempDir();
        await GenerateAndBuild(dir, seed: 5);
        string[] sweep = ["bench", "--index", dir.File("idx"), "--queries", dir.File("data/query.fvecs"), "--ground-truth", dir.File("data/groundtruth.ivecs"),
            "--cf", "100", "--h", "100", "--r", "8", "--runs", "1"];

        // CF 100 visits every partition and R 8 re-ranks generously: recall against the exact ground truth is ~1, and
        // the brute-force baseline, exact by construction, must report recall 1.
        var (exit, output, err) = await CliRunner.RunAsync([.. sweep, "--brute-force-queries", "30", "--out", dir.File("with")]);
        Assert.True(exit == 0, err);
        var baseline = Baseline().Match(output);
        Assert.True(baseline.Success, output);
        Assert.True(double.Parse(baseline.Groups[1].Value, CultureInfo.InvariantCulture) > 0, output);
        Assert.Equal("1.0000", baseline.Groups[2].Value);
        Assert.Matches(@"recall@10 ≥ 0\.95: best \d+ QPS .* = [\d.]+× brute force", output);
        Assert.True(File.Exists(dir.File("with/bench.csv")) && File.Exists(dir.File("with/recall-qps.png")));

        var (sexit, skipped, serr) = await CliRunner.RunAsync([.. sweep, "--brute-force-queries", "0", "--out", dir.File("without")]);
        Assert.True(sexit == 0, serr);
        Assert.Contains("brute force: skipped (--brute-force-queries 0)", skipped);
        Assert.Matches(@"recall@10 ≥ 0\.95: best \d+ QPS", skipped);
        Assert.DoesNotContain("× brute force", skipped);
    }

    [Fact]
    public async Task ARecallSweepAtAnUncalibratedKSaysWhichKItsPlansWereCalibratedAt()
    {
        using var dir = new TempDir();
        await GenerateAndBuild(dir, seed: 7);
        string[] sweep = ["bench", "--index", dir.File("idx"), "--queries", dir.File("data/query.fvecs"), "--ground-truth", dir.File("data/groundtruth.ivecs"),
            "--recall", "0.95", "--runs", "1", "--brute-force-queries", "0"];
        const string note = "note: the calibration measured recall@5; with --k 3 the targets run the plans chosen for k = 5, so 'predicted' is recall@5 and recall@3 may fall outside the target's band";
        var (exit, _, err) = await CliRunner.RunAsync([.. sweep, "--k", "3", "--out", dir.File("k3")]);
        Assert.True(exit == 0, err);
        Assert.Contains(note, err);
        var (exit10, _, err10) = await CliRunner.RunAsync([.. sweep, "--out", dir.File("k10")]);
        Assert.True(exit10 == 0, err10);
        Assert.DoesNotContain("note: the calibration measured", err10);
        // k = 100 has its own frontier; k = 70 plans with it (the smallest calibrated K that reaches 70).
        var (exit100, _, err100) = await CliRunner.RunAsync([.. sweep, "--k", "100", "--out", dir.File("k100")]);
        Assert.True(exit100 == 0, err100);
        Assert.DoesNotContain("note: the calibration measured", err100);
        var (exit70, _, err70) = await CliRunner.RunAsync([.. sweep, "--k", "70", "--out", dir.File("k70")]);
        Assert.True(exit70 == 0, err70);
        Assert.Contains("note: the calibration measured recall@100; with --k 70 the targets run the plans chosen for k = 100, so 'predicted' is recall@100 and recall@70 may fall outside the target's band", err70);
    }

    [Fact]
    public async Task APartitionCapSweepScansAtMostTheCapAndNamesItInTheCsv()
    {
        using var dir = new TempDir();
        await GenerateAndBuild(dir, seed: 8);
        // CF 1000 plans all 4 partitions; a cap of 1 or 2 plans fewer (each partition holds far more than k rows).
        var (header, rows) = await SweepCsv(dir, "--cf", "1000", "--h", "100", "--r", "2", "--max-partitions", "none,1,2");
        string Cell(string[] row, string name) => row[Array.IndexOf(header, name)];
        double Partitions(string[] row) => double.Parse(Cell(row, "partitions"), CultureInfo.InvariantCulture);
        Assert.Equal(["", "1", "2"], rows.Select(r => Cell(r, "max_partitions")));
        // Scanned, not planned: a planned partition whose bound already exceeds the k-th distance is skipped.
        Assert.Equal(1.0, Partitions(rows[1]));
        Assert.InRange(Partitions(rows[2]), 1.0, 2.0);
        Assert.True(Partitions(rows[0]) > 2, $"uncapped, CF 1000 scans more than the cap of 2: {Partitions(rows[0])}");
        Assert.True(double.Parse(Cell(rows[1], "recall"), CultureInfo.InvariantCulture) <= double.Parse(Cell(rows[0], "recall"), CultureInfo.InvariantCulture),
            "one partition of four cannot find more neighbours than all four");
    }

    [Fact]
    public async Task TheSweepReportsTheCertifiedShareAndCertifiedAnswersAreExact()
    {
        using var dir = new TempDir();
        await GenerateAndBuild(dir, seed: 6);
        // Every partition planned and every candidate re-ranked: the bounds prove every answer, so all are certified,
        // and a certified answer equals the exact one (recall 1 against the exact ground truth).
        var (header, rows) = await SweepCsv(dir, "--cf", "1000", "--h", "100", "--r", "1000");
        double Column(string name) => double.Parse(rows[0][Array.IndexOf(header, name)], CultureInfo.InvariantCulture);
        Assert.Equal(1.0, Column("certified_share"));
        Assert.Equal(1.0, Column("recall"));
    }

    /// <summary>
    /// A ground truth that cannot score this index is refused before anything runs, naming the flag and the file: ids of
    /// rows the index does not have (another data set), fewer records than queries or fewer ids than k, a file of
    /// another kind. In process and --cold alike.
    /// </summary>
    [Fact]
    public async Task AGroundTruthThatDoesNotFitTheIndexIsOneLineNamingTheFlagAndFile()
    {
        using var dir = new TempDir();
        await GenerateAndBuild(dir, seed: 7);
        var truth = VectorFile.ReadIvecs(dir.File("data/groundtruth.ivecs"));
        int[][] With(int record, int position, int id)
        {
            var copy = truth.Select(r => r.ToArray()).ToArray();
            copy[record][position] = id;
            return copy;
        }
        var cases = new (string File, int[][]? Rows, string Expected)[]
        {
            ("beyond.ivecs", With(3, 5, 2000), "record 3 holds id 2000, not a row of the index (0 … 1,999; −1 pads a filtered record)"),
            ("negative.ivecs", With(0, 0, -2), "record 0 holds id -2, not a row of the index (0 … 1,999; −1 pads a filtered record)"),
            ("short.ivecs", truth.Take(29).ToArray(), "has 29 records for 30 queries"),
            ("narrow.ivecs", truth.Select(r => r.Take(5).ToArray()).ToArray(), "holds 5 ids per query, fewer than k = 10"),
            ("groundtruth.fvecs", null, "is not an .ivecs file (one record of int32 row ids per query)"),
        };
        foreach (var (file, rows, expected) in cases)
        {
            var path = dir.File(file);
            if (rows is null) File.Copy(dir.File("data/query.fvecs"), path);
            else VectorFile.WriteIvecs(path, rows);
            foreach (var mode in new[] { "in-process", "cold" })
            {
                string[] where = mode == "cold" ? ["--store", "dir:" + dir.Path, "--index", "idx", "--cold"] : ["--index", dir.File("idx")];
                var (exit, _, err) = await CliRunner.RunAsync(["bench", .. where, "--queries", dir.File("data/query.fvecs"), "--ground-truth", path,
                    "--runs", "1", "--brute-force-queries", "0", "--out", dir.File("out")]);
                CliRunner.AssertOneErrorLine(exit, err, $"--ground-truth: '{path}' {expected}");
            }
        }
        Assert.False(Directory.Exists(dir.File("out")));
    }

    /// <summary>
    /// Against an endpoint the index's info bounds the ids: its count while no write was ever acknowledged (a build's
    /// rows are 0 … count − 1); after writes only the sign, since ingest numbers new rows past the build's.
    /// </summary>
    [Theory]
    [InlineData(0, 3, "record 1 holds id 3, not a row of the index (0 … 2; −1 pads a filtered record)")]
    [InlineData(5, -2, "record 1 holds id -2, not a row of the index (≥ 0; −1 pads a filtered record)")]
    public async Task AgainstAnEndpointTheIndexInfoBoundsTheGroundTruthIds(long latestSequence, int badId, string expected)
    {
        using var dir = new TempDir();
        var queries = dir.Fvecs("q.fvecs", TempDir.Random(3, 4, 1));
        var truth = dir.File("gt.ivecs");
        VectorFile.WriteIvecs(truth, [[0, 1], [2, badId], [1, 0]]);
        using var endpoint = new FakeIndexInfo($"{{\"name\":\"x\",\"dimensions\":4,\"count\":3,\"latestSequence\":{latestSequence}}}");
        var (exit, _, err) = await CliRunner.RunAsync("bench", "--endpoint", endpoint.Url, "--index", "x", "--queries", queries, "--ground-truth", truth,
            "--k", "2", "--cold-samples", "0", "--out", dir.File("out")).WaitAsync(TimeSpan.FromSeconds(60));
        CliRunner.AssertOneErrorLine(exit, err, $"--ground-truth: '{truth}' {expected}");
        Assert.Equal(["GET /api/indexes/x"], endpoint.Requests);
    }

    /// <summary>An HTTP endpoint on a free loopback port that answers GET /api/indexes/x with the given info, and 500 otherwise.</summary>
    private sealed class FakeIndexInfo : IDisposable
    {
        private readonly HttpListener _listener = new();
        private readonly Task _loop;
        public List<string> Requests { get; } = [];
        public string Url { get; }

        public FakeIndexInfo(string info)
        {
            using (var probe = new TcpListener(IPAddress.Loopback, 0))
            {
                probe.Start();
                Url = $"http://127.0.0.1:{((IPEndPoint)probe.LocalEndpoint).Port}/";
            }
            _listener.Prefixes.Add(Url);
            _listener.Start();
            _loop = Task.Run(async () =>
            {
                while (_listener.IsListening)
                {
                    HttpListenerContext context;
                    try { context = await _listener.GetContextAsync(); }
                    catch (Exception e) when (e is HttpListenerException or ObjectDisposedException) { return; }
                    lock (Requests) Requests.Add($"{context.Request.HttpMethod} {context.Request.Url!.AbsolutePath}");
                    bool known = context.Request.HttpMethod == "GET" && context.Request.Url!.AbsolutePath == "/api/indexes/x";
                    context.Response.StatusCode = known ? 200 : 500;
                    context.Response.ContentType = "application/json";
                    var body = System.Text.Encoding.UTF8.GetBytes(known ? info : "{}");
                    await context.Response.OutputStream.WriteAsync(body);
                    context.Response.Close();
                }
            });
        }

        public void Dispose()
        {
            _listener.Close();
            _loop.Wait(TimeSpan.FromSeconds(10));
        }
    }

    /// <summary>2,000 generated vectors (16 dims, 30 queries with ground truth) in data/, built into idx/ with 4 partitions.</summary>
    /// <summary>An in-process sweep of the index <see cref="GenerateAndBuild"/> made (one run, no baseline): bench.csv's header and rows.</summary>
    private static async Task<(string[] Header, string[][] Rows)> SweepCsv(TempDir dir, params string[] plan)
    {
        var (exit, _, err) = await CliRunner.RunAsync(["bench", "--index", dir.File("idx"), "--queries", dir.File("data/query.fvecs"),
            "--ground-truth", dir.File("data/groundtruth.ivecs"), .. plan, "--runs", "1", "--brute-force-queries", "0", "--out", dir.File("out")]);
        Assert.True(exit == 0, err);
        var csv = File.ReadAllLines(dir.File("out/bench.csv"));
        return (csv[0].Split(','), csv[1..].Select(line => line.Split(',')).ToArray());
    }

    private static async Task GenerateAndBuild(TempDir dir, int seed)
    {
        var (gexit, _, gerr) = await CliRunner.RunAsync("dataset", "generate", "--n", "2000", "--dim", "16", "--seed", seed.ToString(CultureInfo.InvariantCulture), "--queries", "30", "--out", dir.File("data"));
        Assert.True(gexit == 0, gerr);
        var (bexit, _, berr) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", dir.File("data/base.fvecs"), "--partitions", "4");
        Assert.True(bexit == 0, berr);
    }

    [GeneratedRegex(@"brute force \(TensorPrimitives, one thread\): ([\d.]+) QPS, recall@10 ([\d.]+)")]
    private static partial Regex Baseline();
}
