using System.Text.RegularExpressions;

namespace Squash.Storage;

/// <summary>
/// Hides credentials in text that is printed or logged: store specs, command lines, exception messages,
/// instance output. Whatever is not a credential stays readable, so that a message still says which
/// account, endpoint or file it is about.
/// </summary>
public static partial class SecretRedaction
{
    public const string Mask = "***";

    /// <summary>
    /// Replaces every credential part by <see cref="Mask"/>: the query of a URL (a SAS token travels there),
    /// connection-string keys (<c>AccountKey=</c>, <c>SharedAccessSignature=</c>, <c>SharedAccessKey=</c>,
    /// <c>Password=</c>), and a bare SAS token's <c>sig=</c>.
    /// </summary>
    public static string Redact(string? text)
    {
        if (string.IsNullOrEmpty(text)) return text ?? "";
        text = UrlQuery().Replace(text, m => m.Groups["url"].Value + "?" + Mask);
        text = ConnectionStringSecret().Replace(text, m => m.Groups["key"].Value + Mask);
        return SasSignature().Replace(text, m => m.Groups["key"].Value + Mask);
    }

    /// <summary>A URL's query, up to a space, quote, bracket or ';' (which ends a connection-string part).</summary>
    [GeneratedRegex(@"(?<url>\b[a-z][a-z0-9+.\-]*://[^\s?#'""<>;]*)\?[^\s#'""<>;]*", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex UrlQuery();

    /// <summary>A secret part of a connection string; its value runs to the next ';' (a SAS token holds '&amp;' and '=').</summary>
    [GeneratedRegex(@"(?<key>\b(?:AccountKey|SharedAccessSignature|SharedAccessKey|Password|Pwd)\s*=\s*)[^;\s'""]+", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex ConnectionStringSecret();

    /// <summary>The signature of a SAS token given without its URL (e.g. "sv=…&amp;sig=…").</summary>
    [GeneratedRegex(@"(?<key>(?<![A-Za-z0-9_])sig\s*=\s*)[^&;\s'""]+", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex SasSignature();
}
