using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Squash.Index.Build;
using Squash.Search.Builds;
using Squash.Storage;
using Squash.Storage.Builds;

namespace Squash.Search.Tests;

/// <summary>
/// What each stage of a queue build reads, recorded at the blob store: train and assign read the source once between them
/// each (assign exactly its own chunk), encode reads every run byte once and never the source, publish never the source
/// (the assign tasks' exact neighbours stand for it) and each partition's segments at most once. The stages run through the
/// real task runner over a folder store, messages delivered in order; the result still equals the in-process build.
/// </summary>
public sealed class BuildStageReadsTests
{
    private sealed record Read(string Task, string Op, string Name, long Length);

    /// <summary>Records every read and listing with the task it was made for.</summary>
    private sealed class RecordingStore(IBlobStore inner) : IBlobStore
    {
        public List<Read> Reads { get; } = [];
        public string Task { get; set; } = "test";
        public string Description => inner.Description;

        private void Add(string op, string name, long length) { lock (Reads) Reads.Add(new Read(Task, op, name, length)); }

        public async Task<byte[]> ReadAllAsync(string name, CancellationToken ct = default)
        {
            var bytes = await inner.ReadAllAsync(name, ct);
            Add("all", name, bytes.Length);
            return bytes;
        }

        public async Task<byte[]> ReadRangeAsync(string name, long offset, int length, CancellationToken ct = default)
        {
            var bytes = await inner.ReadRangeAsync(name, offset, length, ct);
            Add("range", name, length);
            return bytes;
        }

        public Task<BlobInfo> WriteAsync(string name, ReadOnlyMemory<byte> data, WriteCondition condition, CancellationToken ct = default) =>
            inner.WriteAsync(name, data, condition, ct);

        public Task<BlobInfo?> GetInfoAsync(string name, CancellationToken ct = default) => inner.GetInfoAsync(name, ct);

        public async IAsyncEnumerable<BlobInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken ct = default)
        {
            Add("list", prefix, 0);
            await foreach (var b in inner.ListAsync(prefix, ct)) yield return b;
        }

        public Task<bool> DeleteAsync(string name, CancellationToken ct = default) => inner.DeleteAsync(name, ct);
    }

    private sealed class InOrderQueue : IBuildQueue
    {
        public Queue<BuildTaskMessage> Pending { get; } = new();
        public Task SendAsync(BuildTaskMessage message, CancellationToken ct) { lock (Pending) Pending.Enqueue(message); return Task.CompletedTask; }
    }

    private static byte[] Fvecs(float[] data, int dims)
    {
        int n = data.Length / dims;
        var bytes = new byte[n * (4 + dims * 4)];
        for (int i = 0; i < n; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(i * (4 + dims * 4)), dims);
            MemoryMarshal.AsBytes(data.AsSpan(i * dims, dims)).CopyTo(bytes.AsSpan(i * (4 + dims * 4) + 4));
        }
        return bytes;
    }

    /// <summary>Attributes by position, with a number spread over many values, a category and ids (filtered calibration draws from both).</summary>
    private static string AttributeLines(int n, int seed)
    {
        var rng = new Random(seed);
        string[] colours = ["red", "green", "blue"];
        return string.Concat(Enumerable.Range(0, n).Select(i =>
            $"{{\"id\":\"d{i}\",\"attributes\":{{\"price\":{rng.Next(100_000)},\"colour\":\"{colours[rng.Next(3)]}\"}}}}\n"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task EachStageReadsOnlyItsShare(bool withAttributes)
    {
        const int n = 5000, dims = 16, seed = 9, chunkRows = 700, partitions = 40;
        var data = TestData.Clustered(n, dims, clusters: 20, seed: seed);
        var folder = Path.Combine(Path.GetTempPath(), "squash-stage-reads-" + Guid.NewGuid().ToString("N"));
        try
        {
            var store = new RecordingStore(new FolderBlobStore(folder));
            await store.WriteAsync("src/base.fvecs", Fvecs(data, dims), WriteCondition.Overwrite);
            var blobs = await BlobVectorSource.ResolveAsync(store, "src/base.fvecs");
            var attributeText = AttributeLines(n, seed);
            BuildAttributesBlob? attributesBlob = null;
            if (withAttributes)
            {
                var info = await store.WriteAsync("src/attrs.jsonl", System.Text.Encoding.UTF8.GetBytes(attributeText), WriteCondition.Overwrite);
                attributesBlob = new BuildAttributesBlob(info.Name, info.ETag, info.Length);
            }
            var jobs = new BuildJobStore(store);
            var now = DateTimeOffset.UtcNow;
            var job = new BuildJob
            {
                BuildId = BuildJobStore.NewBuildId(now), Index = "reads", Status = BuildStatus.Queued, CreatedUtc = now, Version = VersionIds.New(now),
                Source = new BuildSourceSpec { Vectors = "src/base.fvecs", Attributes = attributesBlob?.Name }, AttributesBlob = attributesBlob, Options = new BuildJobOptions { Partitions = partitions, Seed = seed, ChunkRows = chunkRows },
                Blobs = blobs, Count = n, Dimensions = dims, ChunkRows = chunkRows, Partitions = partitions,
                Stages = [new("train", 0, 1), new("assign", 0, (n + chunkRows - 1) / chunkRows), new("encode", 0, partitions), new("publish", 0, 1)],
            };
            await jobs.CreateAsync(job, null, "h");
            var queue = new InOrderQueue();
            var runner = new BuildTaskRunner(jobs, queue, new QueueStageWork());
            queue.Pending.Enqueue(new BuildTaskMessage { Index = job.Index, BuildId = job.BuildId, Stage = "train", Task = 0 });
            long runBytes = 0;
            while (queue.Pending.TryDequeue(out var message))
            {
                store.Task = message.Describe();
                // The runs as they stand before the encode stage starts, for the byte count below.
                if (message.Stage == "encode" && runBytes == 0)
                    await foreach (var b in new FolderBlobStore(folder).ListAsync($"reads/build-work/{job.BuildId}/runs/"))
                        if (b.Name.EndsWith(".run", StringComparison.Ordinal)) runBytes += b.Length;
                var outcome = await runner.RunAsync(message, 1, 5, default);
                Assert.True(outcome.Success, outcome.Log);
            }
            var done = (await jobs.GetAsync(job.Index, job.BuildId))!.Value.Job;
            Assert.True(done.Status == BuildStatus.Succeeded, done.Error?.Message);

            long rowBytes = 4 + dims * 4;
            bool IsSource(Read r) => r.Name == "src/base.fvecs";
            IEnumerable<Read> Of(string stage) => store.Reads.Where(r => r.Task.StartsWith(stage + "[", StringComparison.Ordinal));
            // Train: the whole source once (by ranges), nothing of it whole.
            Assert.Equal(n * rowBytes, Of("train").Where(IsSource).Sum(r => r.Length));
            // Assign: each task exactly its own chunk's rows.
            foreach (var task in Of("assign").Select(r => r.Task).Distinct())
            {
                int chunk = int.Parse(task["assign[".Length..^1]);
                int rows = Math.Min(chunkRows, n - chunk * chunkRows);
                Assert.Equal(rows * rowBytes, Of("assign").Where(r => r.Task == task && IsSource(r)).Sum(r => r.Length));
            }
            // Attributes: train reads the blob twice (its two passes), by ranges; assign tasks between them read it once, each a
            // range of about its own rows; encode and publish never.
            bool IsAttributes(Read r) => r.Name == "src/attrs.jsonl";
            if (withAttributes)
            {
                long attributeBytes = attributesBlob!.Bytes;
                Assert.DoesNotContain(store.Reads, r => IsAttributes(r) && r.Op != "range");
                Assert.Equal(2 * attributeBytes, Of("train").Where(IsAttributes).Sum(r => r.Length));
                Assert.Equal(attributeBytes, Of("assign").Where(IsAttributes).Sum(r => r.Length));
                long perChunk = (long)Math.Ceiling(attributeBytes * (double)chunkRows / n);
                Assert.All(Of("assign").Where(IsAttributes), r => Assert.InRange(r.Length, 1, perChunk * 3 / 2));
                Assert.DoesNotContain(Of("encode"), IsAttributes);
                Assert.DoesNotContain(Of("publish"), IsAttributes);
            }
            // Encode: never the source, never a runs blob whole, and every run byte exactly once over the stage.
            Assert.DoesNotContain(Of("encode"), IsSource);
            Assert.DoesNotContain(Of("encode"), r => r.Op == "all" && r.Name.EndsWith(".run", StringComparison.Ordinal));
            Assert.Equal(runBytes, Of("encode").Where(r => r.Op == "range" && r.Name.EndsWith(".run", StringComparison.Ordinal)).Sum(r => r.Length));
            // Publish: never the source, no listing of partitions, each segment at most once.
            Assert.DoesNotContain(Of("publish"), IsSource);
            var segments = Of("publish").Where(r => r.Name.EndsWith(".seg", StringComparison.Ordinal) && r.Name.Contains("/versions/")).GroupBy(r => r.Name);
            // Without attributes each segment at most once. With them the filtered calibration streams too, in three passes: the
            // codes and attributes for its filters; every partition for the exact neighbours (with the unfiltered pass); those
            // its replays scan. Codes come with each read of vectors and of attributes.
            Assert.All(segments, g =>
            {
                int most = !withAttributes ? 1 : g.Key.EndsWith(".codes.seg", StringComparison.Ordinal) ? 5 : g.Key.EndsWith(".vectors.seg", StringComparison.Ordinal) ? 2 : 3;
                Assert.True(g.Count() <= most, $"{g.Key} read {g.Count()} times by publish");
            });
            Assert.DoesNotContain(store.Reads, r => r.Op == "list" && r.Task != "test" && !r.Task.StartsWith("publish", StringComparison.Ordinal));

            // And the index is the in-process build's.
            var queued = new Squash.Storage.IndexStore(new FolderBlobStore(folder), "reads");
            var reference = new Squash.Storage.IndexStore(new FolderBlobStore(folder + "-ref"), "reads");
            var table = withAttributes ? Squash.Index.Attributes.AttributeReader.ReadJsonLines(new StringReader(attributeText), "attrs.jsonl") : null;
            // A queue build calibrates on DefaultQueries exact queries only (no reference replays): the in-process build with that sample.
            await CalibratedBuild.BuildAndPublishAsync(reference, data, n, dims, new IndexBuildOptions { Partitions = partitions, Seed = seed, Attributes = table },
                sampleSize: RecallCalibrator.DefaultQueries);
            var a = await reference.OpenCurrentAsync();
            var m = await queued.ReadManifestAsync(done.Version);
            Assert.Equal(System.Text.Json.JsonSerializer.Serialize(a.Attributes), System.Text.Json.JsonSerializer.Serialize(m.Attributes));
            Assert.Equal(System.Text.Json.JsonSerializer.Serialize(a.Calibration!.Plans), System.Text.Json.JsonSerializer.Serialize(m.Calibration!.Plans));
            Assert.Equal(System.Text.Json.JsonSerializer.Serialize(a.Calibration.Filtered), System.Text.Json.JsonSerializer.Serialize(m.Calibration.Filtered));
            Assert.Equal(withAttributes, m.Calibration.Filtered is not null);
            foreach (var segment in Squash.Storage.IndexStore.BlobsNamedBy(a))
            {
                var expected = await reference.Blobs.ReadAllAsync(reference.VersionPrefix(a.Version) + segment.Name);
                var actual = await queued.Blobs.ReadAllAsync(queued.VersionPrefix(done.Version) + segment.Name);
                Assert.True(expected.AsSpan().SequenceEqual(actual), $"segment {segment.Name} differs (seed {seed})");
            }
        }
        finally
        {
            foreach (var f in new[] { folder, folder + "-ref" })
                if (Directory.Exists(f)) Directory.Delete(f, recursive: true);
        }
    }
}
