using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Mvc;
using Squash.Storage.Builds;

namespace Squash.Functions.Builds;

/// <summary>
/// A build's job record that is not valid JSON makes the builds API answer a 500 problem naming the record (and the
/// exception goes to the log), not a bare 500: show, list and cancel all read it.
/// </summary>
public sealed class BuildRecordDamagedHandler(IProblemDetailsService problems, ILogger<BuildRecordDamagedHandler> log) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext http, Exception exception, CancellationToken ct)
    {
        if (exception is not BuildRecordDamagedException e) return false;
        log.LogError(exception, "{Problem}", e.Message);
        http.Response.StatusCode = StatusCodes.Status500InternalServerError;
        return await problems.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = http,
            ProblemDetails = new ProblemDetails
            {
                Status = StatusCodes.Status500InternalServerError,
                Title = "Build record damaged",
                Detail = e.Message,
            },
            Exception = exception,
        });
    }
}
