using System.Text;
using Squash.Storage;

namespace Squash.LocalHost;

/// <summary>
/// What the instances of one pool wrote to stdout and stderr, one file per pool (<c>coordinator.log</c>,
/// <c>p0.log</c>, …), each line prefixed with the time, the instance's process id and the stream, so that a
/// crashed instance leaves its last words. Bounded: past <see cref="MaxBytes"/> the file becomes
/// <c>NAME.log.1</c> (replacing the previous one) and a new file starts; a previous run's file is kept the same
/// way when the first line of this run arrives. Lines are redacted (an exception message may carry a SAS URL).
/// </summary>
public sealed class InstanceLog : IDisposable
{
    public const long DefaultMaxBytes = 4 << 20;

    private readonly object _gate = new();
    private readonly Action<string> _report;
    private StreamWriter? _writer;
    private long _bytes;
    private bool _broken;
    private bool _closed;

    /// <param name="report">Where the host says what happened to an instance (serve's own output).</param>
    public InstanceLog(string path, Action<string> report, long maxBytes = DefaultMaxBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBytes, 1024);
        Path = System.IO.Path.GetFullPath(path);
        MaxBytes = maxBytes;
        _report = report;
    }

    public string Path { get; }
    public long MaxBytes { get; }

    /// <summary>One line an instance wrote (<paramref name="stream"/>: "out", "err", or "host" for what the host observed).</summary>
    public void Write(int processId, string stream, string line)
    {
        var text = $"{DateTime.UtcNow:yyyy-MM-dd HH:mm:ss.fff} [{processId}] {stream}: {SecretRedaction.Redact(line)}";
        lock (_gate)
        {
            if (_broken || _closed) return;
            try
            {
                long size = Encoding.UTF8.GetByteCount(text) + 1;
                if (_writer is null || _bytes + size > MaxBytes) Rotate();
                _writer!.WriteLine(text);
                _bytes += size;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Logging must never take an instance down: say so once and carry on without the file.
                _broken = true;
                _writer?.Dispose();
                _writer = null;
                _report($"instance logs: cannot write {Path} ({e.Message}); instance output is no longer kept");
            }
        }
    }

    /// <summary>An instance ended without the host stopping it: its exit code goes in the file and, with the file's path, to serve's output.</summary>
    public void ReportExit(string pool, int processId, int exitCode, bool duringStartup)
    {
        var what = duringStartup ? "exited during start-up" : "exited unexpectedly";
        Write(processId, "host", $"{what} with code {exitCode}");
        _report($"instance {pool}/{processId} {what} with code {exitCode}; its output: {Path}");
    }

    /// <summary>Tells serve's output about an instance the host gave up on (it stopped answering and was stopped).</summary>
    public void ReportDiscarded(string pool, int processId, string reason)
    {
        Write(processId, "host", $"discarded: {reason}");
        _report($"instance {pool}/{processId} failed ({SecretRedaction.Redact(reason)}) and was replaced; its output: {Path}");
    }

    private void Rotate()
    {
        _writer?.Dispose();
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(Path)!);
        if (File.Exists(Path)) File.Move(Path, Path + ".1", overwrite: true);
        var stream = new FileStream(Path, FileMode.Create, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete);
        // Flushed per line: the point of the file is what an instance wrote just before it died.
        _writer = new StreamWriter(stream, new UTF8Encoding(false)) { AutoFlush = true };
        _bytes = 0;
    }

    public void Dispose()
    {
        lock (_gate)
        {
            // Lines that arrive later (an instance dying as the host stops) must not rotate this run's file away.
            _closed = true;
            _writer?.Dispose();
            _writer = null;
        }
    }
}
