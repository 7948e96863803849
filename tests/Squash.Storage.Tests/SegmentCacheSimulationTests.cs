using Xunit.Abstractions;

namespace Squash.Storage.Tests;

/// <summary>
/// A small deterministic simulation that picks the cache's default policy: a skewed (Zipf) stream of
/// segment requests over many more keys than fit, with and without one-off scans mixed in (exact-mode
/// queries and cold partitions read everything once).
/// </summary>
public sealed class SegmentCacheSimulationTests(ITestOutputHelper output)
{
    private const int Keys = 10_000, CacheEntries = 1_000, Requests = 300_000, Seed = 42;

    /// <summary>Key ranks drawn from Zipf(s) by inverting its CDF with a binary search.</summary>
    private static int[] ZipfStream(double s, int scanEvery, int seed)
    {
        var cdf = new double[Keys];
        double sum = 0;
        for (int k = 0; k < Keys; k++) cdf[k] = sum += 1 / Math.Pow(k + 1, s);
        for (int k = 0; k < Keys; k++) cdf[k] /= sum;
        var rng = new Random(seed);
        // Ranks are scattered over key ids so that the hot keys are not neighbours.
        var perm = Enumerable.Range(0, Keys).OrderBy(_ => rng.Next()).ToArray();
        var stream = new List<int>(Requests);
        int scanKey = Keys;
        while (stream.Count < Requests)
        {
            if (scanEvery > 0 && stream.Count % scanEvery == 0 && stream.Count > 0)
            {
                // A scan: 500 keys seen once and never again.
                for (int i = 0; i < 500 && stream.Count < Requests; i++) stream.Add(scanKey++);
                continue;
            }
            int idx = Array.BinarySearch(cdf, rng.NextDouble());
            stream.Add(perm[Math.Min(Keys - 1, idx < 0 ? ~idx : idx)]);
        }
        return stream.ToArray();
    }

    private static double HitRatio(CacheEvictionPolicy policy, int[] stream)
    {
        var cache = new SegmentCache(new SegmentCacheOptions { CapacityBytes = CacheEntries, Policy = policy });
        var one = Task.FromResult(new object());
        foreach (var k in stream)
        {
            var t = cache.GetOrLoadAsync(new SegmentKey("sim", "v1", k, CacheEntryKind.Codes), _ => one, _ => 1);
            // Loads complete synchronously, so every call has finished here.
            if (!t.IsCompletedSuccessfully) throw new InvalidOperationException("load did not complete synchronously");
        }
        Assert.Equal(stream.Length, cache.Stats.Requests);
        return cache.Stats.HitRatio;
    }

    [Fact]
    public void S3FifoIsAtLeastAsGoodAsLruOnSkewedStreamsAndBetterWithScans()
    {
        var zipf = ZipfStream(1.0, scanEvery: 0, Seed);
        var scans = ZipfStream(1.0, scanEvery: 20_000, Seed);
        double lru = HitRatio(CacheEvictionPolicy.Lru, zipf), s3 = HitRatio(CacheEvictionPolicy.S3Fifo, zipf);
        double lruScan = HitRatio(CacheEvictionPolicy.Lru, scans), s3Scan = HitRatio(CacheEvictionPolicy.S3Fifo, scans);
        output.WriteLine($"Zipf(1.0), {Keys} keys, cache {CacheEntries}, {Requests} requests, seed {Seed}: LRU {lru:F4}  S3-FIFO {s3:F4}");
        output.WriteLine($"same + a 500-key scan every 20,000 requests:                     LRU {lruScan:F4}  S3-FIFO {s3Scan:F4}");
        Console.WriteLine($"segment cache hit ratios: zipf LRU {lru:F4} S3-FIFO {s3:F4}; with scans LRU {lruScan:F4} S3-FIFO {s3Scan:F4}");
        // The default (SegmentCacheOptions.Policy) follows these numbers.
        Assert.True(s3 >= lru - 0.005, $"S3-FIFO {s3:F4} vs LRU {lru:F4}");
        Assert.True(s3Scan > lruScan, $"with scans: S3-FIFO {s3Scan:F4} vs LRU {lruScan:F4}");
        Assert.Equal(CacheEvictionPolicy.S3Fifo, new SegmentCacheOptions().Policy);
    }

    /// <summary>Textbook LRU over unit-size entries, written apart from the cache: the hits it predicts for a stream.</summary>
    private static long ReferenceLruHits(int[] stream, int capacity)
    {
        var order = new LinkedList<int>();
        var nodes = new Dictionary<int, LinkedListNode<int>>();
        long hits = 0;
        foreach (var k in stream)
        {
            if (nodes.TryGetValue(k, out var node))
            {
                hits++;
                order.Remove(node);
                order.AddFirst(node);
                continue;
            }
            nodes[k] = order.AddFirst(k);
            if (order.Count > capacity)
            {
                nodes.Remove(order.Last!.Value);
                order.RemoveLast();
            }
        }
        return hits;
    }

    [Theory]
    [InlineData(0.9, 0, 7)]
    [InlineData(1.0, 2_000, 8)]
    public void TheLruPolicyHitsExactlyWhereAReferenceLruDoes(double skew, int scanEvery, int seed)
    {
        var stream = ZipfStream(skew, scanEvery, seed)[..20_000];
        double expected = ReferenceLruHits(stream, CacheEntries) / (double)stream.Length;
        Assert.True(expected is > 0.05 and < 0.95, $"seed {seed}: a reference hit ratio of {expected:F4} would not tell policies apart");
        Assert.Equal(expected, HitRatio(CacheEvictionPolicy.Lru, stream));
    }

    [Theory]
    [InlineData(CacheEvictionPolicy.Lru)]
    [InlineData(CacheEvictionPolicy.S3Fifo)]
    public void WhenEveryKeyFitsEachKeyMissesOnceAndThenAlwaysHits(CacheEvictionPolicy policy)
    {
        // 20,000 requests over at most 1,000 distinct keys: any policy that evicts below capacity loses hits here.
        var stream = ZipfStream(0.9, 0, 11).Select(k => k % CacheEntries).Take(20_000).ToArray();
        int distinct = stream.Distinct().Count();
        Assert.Equal((stream.Length - distinct) / (double)stream.Length, HitRatio(policy, stream));
    }
}
