namespace Squash.Cli.Tests;

/// <summary>Runs the real command tree in-process and captures what a user would see.</summary>
public static class CliRunner
{
    private static readonly SemaphoreSlim Gate = new(1, 1);

    /// <summary>A CLI failure as users must see it: exit 1 and exactly one line, <c>error: </c> and the message.</summary>
    public static void AssertOneErrorLine(int exit, string err, string expected)
    {
        Assert.True(exit == 1, $"exit {exit}: {err}");
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"expected one line, got {lines.Length}:\n{err}");
        Assert.Equal("error: " + expected, lines[0].TrimEnd('\r'));
    }

    public static Task<(int Exit, string Out, string Err)> RunAsync(params string[] args) => RunAsync(args, interruptAfter: null);

    /// <summary>
    /// Runs a command; with <paramref name="interruptAfter"/>, cancels it as Ctrl+C does once its stderr holds that text.
    /// </summary>
    public static async Task<(int Exit, string Out, string Err)> RunAsync(string[] args, string? interruptAfter)
    {
        // Console redirection is process-wide: one command at a time.
        await Gate.WaitAsync();
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        using var interrupt = new CancellationTokenSource();
        var (o, e) = (new StringWriter(), new WatchingWriter(interruptAfter, interrupt));
        try
        {
            Console.SetOut(o);
            Console.SetError(e);
            int exit = await Program.RunAsync(args, interrupt.Token);
            return (exit, o.ToString(), e.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
            Gate.Release();
        }
    }
}

/// <summary>Collects what is written and cancels <paramref name="interrupt"/> (off the writing thread) once the text holds <paramref name="marker"/>.</summary>
internal sealed class WatchingWriter(string? marker, CancellationTokenSource interrupt) : StringWriter
{
    private bool _fired;

    public override void Write(char value)
    {
        base.Write(value);
        Check();
    }

    public override void Write(string? value)
    {
        base.Write(value);
        Check();
    }

    public override void Write(char[] buffer, int index, int count)
    {
        base.Write(buffer, index, count);
        Check();
    }

    private void Check()
    {
        if (marker is null || _fired || !ToString().Contains(marker, StringComparison.Ordinal)) return;
        _fired = true;
        ThreadPool.QueueUserWorkItem(_ =>
        {
            try { interrupt.Cancel(); }
            catch (ObjectDisposedException) { } // the command had already ended
        });
    }
}

public sealed class TempDir : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "squash-cli-" + Guid.NewGuid().ToString("N"));

    public TempDir() => Directory.CreateDirectory(Path);

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, true); } catch (IOException) { }
    }

    /// <summary>Writes .fvecs records by hand so that malformed files can be made too.</summary>
    public string Fvecs(string name, IEnumerable<float[]> rows)
    {
        var path = File(name);
        using var w = new BinaryWriter(System.IO.File.Create(path));
        foreach (var r in rows)
        {
            w.Write(r.Length);
            foreach (var v in r) w.Write(v);
        }
        return path;
    }

    public static IEnumerable<float[]> Random(int n, int d, int seed)
    {
        var rng = new Random(seed);
        for (int i = 0; i < n; i++) yield return Enumerable.Range(0, d).Select(_ => (float)rng.NextDouble()).ToArray();
    }
}
