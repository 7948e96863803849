// Ingest CPU probe (issue #15): rounds of LogIngest.RunAsync on a folder store, each after `batches` log batches of
// `size` upserts replacing random existing rows with vectors from a pool file. Prints per round: wall, process CPU,
// bytes allocated, collections, the run's own phase line, and its per-phase CPU and allocations (IngestResult.Costs).
// Usage: ingest-cpu STORE_DIR|SPEC INDEX POOL.fvecs ROUNDS BATCHES SIZE SEED
using System.Diagnostics;
using Squash.Search.Writes;
using Squash.Storage;
using Squash.Storage.Writes;

string dir = args[0], index = args[1], poolPath = args[2];
int rounds = int.Parse(args[3]), batches = int.Parse(args[4]), size = int.Parse(args[5]), seed = int.Parse(args[6]);
// A folder, or a store spec (dir:PATH, azure:CONNECTION_STRING; container "bench", as scripts/bench-writes.sh builds it).
var store = new IndexStore(dir.Contains(':') ? BlobStores.Open(dir, "bench") : new FolderBlobStore(dir), index);
var log = new WriteLog(store.Blobs, index);
var m = await store.OpenCurrentAsync();
long n = m.Count; // built without ids: rows 0 … Count − 1
const int poolRows = 200_000;
int dim = m.Dimensions;
var pool = new float[(long)poolRows * dim];
using (var f = File.OpenRead(poolPath))
{
    var row = new byte[4 + 4 * dim];
    for (int i = 0; i < poolRows; i++)
    {
        f.ReadExactly(row);
        Buffer.BlockCopy(row, 4, pool, i * dim * 4, dim * 4);
    }
}
var rng = new Random(seed);
long known = m.IndexedSequence;
var proc = Process.GetCurrentProcess();
Console.WriteLine($"index {index}: {m.Count} rows, {m.Partitions.Count} partitions, watermark {known}; {rounds} rounds of {batches} × {size}");
for (int r = 0; r < rounds; r++)
{
    for (int b = 0; b < batches; b++)
    {
        var upserts = new List<UpsertItem>(size);
        for (int i = 0; i < size; i++)
            upserts.Add(new UpsertItem(rng.NextInt64(n).ToString(System.Globalization.CultureInfo.InvariantCulture), pool.AsSpan(rng.Next(poolRows) * dim, dim).ToArray()));
        known = (await log.AppendAsync(new WriteBatch { CreatedUtc = DateTimeOffset.UtcNow, Upserts = upserts }, null, "", known)).Sequence;
    }
    proc.Refresh();
    var cpu0 = proc.TotalProcessorTime;
    long alloc0 = GC.GetTotalAllocatedBytes(true);
    int g0 = GC.CollectionCount(0), g1 = GC.CollectionCount(1), g2 = GC.CollectionCount(2);
    var jit0 = System.Runtime.JitInfo.GetCompilationTime();
    long methods0 = System.Runtime.JitInfo.GetCompiledMethodCount();
    var sw = Stopwatch.StartNew();
    // A due calibration is "requested" (nothing happens): the rounds measure ingest only, as the queue host runs it.
    var res = await LogIngest.RunAsync(store, log, requestCalibration: _ => Task.CompletedTask);
    sw.Stop();
    proc.Refresh();
    double cpu = (proc.TotalProcessorTime - cpu0).TotalSeconds;
    double jit = (System.Runtime.JitInfo.GetCompilationTime() - jit0).TotalSeconds;
    long methods = System.Runtime.JitInfo.GetCompiledMethodCount() - methods0;
    long alloc = GC.GetTotalAllocatedBytes(true) - alloc0;
    Console.WriteLine($"round {r + 1}: {res.Upserts} upserts, wall {sw.Elapsed.TotalSeconds:F2} s, cpu {cpu:F2} s ({cpu / Math.Max(1, res.Upserts) * 1e6:F1} µs/upsert), "
        + $"jit {jit:F2} s ({methods} methods), alloc {alloc / 1e6:F0} MB, gc {GC.CollectionCount(0) - g0}/{GC.CollectionCount(1) - g1}/{GC.CollectionCount(2) - g2}; {res.Timings}; {res.PartitionSummary}");
    if (res.Costs is { } costs)
        Console.WriteLine("  cpu/alloc: " + string.Join(", ", costs.Select(c => $"{c.Phase} {c.CpuSeconds:F2} s {c.AllocatedBytes / 1e6:F0} MB")));
}
