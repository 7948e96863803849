using Squash.Core.Vectors;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using Squash.Cli.Datasets;

namespace Squash.Cli.Tests.Datasets;

public sealed class VectorFileTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(1, 1)]
    [InlineData(7, 13)]
    [InlineData(300, 784)]
    public void Fvecs_round_trip_is_exact(int count, int dims)
    {
        var v = TestData.Random(count, dims, seed: count * 31 + dims);
        string path = _dir.File("v.fvecs");
        VectorFile.WriteFvecs(path, v);

        Assert.Equal(count * (4 + 4L * dims), new FileInfo(path).Length);
        var back = VectorFile.Read(path);
        Assert.Equal(count, back.Count);
        Assert.Equal(dims, back.Dimensions);
        Assert.Equal(v.Data, back.Data);
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(9, 100)]
    public void Npy_round_trip_is_exact_and_data_is_64_byte_aligned(int count, int dims)
    {
        var v = TestData.Random(count, dims, seed: 5);
        string path = _dir.File("v.npy");
        VectorFile.WriteNpy(path, v);

        long dataBytes = count * dims * 4L;
        Assert.Equal(0, (new FileInfo(path).Length - dataBytes) % 64);
        var back = VectorFile.Read(path);
        Assert.Equal((count, dims), (back.Count, back.Dimensions));
        Assert.Equal(v.Data, back.Data);
    }

    [Fact]
    public void Ivecs_round_trip_is_exact()
    {
        int[][] rows = [[1, 2, 3], [-4, int.MaxValue, int.MinValue], [0, 0, 7]];
        string path = _dir.File("g.ivecs");
        VectorFile.WriteIvecs(path, rows);
        Assert.Equal(rows, VectorFile.ReadIvecs(path));
    }

    [Fact]
    public void Bvecs_written_by_hand_reads_as_floats()
    {
        string path = _dir.File("b.bvecs");
        File.WriteAllBytes(path, TestData.Concat(
            TestData.Record(3, [0, 128, 255]),
            TestData.Record(3, [1, 2, 3])));

        var v = VectorFile.Read(path);
        Assert.Equal((2, 3), (v.Count, v.Dimensions));
        Assert.Equal([0f, 128f, 255f, 1f, 2f, 3f], v.Data);
    }

    [Fact]
    public void Extension_match_ignores_case()
    {
        var v = TestData.Random(2, 3, seed: 1);
        string path = _dir.File("UPPER.FVECS");
        VectorFile.WriteFvecs(path, v);
        Assert.Equal(v.Data, VectorFile.Read(path).Data);
    }

    [Theory]
    [InlineData("v.fvecs")]
    [InlineData("v.npy")]
    public void MaxCount_reads_a_prefix(string name)
    {
        var v = TestData.Random(10, 4, seed: 2);
        string path = _dir.File(name);
        if (name.EndsWith(".npy", StringComparison.Ordinal))
        {
            VectorFile.WriteNpy(path, v);
        }
        else
        {
            VectorFile.WriteFvecs(path, v);
        }

        var head = VectorFile.Read(path, maxCount: 3);
        Assert.Equal(3, head.Count);
        Assert.Equal(v.Data[..12], head.Data);
        Assert.Equal(10, VectorFile.Read(path, maxCount: 50).Count);
    }

    [Fact]
    public void Large_fvecs_read_back_exactly_across_bulk_chunks()
    {
        // 4,000 x 784 (Fashion-MNIST rows), about 12.5 MB: three full 4 MiB chunks of the bulk reader and a short last
        // one. Values follow their position, so a shifted, repeated or missing row shows.
        const int count = 4_000, dims = 784;
        var data = new float[count * dims];
        for (int i = 0; i < data.Length; i++)
        {
            data[i] = i % 65_521 + 0.5f;
        }

        var v = new VectorSet(data, count, dims);
        string path = _dir.File("big.fvecs");
        VectorFile.WriteFvecs(path, v);

        var back = VectorFile.Read(path);
        Assert.Equal((count, dims), (back.Count, back.Dimensions));
        int firstDifference = data.AsSpan().CommonPrefixLength(back.Data);
        Assert.True(firstDifference == data.Length, $"value {firstDifference} (row {firstDifference / dims}) differs after the round trip");
        var head = VectorFile.Read(path, maxCount: 1_500);
        Assert.True(data.AsSpan(0, 1_500 * dims).SequenceEqual(head.Data), "the first 1,500 rows read with maxCount differ");
    }

    [Fact]
    public void Write_replaces_existing_file_and_leaves_no_temp_file()
    {
        string path = _dir.File("v.fvecs");
        VectorFile.WriteFvecs(path, TestData.Random(5, 3, seed: 1));
        var second = TestData.Random(2, 3, seed: 2);
        VectorFile.WriteFvecs(path, second);

        Assert.Equal(second.Data, VectorFile.Read(path).Data);
        Assert.Equal(["v.fvecs"], Directory.GetFiles(_dir.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void A_write_that_fails_midway_keeps_the_old_file()
    {
        string path = _dir.File("g.ivecs");
        int[][] old = [[1], [2]];
        VectorFile.WriteIvecs(path, old);

        // Passes validation, then fails while the data is being written.
        var failing = new FailingRows(rows: 10);
        Assert.Throws<IOException>(() => VectorFile.WriteIvecs(path, failing));

        Assert.Equal(old, VectorFile.ReadIvecs(path));
        Assert.False(File.Exists(path + ".tmp"));
    }

    [Theory]
    [InlineData("v.fvecs")]
    [InlineData("v.bvecs")]
    [InlineData("v.npy")]
    [InlineData("v.ivecs")]
    public void Empty_file_is_rejected(string name)
    {
        string path = _dir.File(name);
        File.WriteAllBytes(path, []);
        var e = ReadAny(path);
        Assert.Contains(path, e.Message);
        Assert.Contains("empty file", e.Message);
    }

    [Fact]
    public void Truncated_last_record_is_named()
    {
        string path = _dir.File("t.fvecs");
        byte[] full = TestData.Concat(TestData.FloatRecord(1, 2, 3), TestData.FloatRecord(4, 5, 6), TestData.FloatRecord(7, 8, 9));
        File.WriteAllBytes(path, full[..^5]);
        var e = Assert.Throws<InvalidDataException>(() => VectorFile.Read(path));
        Assert.Contains("truncated record 2", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void File_shorter_than_a_header_is_truncated_record_0()
    {
        string path = _dir.File("t.ivecs");
        File.WriteAllBytes(path, [1, 0]);
        var e = Assert.Throws<InvalidDataException>(() => VectorFile.ReadIvecs(path));
        Assert.Contains("truncated record 0", e.Message);
    }

    [Fact]
    public void Mixed_dimensions_name_record_expected_and_found()
    {
        string path = _dir.File("m.fvecs");
        File.WriteAllBytes(path, TestData.Concat(
            TestData.FloatRecord(1, 2, 3),
            TestData.FloatRecord(4, 5, 6),
            TestData.FloatRecord(7, 8),
            TestData.FloatRecord(1, 2, 3)));
        var e = Assert.Throws<InvalidDataException>(() => VectorFile.Read(path));
        Assert.Contains("mixed dimensions", e.Message);
        Assert.Contains("record 2 has dimension 2, expected 3", e.Message);
    }

    [Fact]
    public void Mixed_dimensions_in_the_tail_are_not_reported_as_truncation()
    {
        // 20 bytes of dim-4 record followed by a dim-3 record (16 bytes): the tail is a whole other record.
        string path = _dir.File("m.fvecs");
        File.WriteAllBytes(path, TestData.Concat(TestData.FloatRecord(1, 2, 3, 4), TestData.FloatRecord(5, 6, 7)));
        var e = Assert.Throws<InvalidDataException>(() => VectorFile.Read(path));
        Assert.Contains("record 1 has dimension 3, expected 4", e.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-3)]
    [InlineData(4097)]
    public void Out_of_range_dimension_is_rejected(int dims)
    {
        string path = _dir.File("d.fvecs");
        File.WriteAllBytes(path, TestData.Record(dims, new byte[64]));
        var e = Assert.Throws<InvalidDataException>(() => VectorFile.Read(path));
        Assert.Contains($"dimension {dims}", e.Message);
        Assert.Contains("between 1 and 4096", e.Message);
    }

    [Theory]
    [InlineData(float.NaN, "NaN")]
    [InlineData(float.PositiveInfinity, "infinite")]
    [InlineData(float.NegativeInfinity, "infinite")]
    public void Non_finite_value_names_row_and_column(float bad, string word)
    {
        // 20 columns so the bad value sits past the first SIMD block in its row.
        var v = TestData.Random(4, 20, seed: 3);
        v.Data[2 * 20 + 17] = bad;
        foreach (string name in new[] { "n.fvecs", "n.npy" })
        {
            string path = _dir.File(name);
            if (name.EndsWith("npy", StringComparison.Ordinal))
            {
                VectorFile.WriteNpy(path, v);
            }
            else
            {
                VectorFile.WriteFvecs(path, v);
            }

            var e = Assert.Throws<InvalidDataException>(() => VectorFile.Read(path));
            Assert.Contains(word, e.Message);
            Assert.Contains("row 2, column 17", e.Message);
        }
    }

    [Fact]
    public void Unknown_extension_is_rejected_before_touching_the_file()
    {
        var e = Assert.Throws<InvalidDataException>(() => VectorFile.Read(_dir.File("does-not-exist.csv")));
        Assert.Contains("unknown extension '.csv'", e.Message);
    }

    [Fact]
    public void Missing_file_is_an_IOException()
    {
        Assert.Throws<FileNotFoundException>(() => VectorFile.Read(_dir.File("missing.fvecs")));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Npy_versions_1_to_3_are_read(int version)
    {
        float[] values = [1.5f, -2f, 3f, 4f, 5f, 6f];
        string path = _dir.File("v.npy");
        File.WriteAllBytes(path, Npy(version, "'<f4'", "(2, 3)", MemoryMarshal.AsBytes(values.AsSpan()).ToArray()));
        var v = VectorFile.Read(path);
        Assert.Equal((2, 3), (v.Count, v.Dimensions));
        Assert.Equal(values, v.Data);
    }

    [Fact]
    public void Npy_float64_is_converted_to_float()
    {
        double[] values = [0.1, 1e10, -3.25, 7];
        string path = _dir.File("d.npy");
        File.WriteAllBytes(path, Npy(1, "'<f8'", "(2, 2)", MemoryMarshal.AsBytes(values.AsSpan()).ToArray()));
        Assert.Equal(values.Select(x => (float)x), VectorFile.Read(path).Data);
    }

    [Fact]
    public void Npy_float64_outside_float_range_is_reported_as_infinite()
    {
        double[] values = [1, 1e300];
        string path = _dir.File("d.npy");
        File.WriteAllBytes(path, Npy(1, "'<f8'", "(1, 2)", MemoryMarshal.AsBytes(values.AsSpan()).ToArray()));
        var e = Assert.Throws<InvalidDataException>(() => VectorFile.Read(path));
        Assert.Contains("infinite", e.Message);
        Assert.Contains("row 0, column 1", e.Message);
    }

    [Fact]
    public void Npy_uint8_is_converted_to_float()
    {
        string path = _dir.File("u.npy");
        File.WriteAllBytes(path, Npy(1, "'|u1'", "(3, 1)", [0, 9, 255]));
        Assert.Equal([0f, 9f, 255f], VectorFile.Read(path).Data);
    }

    [Theory]
    [InlineData("'<f4'", "True", "(2, 2)", "Fortran")]
    [InlineData("'>f4'", "False", "(2, 2)", "unsupported dtype '>f4'")]
    [InlineData("'<i4'", "False", "(2, 2)", "unsupported dtype '<i4'")]
    [InlineData("'<f4'", "False", "(4,)", "expected a 2-D array")]
    [InlineData("'<f4'", "False", "(1, 2, 2)", "expected a 2-D array")]
    [InlineData("'<f4'", "False", "(0, 4)", "empty")]
    [InlineData("'<f4'", "False", "(4, 0)", "dimension 0")]
    [InlineData("'<f4'", "False", "(3, 2)", "truncated data: row 2 of 3")]
    [InlineData("'<f4'", "False", "(4611686018427387904, 4)", "truncated data: row 1 of 4611686018427387904")]
    [InlineData("'<f4'", "False", "(1, 2)", "unexpected bytes")]
    public void Bad_npy_headers_are_explained(string descr, string fortran, string shape, string expected)
    {
        string path = _dir.File("bad.npy");
        byte[] header = Npy(1, descr, shape, new byte[16], fortran);
        File.WriteAllBytes(path, header);
        var e = Assert.Throws<InvalidDataException>(() => VectorFile.Read(path));
        Assert.Contains(expected, e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Not_an_npy_file_is_explained()
    {
        string path = _dir.File("x.npy");
        File.WriteAllText(path, "hello, this is not numpy");
        var e = Assert.Throws<InvalidDataException>(() => VectorFile.Read(path));
        Assert.Contains("magic", e.Message);
    }

    [Fact]
    public void Ivecs_validation_matches_fvecs()
    {
        string path = _dir.File("g.ivecs");
        var rec = (int[] values) => TestData.Record(values.Length, MemoryMarshal.AsBytes(values.AsSpan()));
        File.WriteAllBytes(path, TestData.Concat(rec([1, 2]), rec([3])));
        var e = Assert.Throws<InvalidDataException>(() => VectorFile.ReadIvecs(path));
        Assert.Contains("record 1 has dimension 1, expected 2", e.Message);
    }

    [Fact]
    public void Writers_refuse_what_readers_would_reject()
    {
        Assert.Throws<ArgumentException>(() => VectorFile.WriteIvecs(_dir.File("a.ivecs"), [[1, 2], [3]]));
        Assert.Throws<ArgumentException>(() => VectorFile.WriteIvecs(_dir.File("a.ivecs"), Array.Empty<int[]>()));
        Assert.Throws<ArgumentException>(() => VectorFile.WriteFvecs(_dir.File("a.fvecs"), new VectorSet([], 0, 3)));
        Assert.Empty(Directory.GetFiles(_dir.Path));
    }

    [Fact]
    public void VectorSet_validates_shape_and_row_index()
    {
        Assert.Throws<ArgumentException>(() => new VectorSet(new float[5], 2, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => new VectorSet([], 0, 0));
        var v = new VectorSet([1, 2, 3, 4, 5, 6], 2, 3);
        Assert.Equal([4f, 5f, 6f], v.Row(1).ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => v.Row(2));
    }

    [FsCheck.Xunit.Property(MaxTest = 30)]
    public bool Fvecs_and_npy_round_trip_any_finite_data(FsCheck.NonEmptyArray<FsCheck.NormalFloat> values, FsCheck.PositiveInt rows)
    {
        int count = Math.Min(rows.Get, 8);
        int dims = Math.Min(values.Get.Length, 64);
        var data = new float[count * dims];
        for (int i = 0; i < data.Length; i++)
        {
            data[i] = (float)values.Get[i % values.Get.Length].Get;
        }

        data = data.Select(x => float.IsFinite(x) ? x : 0f).ToArray();
        var v = new VectorSet(data, count, dims);
        string f = _dir.File("p.fvecs");
        string n = _dir.File("p.npy");
        VectorFile.WriteFvecs(f, v);
        VectorFile.WriteNpy(n, v);
        return VectorFile.Read(f).Data.SequenceEqual(data) && VectorFile.Read(n).Data.SequenceEqual(data);
    }

    private static InvalidDataException ReadAny(string path) =>
        path.EndsWith(".ivecs", StringComparison.Ordinal)
            ? Assert.Throws<InvalidDataException>(() => VectorFile.ReadIvecs(path))
            : Assert.Throws<InvalidDataException>(() => VectorFile.Read(path));

    /// <summary>Builds an .npy file by hand (not with the code under test).</summary>
    private static byte[] Npy(int version, string descr, string shape, byte[] data, string fortran = "False")
    {
        string dict = $"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}\n";
        byte[] text = Encoding.UTF8.GetBytes(dict);
        using var ms = new MemoryStream();
        ms.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', (byte)version, 0]);
        Span<byte> len = stackalloc byte[4];
        if (version == 1)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(len, (ushort)text.Length);
            ms.Write(len[..2]);
        }
        else
        {
            BinaryPrimitives.WriteUInt32LittleEndian(len, (uint)text.Length);
            ms.Write(len);
        }

        ms.Write(text);
        ms.Write(data);
        return ms.ToArray();
    }

    /// <summary>
    /// Rows that read normally during the first pass (validation), then throw halfway through the second pass
    /// (the actual write): simulates a failure mid-write.
    /// </summary>
    private sealed class FailingRows(int rows) : IReadOnlyList<int[]>
    {
        private bool _firstPassDone;

        public int Count => rows;

        public int[] this[int index]
        {
            get
            {
                if (_firstPassDone && index == rows / 2)
                {
                    throw new IOException("disk full (simulated)");
                }

                _firstPassDone |= index == rows - 1;
                return [index];
            }
        }

        public IEnumerator<int[]> GetEnumerator()
        {
            for (int i = 0; i < rows; i++)
            {
                yield return this[i];
            }
        }

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }
}
