using System.Runtime.CompilerServices;
using System.Security.Cryptography;

namespace Squash.Storage;

/// <summary>
/// The embedded default: blobs are files under a root folder. Writes go to a temporary file that is
/// renamed into place (atomic on one file system); conditional writes hold a per-store lock file so
/// that check and rename cannot interleave between processes. The root folder is made by the first write,
/// not on opening: a reading command given a mistyped path must leave nothing behind (a folder it made would
/// later pass for an existing store), and a missing root reads as an empty store.
/// </summary>
public sealed class FolderBlobStore : IBlobStore
{
    private readonly string _root;

    public FolderBlobStore(string root)
    {
        _root = Path.GetFullPath(root);
    }

    public string Description => $"dir:{_root}";
    public string Root => _root;

    private string PathOf(string name)
    {
        BlobNames.Validate(name);
        return Path.Combine(_root, name.Replace('/', Path.DirectorySeparatorChar));
    }

    public async Task<byte[]> ReadAllAsync(string name, CancellationToken cancellationToken = default)
    {
        var path = PathOf(name);
        try
        {
            return await File.ReadAllBytesAsync(path, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new BlobNotFoundException(name);
        }
    }

    public async Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        var path = PathOf(name);
        try
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, FileOptions.Asynchronous);
            long size = RandomAccess.GetLength(handle);
            if (offset + length > size) throw new ArgumentOutOfRangeException(nameof(length), $"range {offset}+{length} lies past the end of blob '{name}' ({size} bytes)");
            var buffer = new byte[length];
            int read = 0;
            while (read < length)
            {
                int r = await RandomAccess.ReadAsync(handle, buffer.AsMemory(read), offset + read, cancellationToken).ConfigureAwait(false);
                if (r == 0) throw new IOException($"blob '{name}' ended early");
                read += r;
            }
            return buffer;
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new BlobNotFoundException(name);
        }
    }

    public async Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken cancellationToken = default)
    {
        var path = PathOf(name);
        var temp = $"{path}.{Guid.NewGuid():N}.tmp";
        for (int attempt = 0; ; attempt++)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            try
            {
                await using var f = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous);
                await f.WriteAsync(data, cancellationToken).ConfigureAwait(false);
                await f.FlushAsync(cancellationToken).ConfigureAwait(false);
                f.Flush(flushToDisk: true);
                break;
            }
            catch (DirectoryNotFoundException) when (attempt < 5)
            {
                // A concurrent delete pruned the (then empty) folder between create and open: make it again.
            }
        }
        try
        {
            if (condition is WriteCondition.OverwriteCondition)
            {
                File.Move(temp, path, overwrite: true);
            }
            else
            {
                using var _ = await AcquireLockAsync(cancellationToken).ConfigureAwait(false);
                var existing = Info(name, path);
                switch (condition)
                {
                    case WriteCondition.IfNotExistsCondition when existing is not null:
                        throw new BlobConditionFailedException(name, "it already exists");
                    case WriteCondition.IfMatchCondition m when existing is null:
                        throw new BlobConditionFailedException(name, "it does not exist");
                    case WriteCondition.IfMatchCondition m when existing.ETag != m.ETag:
                        throw new BlobConditionFailedException(name, "it was changed by another writer (ETag mismatch)");
                }
                // File times tick coarsely (a kernel tick), so two same-sized writes in one tick could share
                // an ETag and a stale compare-and-swap succeed. Under the lock, a fresh precise time differs.
                File.SetLastWriteTimeUtc(temp, DateTime.UtcNow);
                File.Move(temp, path, overwrite: true);
            }
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
        return Info(name, path) ?? throw new IOException($"blob '{name}' vanished after it was written");
    }

    public Task<BlobInfo?> GetInfoAsync(string name, CancellationToken cancellationToken = default) =>
        Task.FromResult(Info(name, PathOf(name)));

    public async IAsyncEnumerable<BlobInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await Task.Yield();
        if (!Directory.Exists(_root)) yield break;
        var names = Directory.EnumerateFiles(_root, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(_root, f).Replace(Path.DirectorySeparatorChar, '/'))
            .Where(n => !n.EndsWith(".tmp", StringComparison.Ordinal) && n != LockName && n.StartsWith(prefix, StringComparison.Ordinal))
            .Order(StringComparer.Ordinal);
        foreach (var n in names)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var info = Info(n, PathOf(n));
            if (info is not null) yield return info;
        }
    }

    public Task<bool> DeleteAsync(string name, CancellationToken cancellationToken = default)
    {
        var path = PathOf(name);
        if (!File.Exists(path)) return Task.FromResult(false);
        File.Delete(path);
        // Prune folders the delete left empty, so a collected version leaves no trace; a folder that
        // is not empty (or is being written into) stays.
        for (var dir = Path.GetDirectoryName(path); dir is not null && dir.Length > _root.Length && dir.StartsWith(_root, StringComparison.Ordinal); dir = Path.GetDirectoryName(dir))
        {
            try
            {
                if (Directory.EnumerateFileSystemEntries(dir).Any()) break;
                Directory.Delete(dir);
            }
            catch (IOException)
            {
                break;
            }
        }
        return Task.FromResult(true);
    }

    private const string LockName = ".squash-store.lock";

    private async Task<IDisposable> AcquireLockAsync(CancellationToken ct)
    {
        var lockPath = Path.Combine(_root, LockName);
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                return new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (attempt < 2000)
            {
                await Task.Delay(5, ct).ConfigureAwait(false);
            }
        }
    }

    private static BlobInfo? Info(string name, string path)
    {
        var fi = new FileInfo(path);
        if (!fi.Exists) return null;
        // Length + write time + inode-ish identity is enough to see a replaced file; hash it into an opaque tag.
        var tag = $"{fi.Length}:{fi.LastWriteTimeUtc.Ticks}:{fi.CreationTimeUtc.Ticks}";
        var hash = Convert.ToHexString(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(tag)))[..16];
        return new BlobInfo(name, fi.Length, $"\"{hash}\"", new DateTimeOffset(fi.LastWriteTimeUtc, TimeSpan.Zero));
    }
}
