using System.Globalization;
using System.Security.Cryptography;

namespace Squash.Storage;

/// <summary>
/// Index version ids. A new id is <c>v</c> + the UTC time the build started (<c>yyyyMMdd-HHmmssfff</c>)
/// + <c>-</c> + 12 random hex digits, e.g. <c>v20250612-101530123-3f9a1c0b7e2d</c>: builders need no
/// coordination to get distinct ids (48 random bits per millisecond), and ordinal string order is start
/// order. Ids written by earlier releases (<c>v000042</c>: <c>v</c> + a zero-padded counter) are still
/// read; they are older than every new id and ordered among themselves by number.
/// </summary>
public static class VersionIds
{
    private const string TimeFormat = "yyyyMMdd-HHmmssfff";

    /// <summary>Orders ids oldest first (old counter ids, then new ids by time).</summary>
    public static IComparer<string> Order { get; } = Comparer<string>.Create(Compare);

    public static string New(DateTimeOffset startedUtc) =>
        "v" + startedUtc.UtcDateTime.ToString(TimeFormat, CultureInfo.InvariantCulture) + "-" + RandomNumberGenerator.GetHexString(12, lowercase: true);

    /// <summary>The build's start time for a new-format id; null for an old counter id or an unknown form.</summary>
    public static DateTimeOffset? StartedUtc(string id) =>
        id.Length == 1 + TimeFormat.Length + 13 && id[0] == 'v' && id[^13] == '-'
        && DateTime.TryParseExact(id.AsSpan(1, TimeFormat.Length), TimeFormat, CultureInfo.InvariantCulture,
            DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out var t)
            ? new DateTimeOffset(t, TimeSpan.Zero)
            : null;

    /// <summary>Whether <paramref name="id"/> has either form (for checking ids that arrive from outside, e.g. in a request).</summary>
    public static bool IsWellFormed(string? id) =>
        id is not null && (IsCounter(id) && id.Length <= 20
            || StartedUtc(id) is not null && id.AsSpan(id.Length - 12).IndexOfAnyExcept("0123456789abcdef") < 0);

    /// <summary>An id of the counter form earlier releases wrote (v000042).</summary>
    public static bool IsCounter(string id) => id.Length > 1 && id[0] == 'v' && id.AsSpan(1).IndexOfAnyExceptInRange('0', '9') < 0;

    public static int Compare(string? a, string? b)
    {
        if (a is null || b is null) return a is null ? (b is null ? 0 : -1) : 1;
        bool ca = IsCounter(a), cb = IsCounter(b);
        if (ca != cb) return ca ? -1 : 1;
        if (ca)
        {
            // Numeric order without overflow: fewer significant digits is smaller.
            var da = a.AsSpan(1).TrimStart('0');
            var db = b.AsSpan(1).TrimStart('0');
            if (da.Length != db.Length) return da.Length.CompareTo(db.Length);
            int c = da.SequenceCompareTo(db);
            return c != 0 ? c : string.CompareOrdinal(a, b);
        }
        return string.CompareOrdinal(a, b);
    }
}
