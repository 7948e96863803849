using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Extensions.Options;
using Squash.Functions.Api;
using Squash.Storage.Writes;

namespace Squash.Functions.Writes;

/// <summary>
/// The <c>vectors</c> HTTP function: validates a write against the current version's schema and appends it to the index's
/// write-ahead log, answering only once the batch blob is durable. A thin adapter over <see cref="WriteLog"/>.
/// </summary>
public static class WriteEndpoints
{
    public static void MapWrites(this WebApplication app)
    {
        app.MapPost("/api/indexes/{index}/vectors", Write).WithName("vectors").Accepts<WriteRequest>("application/json")
            .Produces<WriteAccepted>().ProducesValidationProblem().ProducesProblem(404).ProducesProblem(409).ProducesProblem(413).ProducesProblem(500).ProducesProblem(503);
    }

    public static WriteLog LogFor(IndexCatalog catalog, string index) => new(catalog.StoreFor("").Blobs, index);

    private static async Task<IResult> Write(string index, HttpContext http, IndexCatalog catalog, IngestTrigger ingest, IOptions<FunctionSettings> settings, CancellationToken ct)
    {
        if (!IndexCatalog.IsValidName(index))
            return Results.ValidationProblem(new Dictionary<string, string[]> { ["index"] = [IndexCatalog.InvalidNameMessage(index)] });
        string? key = null;
        if (http.Request.Headers.TryGetValue("Idempotency-Key", out var keys))
        {
            key = keys.ToString();
            if (WriteValidation.CheckKey(key) is { } bad) return Results.ValidationProblem(new Dictionary<string, string[]> { ["Idempotency-Key"] = [bad] });
        }
        var (request, error) = await JsonBody.ReadAsync(http.Request, WriteApiJson.Default.WriteRequest, settings.Value.MaxRequestBytes, ct);
        if (error is not null) return error;
        var loaded = await catalog.OpenCurrentAsync(index, ct);
        if (loaded is null) return Results.Problem(statusCode: 404, title: "Index not found", detail: $"no index named '{index}' is published (build it first: writes need its schema and partitions)");
        var errors = WriteValidation.Validate(request!, loaded);
        if (errors.Count > 0) return Results.ValidationProblem(errors, title: "The write is not valid; nothing was written.");

        var batch = new WriteBatch
        {
            CreatedUtc = DateTimeOffset.UtcNow,
            DeleteWhere = request!.DeleteWhere,
            Deletes = request.Deletes is { Length: > 0 } d ? d : null,
            Upserts = request.Upserts is { Length: > 0 } u
                ? u.Select(x => new UpsertItem(x.Id!, x.Vector!,
                    x.Attributes is { ValueKind: JsonValueKind.Object } a ? WriteValidation.WithIntegersAsDigits(a, loaded.Manifest.Attributes) : null)).ToArray()
                : null,
        };
        // The request as parsed, not its bytes: a retry that differs only in spacing (or sends its vectors in the other form) is the same request.
        // Only a keyed request is compared with an earlier one (the hash encodes and hashes the whole batch once more).
        var requestHash = key is null ? "" : batch.ContentHash();
        // Builds before the binary log hashed the request re-serialised as JSON: a retry across an upgrade is still recognised.
        bool EarlierHashMatches(string stored) => !stored.StartsWith(WriteBatch.ContentHashPrefix, StringComparison.Ordinal)
            && stored == Convert.ToHexStringLower(SHA256.HashData(JsonSerializer.SerializeToUtf8Bytes(request, WriteApiJson.Default.WriteRequest)));
        try
        {
            var result = await LogFor(catalog, index).AppendAsync(batch, key, requestHash, loaded.Manifest.IndexedSequence, ct, EarlierHashMatches);
            // A build of another shape may have been published since the validation above: then ingest and strong reads skip
            // this batch (it does not fit), and the write is refused rather than acknowledged (docs/writes.md, "A write and such a build at once").
            var after = await WriteLogConflict.CheckAfterAppendAsync(catalog.StoreFor(index), loaded.Manifest, batch, ct);
            if (after.Misfits.Count > 0)
                return Results.ValidationProblem(after.Misfits.GroupBy(x => x.Field).ToDictionary(g => g.Key, g => g.Select(x => x.Problem).ToArray()), statusCode: 409,
                    title: "The index changed shape while the write was made; nothing of it will be applied",
                    detail: $"version {after.Current} of index '{index}' was published while this write was made (log sequence {result.Sequence}, which ingest skips); "
                        + "send the write again in the index's new shape, with a new Idempotency-Key");
            await ingest.RequestAsync(index, ct);
            return Results.Json(new WriteAccepted(result.Sequence, result.Replayed), WriteApiJson.Default.WriteAccepted);
        }
        catch (WriteShapeUncheckedException e)
        {
            http.Response.Headers.RetryAfter = "1";
            return Results.Problem(statusCode: 503, title: "The write was not acknowledged",
                detail: $"index '{index}': {e.Message}; its batch is in the log and is applied only if it fits the index's shape; "
                    + "send the request again (with the same Idempotency-Key, it is applied once)");
        }
        catch (WriteKeyConflictException e)
        {
            return Results.Problem(statusCode: 409, title: "Idempotency-Key reused", detail: $"{e.Message}; use a new key for a new request");
        }
        catch (Exception e) when (!ct.IsCancellationRequested && StoreFailures.IsUnreachable(e))
        {
            return Results.Problem(statusCode: 503, title: "The write was not acknowledged",
                detail: $"the log of index '{index}' could not be written; send the request again (with the same Idempotency-Key, it is applied once)");
        }
    }
}
