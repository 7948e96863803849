using Microsoft.AspNetCore.OpenApi;
using Microsoft.OpenApi;

namespace Squash.Functions.Api;

/// <summary>
/// What the generated OpenAPI document cannot learn from the endpoints' metadata, written into it: the query's answer is
/// one of two shapes, an upsert's and a query's vectors may be base64 text, a result's id a string or a number, and the write and build
/// submissions take an Idempotency-Key header. No <c>servers</c> entry: behind the Functions host the handler sees its own
/// loopback port, which a client cannot reach; without one, paths resolve against the host the document was fetched from.
/// </summary>
public static class OpenApiDescription
{
    public static void Configure(OpenApiOptions options) => options.AddDocumentTransformer((doc, _, _) =>
    {
        doc.Servers?.Clear();
        Describe(doc);
        return Task.CompletedTask;
    });

    private static void Describe(OpenApiDocument doc)
    {
        var schemas = doc.Components?.Schemas;
        const string base64Vector = "An array of numbers, or a string: base64 (RFC 4648, with padding) of the vector's float32 values, little-endian (4 bytes a dimension).";
        if (Schema(schemas, "UpsertRequest") is { } upsert && Schema(upsert.Properties, "vector") is { } vector)
        {
            vector.Type |= JsonSchemaType.String;
            vector.Description = base64Vector;
        }
        if (Schema(schemas, "QueryRequest") is { } query)
        {
            if (Schema(query.Properties, "vector") is { } one)
            {
                one.Type |= JsonSchemaType.String;
                one.Description = base64Vector;
            }
            if (Schema(query.Properties, "vectors") is { Items: OpenApiSchema item } batch)
            {
                item.Type |= JsonSchemaType.String;
                batch.Description = "A batch of vectors, each in either form of 'vector': " + base64Vector;
            }
        }
        if (Schema(schemas, "Hit") is { Properties: { } hitProperties })
            hitProperties["id"] = new OpenApiSchema
            {
                Type = JsonSchemaType.String | JsonSchemaType.Integer,
                Description = "The id given at build time (a string), or the row number for an index built without ids.",
            };

        foreach (var operation in doc.Paths.Values.SelectMany(p => p.Operations?.Values ?? Enumerable.Empty<OpenApiOperation>()))
        {
            switch (operation.OperationId)
            {
                case "query":
                    // One vector gets an answer, "vectors" a batch of them: the 200 is either.
                    if (operation.Responses?.TryGetValue("200", out var ok) == true && ok.Content?.TryGetValue("application/json", out var answer) == true)
                        answer.Schema = new OpenApiSchema { OneOf = [new OpenApiSchemaReference("QueryAnswer", doc), new OpenApiSchemaReference("BatchAnswer", doc)] };
                    break;
                case "vectors":
                case "builds-submit":
                    (operation.Parameters ??= []).Add(new OpenApiParameter
                    {
                        Name = "Idempotency-Key",
                        In = ParameterLocation.Header,
                        Description = "1 to 200 visible ASCII characters: a retry with the same key and request returns the first answer; the key with a different request is a 409.",
                        Schema = new OpenApiSchema { Type = JsonSchemaType.String, MinLength = 1, MaxLength = 200 },
                    });
                    break;
            }
        }
    }

    private static OpenApiSchema? Schema(IDictionary<string, IOpenApiSchema>? schemas, string name) =>
        schemas is not null && schemas.TryGetValue(name, out var schema) ? schema as OpenApiSchema : null;
}
