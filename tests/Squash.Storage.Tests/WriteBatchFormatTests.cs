using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using System.Text.Json;
using Squash.Storage.Writes;

namespace Squash.Storage.Tests;

/// <summary>
/// The log's binary batch format: what is written reads back equal (JSON values compact, vectors bit for bit), batches
/// earlier builds wrote as JSON still read, and every damaged, cut or foreign blob is an <see cref="InvalidDataException"/>
/// that names the blob — never another exception, never a batch that silently differs.
/// </summary>
public sealed class WriteBatchFormatTests
{
    private static JsonElement Json(string text) => JsonDocument.Parse(text).RootElement.Clone();

    private static WriteBatch Sample() => new()
    {
        KeyHash = new string('a', 64),
        CreatedUtc = new DateTimeOffset(2026, 12, 4, 11, 30, 0, TimeSpan.FromHours(2)),
        DeleteWhere = Json("""{ "colour" : { "$in" : ["red", "blue"] } }"""),
        Deletes = ["sku-9", "ünïcødé ✓", "x"],
        Upserts =
        [
            new UpsertItem("sku-1", [1.5f, -0f, float.Epsilon, float.MaxValue], Json("""{"colour": "green", "tags": ["a", "b"], "price": 1.25e3}""")),
            new UpsertItem("sku-2", [0.1f, 0.2f, 0.3f, 0.4f]),
            new UpsertItem("文字", [-1, -2, -3, -4], Json("""{"ok": true}""")),
        ],
    };

    private static void AssertSame(WriteBatch expected, WriteBatch actual)
    {
        Assert.Equal(expected.KeyHash, actual.KeyHash);
        Assert.Equal(expected.CreatedUtc.UtcTicks, actual.CreatedUtc.UtcTicks);
        Assert.Equal(expected.DeleteWhere is { } w ? JsonSerializer.Serialize(w) : null, actual.DeleteWhere is { } v ? JsonSerializer.Serialize(v) : null);
        Assert.Equal(expected.Deletes, actual.Deletes);
        Assert.Equal(expected.Upserts?.Count, actual.Upserts?.Count);
        for (int i = 0; i < (expected.Upserts?.Count ?? 0); i++)
        {
            var (e, a) = (expected.Upserts![i], actual.Upserts![i]);
            Assert.Equal(e.Id, a.Id);
            // Bit for bit: -0 stays -0, subnormals stay.
            Assert.Equal(e.Vector.Select(BitConverter.SingleToInt32Bits), a.Vector.Select(BitConverter.SingleToInt32Bits));
            Assert.Equal(e.Attributes is { } x ? JsonSerializer.Serialize(x) : null, a.Attributes is { } y ? JsonSerializer.Serialize(y) : null);
        }
    }

    [Fact]
    public void ABatchReadsBackEqualInEitherForm()
    {
        var batch = Sample();
        var binary = batch.ToBinary();
        Assert.True(binary.AsSpan().StartsWith(WriteBatch.Magic));
        AssertSame(batch, WriteBatch.Parse(binary, "b"));
        // Written by an earlier build: still read.
        AssertSame(batch, WriteBatch.Parse(batch.ToJson(), "j"));
        // Every field absent, and an upsert list where no upsert has attributes.
        var empty = new WriteBatch { CreatedUtc = DateTimeOffset.UnixEpoch };
        AssertSame(empty, WriteBatch.Parse(empty.ToBinary(), "e"));
        var plain = new WriteBatch { Upserts = [new UpsertItem("1", [])], Deletes = [] };
        AssertSame(plain, WriteBatch.Parse(plain.ToBinary(), "p"));
        // 1,000 × 128 floats: the binary form is the floats and little else (JSON was ~2.7 × larger).
        var big = new WriteBatch { Upserts = Enumerable.Range(0, 1000).Select(i => new UpsertItem(i.ToString(), Enumerable.Range(0, 128).Select(d => i * 0.001f + d).ToArray())).ToArray() };
        Assert.InRange(big.ToBinary().Length, 512_000, 525_000);
        AssertSame(big, WriteBatch.Parse(big.ToBinary(), "big"));
    }

    [Fact]
    public void TheContentHashIgnoresTimeKeyAndSpacingButNothingElse()
    {
        var batch = Sample();
        var hash = batch.ContentHash();
        Assert.StartsWith(WriteBatch.ContentHashPrefix, hash);
        Assert.Equal(hash, (batch with { KeyHash = null, CreatedUtc = DateTimeOffset.UnixEpoch }).ContentHash());
        Assert.Equal(hash, (batch with { DeleteWhere = Json("""{"colour":{"$in":["red","blue"]}}""") }).ContentHash());
        Assert.NotEqual(hash, (batch with { DeleteWhere = Json("""{"colour":{"$in":["blue","red"]}}""") }).ContentHash());
        Assert.NotEqual(hash, (batch with { Deletes = ["sku-9", "ünïcødé ✓"] }).ContentHash());
        var upserts = batch.Upserts!.ToArray();
        upserts[1] = upserts[1] with { Vector = [0.1f, 0.2f, 0.3f, 0.40000004f] };
        Assert.NotEqual(hash, (batch with { Upserts = upserts }).ContentHash());
    }

    [Fact]
    public void EveryCutOrFlippedByteIsANamedFailure()
    {
        var bytes = Sample().ToBinary();
        for (int length = 0; length < bytes.Length; length++)
        {
            if (length == 0) continue; // an empty blob is not a binary batch: it fails as JSON, below
            var e = Assert.Throws<InvalidDataException>(() => WriteBatch.Parse(bytes.AsSpan(0, length), "products/log/batches/000000000007"));
            Assert.Contains("'products/log/batches/000000000007'", e.Message);
        }
        for (int at = 0; at < bytes.Length; at++)
        {
            var damaged = bytes.ToArray();
            damaged[at] ^= 0x10;
            var e = Assert.Throws<InvalidDataException>(() => WriteBatch.Parse(damaged, "b7"));
            Assert.Contains("'b7'", e.Message);
        }
        Assert.Contains("is neither a binary batch nor valid JSON", Assert.Throws<InvalidDataException>(() => WriteBatch.Parse([], "b0")).Message);
        Assert.Contains("fails its checksum", Assert.Throws<InvalidDataException>(() => WriteBatch.Parse(Flip(bytes, 100), "b1")).Message);
        Assert.Contains("is cut short: 10 bytes", Assert.Throws<InvalidDataException>(() => WriteBatch.Parse(bytes.AsSpan(0, 10), "b2")).Message);
    }

    [Fact]
    public void AnUnknownVersionOrAMalformedBatchWithAValidChecksumIsNamedToo()
    {
        var bytes = Sample().ToBinary();
        var later = bytes.ToArray();
        BinaryPrimitives.WriteUInt16LittleEndian(later.AsSpan(4), 2);
        Assert.Equal("log batch 'v' has binary format version 2; this build reads version 1 (and JSON batches)",
            Assert.Throws<InvalidDataException>(() => WriteBatch.Parse(Resealed(later), "v")).Message);

        // A foreign writer's bytes under a correct checksum: a count past the end, a length past the end, bytes left over.
        var plain = new WriteBatch { CreatedUtc = DateTimeOffset.UnixEpoch, Deletes = ["a"] }.ToBinary();
        // header 16, keyHash -1 (4), deleteWhere -1 (4), then the deletes count at 24.
        var count = plain.ToArray();
        BinaryPrimitives.WriteInt32LittleEndian(count.AsSpan(24), 1_000_000);
        Assert.Equal("log batch 'c' is malformed: a count of 1000000 deletes at byte 24 of 49", Assert.Throws<InvalidDataException>(() => WriteBatch.Parse(Resealed(count), "c")).Message);
        var length = plain.ToArray();
        BinaryPrimitives.WriteInt32LittleEndian(length.AsSpan(28), 99);
        Assert.StartsWith("log batch 'l' is malformed: a length of 99 for deletes[0] at byte 28", Assert.Throws<InvalidDataException>(() => WriteBatch.Parse(Resealed(length), "l")).Message);
        var longer = plain[..^8].Concat(new byte[3]).Concat(new byte[8]).ToArray();
        Assert.StartsWith("log batch 't' is malformed: 3 bytes after the last section", Assert.Throws<InvalidDataException>(() => WriteBatch.Parse(Resealed(longer), "t")).Message);
        var notUtf8 = plain.ToArray();
        notUtf8[32] = 0xFF;
        Assert.StartsWith("log batch 'u' is malformed: deletes[0] that is not UTF-8", Assert.Throws<InvalidDataException>(() => WriteBatch.Parse(Resealed(notUtf8), "u")).Message);
    }

    private static byte[] Flip(byte[] bytes, int at)
    {
        var copy = bytes.ToArray();
        copy[at] ^= 1;
        return copy;
    }

    /// <summary>The bytes with the checksum made right again, as a writer that meant them would.</summary>
    private static byte[] Resealed(byte[] bytes)
    {
        var copy = bytes.ToArray();
        BinaryPrimitives.WriteUInt64LittleEndian(copy.AsSpan(copy.Length - 8), XxHash3.HashToUInt64(copy.AsSpan(0, copy.Length - 8)));
        return copy;
    }
}
