using System.Globalization;
using System.Net;
using System.Text.Json;
using Squash.Search.Writes;
using Squash.Storage;
using Squash.Storage.Writes;

namespace Squash.Functions.Tests;

/// <summary>
/// Log batches of another shape (dimension, or ids against rows named by number) than the current version: ingest must
/// skip them by name rather than fail on them for good.
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class ShapeChangeRaceTests(IndexFixture fx)
{
    private const int Rows = WriteModel.Rows;
    private static readonly Dictionary<string, string> Settings = new() { ["Squash:CurrentRecheck"] = "00:00:00" };

    private static float[] Vectors(int seed, int count, int dims)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count * dims).Select(_ => (float)rng.NextDouble()).ToArray();
    }

    /// <summary>
    /// Batches in the log that do not fit the current version (as a refused write leaves, or a log written by an older
    /// build of the service) are skipped by every ingest run, each named by its sequence and why, and the batches around
    /// them are applied, by ingest and by strong reads: before, the first such batch failed every run ("expected 4 dimensions, got 6"), so the index
    /// never indexed another write.
    /// </summary>
    [Fact]
    public async Task IngestSkipsBatchesThatDoNotFitTheVersionByNameAndAppliesTheRest()
    {
        var index = "shape-skip-" + Guid.NewGuid().ToString("N")[..8];
        var (model, store) = await WriteModel.BuildAsync(fx.Root, index, 71, withIds: false);
        var log = new WriteLog(store.Blobs, index);
        WriteBatch Batch(params UpsertItem[] upserts) => new() { CreatedUtc = DateTimeOffset.UtcNow, Upserts = upserts };
        float[] first = Vectors(72, 1, WriteModel.Dims), third = Vectors(75, 1, WriteModel.Dims);
        await log.AppendAsync(Batch(new UpsertItem("60", first)), null, "", 0);
        await log.AppendAsync(Batch(new UpsertItem("61", Vectors(73, 1, 6)), new UpsertItem("sku-1", Vectors(74, 1, WriteModel.Dims))), null, "", 0);
        await log.AppendAsync(new WriteBatch { CreatedUtc = DateTimeOffset.UtcNow, Deletes = ["0"], Upserts = [new UpsertItem("62", third)] }, null, "", 0);

        // A strong read passes over batch 2 as well, and sees batches 1 and 3.
        using (var app = fx.App(2, 0, settings: Settings))
        {
            var live = model.Where(e => e.Key != "0").Select(e => (e.Key, e.Value.Vector))
                .Append(("60", first)).Append(("62", third));
            await AssertExactAsync(app.CreateClient(), index, Vectors(77, 1, WriteModel.Dims), live, "strong", "before ingest");
        }

        var run = await LogIngest.RunAsync(store, log).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.True(run.Published);
        Assert.Equal([new SkippedBatch(2, "upserts[0].vector has 6 dimensions; the index now has 4; "
            + "upserts[1].id 'sku-1' is not a row number; the index now names its rows by number (it was built without ids)")], run.Skipped);
        Assert.Equal((2, 2, 1), (run.Batches, run.Upserts, run.Deleted));
        var current = await store.OpenCurrentAsync();
        Assert.Equal((Rows + 1L, 3L), (current.Count, current.IndexedSequence));

        // Nothing left to apply: the next run does nothing, and later writes are applied.
        Assert.Null((await LogIngest.RunAsync(store, log)).Version);
        await log.AppendAsync(Batch(new UpsertItem("63", Vectors(76, 1, WriteModel.Dims))), null, "", 3);
        var next = await LogIngest.RunAsync(store, log).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.Empty(next.Skipped);
        Assert.Equal((Rows + 2L, 4L), ((await store.OpenCurrentAsync()).Count, (await store.OpenCurrentAsync()).IndexedSequence));
    }

    /// <summary>An exact query answers the brute-force nearest of <paramref name="rows"/>, by id (row numbers, as JSON numbers).</summary>
    private static async Task AssertExactAsync(HttpClient client, string index, float[] query, IEnumerable<(string Id, float[] Vector)> rows, string consistency, string context)
    {
        const int k = 5;
        var response = await client.PostAsync($"/api/indexes/{index}/query",
            Bodies.Json($$$"""{"vector":{{{Bodies.Vector(query)}}},"k":{{{k}}},"options":{"exact":true,"consistency":"{{{consistency}}}"}}"""));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{context}: {text}");
        var expected = rows.OrderBy(r => r.Vector.Select((x, j) => (double)(x - query[j]) * (x - query[j])).Sum()).Take(k).Select(r => r.Id);
        var got = JsonDocument.Parse(text).RootElement.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("id").GetRawText());
        Assert.True(expected.SequenceEqual(got), $"{context}: expected [{string.Join(", ", expected)}], got {text}");
    }

    /// <summary>Row i of <paramref name="data"/> (<paramref name="dims"/> a row) named i.</summary>
    private static IEnumerable<(string Id, float[] Vector)> Numbered(float[] data, int dims) =>
        Enumerable.Range(0, data.Length / dims).Select(i => (i.ToString(CultureInfo.InvariantCulture), data.AsSpan(i * dims, dims).ToArray()));
}
