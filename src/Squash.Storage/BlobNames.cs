namespace Squash.Storage;

/// <summary>The one naming rule every store enforces, so an index that works in a folder also works in a container.</summary>
internal static class BlobNames
{
    public static void Validate(string name)
    {
        // Empty, absolute or dot segments would escape a folder root or mean different things per store.
        if (string.IsNullOrEmpty(name) || name.StartsWith('/') || name.Split('/').Any(p => p is "" or "." or ".."))
            throw new ArgumentException($"invalid blob name '{name}'", nameof(name));
    }
}
