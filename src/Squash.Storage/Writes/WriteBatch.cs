using System.Text.Json;
using System.Text.Json.Serialization;

namespace Squash.Storage.Writes;

/// <summary>
/// One acknowledged write request as the log keeps it: immutable once written, applied at its sequence number in
/// this order — <see cref="DeleteWhere"/>, then <see cref="Deletes"/>, then <see cref="Upserts"/> — so that one batch
/// can clear a category and refill it.
/// </summary>
public sealed record WriteBatch
{
    /// <summary>SHA-256 of the request's Idempotency-Key (null without one): readers check the key's record to apply it once.</summary>
    public string? KeyHash { get; init; }
    public DateTimeOffset CreatedUtc { get; init; }
    /// <summary>A filter (the query filter language) deleting every row that matches it at this sequence.</summary>
    public JsonElement? DeleteWhere { get; init; }
    public IReadOnlyList<string>? Deletes { get; init; }
    public IReadOnlyList<UpsertItem>? Upserts { get; init; }

    /// <summary>Items the batch names (upserts + deletes; a deleteWhere counts as one).</summary>
    [JsonIgnore]
    public int ItemCount => (Upserts?.Count ?? 0) + (Deletes?.Count ?? 0) + (DeleteWhere is null ? 0 : 1);

    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, WriteLogJson.Default.WriteBatch);

    public static WriteBatch Parse(ReadOnlySpan<byte> json, string name)
    {
        try
        {
            return JsonSerializer.Deserialize(json, WriteLogJson.Default.WriteBatch) ?? throw new InvalidDataException($"log batch '{name}' is empty");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"log batch '{name}' is not valid JSON: {e.Message}", e);
        }
    }
}

/// <summary>A vector with the user's id and attributes (a JSON object checked against the index's schema before it was logged).</summary>
public sealed record UpsertItem(string Id, float[] Vector, JsonElement? Attributes = null);

/// <summary>
/// The Idempotency-Key's record: which request used the key, and which sequence carries it once known. Created before the
/// batch is written; <see cref="Sequence"/> is set once (compare-and-swap) by the writer or by the first reader that meets
/// the batch in sequence order, and never changes after.
/// </summary>
/// <param name="From">Every batch carrying this key has a higher sequence: where a retry's search for an earlier attempt starts.</param>
public sealed record KeyRecord(string RequestHash, long From, long? Sequence, DateTimeOffset CreatedUtc);

internal sealed record HeadHint(long Sequence);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(WriteBatch))]
[JsonSerializable(typeof(KeyRecord))]
[JsonSerializable(typeof(HeadHint))]
internal sealed partial class WriteLogJson : JsonSerializerContext;
