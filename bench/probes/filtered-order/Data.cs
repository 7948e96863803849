/// <summary>fvecs / ivecs readers for the dataset files.</summary>
internal static class Data
{
    public static float[][] Fvecs(string path)
    {
        var b = File.ReadAllBytes(path);
        int d = BitConverter.ToInt32(b, 0), n = b.Length / (4 * (d + 1));
        var rows = new float[n][];
        for (int i = 0; i < n; i++) { rows[i] = new float[d]; Buffer.BlockCopy(b, i * 4 * (d + 1) + 4, rows[i], 0, 4 * d); }
        return rows;
    }

    public static int[][] Ivecs(string path)
    {
        var b = File.ReadAllBytes(path);
        var rows = new List<int[]>();
        for (int o = 0; o < b.Length;)
        {
            int d = BitConverter.ToInt32(b, o);
            var r = new int[d];
            Buffer.BlockCopy(b, o + 4, r, 0, 4 * d);
            rows.Add(r);
            o += 4 * (d + 1);
        }
        return rows.ToArray();
    }
}
