using System.CommandLine;
using System.Globalization;
using Spectre.Console;
using Squash.Cli.Builds;
using Squash.Functions.Builds;
using Squash.Storage.Builds;

namespace Squash.Cli.Commands;

/// <summary>
/// <c>squash builds list|show|cancel</c>: the builds API of a running service (docs/builds.md) as tables, or with
/// <c>--json</c> as the API sent it. An error answer (404, 409, 503…) is one line quoting the problem's title and detail.
/// </summary>
public static class BuildsCommand
{
    private sealed class Flags
    {
        public readonly Option<string> Endpoint = new(CliErrors.EndpointFlag) { Description = "The service's HTTP API (e.g. http://127.0.0.1:7071 from squash serve).", Required = true };
        public readonly Option<string> Index = new("--index") { Description = "The index whose builds these are.", Required = true };
        public readonly Option<bool> Json = new("--json") { Description = "Print the API's JSON answer as it was sent (its field names: buildId, status, stages, vectors, error…)." };
        public readonly Option<string?> FunctionKey = EndpointFlags.FunctionKey();

        public void AddTo(Command command)
        {
            command.Options.Add(Endpoint);
            command.Options.Add(Index);
            command.Options.Add(Json);
            command.Options.Add(FunctionKey);
        }

        public BuildsApi Api(ParseResult pr) =>
            new(EndpointFlags.ParseEndpoint(pr.GetValue(Endpoint)!), EndpointFlags.Key(pr, FunctionKey), pr.GetValue(Index)!);
    }

    public static Command Create()
    {
        var builds = new Command("builds", "Builds through the queue on a service: list an index's recent builds, show one, or cancel one (squash build --endpoint submits them).");
        builds.Subcommands.Add(List());
        builds.Subcommands.Add(Show());
        builds.Subcommands.Add(Cancel());
        return builds;
    }

    private static Argument<string> BuildId() => new("ID") { Description = "The build's id, as squash build --endpoint or builds list printed it (b20261203-121530123-3f9a1c0b7e2d)." };

    /// <summary>A 400's fields named as the user typed them.</summary>
    private static string? FlagOf(string field) => field switch { "buildId" => "ID", "index" => "--index", _ => null };

    private static async Task<T> Call<T>(Func<Task<T>> call)
    {
        try
        {
            return await call();
        }
        catch (EndpointProblemException e) when (e.Errors is { Count: > 0 })
        {
            throw new UsageException(e.Describe(FlagOf));
        }
    }

    private static Command List()
    {
        var f = new Flags();
        var cmd = new Command("list", "The index's 50 most recent builds, newest first.");
        f.AddTo(cmd);
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            using var api = f.Api(pr);
            var answer = await Call(() => api.ListAsync(retry: false, ct));
            if (pr.GetValue(f.Json)) { Console.Out.WriteLine(answer.Json); return 0; }
            var damaged = answer.Value.Damaged ?? [];
            if (answer.Value.Builds.Count == 0 && damaged.Count == 0)
            {
                Console.Out.WriteLine($"index {api.Index} has no builds");
                return 0;
            }
            var table = new Table().AddColumns("build", "status", "created (UTC)", "elapsed", "vectors", "progress", "version or error");
            // Build ids sort by submission: a damaged record takes its place among the others, newest first.
            var rows = answer.Value.Builds.Select(b => (b.BuildId, Cells: Cells(b.BuildId, b.Status, Time(b.CreatedUtc), b.ElapsedSeconds is { } s ? BuildFollower.Duration(s) : "-",
                    $"{b.Vectors.Total:N0} × {b.Vectors.Dimensions}", Progress(b), Outcome(b))))
                .Concat(damaged.Select(d => (d.BuildId, Cells: Cells(d.BuildId, "damaged", "-", "-", "-", "-", d.Problem))));
            foreach (var row in rows.OrderByDescending(r => r.BuildId, StringComparer.Ordinal)) table.AddRow(row.Cells);
            Output().Write(table);
            return 0;
        }));
        return cmd;
    }

    private static Command Show()
    {
        var f = new Flags();
        var id = BuildId();
        var cmd = new Command("show", "One build: status, stage progress, vectors, elapsed and estimated remaining time, the version it published or its error.") { id };
        f.AddTo(cmd);
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            using var api = f.Api(pr);
            var answer = await Call(() => api.ShowAsync(pr.GetValue(id)!, retry: false, ct));
            if (pr.GetValue(f.Json)) { Console.Out.WriteLine(answer.Json); return 0; }
            Output().Write(Details(answer.Value));
            return 0;
        }));
        return cmd;
    }

    private static Command Cancel()
    {
        var f = new Flags();
        var id = BuildId();
        var cmd = new Command("cancel", "Cancel a build: it stops and never publishes (the current version stays). A build that has finished, or is publishing, cannot be cancelled.") { id };
        f.AddTo(cmd);
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            using var api = f.Api(pr);
            var answer = await Call(() => api.CancelAsync(pr.GetValue(id)!, ct));
            if (pr.GetValue(f.Json)) { Console.Out.WriteLine(answer.Json); return 0; }
            Console.Out.WriteLine($"cancelled build {answer.Value.BuildId} of index {answer.Value.Index}: it will not publish");
            return 0;
        }));
        return cmd;
    }

    /// <summary>A console on the current standard output (so redirected output, and tests, get the table), wide when not a terminal.</summary>
    private static IAnsiConsole Output()
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Out) });
        if (!console.Profile.Capabilities.Interactive) console.Profile.Width = 200;
        return console;
    }

    private static string[] Cells(params string[] values) => values.Select(Markup.Escape).ToArray();

    private static string Time(DateTimeOffset? t) => t is { } v ? v.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture) : "-";

    /// <summary>The running stage's tasks, or what is left to say about a build that ended.</summary>
    private static string Progress(BuildView b)
    {
        if (BuildStatus.IsTerminal(b.Status)) return "-";
        var running = b.Stages.FirstOrDefault(s => BuildStages.StatusOf(s.Stage) == b.Status);
        return running is null ? "-" : $"{running.Stage} {running.Done}/{running.Total}" + (b.EstimatedRemainingSeconds is { } eta ? $", about {BuildFollower.Duration(eta)} left" : "");
    }

    private static string Outcome(BuildView b) => b.Status switch
    {
        BuildStatus.Succeeded => b.Version + (b.Current == false ? " (not current)" : ""),
        BuildStatus.Failed when b.Error is { } e => ErrorText(e),
        _ => "-",
    };

    private static string ErrorText(BuildError e) => (e.Task is { } task ? $"in {task}: " : "") + $"{e.Code}: {e.Message}";

    private static Grid Details(BuildView b)
    {
        var grid = new Grid().AddColumn(new GridColumn().NoWrap()).AddColumn();
        void Row(string name, string value) => grid.AddRow(Markup.Escape(name), Markup.Escape(value));
        Row("build", b.BuildId);
        Row("index", b.Index);
        Row("status", b.Status);
        Row("created", Time(b.CreatedUtc) + " UTC");
        Row("started", b.StartedUtc is null ? "-" : Time(b.StartedUtc) + " UTC");
        Row("finished", b.FinishedUtc is null ? "-" : Time(b.FinishedUtc) + " UTC");
        Row("elapsed", b.ElapsedSeconds is { } s ? BuildFollower.Duration(s) : "-");
        if (!BuildStatus.IsTerminal(b.Status)) Row("remaining", b.EstimatedRemainingSeconds is { } eta ? "about " + BuildFollower.Duration(eta) : "unknown yet");
        foreach (var stage in b.Stages) Row("stage", BuildFollower.StageLine(b, stage));
        Row("vectors", $"{b.Vectors.Total:N0} × {b.Vectors.Dimensions} ({b.Vectors.Assigned:N0} assigned, {b.Vectors.Encoded:N0} encoded)");
        Row("bytes written", $"{b.BytesWritten:N0}");
        Row("source", b.Source.Vectors + (b.Source.Blobs > 1 ? $" ({b.Source.Blobs} blobs)" : "") + (b.Source.Attributes is { } a ? $", attributes {a}" : ""));
        var o = b.Options;
        Row("options", FormattableString.Invariant($"metric {o.Metric}, partitions {o.Partitions}, bitsPerDim {o.BitsPerDim}, maxBits {o.MaxBits}, energy {o.Energy}, seed {o.Seed}, calibrate {(o.Calibrate ? "true" : "false")}, chunkRows {o.ChunkRows}"));
        if (b.Status == BuildStatus.Succeeded) Row("version", b.Version + (b.Current is { } c ? c ? " (current)" : " (not current: a newer build was published first)" : ""));
        if (b.Error is { } error) Row("error", ErrorText(error));
        return grid;
    }
}
