using Squash.Core.Vectors;
using System.Diagnostics;
using System.Globalization;
using Squash.Cli.Datasets;
using Squash.Search;
using Squash.Storage;

namespace Squash.Cli.Bench;

/// <summary>
/// Cold and warm queries against an index in a blob store, one thread (issue #4's storage figures):
/// <list type="bullet">
/// <item><b>cold</b>: every query on a fresh instance — routing data in memory, an empty segment cache — so it
/// reads its partitions' codes and its re-ranked rows from the store: latency, bytes read, requests, and the
/// bytes as a fraction of the index;</item>
/// <item><b>warm</b>: one cache of a given size over a skewed stream (Zipf over the query set, like popular
/// queries): the cache hit ratio (partitions with nothing to read) and latency once the stream has warmed.</item>
/// </list>
/// </summary>
public static class ColdBench
{
    public sealed record Settings(int ColdQueries, int Stream, double ZipfExponent, long CacheBytes, int Seed, double VisitShare = 0);

    public sealed record Result(SearchOptions Options, double ColdP50Ms, double ColdP99Ms, double ColdBytesMean, double ColdBytesP50, double ColdBytesP99,
        double ColdFraction, double ColdRequests, double Partitions, double PartitionShare, double Recall,
        double StreamHitRatio, double WarmHitRatio, double EntryHitRatio, double WarmP50Ms, double WarmP99Ms, double WarmBytesMean, long IndexBytes, double WholeSegmentBytesMean,
        double CertifiedShare = 0);

    public static async Task<Result> RunAsync(OpenedIndex routing, VectorSet q, int[][] gt, SearchOptions options, Settings settings, CancellationToken ct)
    {
        long indexBytes = routing.StoredBytes;
        var rng = new Random(settings.Seed);

        // Cold: a fresh cache per query (queries spread over the set so they visit different partitions).
        int coldCount = Math.Min(settings.ColdQueries, q.Count);
        var coldLatency = new LatencyRecorder();
        var bytes = new List<long>();
        long requests = 0, partitions = 0, wholeBytes = 0;
        var results = new List<SearchResult>();
        var truth = new List<int[]>();
        await Warm(routing, q, options, ct);
        for (int i = 0; i < coldCount; i++)
        {
            int qi = (int)((long)i * q.Count / coldCount);
            var engine = new SearchEngine(routing.WithCache(new SegmentCache(new SegmentCacheOptions { CapacityBytes = long.MaxValue / 4 })));
            var query = q.Row(qi).ToArray();
            long t0 = Stopwatch.GetTimestamp();
            var answer = await FetchingSearch.SearchAsync(engine, query, options, ct, settings.VisitShare);
            coldLatency.Record(Stopwatch.GetTimestamp() - t0);
            bytes.Add(answer.BytesRead);
            requests += answer.Requests;
            partitions += answer.Partitions;
            wholeBytes += answer.WholeSegmentBytes;
            results.Add(answer.Result);
            truth.Add(gt[qi]);
        }
        bytes.Sort();

        // Warm: one bounded cache over a Zipf stream; latency and hit ratio of the second half (after warming).
        var cache = new SegmentCache(new SegmentCacheOptions { CapacityBytes = settings.CacheBytes });
        var warmEngine = new SearchEngine(routing.WithCache(cache));
        var zipf = new Zipf(q.Count, settings.ZipfExponent, rng);
        var warmLatency = new LatencyRecorder();
        long hits = 0, misses = 0, warmHits = 0, warmMisses = 0, warmBytes = 0;
        int half = settings.Stream / 2;
        SegmentCacheStats entriesAtHalf = default;
        for (int i = 0; i < settings.Stream; i++)
        {
            if (i == half) entriesAtHalf = cache.Stats;
            var query = q.Row(zipf.Next()).ToArray();
            long t0 = Stopwatch.GetTimestamp();
            var answer = await FetchingSearch.SearchAsync(warmEngine, query, options, ct, settings.VisitShare);
            long dt = Stopwatch.GetTimestamp() - t0;
            hits += answer.CacheHits;
            misses += answer.CacheMisses;
            if (i < half) continue;
            warmLatency.Record(dt);
            warmHits += answer.CacheHits;
            warmMisses += answer.CacheMisses;
            warmBytes += answer.BytesRead;
        }
        var end = cache.Stats;
        long entryRequests = end.Requests - entriesAtHalf.Requests;
        int streamHalf = Math.Max(1, settings.Stream - half);
        return new Result(options,
            coldLatency.PercentileMicros(50) / 1000, coldLatency.PercentileMicros(99) / 1000,
            bytes.Count == 0 ? 0 : bytes.Average(), Percentile(bytes, 0.5), Percentile(bytes, 0.99),
            bytes.Count == 0 ? 0 : bytes.Average() / indexBytes, coldCount == 0 ? 0 : requests / (double)coldCount,
            coldCount == 0 ? 0 : partitions / (double)coldCount, coldCount == 0 ? 0 : partitions / (double)coldCount / routing.PartitionCount,
            BenchRecall(results, truth, options.K),
            hits / (double)Math.Max(1, hits + misses), warmHits / (double)Math.Max(1, warmHits + warmMisses),
            entryRequests == 0 ? 0 : (end.Hits - entriesAtHalf.Hits) / (double)entryRequests,
            warmLatency.PercentileMicros(50) / 1000, warmLatency.PercentileMicros(99) / 1000, warmBytes / (double)streamHalf, indexBytes,
            coldCount == 0 ? 0 : wholeBytes / (double)coldCount, coldCount == 0 ? 0 : results.Count(x => x.Stats.Certified) / (double)coldCount);
    }

    /// <summary>JIT warm-up on a throwaway cache, so the first cold query does not pay for compilation.</summary>
    private static async Task Warm(OpenedIndex routing, VectorSet q, SearchOptions options, CancellationToken ct)
    {
        var engine = new SearchEngine(routing.WithCache(new SegmentCache(new SegmentCacheOptions { CapacityBytes = 64L << 20 })));
        for (int i = 0; i < Math.Min(20, q.Count); i++) await FetchingSearch.SearchAsync(engine, q.Row(q.Count - 1 - i).ToArray(), options, ct);
    }

    private static double Percentile(List<long> sorted, double p) => sorted.Count == 0 ? 0 : sorted[Math.Min(sorted.Count - 1, (int)Math.Ceiling(p * sorted.Count) - 1)];

    private static double BenchRecall(List<SearchResult> results, List<int[]> truth, int k)
    {
        long found = 0, total = 0;
        for (int i = 0; i < results.Count; i++)
        {
            var expected = truth[i].Take(k).Where(id => id >= 0).ToHashSet();
            total += expected.Count;
            found += results[i].Ids.Count(id => expected.Contains((int)id));
        }
        return total == 0 ? 1 : found / (double)total;
    }

    public static void Print(Result r, Settings s, OpenedIndex index, TextWriter output)
    {
        var inv = CultureInfo.InvariantCulture;
        output.WriteLine(string.Create(inv, $"{(s.VisitShare > 0 ? $"nearest {s.VisitShare:P0} of the partitions (not CF)" : $"CF {r.Options.CentroidFactor}")}, H {r.Options.HammingKeepPercent}, R {r.Options.RerankFactor}: " +
            $"{r.Partitions:F1} of {index.PartitionCount} partitions per query ({r.PartitionShare:P1}), recall@{r.Options.K} {r.Recall:F4}, certified {r.CertifiedShare:P1} of the cold answers"));
        output.WriteLine(string.Create(inv, $"  cold ({s.ColdQueries} queries, fresh cache each): p50 {r.ColdP50Ms:F2} ms, p99 {r.ColdP99Ms:F2} ms; " +
            $"read {r.ColdBytesMean / 1024:F1} KiB/query (p50 {r.ColdBytesP50 / 1024:F1}, p99 {r.ColdBytesP99 / 1024:F1}) = {r.ColdFraction:P2} of the index " +
            $"({r.IndexBytes / 1048576.0:F1} MiB); {r.ColdRequests:F1} requests/query; whole segments of the same partitions: {r.WholeSegmentBytesMean / 1024:F1} KiB/query"));
        output.WriteLine(string.Create(inv, $"  warm (Zipf s={s.ZipfExponent} over the queries, {s.Stream} requests, cache {s.CacheBytes >> 20} MiB, whole vectors after {index.WholeVectorsAfter} row fetch(es)): " +
            $"partition hit ratio {r.StreamHitRatio:F3} over the stream, {r.WarmHitRatio:F3} in its second half " +
            $"(cache entries {r.EntryHitRatio:F3}); second half p50 {r.WarmP50Ms:F3} ms, p99 {r.WarmP99Ms:F3} ms, {r.WarmBytesMean / 1024:F1} KiB/query read"));
    }

    public static void WriteCsv(string path, IEnumerable<Result> results)
    {
        var inv = CultureInfo.InvariantCulture;
        using var w = new StreamWriter(path);
        w.WriteLine("cf,h,r,partitions,partition_share,recall,cold_p50_ms,cold_p99_ms,cold_bytes_mean,cold_bytes_p50,cold_bytes_p99,cold_fraction_of_index,cold_requests,stream_hit_ratio,warm_hit_ratio,entry_hit_ratio,warm_p50_ms,warm_p99_ms,warm_bytes_mean,index_bytes,whole_segment_bytes_mean,certified_share");
        foreach (var r in results)
            w.WriteLine(string.Create(inv, $"{r.Options.CentroidFactor},{r.Options.HammingKeepPercent},{r.Options.RerankFactor},{r.Partitions:F2},{r.PartitionShare:F4},{r.Recall:F4},{r.ColdP50Ms:F3},{r.ColdP99Ms:F3},{r.ColdBytesMean:F0},{r.ColdBytesP50:F0},{r.ColdBytesP99:F0},{r.ColdFraction:F5},{r.ColdRequests:F1},{r.StreamHitRatio:F4},{r.WarmHitRatio:F4},{r.EntryHitRatio:F4},{r.WarmP50Ms:F3},{r.WarmP99Ms:F3},{r.WarmBytesMean:F0},{r.IndexBytes},{r.WholeSegmentBytesMean:F0},{r.CertifiedShare:F4}"));
    }

    /// <summary>Zipf over 0..n-1 (rank r+1 has weight 1/(r+1)^s), ranks mapped to items by a seeded shuffle.</summary>
    private sealed class Zipf
    {
        private readonly double[] _cdf;
        private readonly int[] _items;
        private readonly Random _rng;

        public Zipf(int n, double s, Random rng)
        {
            _rng = rng;
            _cdf = new double[n];
            double sum = 0;
            for (int r = 0; r < n; r++) _cdf[r] = sum += 1 / Math.Pow(r + 1, s);
            for (int r = 0; r < n; r++) _cdf[r] /= sum;
            _items = Enumerable.Range(0, n).ToArray();
            rng.Shuffle(_items);
        }

        public int Next()
        {
            int r = Array.BinarySearch(_cdf, _rng.NextDouble());
            return _items[Math.Min(_cdf.Length - 1, r < 0 ? ~r : r)];
        }
    }
}
