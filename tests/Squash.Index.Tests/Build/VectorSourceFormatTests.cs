using System.Buffers.Binary;
using System.Text;
using Squash.Index.Build.Sources;

namespace Squash.Index.Tests.Build;

/// <summary>Vector-file layouts read from a blob's first bytes and length, and row ranges decoded from their bytes.</summary>
public sealed class VectorSourceFormatTests
{
    private static byte[] Npy(string descr, string shape, int dataBytes, string fortran = "False", byte major = 1)
    {
        var dict = $"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': ({shape}), }}\n";
        int pre = major == 1 ? 10 : 12;
        var bytes = new byte[pre + dict.Length + dataBytes];
        new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', major, 0 }.CopyTo(bytes, 0);
        if (major == 1) BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(8), (ushort)dict.Length);
        else BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(8), (uint)dict.Length);
        Encoding.Latin1.GetBytes(dict, bytes.AsSpan(pre));
        return bytes;
    }

    private static string Problem(string name, byte[] bytes) =>
        Assert.Throws<InvalidDataException>(() => VectorSourceFormat.ReadLayout(name, bytes, bytes.Length)).Message;

    [Fact]
    public void NpyLayoutsOfEveryDtypeAndVersion()
    {
        var f4 = VectorSourceFormat.ReadLayout("a.npy", Npy("<f4", "3, 5", 60), Npy("<f4", "3, 5", 60).Length);
        Assert.Equal((SourceElement.Float32, 3L, 5, 0), (f4.Element, f4.Rows, f4.Dimensions, f4.RecordPrefix));
        var f8 = Npy("<f8", "2, 4", 64, major: 2);
        Assert.Equal(SourceElement.Float64, VectorSourceFormat.ReadLayout("b.npy", f8, f8.Length).Element);
        var u1 = Npy("|u1", "7, 3", 21);
        Assert.Equal((SourceElement.UInt8, 7L), (VectorSourceFormat.ReadLayout("c.npy", u1, u1.Length).Element, VectorSourceFormat.ReadLayout("c.npy", u1, u1.Length).Rows));
    }

    [Fact]
    public void BadNpyHeadersAreNamedAndExplained()
    {
        Assert.Equal("x.npy: Fortran-order (column-major) arrays are not supported; save a C-order array (np.ascontiguousarray)", Problem("x.npy", Npy("<f4", "3, 5", 60, "True")));
        Assert.Equal("x.npy: unsupported dtype '<i8' (supported: '<f4', '<f8', '|u1')", Problem("x.npy", Npy("<i8", "3, 5", 120)));
        Assert.Equal("x.npy: expected a 2-D array (rows, dimensions), found shape (15)", Problem("x.npy", Npy("<f4", "15,", 60)));
        Assert.Equal("x.npy: truncated data: row 2 of 3 is incomplete (50 data bytes present, 20 per row)", Problem("x.npy", Npy("<f4", "3, 5", 50)));
        Assert.Equal("x.npy: 4 unexpected bytes after the 3 x 5 array", Problem("x.npy", Npy("<f4", "3, 5", 64)));
        Assert.Equal("x.npy: not a NumPy .npy file (missing \\x93NUMPY magic)", Problem("x.npy", new byte[20]));
        Assert.Equal("x.bin: unknown extension '.bin' (expected .fvecs, .bvecs or .npy)", Problem("x.bin", new byte[20]));
    }

    [Fact]
    public void VecsRowsDecodeAndAForeignRecordHeaderIsNamed()
    {
        // Two bvecs records of 3 dimensions, the second claiming 4.
        byte[] bytes = [3, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 7, 8, 9];
        var layout = VectorSourceFormat.ReadLayout("v.bvecs", bytes, bytes.Length);
        Assert.Equal((2L, 3, 4), (layout.Rows, layout.Dimensions, layout.RecordPrefix));
        var rows = new float[6];
        VectorSourceFormat.DecodeRows("v.bvecs", layout, 0, 1, bytes.AsSpan(0, 7), rows);
        Assert.Equal([1f, 2f, 3f], rows[..3]);
        var e = Assert.Throws<InvalidDataException>(() => VectorSourceFormat.DecodeRows("v.bvecs", layout, 0, 2, bytes, rows));
        Assert.Equal("v.bvecs: mixed dimensions: record 1 has dimension 4, expected 3 (from record 0)", e.Message);
    }
}
