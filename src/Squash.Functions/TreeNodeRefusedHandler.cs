using Microsoft.AspNetCore.Diagnostics;

namespace Squash.Functions;

/// <summary>A tree node that refused a scan body as too large (<see cref="Tree.TreeNodeRefusedException"/>): a 500 problem saying which settings differ.</summary>
public sealed class TreeNodeRefusedHandler(IProblemDetailsService problems, ILogger<TreeNodeRefusedHandler> log) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext http, Exception exception, CancellationToken ct) =>
        exception is Tree.TreeNodeRefusedException
        && await ProblemWriter.WriteAsync(problems, log, http, exception, StatusCodes.Status500InternalServerError, "Tree node refused the scan");
}
