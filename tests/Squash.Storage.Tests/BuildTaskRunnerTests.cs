using System.Collections.Concurrent;
using Squash.Index.Model;
using Squash.Storage.Builds;

namespace Squash.Storage.Tests;

/// <summary>
/// The task runner's delivery rules against a real store (Azurite), with the stage work replaced by a counter: a
/// redelivered task does nothing, concurrent finishers of a stage start the next stage exactly once, a failure is
/// retried until the last delivery and then fails the job naming the task, and a stopped job runs nothing.
/// </summary>
public sealed class BuildTaskRunnerTests
{
    private sealed class RecordingQueue : IBuildQueue
    {
        public ConcurrentQueue<BuildTaskMessage> Sent { get; } = new();
        public Task SendAsync(BuildTaskMessage message, CancellationToken ct) { Sent.Enqueue(message); return Task.CompletedTask; }
    }

    private sealed class CountingWork(Func<string, int, Exception?>? fail = null) : IBuildStageWork
    {
        public ConcurrentDictionary<string, int> Runs { get; } = new();

        private async Task<StageResult> Run(string stage, int task)
        {
            Runs.AddOrUpdate($"{stage}[{task}]", 1, (_, n) => n + 1);
            // Finishers overlap: the fan-in must cope with tasks that end together.
            await Task.Delay(Random.Shared.Next(0, 30));
            if (fail?.Invoke(stage, task) is { } e) throw e;
            return new StageResult(10, 100);
        }

        public Task<StagePlan> PrepareStageAsync(BuildTaskContext c, string stage) => Task.FromResult(new StagePlan(c.Job.TaskCount(stage)));
        public Task<StageResult> TrainAsync(BuildTaskContext c) => Run("train", 0);
        public Task<StageResult> AssignAsync(BuildTaskContext c, int chunk) => Run("assign", chunk);
        public Task<StageResult> EncodeAsync(BuildTaskContext c, int partition) => Run("encode", partition);
        public Task<IndexManifest> PrepareManifestAsync(BuildTaskContext c) => throw new NotSupportedException("not part of these tests");
    }

    private static async Task<BuildJob> NewJobAsync(BuildJobStore jobs)
    {
        var now = DateTimeOffset.UtcNow;
        var job = new BuildJob
        {
            BuildId = BuildJobStore.NewBuildId(now),
            Index = "idx",
            Status = BuildStatus.Queued,
            CreatedUtc = now,
            Version = VersionIds.New(now),
            Source = new BuildSourceSpec { Vectors = "v.fvecs" },
            Options = new BuildJobOptions(),
            Blobs = [],
            Count = 60,
            Dimensions = 4,
            ChunkRows = 10,
            Partitions = 3,
            Stages = [new("train", 0, 1), new("assign", 0, 6), new("encode", 0, 3), new("publish", 0, 1)],
        };
        return (await jobs.CreateAsync(job, null, "h")).Job;
    }

    private static BuildTaskMessage Message(BuildJob job, string stage, int task) => new() { Index = job.Index, BuildId = job.BuildId, Stage = stage, Task = task };

    [Fact]
    public async Task ConcurrentFinishersStartTheNextStageOnceAndARedeliveredTaskDoesNothing()
    {
        var jobs = new BuildJobStore(Azurite.NewStore("runner"));
        var queue = new RecordingQueue();
        var work = new CountingWork();
        var runner = new BuildTaskRunner(jobs, queue, work);
        var job = await NewJobAsync(jobs);

        Assert.True((await runner.RunAsync(Message(job, "train", 0), 1, 5, default)).Success);
        Assert.Equal(Enumerable.Range(0, 6).Select(t => $"assign[{t}]"), queue.Sent.Select(m => m.Describe()));
        queue.Sent.Clear();

        // Half the stage: the record is not touched by finishing tasks; a reader sees their figures through the stage's tally.
        foreach (int t in new[] { 0, 2, 5 }) Assert.True((await runner.RunAsync(Message(job, "assign", t), 1, 5, default)).Success);
        var half = await jobs.WithLiveProgressAsync((await jobs.GetAsync(job.Index, job.BuildId))!.Value.Job);
        Assert.Equal((3, 30L, 400L), (half.Stage("assign").Done, half.VectorsAssigned, half.BytesWritten));
        Assert.Empty(queue.Sent);

        // Every assign task at once (three of them again): several see the stage complete, one starts the next.
        var deliveries = Enumerable.Range(0, 6).Select(t => runner.RunAsync(Message(job, "assign", t), 1, 5, default));
        Assert.All(await Task.WhenAll(deliveries), o => Assert.True(o.Success, o.Log));
        Assert.Equal(["encode[0]", "encode[1]", "encode[2]"], queue.Sent.Select(m => m.Describe()).ToArray());
        var (now, _) = (await jobs.GetAsync(job.Index, job.BuildId))!.Value;
        Assert.Equal(BuildStatus.Encoding, now.Status);
        Assert.Equal(6, now.Stage("assign").Done);
        // Counters count each task once, however often it was delivered (train's bytes, then six assign tasks').
        Assert.Equal(60, now.VectorsAssigned);
        Assert.Equal(700, now.BytesWritten);

        // Later redeliveries of finished tasks (together) run no work and start nothing.
        int before = work.Runs.Values.Sum();
        var again = await Task.WhenAll(new[] { 3, 1, 4 }.Select(t => runner.RunAsync(Message(job, "assign", t), 2, 5, default)));
        Assert.All(again, o => Assert.True(o.Success, o.Log));
        Assert.Equal(before, work.Runs.Values.Sum());
        Assert.Equal(3, queue.Sent.Count);
    }

    [Fact]
    public async Task AFailingTaskIsRetriedUntilItsLastDeliveryAndThenFailsTheJobNamingIt()
    {
        var jobs = new BuildJobStore(Azurite.NewStore("runner"));
        var runner = new BuildTaskRunner(jobs, new RecordingQueue(), new CountingWork((stage, task) => stage == "assign" && task == 4 ? new IOException("disk on fire") : null));
        var job = await NewJobAsync(jobs);
        await runner.RunAsync(Message(job, "train", 0), 1, 3, default);
        for (int delivery = 1; delivery <= 3; delivery++)
        {
            var outcome = await runner.RunAsync(Message(job, "assign", 4), delivery, 3, default);
            Assert.False(outcome.Success);
            Assert.Equal($"assign[4] of build {job.BuildId} failed on delivery {delivery} of 3: IOException: disk on fire", outcome.Log);
            var status = (await jobs.GetAsync(job.Index, job.BuildId))!.Value.Job;
            Assert.Equal(delivery < 3 ? BuildStatus.Assigning : BuildStatus.Failed, status.Status);
        }
        var failed = (await jobs.GetAsync(job.Index, job.BuildId))!.Value.Job;
        Assert.Equal(new BuildError("task-failed", "disk on fire (failed on all 3 deliveries)", "assign[4]"), failed.Error);
    }

    [Fact]
    public async Task AStoppedJobRunsNoMoreWork()
    {
        var jobs = new BuildJobStore(Azurite.NewStore("runner"));
        var work = new CountingWork();
        var runner = new BuildTaskRunner(jobs, new RecordingQueue(), work);
        var job = await NewJobAsync(jobs);
        await runner.RunAsync(Message(job, "train", 0), 1, 5, default);
        await jobs.UpdateAsync(job.Index, job.BuildId, j => j with { Status = BuildStatus.Cancelled });
        var outcome = await runner.RunAsync(Message(job, "assign", 0), 1, 5, default);
        Assert.Equal($"build {job.BuildId} is cancelled: assign[0] skipped", outcome.Log);
        Assert.False(work.Runs.ContainsKey("assign[0]"));
    }
}
