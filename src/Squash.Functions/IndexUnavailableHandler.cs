using Microsoft.AspNetCore.Diagnostics;

namespace Squash.Functions;

/// <summary>
/// An index that cannot be opened answers with a problem naming the index and what is wrong — 500 when it is
/// damaged, 503 when the store could not be read (with a Retry-After where asking again helps) — and the full exception goes to the log (the response carries
/// no store location and no stack).
/// </summary>
public sealed class IndexUnavailableHandler(IProblemDetailsService problems, ILogger<IndexUnavailableHandler> log) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext http, Exception exception, CancellationToken ct)
    {
        if (exception is not IndexUnavailableException e) return false;
        if (e.Transient && e.RetryAfter is { } after) http.Response.Headers.RetryAfter = Math.Max(1, (long)Math.Ceiling(after.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
        return await ProblemWriter.WriteAsync(problems, log, http, e, e.Transient ? StatusCodes.Status503ServiceUnavailable : StatusCodes.Status500InternalServerError,
            e.Title ?? (e.Transient ? "Index temporarily unavailable" : "Index damaged"));
    }
}
