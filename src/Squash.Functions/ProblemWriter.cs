using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Mvc;

namespace Squash.Functions;

/// <summary>What the app's exception handlers share: the exception goes to the log whole, the caller gets a problem with its message.</summary>
internal static class ProblemWriter
{
    /// <summary>Answers <paramref name="exception"/> as <c>application/problem+json</c> (status, title, its message as the detail; no stack).</summary>
    public static ValueTask<bool> WriteAsync(IProblemDetailsService problems, ILogger log, HttpContext http, Exception exception, int status, string title)
    {
        log.LogError(exception, "{Problem}", exception.Message);
        http.Response.StatusCode = status;
        return problems.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = http,
            ProblemDetails = new ProblemDetails { Status = status, Title = title, Detail = exception.Message },
            Exception = exception,
        });
    }
}
