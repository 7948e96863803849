using System.Text.Json;
using System.Text.Json.Nodes;
using Squash.Cli.Bench;
using Squash.Search;

namespace Squash.Cli.Commands;

/// <summary>
/// <c>query --json</c> speaks the HTTP API's vocabulary, in-process or through --endpoint: one object per query,
/// <c>{"query", "results":[{"id","row","distance"}], "complete", "missingPartitions", "stats":{…camelCase…}}</c>, where
/// <c>id</c> is the user's id (the row number for an index built without ids) and <c>row</c> the row number.
/// </summary>
public static class CliJson
{
    private static readonly JsonSerializerOptions Web = new(JsonSerializerDefaults.Web);

    /// <summary>An in-process answer; <paramref name="fetched"/> adds what a lazily opened index read (bytesRead, cacheHits, cacheMisses).</summary>
    public static string Answer(int query, SearchResult result, FetchedAnswer? fetched)
    {
        var results = new JsonArray();
        for (int j = 0; j < result.Ids.Length; j++)
        {
            long row = result.Ids[j];
            results.Add(new JsonObject
            {
                ["id"] = result.Keys?[j] is { } key ? JsonValue.Create(key) : JsonValue.Create(row),
                ["row"] = row,
                ["distance"] = result.Distances[j],
            });
        }
        var stats = JsonSerializer.SerializeToNode(result.Stats, Web)!.AsObject();
        if (fetched is not null)
        {
            stats["bytesRead"] = fetched.BytesRead;
            stats["cacheHits"] = fetched.CacheHits;
            stats["cacheMisses"] = fetched.CacheMisses;
        }
        return new JsonObject
        {
            ["query"] = query,
            ["results"] = results,
            ["complete"] = true,
            ["missingPartitions"] = new JsonArray(),
            ["stats"] = stats,
        }.ToJsonString();
    }

    /// <summary>An HTTP answer as the endpoint sent it, with the query's number in front.</summary>
    public static string WithQueryNumber(int query, string httpAnswer)
    {
        var answer = JsonNode.Parse(httpAnswer)!.AsObject();
        var line = new JsonObject { ["query"] = query };
        foreach (var name in answer.Select(p => p.Key).ToList())
        {
            var value = answer[name];
            answer.Remove(name);
            line[name] = value;
        }
        return line.ToJsonString();
    }
}
