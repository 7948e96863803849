using Squash.Core.Vectors;
using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Squash.Cli.Datasets;

/// <summary>
/// Reads and writes the usual ANN benchmark formats: .fvecs / .bvecs / .ivecs (each record is an int32
/// dimension followed by that many float32 / uint8 / int32 values, little-endian) and NumPy .npy.
/// Every malformed input becomes an <see cref="InvalidDataException"/> whose message starts with the file
/// name and says what is wrong and where, so a bad download is diagnosed rather than half-loaded.
/// </summary>
public static class VectorFile
{
    /// <summary>Largest dimension accepted; anything above is far more likely a corrupt header than real data.</summary>
    public const int MaxDimensions = 4096;

    // Bulk I/O granularity: large enough to amortise syscalls, small enough to stay cache-friendly.
    private const int ChunkBytes = 4 << 20;

    private delegate void PayloadSink<in T>(T target, int record, ReadOnlySpan<byte> payload);

    public static VectorSet Read(string path, int? maxCount = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (maxCount is <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(maxCount), maxCount, "maxCount must be positive.");
        }

        EnsureLittleEndian();
        string ext = Path.GetExtension(path).ToLowerInvariant();
        return ext switch
        {
            ".fvecs" => ReadFvecs(path, maxCount),
            ".bvecs" => ReadBvecs(path, maxCount),
            ".npy" => NpyReader.Read(path, maxCount),
            _ => throw Bad(path, $"unknown extension '{ext}' (expected .fvecs, .bvecs or .npy)"),
        };
    }

    public static int[][] ReadIvecs(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        EnsureLittleEndian();
        return ReadRecords<int[][]>(
            path,
            elementSize: sizeof(int),
            maxCount: null,
            create: (count, _) => new int[count][],
            sink: static (rows, record, payload) => rows[record] = MemoryMarshal.Cast<byte, int>(payload).ToArray());
    }

    public static void WriteFvecs(string path, VectorSet v)
    {
        ArgumentNullException.ThrowIfNull(v);
        RequireWritable(v.Count, v.Dimensions);
        EnsureLittleEndian();
        int dims = v.Dimensions;
        AtomicFile.Write(path, stream =>
        {
            int recordBytes = sizeof(int) + dims * sizeof(float);
            byte[] buffer = new byte[Math.Max(recordBytes, ChunkBytes / recordBytes * recordBytes)];
            int used = 0;
            for (int i = 0; i < v.Count; i++)
            {
                if (used + recordBytes > buffer.Length)
                {
                    stream.Write(buffer, 0, used);
                    used = 0;
                }

                BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(used), dims);
                MemoryMarshal.AsBytes(v.Row(i)).CopyTo(buffer.AsSpan(used + sizeof(int)));
                used += recordBytes;
            }

            stream.Write(buffer, 0, used);
        });
    }

    public static void WriteNpy(string path, VectorSet v)
    {
        ArgumentNullException.ThrowIfNull(v);
        RequireWritable(v.Count, v.Dimensions);
        EnsureLittleEndian();
        AtomicFile.Write(path, stream =>
        {
            stream.Write(NpyReader.BuildHeader(v.Count, v.Dimensions));
            // Row by row keeps each span far below the 2 GiB span limit whatever the total size.
            int rowsPerChunk = Math.Max(1, ChunkBytes / (v.Dimensions * sizeof(float)));
            for (int start = 0; start < v.Count; start += rowsPerChunk)
            {
                int rows = Math.Min(rowsPerChunk, v.Count - start);
                var block = v.Data.AsSpan(start * v.Dimensions, rows * v.Dimensions);
                stream.Write(MemoryMarshal.AsBytes(block));
            }
        });
    }

    public static void WriteIvecs(string path, IReadOnlyList<int[]> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (rows.Count == 0)
        {
            throw new ArgumentException("an ivecs file needs at least one row (readers reject empty files).", nameof(rows));
        }

        int dims = rows[0]?.Length ?? throw new ArgumentException("row 0 is null.", nameof(rows));
        for (int i = 0; i < rows.Count; i++)
        {
            // Refuse to write what ReadIvecs would reject, so round trips cannot fail later.
            int[]? row = rows[i];
            if (row is null || row.Length != dims)
            {
                throw new ArgumentException(
                    $"row {i} has {row?.Length.ToString() ?? "null"} values, expected {dims} like row 0.", nameof(rows));
            }
        }

        RequireWritable(rows.Count, dims);
        EnsureLittleEndian();
        AtomicFile.Write(path, stream =>
        {
            int recordBytes = sizeof(int) + dims * sizeof(int);
            byte[] buffer = new byte[Math.Max(recordBytes, ChunkBytes / recordBytes * recordBytes)];
            int used = 0;
            for (int i = 0; i < rows.Count; i++)
            {
                if (used + recordBytes > buffer.Length)
                {
                    stream.Write(buffer, 0, used);
                    used = 0;
                }

                BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(used), dims);
                MemoryMarshal.AsBytes(rows[i].AsSpan()).CopyTo(buffer.AsSpan(used + sizeof(int)));
                used += recordBytes;
            }

            stream.Write(buffer, 0, used);
        });
    }

    private static VectorSet ReadFvecs(string path, int? maxCount)
    {
        int dims = 0;
        float[] data = ReadRecords<float[]>(
            path,
            elementSize: sizeof(float),
            maxCount,
            create: (count, d) =>
            {
                dims = d;
                return new float[(long)count * d];
            },
            sink: (target, record, payload) => payload.CopyTo(MemoryMarshal.AsBytes(target.AsSpan(record * dims, dims))));
        RequireFinite(path, data, dims);
        return new VectorSet(data, data.Length / dims, dims);
    }

    private static VectorSet ReadBvecs(string path, int? maxCount)
    {
        int dims = 0;
        float[] data = ReadRecords<float[]>(
            path,
            elementSize: sizeof(byte),
            maxCount,
            create: (count, d) =>
            {
                dims = d;
                return new float[(long)count * d];
            },
            sink: (target, record, payload) => TensorPrimitives.ConvertChecked<byte, float>(payload, target.AsSpan(record * dims, dims)));
        return new VectorSet(data, data.Length / dims, dims);
    }

    /// <summary>
    /// Shared *vecs walker: checks the first dimension, derives the record count from the file length, then
    /// streams whole records in large chunks and checks every record header against the first one.
    /// </summary>
    private static T ReadRecords<T>(string path, int elementSize, int? maxCount, Func<int, int, T> create, PayloadSink<T> sink)
    {
        using var fs = OpenRead(path);
        long length = fs.Length;
        if (length == 0)
        {
            throw Bad(path, "empty file");
        }

        Span<byte> header = stackalloc byte[sizeof(int)];
        if (length < sizeof(int))
        {
            throw Bad(path, $"truncated record 0: file has only {length} bytes, not even a dimension header");
        }

        fs.ReadExactly(header);
        int dims = BinaryPrimitives.ReadInt32LittleEndian(header);
        RequireDimensions(path, dims, "record 0 declares");

        long recordBytes = sizeof(int) + (long)dims * elementSize;
        long fullRecords = length / recordBytes;
        long tailBytes = length % recordBytes;
        if (fullRecords == 0)
        {
            throw Bad(path, $"truncated record 0: expected {recordBytes} bytes for dimension {dims}, file has {length}");
        }

        bool limited = maxCount is { } m && m < fullRecords;
        long countLong = limited ? maxCount!.Value : fullRecords;
        if (countLong * dims > Array.MaxLength)
        {
            throw Bad(path, $"too large: {countLong} records x {dims} values exceed one array; pass a smaller maxCount");
        }

        int count = (int)countLong;
        T target = create(count, dims);

        fs.Position = 0;
        int recordsPerChunk = (int)Math.Max(1, ChunkBytes / recordBytes);
        byte[] buffer = new byte[recordsPerChunk * recordBytes];
        for (int first = 0; first < count; first += recordsPerChunk)
        {
            int records = Math.Min(recordsPerChunk, count - first);
            var chunk = buffer.AsSpan(0, (int)(records * recordBytes));
            ReadExactly(fs, chunk, path, first);
            for (int r = 0; r < records; r++)
            {
                var record = chunk.Slice((int)(r * recordBytes), (int)recordBytes);
                int found = BinaryPrimitives.ReadInt32LittleEndian(record);
                if (found != dims)
                {
                    throw MixedDimensions(path, first + r, dims, found);
                }

                sink(target, first + r, record[sizeof(int)..]);
            }
        }

        if (!limited && tailBytes > 0)
        {
            // The leftover bytes are either a record with another dimension or a cut-off record; say which.
            long index = fullRecords;
            if (tailBytes >= sizeof(int))
            {
                ReadExactly(fs, header, path, index);
                int found = BinaryPrimitives.ReadInt32LittleEndian(header);
                if (found != dims)
                {
                    throw MixedDimensions(path, index, dims, found);
                }
            }

            throw Bad(path, $"truncated record {index}: has {tailBytes} of {recordBytes} bytes");
        }

        return target;
    }

    internal static FileStream OpenRead(string path) =>
        // bufferSize 1 turns off FileStream's own buffer: every read here is already a large bulk read.
        new(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.SequentialScan);

    internal static void ReadExactly(Stream stream, Span<byte> destination, string path, long record)
    {
        try
        {
            stream.ReadExactly(destination);
        }
        catch (EndOfStreamException)
        {
            // Only possible if the file shrinks while being read; still report it as data, not a crash.
            throw Bad(path, $"truncated record {record}: file ended early");
        }
    }

    internal static void RequireDimensions(string path, long dims, string what)
    {
        if (dims <= 0 || dims > MaxDimensions)
        {
            throw Bad(path, $"{what} dimension {dims}; it must be between 1 and {MaxDimensions}");
        }
    }

    /// <summary>Rejects NaN and ±∞, naming the first offending row and column.</summary>
    internal static void RequireFinite(string path, ReadOnlySpan<float> data, int dims)
    {
        int index = IndexOfNonFinite(data);
        if (index >= 0)
        {
            float value = data[index];
            string kind = float.IsNaN(value) ? "NaN" : "infinite value " + value.ToString(System.Globalization.CultureInfo.InvariantCulture);
            throw Bad(path, $"{kind} at row {index / dims}, column {index % dims}");
        }
    }

    /// <summary>
    /// Rejects, naming the file and the first offending row, what an index cannot hold: a vector whose norm passes
    /// <see cref="Squash.Core.MetricSpace.MaxVectorNorm"/> (its float32 distances would overflow; the HTTP API refuses
    /// such vectors the same way) and, under cosine, an all-zero vector (it has no direction).
    /// </summary>
    public static void RequireIndexable(string path, VectorSet set, Squash.Core.Metric metric)
    {
        ArgumentNullException.ThrowIfNull(set);
        for (int r = 0; r < set.Count; r++)
            if (Squash.Core.MetricSpace.RowProblem(set.Row(r), metric, r) is { } problem) throw Bad(path, problem);
    }

    /// <summary>Vectorised scan: a float is non-finite exactly when all its exponent bits are set.</summary>
    internal static int IndexOfNonFinite(ReadOnlySpan<float> data)
    {
        const uint exponentMask = 0x7F80_0000;
        var bits = MemoryMarshal.Cast<float, uint>(data);
        int i = 0;
        if (System.Numerics.Vector.IsHardwareAccelerated)
        {
            var mask = new System.Numerics.Vector<uint>(exponentMask);
            int width = System.Numerics.Vector<uint>.Count;
            for (; i <= bits.Length - width; i += width)
            {
                var v = new System.Numerics.Vector<uint>(bits.Slice(i, width));
                if (System.Numerics.Vector.EqualsAny(v & mask, mask))
                {
                    break;
                }
            }
        }

        for (; i < bits.Length; i++)
        {
            if ((bits[i] & exponentMask) == exponentMask)
            {
                return i;
            }
        }

        return -1;
    }

    internal static InvalidDataException Bad(string path, string problem) => new($"{path}: {problem}");

    internal static void EnsureLittleEndian()
    {
        // The formats are little-endian and the bulk paths reinterpret bytes in place.
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("vector files are only supported on little-endian machines.");
        }
    }

    private static InvalidDataException MixedDimensions(string path, long record, int expected, int found) =>
        Bad(path, $"mixed dimensions: record {record} has dimension {found}, expected {expected} (from record 0)");

    private static void RequireWritable(int count, int dims)
    {
        if (count < 1)
        {
            throw new ArgumentException("refusing to write an empty vector file (readers reject empty files).");
        }

        if (dims < 1 || dims > MaxDimensions)
        {
            throw new ArgumentException($"dimension {dims} is outside 1..{MaxDimensions}, which readers reject.");
        }
    }
}
