namespace Squash.Cli.Commands;

/// <summary>
/// A folder a command writes its results into (--out, --log-dir): created before the work starts, so that a path that
/// cannot be a folder fails at once with one line naming the flag, rather than after a long run, in the file system's words.
/// </summary>
public static class OutputFolder
{
    public static string Create(string flag, string path)
    {
        Check(flag, path);
        try
        {
            Directory.CreateDirectory(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            throw new UsageException($"{flag} {path}: cannot create the folder ({e.Message})");
        }
        return path;
    }

    /// <summary>
    /// Fails, naming the flag, when <paramref name="path"/> is a file or a file stands where one of its parent folders would
    /// have to be; creates nothing, for a command that checks its other inputs before it writes anything.
    /// </summary>
    public static void Check(string flag, string path)
    {
        CliErrors.Require(!string.IsNullOrWhiteSpace(path), $"{flag} needs a folder");
        if (File.Exists(path)) throw new UsageException($"{flag} {path} is a file, not a folder");
        if (FileInTheWay(path) is { } file) throw new UsageException($"{flag} {path}: '{file}' is a file, not a folder");
    }

    /// <summary>
    /// A file that stands where a parent folder of <paramref name="path"/> would have to be, if any: creating the folder would
    /// fail in the file system's words ("Could not find a part of the path"), which name neither the flag nor the file.
    /// </summary>
    public static string? FileInTheWay(string path)
    {
        for (var dir = Path.GetDirectoryName(Path.GetFullPath(path)); !string.IsNullOrEmpty(dir); dir = Path.GetDirectoryName(dir))
        {
            if (Directory.Exists(dir)) return null;
            if (File.Exists(dir)) return dir;
        }
        return null;
    }
}
