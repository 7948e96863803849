using System.Runtime.CompilerServices;
using Azure;

namespace Squash.Storage.Tests;

/// <summary>
/// Wraps a store and misbehaves on demand, the way a real network does: throttling and 5xx answers,
/// calls that hang until cancelled, and reads that come back short without an error.
/// </summary>
public sealed class FaultInjectingBlobStore(IBlobStore inner) : IBlobStore
{
    private int _failNext, _hangNext, _truncateNext, _loseNext, _slowNext, _calls;

    /// <summary>The next N calls take <see cref="SlowBy"/> before they proceed (a busy service that still makes progress).</summary>
    public int SlowNext { get => Volatile.Read(ref _slowNext); set => Volatile.Write(ref _slowNext, value); }
    public TimeSpan SlowBy { get; set; }

    /// <summary>The next N writes happen but their answer is lost (a 503 after the fact).</summary>
    public int LoseAnswerNext { get => Volatile.Read(ref _loseNext); set => Volatile.Write(ref _loseNext, value); }

    /// <summary>The next N calls fail with a 503 (a throttled or overloaded service).</summary>
    public int FailNext { get => Volatile.Read(ref _failNext); set => Volatile.Write(ref _failNext, value); }
    /// <summary>The next N calls hang until their token is cancelled.</summary>
    public int HangNext { get => Volatile.Read(ref _hangNext); set => Volatile.Write(ref _hangNext, value); }
    /// <summary>The next N reads (whole or ranged) lose their last bytes without any error.</summary>
    public int TruncateNext { get => Volatile.Read(ref _truncateNext); set => Volatile.Write(ref _truncateNext, value); }
    /// <summary>Calls that reached this store (each retry counts).</summary>
    public int Calls => Volatile.Read(ref _calls);

    public string Description => inner.Description;

    private static bool Take(ref int counter)
    {
        while (true)
        {
            int v = Volatile.Read(ref counter);
            if (v <= 0) return false;
            if (Interlocked.CompareExchange(ref counter, v - 1, v) == v) return true;
        }
    }

    private async Task BeforeAsync(string name, CancellationToken ct)
    {
        Interlocked.Increment(ref _calls);
        if (Take(ref _hangNext)) { await Task.Delay(TimeSpan.FromMinutes(2), ct); throw new TimeoutException($"injected hang on '{name}' was never cancelled: the store under test has no timeout"); }
        if (Take(ref _failNext)) throw new RequestFailedException(503, $"injected: server busy reading '{name}'");
        if (Take(ref _slowNext)) await Task.Delay(SlowBy, ct);
    }

    private byte[] MaybeTruncate(byte[] bytes) =>
        bytes.Length > 1 && Take(ref _truncateNext) ? bytes[..(bytes.Length * 3 / 4)] : bytes;

    public async Task<byte[]> ReadAllAsync(string name, CancellationToken ct = default)
    {
        await BeforeAsync(name, ct);
        return MaybeTruncate(await inner.ReadAllAsync(name, ct));
    }

    public async Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken ct = default)
    {
        await BeforeAsync(name, ct);
        return MaybeTruncate(await inner.ReadRangeAsync(name, offset, length, ct));
    }

    public async Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken ct = default)
    {
        await BeforeAsync(name, ct);
        var info = await inner.WriteAsync(name, data, condition, ct);
        if (Take(ref _loseNext)) throw new RequestFailedException(503, $"injected: connection dropped after writing '{name}'");
        return info;
    }

    public async Task<BlobInfo?> GetInfoAsync(string name, CancellationToken ct = default)
    {
        await BeforeAsync(name, ct);
        return await inner.GetInfoAsync(name, ct);
    }

    public async IAsyncEnumerable<BlobInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken ct = default)
    {
        await BeforeAsync(prefix, ct);
        await foreach (var b in inner.ListAsync(prefix, ct)) yield return b;
    }

    public async Task<bool> DeleteAsync(string name, CancellationToken ct = default)
    {
        await BeforeAsync(name, ct);
        return await inner.DeleteAsync(name, ct);
    }
}
