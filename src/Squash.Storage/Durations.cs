using System.Globalization;
using System.Text.RegularExpressions;

namespace Squash.Storage;

/// <summary>Durations as people write them in flags and settings: <c>90s</c>, <c>15m</c>, <c>1h30m</c>, <c>2d</c>, <c>250ms</c>, <c>0</c>.</summary>
public static partial class Durations
{
    public const string Examples = "30s, 15m, 1h, 1h30m or 0";

    public static bool TryParse(string? text, out TimeSpan value)
    {
        value = TimeSpan.Zero;
        if (string.IsNullOrWhiteSpace(text)) return false;
        text = text.Trim();
        if (text == "0") return true;
        var m = Pattern().Match(text);
        if (!m.Success) return false;
        double ms = 0;
        foreach (Capture part in m.Groups["part"].Captures)
        {
            var p = Part().Match(part.Value);
            double n = double.Parse(p.Groups["n"].Value, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture);
            ms += n * p.Groups["unit"].Value switch
            {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => 86_400_000,
            };
        }
        if (!double.IsFinite(ms) || ms > TimeSpan.MaxValue.TotalMilliseconds) return false;
        value = TimeSpan.FromMilliseconds(ms);
        return true;
    }

    /// <summary>Throws a FormatException that names <paramref name="what"/> and shows the accepted forms.</summary>
    public static TimeSpan Parse(string? text, string what) =>
        TryParse(text, out var value) ? value : throw new FormatException($"{what} must be a duration such as {Examples}, got '{text}'");

    /// <summary>The shortest exact form Parse reads back: 1h30m, 45s, 250ms.</summary>
    public static string Format(TimeSpan t)
    {
        if (t <= TimeSpan.Zero) return "0";
        var s = "";
        if (t.Days > 0) s += $"{t.Days}d";
        if (t.Hours > 0) s += $"{t.Hours}h";
        if (t.Minutes > 0) s += $"{t.Minutes}m";
        if (t.Seconds > 0) s += $"{t.Seconds}s";
        if (t.Milliseconds > 0) s += $"{t.Milliseconds}ms";
        return s.Length == 0 ? "0" : s;
    }

    [GeneratedRegex(@"^(?<part>\d+(\.\d+)?(ms|d|h|m|s))+$")]
    private static partial Regex Pattern();

    [GeneratedRegex(@"^(?<n>\d+(\.\d+)?)(?<unit>ms|d|h|m|s)$")]
    private static partial Regex Part();
}
