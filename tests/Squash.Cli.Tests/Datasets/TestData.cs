using Squash.Core.Vectors;
using System.Buffers.Binary;
using Squash.Cli.Datasets;

namespace Squash.Cli.Tests.Datasets;

/// <summary>A scratch directory removed after the test.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "squash-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

internal static class TestData
{
    public static VectorSet Random(int count, int dims, int seed, float scale = 1f)
    {
        var rng = new Random(seed);
        var data = new float[count * dims];
        for (int i = 0; i < data.Length; i++)
        {
            data[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        }

        return new VectorSet(data, count, dims);
    }

    /// <summary>Hand-built *vecs record: int32 dimension header then raw payload bytes.</summary>
    public static byte[] Record(int declaredDims, ReadOnlySpan<byte> payload)
    {
        var bytes = new byte[4 + payload.Length];
        BinaryPrimitives.WriteInt32LittleEndian(bytes, declaredDims);
        payload.CopyTo(bytes.AsSpan(4));
        return bytes;
    }

    public static byte[] FloatRecord(params float[] values) =>
        Record(values.Length, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));

    public static byte[] Concat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();
}
