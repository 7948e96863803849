using System.Text.Json;
using System.Text.Json.Serialization;

namespace Squash.Storage.Writes;

/// <summary>
/// The index's full rebuild (docs/writes.md, "Full rebuild"): one small blob, <c>{index}/log/rebuild.json</c>, changed only by
/// compare-and-swap. While it names a rebuild without an <see cref="Outcome"/>, no other rebuild is queued, gc keeps the
/// rebuilt version and the log past <see cref="CoversSequence"/>, and ingest publishes the rebuilt version once its job has
/// written it. The record of the last rebuild stays (with its outcome) for the index's report and the back-off after a failure.
/// </summary>
public sealed record RebuildRecord
{
    public const string Published = "published", Failed = "failed", Cancelled = "cancelled", Superseded = "superseded";

    public required string BuildId { get; init; }
    /// <summary>The version whose live rows are the rebuild's source.</summary>
    public required string BaseVersion { get; init; }
    /// <summary>The build that version descends from: the rebuild replaces only that line of versions.</summary>
    public required string Lineage { get; init; }
    /// <summary>The log position the base version (and so the rebuilt one) covers.</summary>
    public required long CoversSequence { get; init; }
    /// <summary>The version the rebuild job writes.</summary>
    public required string Version { get; init; }
    /// <summary>The base version's rows changed since its build, when the rebuild was queued (the back-off after a failure counts from here).</summary>
    public required long ChangedAtSubmission { get; init; }
    public required DateTimeOffset SubmittedUtc { get; init; }
    /// <summary>Failed or cancelled attempts in a row before this one.</summary>
    public int EarlierFailures { get; init; }
    /// <summary>Null while the job runs or its version waits for ingest; else published, failed, cancelled or superseded.</summary>
    public string? Outcome { get; init; }
    /// <summary>When published: the version ingest published from the rebuilt one (the log past its watermark applied).</summary>
    public string? PublishedVersion { get; init; }
    /// <summary>Why it failed or was superseded.</summary>
    public string? Reason { get; init; }
    public DateTimeOffset? FinishedUtc { get; init; }

    public bool IsActive => Outcome is null;

    public static string NameFor(string index) => $"{index.Trim('/')}/log/rebuild.json";

    /// <summary>The index's record and its ETag, or null when it never queued a rebuild.</summary>
    public static async Task<(RebuildRecord Record, string ETag)?> ReadAsync(IBlobStore blobs, string index, CancellationToken ct = default)
    {
        var name = NameFor(index);
        if (await blobs.ReadWithInfoAsync(name, ct).ConfigureAwait(false) is not { } read) return null;
        try
        {
            var record = JsonSerializer.Deserialize(read.Bytes, RebuildJson.Default.RebuildRecord) ?? throw new InvalidDataException($"rebuild record '{name}' is null");
            return (record, read.Info.ETag);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"rebuild record '{name}' is not valid: {e.Message}");
        }
    }

    /// <summary>Writes the record over the one read with <paramref name="etag"/> (null: only if there is none); false when another writer got there first.</summary>
    public static async Task<bool> TryWriteAsync(IBlobStore blobs, string index, RebuildRecord record, string? etag, CancellationToken ct = default)
    {
        try
        {
            await blobs.WriteAsync(NameFor(index), JsonSerializer.SerializeToUtf8Bytes(record, RebuildJson.Default.RebuildRecord),
                etag is null ? WriteCondition.IfNotExists : WriteCondition.IfMatch(etag), ct).ConfigureAwait(false);
            return true;
        }
        catch (Exception e) when (e is BlobConditionFailedException or BlobNotFoundException)
        {
            return false;
        }
    }
}

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(RebuildRecord))]
internal sealed partial class RebuildJson : JsonSerializerContext;
