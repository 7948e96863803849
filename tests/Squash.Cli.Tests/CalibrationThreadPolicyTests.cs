using System.Diagnostics;
using Squash.Testing;

namespace Squash.Cli.Tests;

/// <summary>
/// `squash build` as its own process, its threads' scheduling read from /proc while it runs: the calibration lowers its
/// own background threads and no other. A thread inherits its creator's policy, so a pool or timer thread started by a
/// lowered thread would run the build's own work at the idle policy for good (one build took 859 s that way).
/// </summary>
public class CalibrationThreadPolicyTests
{
    [Fact]
    public async Task OnlyTheCalibrationsOwnThreadsEverRunLowered()
    {
        if (!OperatingSystem.IsLinux() || System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture != System.Runtime.InteropServices.Architecture.X64)
            return; // the policies are set on Linux x64 only
        using var dir = new TempDir();
        const int n = 40_000, dims = 48;
        var vectors = dir.Fvecs("base.fvecs", TempDir.Random(n, dims, 7));
        File.WriteAllText(dir.File("a.jsonl"), string.Concat(Enumerable.Range(0, n).Select(i => $"{{\"attributes\":{{\"label\":{i % 10},\"price\":{i}}}}}\n")));
        // Under nice 3, as a user may run a build: its threads are raised back to where they were, never above.
        var psi = new ProcessStartInfo("nice", ["-n", "3", "dotnet", Path.Combine(AppContext.BaseDirectory, "squash.dll"), "build", "--index", dir.File("idx"),
            "--vectors", vectors, "--attributes", dir.File("a.jsonl")])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync(deadline.Token);
        var stderr = process.StandardError.ReadToEndAsync(deadline.Token);
        // Every thread seen, by id and name, with every (nice, policy) it was seen at.
        var seen = new Dictionary<(int Tid, string Name), HashSet<(int Nice, int Policy)>>();
        try
        {
            while (!process.HasExited)
            {
                deadline.Token.ThrowIfCancellationRequested();
                foreach (var task in Directory.EnumerateDirectories($"/proc/{process.Id}/task").ToArray())
                    if (Sample(task) is { } s)
                    {
                        if (!seen.TryGetValue((s.Id, s.Name), out var set)) seen[(s.Id, s.Name)] = set = [];
                        set.Add((s.Nice, s.Policy));
                    }
                await Task.Delay(10, deadline.Token);
            }
        }
        catch (Exception e) when (e is IOException or OperationCanceledException)
        {
            // The process ended between the check and the listing; a deadline kills it below.
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
        }
        await process.WaitForExitAsync(CancellationToken.None);
        Assert.False(deadline.IsCancellationRequested, "the build did not end within 3 minutes");
        Assert.True(process.ExitCode == 0, await stderr);
        await stdout;
        // The process as `nice` before it set the nice value and ran dotnet.
        foreach (var before in seen.Keys.Where(t => t.Name == "nice").ToArray()) seen.Remove(before);
        string Seen() => string.Join("; ", seen.Select(t => $"{t.Key.Tid} '{t.Key.Name}': {string.Join(",", t.Value.Select(v => $"nice {v.Nice} policy {v.Policy}"))}"));

        // The sampling saw the build at work: the pool's threads, and a calibration thread lowered (the idle policy, or
        // nice 19 where the process may not leave it; at the normal policy while other processes take the CPU, so
        // being seen lowered is not required, being seen is).
        Assert.True(seen.Keys.Any(t => t.Name.StartsWith(".NET TP Worker", StringComparison.Ordinal)), "no pool thread was seen: " + Seen());
        Assert.True(seen.Keys.Any(t => t.Name.StartsWith(".NET Long Runn", StringComparison.Ordinal)), "no calibration thread was seen: " + Seen());
        // Lowered: the idle policy, or a nice value above the main thread's (3 more than the tests' own).
        int mainNice = seen.Where(t => t.Key.Tid == process.Id).SelectMany(t => t.Value).Min(v => v.Nice);
        Assert.True(mainNice == Math.Min(19, OwnNice() + 3), $"the build's main thread ran at nice {mainNice}; the test runs at nice {OwnNice()}");
        var raised = seen.Where(t => t.Value.Any(v => v.Nice < mainNice)).Select(t => t.Key).ToArray();
        Assert.True(raised.Length == 0, "threads ran above the build's nice value: " + string.Join(", ", raised.Select(t => $"{t.Tid} '{t.Name}'")) + " — " + Seen());
        var lowered = seen.Where(t => t.Value.Any(v => v.Policy == ThreadStat.SchedIdle || v.Nice > mainNice)).Select(t => t.Key).ToArray();
        Assert.True(lowered.All(t => t.Name.StartsWith(".NET Long Runn", StringComparison.Ordinal)),
            "threads other than the calibration's ran lowered: " + string.Join(", ", lowered.Select(t => $"{t.Tid} '{t.Name}'")) + " — " + Seen());
    }

    /// <summary>This process's nice value.</summary>
    private static int OwnNice() => ThreadStat.Read("/proc/self/stat").Nice;

    /// <summary>One thread's id, name, nice value and policy (null: the thread has ended).</summary>
    private static ThreadStat? Sample(string task)
    {
        try { return ThreadStat.Read(Path.Combine(task, "stat")); }
        catch (IOException) { return null; }
    }
}
