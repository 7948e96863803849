using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Mvc;

namespace Squash.Functions;

/// <summary>
/// An index that cannot be opened answers with a problem naming the index and what is wrong — 500 when it is
/// damaged, 503 when the store could not be read — and the full exception goes to the log (the response carries
/// no store location and no stack).
/// </summary>
public sealed class IndexUnavailableHandler(IProblemDetailsService problems, ILogger<IndexUnavailableHandler> log) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext http, Exception exception, CancellationToken ct)
    {
        if (exception is not IndexUnavailableException e) return false;
        log.LogError(exception, "{Problem}", e.Message);
        int status = e.Transient ? StatusCodes.Status503ServiceUnavailable : StatusCodes.Status500InternalServerError;
        http.Response.StatusCode = status;
        if (e.Transient) http.Response.Headers.RetryAfter = "1";
        return await problems.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = http,
            ProblemDetails = new ProblemDetails
            {
                Status = status,
                Title = e.Title ?? (e.Transient ? "Index temporarily unavailable" : "Index damaged"),
                Detail = e.Message,
            },
            Exception = exception,
        });
    }
}
