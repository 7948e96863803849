using System.Net.Http;
using System.Runtime.CompilerServices;
using Azure;
using Polly;
using Polly.Retry;
using Polly.Timeout;

namespace Squash.Storage;

/// <summary>How hard <see cref="ResilientBlobStore"/> tries before giving up.</summary>
public sealed record ResilienceOptions
{
    /// <summary>Tries per operation, the first included.</summary>
    public int MaxAttempts { get; init; } = 4;
    /// <summary>Each try is cancelled after this long (a hung connection becomes a retry, not a stuck query).</summary>
    public TimeSpan AttemptTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>
    /// A try that moves a known number of bytes (a write, a ranged read) gets this much longer per byte, at this
    /// rate: a 100 MB pack written in 4 MiB blocks to a busy emulator may take longer than <see cref="AttemptTimeout"/>
    /// while every block progresses, and cancelling it only starts the same upload again (and the run behind it grows).
    /// </summary>
    public double SlowestBytesPerSecond { get; init; } = 1 << 20;
    /// <summary>First back-off; doubles per retry, with jitter so that many callers do not retry in lock-step.</summary>
    public TimeSpan BaseDelay { get; init; } = TimeSpan.FromMilliseconds(200);
    public TimeSpan MaxDelay { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Bound on one operation, every try and back-off included (null: only the per-try bounds).</summary>
    public TimeSpan? TotalTimeout { get; init; }

    /// <summary>
    /// Environment variable that bounds every storage operation's total time (a duration such as 10s or 2m),
    /// read by stores opened without explicit options. Tests set it so that a dead emulator fails fast.
    /// </summary>
    public const string TotalTimeoutVariable = "SQUASH_STORAGE_TIMEOUT";

    /// <summary>The defaults, with <see cref="TotalTimeout"/> from <see cref="TotalTimeoutVariable"/> when it is set.</summary>
    public static ResilienceOptions FromEnvironment(Func<string, string?>? getVariable = null)
    {
        var text = (getVariable ?? Environment.GetEnvironmentVariable)(TotalTimeoutVariable);
        if (string.IsNullOrWhiteSpace(text)) return new ResilienceOptions();
        if (!Durations.TryParse(text, out var total) || total <= TimeSpan.Zero)
            throw new ArgumentException($"{TotalTimeoutVariable} must be a positive duration such as 10s or 2m, got '{text}'");
        return new ResilienceOptions { TotalTimeout = total };
    }

    public void Validate()
    {
        if (MaxAttempts < 1) throw new ArgumentOutOfRangeException(nameof(MaxAttempts), $"must be ≥ 1, got {MaxAttempts}");
        if (AttemptTimeout <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(AttemptTimeout), "must be positive");
        if (BaseDelay < TimeSpan.Zero || MaxDelay < BaseDelay) throw new ArgumentOutOfRangeException(nameof(BaseDelay), "need 0 ≤ BaseDelay ≤ MaxDelay");
        if (TotalTimeout is { } t && t <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(TotalTimeout), "must be positive");
        if (!(SlowestBytesPerSecond > 0)) throw new ArgumentOutOfRangeException(nameof(SlowestBytesPerSecond), "must be positive");
    }

    /// <summary>The bound on one try that moves <paramref name="bytes"/> bytes.</summary>
    public TimeSpan AttemptTimeoutFor(long bytes) => AttemptTimeout + TimeSpan.FromSeconds(Math.Max(0, bytes) / SlowestBytesPerSecond);
}

/// <summary>
/// Retries transient failures of any blob store (throttling, 5xx, dropped or hung connections) with
/// exponential back-off and jitter, under a per-attempt timeout. Answers that are final — not found,
/// condition failed, a bad range — pass through at once: retrying them could only hide a lost race.
/// After the last try the caller gets one IOException naming the operation and the blob.
/// </summary>
public sealed class ResilientBlobStore : IBlobStore
{
    private readonly IBlobStore _inner;
    private readonly ResiliencePipeline _pipeline;

    public ResilientBlobStore(IBlobStore inner, ResilienceOptions? options = null)
    {
        _inner = inner;
        Options = options ?? ResilienceOptions.FromEnvironment();
        Options.Validate();
        var builder = new ResiliencePipelineBuilder();
        // Outermost, so it bounds the tries and the back-offs between them together.
        if (Options.TotalTimeout is { } total) builder.AddTimeout(total);
        if (Options.MaxAttempts > 1)
        {
            builder.AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = args => ValueTask.FromResult(args.Outcome.Exception is { } e && IsTransient(e, args.Context.CancellationToken)),
                MaxRetryAttempts = Options.MaxAttempts - 1,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = Options.BaseDelay,
                MaxDelay = Options.MaxDelay,
            });
        }
        // Added after the retry, so it sits inside it: the timeout applies to each attempt, not the total.
        builder.AddTimeout(new TimeoutStrategyOptions
        {
            TimeoutGenerator = args => ValueTask.FromResult(args.Context.Properties.GetValue(AttemptBudget, Options.AttemptTimeout)),
        });
        _pipeline = builder.Build();
    }

    public ResilienceOptions Options { get; }
    public IBlobStore Inner => _inner;
    public string Description => _inner.Description;

    /// <summary>Failures worth another try. Everything else is an answer.</summary>
    public static bool IsTransient(Exception e, CancellationToken callerToken = default) => e switch
    {
        BlobNotFoundException or BlobConditionFailedException or ArgumentException => false,
        RequestFailedException r => r.Status is 0 or 408 or 429 or >= 500,
        TimeoutRejectedException or TimeoutException or HttpRequestException => true,
        // The caller's own cancellation is final; an SDK-internal one (its network timeout) is not.
        OperationCanceledException => !callerToken.IsCancellationRequested,
        IOException => true,
        _ => false,
    };

    private static readonly ResiliencePropertyKey<TimeSpan> AttemptBudget = new("squash.attempt-timeout");

    /// <param name="bytes">What one try moves, when known: its timeout grows with it (<see cref="ResilienceOptions.AttemptTimeoutFor"/>).</param>
    private async Task<T> RunAsync<T>(string operation, string name, Func<CancellationToken, Task<T>> call, CancellationToken ct, long bytes = 0)
    {
        int attempts = 0;
        var context = ResilienceContextPool.Shared.Get(ct);
        context.Properties.Set(AttemptBudget, Options.AttemptTimeoutFor(bytes));
        try
        {
            return await _pipeline.ExecuteAsync(async (c, _) =>
            {
                Interlocked.Increment(ref attempts);
                return await call(c.CancellationToken).ConfigureAwait(false);
            }, context, 0).ConfigureAwait(false);
        }
        catch (Exception e) when (IsTransient(e, ct))
        {
            throw new IOException($"{operation} of blob '{name}' in {_inner.Description} failed after {Volatile.Read(ref attempts)} attempt(s): {e.Message}", e);
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
        }
    }

    public Task<byte[]> ReadAllAsync(string name, CancellationToken cancellationToken = default) =>
        RunAsync("read", name, t => _inner.ReadAllAsync(name, t), cancellationToken);

    public Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken cancellationToken = default) =>
        RunAsync($"ranged read ({offset}+{length})", name, async t =>
        {
            var bytes = await _inner.ReadRangeAsync(name, offset, length, t).ConfigureAwait(false);
            // A short answer is a dropped connection that the store did not notice: read again.
            if (bytes.Length != length) throw new IOException($"ranged read of blob '{name}' returned {bytes.Length} of {length} bytes");
            return bytes;
        }, cancellationToken, length);

    /// <summary>
    /// Retried like the rest. A write whose try landed but whose answer was lost fails its own
    /// condition on the retry (the blob now exists, or has a new ETag); when the blob then holds
    /// exactly our bytes, the write did happen and is reported as done, so a flaky connection
    /// cannot fail a build whose segments are all in place.
    /// </summary>
    public async Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken cancellationToken = default)
    {
        int attempts = 0;
        try
        {
            return await RunAsync("write", name, t =>
            {
                Interlocked.Increment(ref attempts);
                return _inner.WriteAsync(name, data, condition, t);
            }, cancellationToken, data.Length).ConfigureAwait(false);
        }
        catch (BlobConditionFailedException) when (Volatile.Read(ref attempts) > 1 && condition is not WriteCondition.OverwriteCondition)
        {
            var info = await GetInfoAsync(name, cancellationToken).ConfigureAwait(false);
            if (info is not null && info.Length == data.Length
                && (await ReadAllAsync(name, cancellationToken).ConfigureAwait(false)).AsSpan().SequenceEqual(data.Span))
                return info;
            throw;
        }
    }

    public Task<(byte[] Bytes, BlobInfo Info)?> ReadWithInfoAsync(string name, CancellationToken cancellationToken = default) =>
        RunAsync("read", name, t => _inner.ReadWithInfoAsync(name, t), cancellationToken);

    public Task<BlobInfo?> GetInfoAsync(string name, CancellationToken cancellationToken = default) =>
        RunAsync("get properties", name, t => _inner.GetInfoAsync(name, t), cancellationToken);

    public async IAsyncEnumerable<BlobInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        // A listing cannot be resumed mid-way after a failure, so it is read whole per attempt;
        // an index's listing is small (versions × segments).
        var all = await RunAsync("listing", prefix + "*", async t =>
        {
            var list = new List<BlobInfo>();
            await foreach (var b in _inner.ListAsync(prefix, t).ConfigureAwait(false)) list.Add(b);
            return list;
        }, cancellationToken).ConfigureAwait(false);
        foreach (var b in all) yield return b;
    }

    public Task<bool> DeleteAsync(string name, CancellationToken cancellationToken = default) =>
        RunAsync("delete", name, t => _inner.DeleteAsync(name, t), cancellationToken);
}
