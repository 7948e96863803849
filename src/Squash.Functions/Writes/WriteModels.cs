using System.Text.Json;
using System.Text.Json.Serialization;
using Squash.Functions.Api;

namespace Squash.Functions.Writes;

/// <summary>
/// POST /api/indexes/{index}/vectors: upserts, deletes by id and a delete by filter, applied together at one sequence
/// (deleteWhere first, then deletes, then upserts).
/// </summary>
public sealed record WriteRequest
{
    public UpsertRequest[]? Upserts { get; init; }
    /// <summary>The user's ids of the vectors to delete (an id nothing has is not an error: deletes are idempotent).</summary>
    public string[]? Deletes { get; init; }
    /// <summary>A filter in the query filter language: every vector matching it at this sequence is deleted.</summary>
    public JsonElement? DeleteWhere { get; init; }
}

/// <summary>One vector to insert or replace: <see cref="Id"/> is the user's id (a string; an index built without ids names its rows "0", "1", …).</summary>
public sealed record UpsertRequest
{
    public string? Id { get; init; }
    /// <summary>An array of numbers, or a string: base64 of the vector's float32 values, little-endian (4 bytes a dimension).</summary>
    [JsonConverter(typeof(VectorJsonConverter))]
    public float[]? Vector { get; init; }
    /// <summary>Values for attributes of the index's schema (missing ones are absent, as a build leaves them).</summary>
    public JsonElement? Attributes { get; init; }
}

/// <summary>The write is durable in the log at <see cref="Sequence"/>; <see cref="Replayed"/> when an earlier request with the same Idempotency-Key already put it there.</summary>
public sealed record WriteAccepted(long Sequence, bool Replayed);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, NumberHandling = JsonNumberHandling.Strict)]
[JsonSerializable(typeof(WriteRequest))]
[JsonSerializable(typeof(WriteAccepted))]
public sealed partial class WriteApiJson : JsonSerializerContext;
