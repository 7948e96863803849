using Microsoft.AspNetCore.Diagnostics;
using Squash.Storage.Builds;

namespace Squash.Functions.Builds;

/// <summary>
/// A build's job record that is not valid JSON makes the builds API answer a 500 problem naming the record (and the
/// exception goes to the log), not a bare 500: show, list and cancel all read it.
/// </summary>
public sealed class BuildRecordDamagedHandler(IProblemDetailsService problems, ILogger<BuildRecordDamagedHandler> log) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext http, Exception exception, CancellationToken ct) =>
        exception is BuildRecordDamagedException
        && await ProblemWriter.WriteAsync(problems, log, http, exception, StatusCodes.Status500InternalServerError, "Build record damaged");
}
