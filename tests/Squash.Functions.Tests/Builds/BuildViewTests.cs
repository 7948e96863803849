using Squash.Functions.Builds;
using Squash.Storage.Builds;

namespace Squash.Functions.Tests.Builds;

/// <summary>The progress figures GET …/builds/{buildId} reports: elapsed time, and the time left from the weighted share done.</summary>
public sealed class BuildViewTests
{
    private static readonly DateTimeOffset Created = new(2026, 12, 4, 10, 0, 0, TimeSpan.Zero);

    private static BuildJob Job(string status, DateTimeOffset? started, DateTimeOffset? finished, params StageProgress[] stages) => new()
    {
        BuildId = "b1", Index = "i", Status = status, CreatedUtc = Created, StartedUtc = started, FinishedUtc = finished, Version = "v1",
        Source = new BuildSourceSpec { Vectors = "src/base.fvecs" }, Options = new BuildJobOptions(), Blobs = [],
        Count = 1000, Dimensions = 8, ChunkRows = 500, Partitions = 4, Stages = stages, BytesWritten = 12345,
    };

    [Fact]
    public void AQueuedJobHasNoElapsedTimeAndNoEstimate()
    {
        var view = BuildView.From(Job(BuildStatus.Queued, null, null, new("train", 0, 1), new("assign", 0, 2), new("encode", 0, 4), new("publish", 0, 1)), Created.AddSeconds(5));
        Assert.Null(view.ElapsedSeconds);
        Assert.Null(view.EstimatedRemainingSeconds);
    }

    [Fact]
    public void ARunningJobEstimatesTheTimeLeftFromTheWeightedShareDone()
    {
        // train done (weight 0.15), assign half done (0.30 / 2): 0.30 of the work in 12 s → 28 s left.
        var job = Job(BuildStatus.Assigning, Created.AddSeconds(3), null, new("train", 1, 1), new("assign", 1, 2), new("encode", 0, 4), new("publish", 0, 1));
        var view = BuildView.From(job, Created.AddSeconds(15));
        Assert.Equal(12, view.ElapsedSeconds);
        Assert.Equal(28, view.EstimatedRemainingSeconds);
        Assert.Equal(12345, view.BytesWritten);
        Assert.Equal(4, view.Partitions);
        Assert.Equal(new BuildVectors(1000, 8, 0, 0), view.Vectors);
    }

    [Fact]
    public void AFinishedJobCountsElapsedTimeToItsEndAndHasNothingLeft()
    {
        var job = Job(BuildStatus.Failed, Created.AddSeconds(1), Created.AddSeconds(41), new("train", 1, 1), new("assign", 0, 2), new("encode", 0, 4), new("publish", 0, 1));
        var view = BuildView.From(job, Created.AddHours(1));
        Assert.Equal(40, view.ElapsedSeconds);
        Assert.Equal(0, view.EstimatedRemainingSeconds);
        Assert.Null(view.Version);
    }
}
