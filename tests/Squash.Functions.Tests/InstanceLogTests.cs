using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Squash.LocalHost;
using Squash.Testing;

namespace Squash.Functions.Tests;

/// <summary>The local host keeps what each instance writes, bounded, and says where it is when an instance dies.</summary>
public sealed class InstanceLogTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "squash-instlog-" + Guid.NewGuid().ToString("N"));
    private readonly ConcurrentQueue<string> _reports = new();

    public InstanceLogTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }


    /// <summary>A function "app" that says why it cannot start, on both streams, and exits with code 3.</summary>
    private string CrashingApp()
    {
        var path = Path.Combine(_dir, "crashing-app.sh");
        File.WriteAllText(path, """
            #!/bin/sh
            echo "starting on port $FUNCTIONS_CUSTOMHANDLER_PORT"
            echo "fatal: cannot open store DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0LWtleQ==" >&2
            exit 3
            """.Replace("\r\n", "\n"));
        // The local host runs on Linux and macOS (scripts/, Native AOT for linux-x64); a shell script stands in for the app.
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }

    private static async Task<string> WaitForAsync(Func<string?> probe, string what)
    {
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(30))
        {
            if (probe() is { } found) return found;
            await Task.Delay(20);
        }
        throw new TimeoutException($"no {what} within 30 s");
    }

    [Fact]
    public async Task AnInstanceThatWritesToStderrAndExitsLeavesItsLinesInThePoolLogAndTheHostSaysWhere()
    {
        var logs = Path.Combine(_dir, "logs");
        await using var host = new LocalFunctionHost(new LocalHostOptions
        {
            Store = "dir:" + _dir, AppPath = CrashingApp(), Port = FreePorts.Next(), ProcessorPools = 1, LogFolder = logs, Log = _reports.Enqueue,
        });
        await host.StartAsync();
        Assert.Equal(Path.GetFullPath(logs), host.LogFolder);
        using var client = new HttpClient { BaseAddress = host.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };

        var response = await client.GetAsync("/api/health");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal("no instance of pool 'coordinator' could start: the function app exited during start-up with code 3", problem.GetProperty("detail").GetString());

        var logPath = Path.Combine(host.LogFolder, "coordinator.log");
        var report = await WaitForAsync(() => _reports.FirstOrDefault(r => r.Contains("exited", StringComparison.Ordinal)), "report of the exit");
        Assert.Matches(@"^instance coordinator/\d+ exited during start-up with code 3; its output: ", report);
        Assert.EndsWith("its output: " + logPath, report);

        var lines = File.ReadAllLines(logPath);
        int pid = int.Parse(report.Split('/')[1].Split(' ')[0]);
        Assert.Contains(lines, l => l.EndsWith($"[{pid}] err: fatal: cannot open store DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=***", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains($"[{pid}] out: starting on port ", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.EndsWith($"[{pid}] host: exited during start-up with code 3", StringComparison.Ordinal));
        Assert.DoesNotContain("c2VjcmV0", File.ReadAllText(logPath));
    }

    [Fact]
    public async Task APoolThatCannotStartAnInstanceNamesItsLogInTheException()
    {
        using var log = new InstanceLog(Path.Combine(_dir, "p0.log"), _reports.Enqueue);
        var options = new LocalHostOptions { Store = "dir:" + _dir };
        await using var pool = new InstancePool("p0", CrashingApp(), new Dictionary<string, string>(), options, log);
        var e = await Assert.ThrowsAsync<InstanceStartException>(() => pool.AcquireAsync(CancellationToken.None));
        Assert.Equal("the function app exited during start-up with code 3", e.Message);
        Assert.Equal(log.Path, e.LogPath);
        Assert.Contains("err: fatal: cannot open store", File.ReadAllText(log.Path));
    }

    /// <summary>An instance that dies after it started (here: killed from outside) is reported with its exit code and log.</summary>
    [Fact]
    public async Task AnInstanceThatDiesAfterStartIsReportedWithItsExitCodeAndLog()
    {
        using var log = new InstanceLog(Path.Combine(_dir, "p0.log"), _reports.Enqueue);
        var options = new LocalHostOptions { Store = "dir:" + _dir };
        await using var pool = new InstancePool("p0", LocalFunctionHost.ResolveApp(null), new Dictionary<string, string> { ["Squash__Store"] = options.Store }, options, log);
        var (instance, _) = await pool.AcquireAsync(CancellationToken.None);
        instance.Release();
        Assert.Equal(log.Path, instance.LogPath);
        int pid = instance.ProcessId;
        Process.GetProcessById(pid).Kill();
        var report = await WaitForAsync(() => _reports.FirstOrDefault(r => r.StartsWith($"instance p0/{pid} ", StringComparison.Ordinal)), "report of the kill");
        Assert.Equal($"instance p0/{pid} exited unexpectedly with code 137; its output: {log.Path}", report);
        Assert.Contains($"[{pid}] host: exited unexpectedly with code 137", File.ReadAllText(log.Path));
    }

    /// <summary>Instances the host stops itself (recycling, shutdown) are not reported as failures.</summary>
    [Fact]
    public async Task AnInstanceTheHostStopsIsNotReported()
    {
        using var log = new InstanceLog(Path.Combine(_dir, "p0.log"), _reports.Enqueue);
        var options = new LocalHostOptions { Store = "dir:" + _dir };
        var pool = new InstancePool("p0", LocalFunctionHost.ResolveApp(null), new Dictionary<string, string> { ["Squash__Store"] = options.Store }, options, log);
        var (instance, _) = await pool.AcquireAsync(CancellationToken.None);
        instance.Release();
        await pool.StopAllAsync();
        await pool.DisposeAsync();
        await Task.Delay(200); // an Exited event, were one to be reported, comes on a thread-pool thread
        Assert.Empty(_reports);
    }

    [Fact]
    public void ALogFileIsBoundedAndKeepsItsNewestLines()
    {
        var path = Path.Combine(_dir, "p1.log");
        using (var log = new InstanceLog(path, _reports.Enqueue, maxBytes: 4096))
            for (int i = 0; i < 2000; i++) log.Write(42, "err", $"line {i:D4} " + new string('x', 40));
        Assert.InRange(new FileInfo(path).Length, 1, 4096);
        Assert.InRange(new FileInfo(path + ".1").Length, 1, 4096);
        Assert.EndsWith("[42] err: line 1999 " + new string('x', 40), File.ReadAllLines(path)[^1]);
        Assert.Empty(_reports);
    }

    /// <summary>A new run keeps the previous run's file as NAME.log.1 instead of writing over it.</summary>
    [Fact]
    public void ANewRunKeepsThePreviousRunsFile()
    {
        var path = Path.Combine(_dir, "coordinator.log");
        using (var first = new InstanceLog(path, _reports.Enqueue)) first.Write(1, "err", "the crash before the restart");
        using (var second = new InstanceLog(path, _reports.Enqueue)) second.Write(2, "out", "started again");
        Assert.EndsWith("[1] err: the crash before the restart", File.ReadAllLines(path + ".1").Single());
        Assert.EndsWith("[2] out: started again", File.ReadAllLines(path).Single());
    }
}
