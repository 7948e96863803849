using System.Globalization;
using System.Net;
using Squash.Index.Model;
using Squash.Search.Writes;
using Squash.Storage;
using Squash.Storage.Writes;
using static Squash.Functions.Tests.WriteModel;

namespace Squash.Functions.Tests;

/// <summary>
/// Many small ingest runs into one partition, past <see cref="LogIngest.MaxAppendedSegments"/>: the runs merge the newest
/// appended segments into one instead of rewriting the partition, every row readers see stays what it was (codes, raw
/// vector, attributes, in the same order), answers equal brute force over the model, gc after every run leaves every version
/// it keeps complete, and the run whose appended rows pass its share of the base still rewrites the partition whole.
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class IngestCompactionTests(IndexFixture fx)
{
    private static readonly string[] Colours = ["red", "blue", "green", "purple"];

    private sealed record Rows(PartitionCodes Codes, PartitionVectors Vectors, PartitionAttributes Attributes);

    private static async Task<Rows> ReadAsync(IndexStore store, IndexManifest m) =>
        new(await store.ReadCodesAsync(m, m.Partitions[0]), await store.ReadVectorsAsync(m, m.Partitions[0]), await store.ReadAttributesAsync(m, m.Partitions[0]));

    [Theory]
    [InlineData(31)]
    [InlineData(32)]
    public async Task RunsPastTheSegmentLimitCompactRowForRowAndAnswersStayExact(int seed)
    {
        var index = "ingest-compact-" + Guid.NewGuid().ToString("N")[..8];
        // One partition of 60 rows: every write lands in it, and it is rewritten only once its appended rows pass its share
        // of the base (15–45 rows).
        var (model, store) = await WriteModel.BuildAsync(fx.Root, index, seed, withIds: true, partitions: 1);
        using var app = fx.App(2, 0, settings: new Dictionary<string, string> { ["Squash:CurrentRecheck"] = "00:00:00" });
        var client = app.CreateClient();
        var log = new WriteLog(store.Blobs, index);
        var rng = new Random(seed);
        int fresh = 0, compactions = 0, rewrites = 0, extensions = 0;
        long sequence = 0;
        for (int step = 0; step < 60 && rewrites == 0; step++)
        {
            var context = $"seed {seed} step {step}";
            var before = await store.OpenCurrentAsync();
            var rowsBefore = await ReadAsync(store, before);
            // One or two new rows; now and then one replaces a live row (a masked row, in the base or an appended segment),
            // or a row is deleted.
            var gone = new HashSet<string>(StringComparer.Ordinal);
            var upserts = new List<string>();
            var body = new List<string>();
            for (int u = rng.Next(4) == 0 ? 2 : 1; u > 0; u--)
            {
                string id = rng.Next(6) == 0 ? model.Keys.ElementAt(rng.Next(model.Count)) : $"new-{fresh++}";
                if (upserts.Contains(id)) continue;
                var v = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
                var item = new Item(v, Colours[rng.Next(Colours.Length)], Math.Round(rng.NextDouble() * 100, 2), rng.Next(80));
                if (model.ContainsKey(id)) gone.Add(id);
                model[id] = item;
                upserts.Add(id);
                body.Add($"{{\"id\":\"{id}\",\"vector\":{Bodies.Vector(v)},\"attributes\":{{\"colour\":\"{item.Colour}\",\"price\":{F(item.Price!.Value)},\"n\":{item.N}}}}}");
            }
            string deletes = "";
            if (rng.Next(8) == 0 && model.Keys.Except(upserts).FirstOrDefault(k => !gone.Contains(k)) is { } victim)
            {
                model.Remove(victim);
                gone.Add(victim);
                deletes = $",\"deletes\":[\"{victim}\"]";
            }
            var written = await client.PostAsync($"/api/indexes/{index}/vectors", Bodies.Json("{\"upserts\":[" + string.Join(',', body) + "]" + deletes + "}"));
            Assert.True(written.StatusCode == HttpStatusCode.OK, $"{context}: {await written.Content.ReadAsStringAsync()}");
            sequence++;

            var entry = before.Partitions[0];
            int appendedRows = (entry.Appended?.Sum(a => a.Count) ?? 0) + upserts.Count;
            int masked = entry.StoredRows - entry.Count + gone.Count;
            // The partition's own share (LogIngest.RewriteThreshold: a quarter to three quarters of its base, by a hash).
            bool pastShare = Math.Max(appendedRows, masked) > LogIngest.RewriteThreshold(before, 0) * entry.BaseRows;
            var run = await LogIngest.RunAsync(store, log);
            Assert.True(run.Published, $"{context}: not published");
            var m = await store.OpenCurrentAsync();
            var p = m.Partitions[0];
            Assert.True((p.Appended?.Count ?? 0) <= LogIngest.MaxAppendedSegments, $"{context}: {p.Appended?.Count} appended segments");
            if (pastShare)
            {
                // Past its share of the base: rewritten whole (then perhaps split), compaction or not; the last step.
                Assert.True(run.RewrittenPartitions == 1 && run.CompactedPartitions == 0 && m.Partitions.All(x => !x.IsComposite && x.Codes.Version is null),
                    $"{context}: past its share of the base, not rewritten whole");
                rewrites++;
            }
            else
            {
                Assert.True(m.Partitions.Count == 1, $"{context}: the partition was split");
                Assert.True(run.RewrittenPartitions == 0, $"{context}: rewritten although its appended and masked rows are under its share of its base");
                bool wouldPass = (entry.Appended?.Count ?? 0) + 1 > LogIngest.MaxAppendedSegments;
                await AssertRowForRowAsync(store, before, m, rowsBefore, gone, upserts, run, wouldPass, context);
                if (wouldPass) compactions++; else extensions++;
            }
            // gc keeps every version whose segments the current one names: nothing it names goes.
            await store.CollectGarbageAsync(keep: 0, grace: TimeSpan.Zero);
            await store.VerifyCompleteAsync(m);
            for (int q = 0; q < 2; q++)
            {
                var query = Enumerable.Range(0, Dims).Select(_ => (float)rng.NextDouble()).ToArray();
                var filter = q == 1 ? RandomFilter(rng) : null;
                await AssertAnswer(client, index, true, query, filter, "eventual", model, sequence, $"{context} query {q} {filter?.Json}");
            }
        }
        // One compaction at least: the ninth appended segment (~11 rows) comes before the lowest share of the base (15 rows);
        // a higher share leaves room for more.
        Assert.True(compactions >= 1 && extensions >= 3 && rewrites >= 1, $"seed {seed}: {compactions} compactions, {extensions} plain extensions, {rewrites} rewrites");
    }

    private static async Task AssertRowForRowAsync(IndexStore store, IndexManifest before, IndexManifest m, Rows rowsBefore, HashSet<string> gone,
        List<string> upserts, IngestResult run, bool wouldPass, string context)
    {
        var entry = before.Partitions[0];
        var p = m.Partitions[0];
        Assert.True(run.CompactedPartitions == (wouldPass ? 1 : 0), $"{context}: {run.CompactedPartitions} compacted with {entry.Appended?.Count} segments before");
        // Its base untouched; the appended segments before the merged one are the same segments as before.
        Assert.Equal(before.Partitions[0].Codes.Version ?? before.Version, p.Codes.Version);
        int kept = p.Appended!.Count - 1;
        for (int s = 0; s < kept; s++)
            Assert.True(entry.Appended![s].Codes with { Version = entry.Appended[s].Codes.Version ?? before.Version } == p.Appended[s].Codes, $"{context}: segment {s} moved");
        // The merged segment: the merged segments' rows still live, less those this run removed, then the new ones.
        int liveMerged = wouldPass ? entry.Appended!.Skip(kept).Sum(a => a.Count) - MaskedIn(entry, await store.ReadDeletionMaskAsync(before, entry), kept) : 0;
        int goneMerged = rowsBefore.Attributes.Keys!.Skip(rowsBefore.Codes.Count - liveMerged).Count(k => gone.Contains(k!));
        Assert.Equal(upserts.Count + liveMerged - goneMerged, p.Appended[kept].Count);

        // Row for row: the rows readers saw, less the ones this run removed, then the new ones, with equal codes,
        // vectors and attributes.
        var after = await ReadAsync(store, m);
        var keys = after.Attributes.Keys!;
        var expected = rowsBefore.Attributes.Keys!.Where(k => !gone.Contains(k!)).Concat(upserts).ToArray();
        Assert.Equal(expected, keys);
        int md = after.Codes.CodedDimensions, words = after.Codes.SignWords;
        var at = rowsBefore.Attributes.Keys!.Select((k, i) => (k, i)).ToDictionary(x => x.k!, x => x.i);
        for (int i = 0; i < keys.Length - upserts.Count; i++)
        {
            int o = at[keys[i]!];
            Assert.True(after.Codes.Cells.AsSpan(i * md, md).SequenceEqual(rowsBefore.Codes.Cells.AsSpan(o * md, md))
                && after.Codes.Signs.AsSpan(i * words, words).SequenceEqual(rowsBefore.Codes.Signs.AsSpan(o * words, words))
                && after.Codes.ResidualNorms[i] == rowsBefore.Codes.ResidualNorms[o] && after.Codes.Ids[i] == rowsBefore.Codes.Ids[o]
                && after.Vectors.Row(i).SequenceEqual(rowsBefore.Vectors.Row(o)), $"{context}: row {keys[i]} changed");
        }
        // The composition's outer boundaries only ever widen (the merged segment carries the widest yet).
        for (int t = 0; t < md; t++)
        {
            int off = after.Codes.BoundaryOffsets[t];
            Assert.True(after.Codes.Boundaries[off] <= rowsBefore.Codes.Boundaries[off] && after.Codes.Boundaries[off + (1 << after.Codes.Widths[t])] >= rowsBefore.Codes.Boundaries[off + (1 << rowsBefore.Codes.Widths[t])],
                $"{context}: dimension {t}'s outer boundaries narrowed");
        }
    }

    /// <summary>Masked stored rows in the appended segments from <paramref name="from"/> on.</summary>
    private static int MaskedIn(PartitionEntry e, bool[]? mask, int from)
    {
        if (mask is null) return 0;
        int start = e.BaseRows + e.Appended!.Take(from).Sum(a => a.Count);
        return mask.Skip(start).Count(x => x);
    }
}
