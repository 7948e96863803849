using Squash.Cli.Datasets;

/// <summary>The dataset files through the CLI's own readers (checked: dimensions, truncation, finite values).</summary>
internal static class Data
{
    public static float[][] Fvecs(string path)
    {
        var v = VectorFile.Read(path);
        return Enumerable.Range(0, v.Count).Select(i => v.Row(i).ToArray()).ToArray();
    }

    public static int[][] Ivecs(string path) => VectorFile.ReadIvecs(path);
}
