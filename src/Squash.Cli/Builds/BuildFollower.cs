using System.Globalization;
using Spectre.Console;
using Squash.Functions.Builds;
using Squash.Storage.Builds;

namespace Squash.Cli.Builds;

/// <summary>
/// Follows a build on the service until it ends: GET the job, show where it stands, wait, again. Each GET has its own
/// deadline and is retried (<see cref="BuildsApi"/>); the wait is short while the job moves and grows (×1.5, up to
/// <see cref="MaxPollDelay"/>) while nothing changes, so a long build costs few requests and a quick one is not slowed.
/// </summary>
public static class BuildFollower
{
    public static readonly TimeSpan MinPollDelay = TimeSpan.FromMilliseconds(250);
    public static readonly TimeSpan MaxPollDelay = TimeSpan.FromSeconds(5);

    public static async Task<BuildView> FollowAsync(BuildsApi api, string buildId, Action<BuildView> report, CancellationToken ct)
    {
        var delay = MinPollDelay;
        string? last = null;
        while (true)
        {
            var view = (await api.ShowAsync(buildId, retry: true, ct).ConfigureAwait(false)).Value;
            report(view);
            if (BuildStatus.IsTerminal(view.Status)) return view;
            var now = Signature(view);
            delay = now == last ? TimeSpan.FromTicks(Math.Min(MaxPollDelay.Ticks, (long)(delay.Ticks * 1.5))) : MinPollDelay;
            last = now;
            await Task.Delay(delay, ct).ConfigureAwait(false);
        }
    }

    private static string Signature(BuildView v) =>
        v.Status + ":" + string.Join(',', v.Stages.Select(s => $"{s.Done}/{s.Total}")) + $":{v.Vectors.Assigned}:{v.Vectors.Encoded}";

    /// <summary>Follows with a progress bar per stage on a terminal, or a line per change of state in a log.</summary>
    public static async Task<BuildView> FollowWithProgressAsync(BuildsApi api, string buildId, CancellationToken ct)
    {
        if (!AnsiConsole.Profile.Capabilities.Interactive)
        {
            var plain = new PlainProgress(Console.Error);
            return await FollowAsync(api, buildId, plain.Report, ct).ConfigureAwait(false);
        }
        BuildView? result = null;
        await AnsiConsole.Progress().AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn())
            .StartAsync(async ctx =>
            {
                var tasks = new Dictionary<string, ProgressTask>();
                result = await FollowAsync(api, buildId, view =>
                {
                    foreach (var stage in view.Stages)
                    {
                        if (!tasks.TryGetValue(stage.Stage, out var task))
                            tasks[stage.Stage] = task = ctx.AddTask(stage.Stage, maxValue: Math.Max(1, stage.Total));
                        task.MaxValue = Math.Max(1, stage.Total);
                        task.Value = stage.Done;
                        task.Description = Markup.Escape(StageLine(view, stage));
                    }
                }, ct).ConfigureAwait(false);
            }).ConfigureAwait(false);
        return result!;
    }

    /// <summary>One stage as its progress bar's label: tasks, the vectors it has handled, and the ETA while it runs.</summary>
    public static string StageLine(BuildView view, StageProgress stage)
    {
        var line = $"{stage.Stage,-8} {stage.Done,5:N0}/{stage.Total:N0} tasks";
        long vectors = stage.Stage switch { BuildStages.Assign => view.Vectors.Assigned, BuildStages.Encode => view.Vectors.Encoded, _ => -1 };
        if (vectors >= 0 && view.Vectors.Total > 0) line += $", {vectors:N0}/{view.Vectors.Total:N0} vectors";
        if (view.Status == BuildStages.StatusOf(stage.Stage) && stage.Done < stage.Total && view.EstimatedRemainingSeconds is { } eta)
            line += $", about {Duration(eta)} left";
        return line;
    }

    /// <summary>Every stage in one line: <c>train 1/1, assign 6/6, encode 10/60, publish 0/1</c>.</summary>
    public static string Stages(BuildView view) => string.Join(", ", view.Stages.Select(s => $"{s.Stage} {s.Done}/{s.Total}"));

    /// <summary>Seconds as <c>42 s</c>, <c>3:05</c> or <c>1:02:03</c>.</summary>
    public static string Duration(double seconds)
    {
        if (seconds < 60) return $"{seconds.ToString("0", CultureInfo.InvariantCulture)} s";
        var t = TimeSpan.FromSeconds(Math.Round(seconds));
        return t.TotalHours >= 1 ? $"{(int)t.TotalHours}:{t.Minutes:00}:{t.Seconds:00}" : $"{t.Minutes}:{t.Seconds:00}";
    }

    /// <summary>For logs and pipes: a line when the state changes, and at most every 10 s while a stage moves.</summary>
    private sealed class PlainProgress(TextWriter output)
    {
        private static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);
        private string? _status;
        private string? _stages;
        private DateTime _printed;

        public void Report(BuildView view)
        {
            var stages = Stages(view);
            bool statusChanged = view.Status != _status;
            if (!statusChanged && (stages == _stages || DateTime.UtcNow - _printed < Interval)) return;
            var line = $"  {view.Status}: {stages}";
            if (view.Vectors.Total > 0 && view.Status is BuildStatus.Assigning or BuildStatus.Encoding)
                line += $"; {(view.Status == BuildStatus.Assigning ? view.Vectors.Assigned : view.Vectors.Encoded):N0}/{view.Vectors.Total:N0} vectors";
            if (!BuildStatus.IsTerminal(view.Status) && view.EstimatedRemainingSeconds is { } eta) line += $"; about {Duration(eta)} left";
            if (view.ElapsedSeconds is { } elapsed) line += $" ({Duration(elapsed)} in)";
            output.WriteLine(line);
            (_status, _stages, _printed) = (view.Status, stages, DateTime.UtcNow);
        }
    }
}
