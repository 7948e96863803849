using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Squash.Storage;
using Squash.Testing;

namespace Squash.Functions.Tests;

/// <summary>A store whose reads can be made to fail or to return other bytes, switched on and off while an app runs.</summary>
internal sealed class ScriptedStore(IBlobStore inner) : PassThroughStore(inner)
{
    /// <summary>Blob name → an exception to throw instead of reading it (null: read it).</summary>
    public Func<string, Exception?> Fails { get; set; } = _ => null;
    /// <summary>Blob name → bytes returned instead of its content (null: its content).</summary>
    public Func<string, byte[]?> Replaces { get; set; } = _ => null;

    public override async Task<byte[]> ReadAllAsync(string name, CancellationToken ct = default)
    {
        if (Fails(name) is { } e) throw e;
        return Replaces(name) ?? await Inner.ReadAllAsync(name, ct);
    }

    public override Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken ct = default) =>
        Fails(name) is { } e ? throw e : Inner.ReadRangeAsync(name, offset, length, ct);
}

/// <summary>Runs <see cref="Hook"/> once, before the first write of a blob whose name ends with <see cref="Suffix"/>.</summary>
internal sealed class HookedStore(IBlobStore inner) : PassThroughStore(inner)
{
    public string Suffix { get; set; } = "\0";
    public Func<Task>? Hook { get; set; }
    public override async Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken ct = default)
    {
        if (name.EndsWith(Suffix, StringComparison.Ordinal) && Interlocked.Exchange(ref _hook, null) is { } hook) await hook();
        return await Inner.WriteAsync(name, data, condition, ct);
    }
    private Func<Task>? _hook;
    public void Arm() => _hook = Hook;
}

/// <summary>Keeps every log entry at warning or above, to check that a failure left a trace.</summary>
internal sealed class CapturingLoggerProvider : ILoggerProvider
{
    public ConcurrentQueue<(string Category, LogLevel Level, string Message, Exception? Exception)> Entries { get; } = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);
    public void Dispose() { }

    private sealed class Logger(CapturingLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel)) owner.Entries.Enqueue((category, logLevel, formatter(state, exception), exception));
        }
    }
}
