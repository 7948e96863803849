using System.Globalization;

namespace Squash.Testing;

/// <summary>
/// A thread's or process's line in /proc (<c>…/stat</c>): its id, its name (in brackets, and it may hold spaces, so the
/// fields after it are counted from the last bracket), its nice value (field 19) and scheduling policy (field 41).
/// </summary>
internal readonly record struct ThreadStat(int Id, string Name, int Nice, int Policy)
{
    public const int SchedOther = 0, SchedIdle = 5;

    public static ThreadStat Parse(string stat)
    {
        int open = stat.IndexOf('('), close = stat.LastIndexOf(')');
        var fields = stat[(close + 2)..].Split(' ');
        return new ThreadStat(int.Parse(stat[..open], CultureInfo.InvariantCulture), stat[(open + 1)..close],
            int.Parse(fields[16], CultureInfo.InvariantCulture), int.Parse(fields[38], CultureInfo.InvariantCulture));
    }

    /// <summary>The stat line at <paramref name="path"/> (e.g. /proc/self/task/TID/stat).</summary>
    public static ThreadStat Read(string path) => Parse(File.ReadAllText(path));
}
