using System.CommandLine;
using System.Text.Json;
using Squash.Cli.Bench;
using Squash.Cli.Datasets;
using Squash.Search;

namespace Squash.Cli.Commands;

public static class QueryCommand
{
    public static Command Create()
    {
        var index = new Option<string>("--index") { Description = "Folder that holds the index; with --store, the index's name inside the store; with --endpoint, the index name.", Required = true };
        var endpoint = new Option<string?>("--endpoint") { Description = "Send the queries to the HTTP API at this URL (e.g. from squash serve) instead of searching in-process." };
        var vectors = new Option<string>("--vectors") { Description = "Query vectors: .fvecs, .bvecs or .npy.", Required = true };
        var flags = new SearchFlags();
        var json = new Option<bool>("--json") { Description = "One JSON object per query, in the HTTP API's words: {\"query\",\"results\":[{\"id\",\"row\",\"distance\"}],\"complete\",\"missingPartitions\",\"stats\"}." };
        var limit = new Option<int>("--limit") { Description = "Answer only the first N queries (0: all).", DefaultValueFactory = _ => 0 };
        var recall = new Option<double?>("--recall") { Description = $"Recall target in (0, 1] (default {SearchOptions.DefaultRecall}), calibrated as recall@K at K = 1, 2, 5, 10, 20, 50 and 100, unfiltered and filtered (the smallest K ≥ --k plans); the index's build-time calibration picks CF and R for it, 1 is exact. Not with --cf, --r or --max-partitions." };
        var cf = new Option<double>("--cf") { Description = "Centroid factor CF (expert: sets the plan instead of a recall target).", DefaultValueFactory = _ => SearchFlags.DefaultCf };
        var h = new Option<double>("--h") { Description = "Hamming keep percentage H.", DefaultValueFactory = _ => SearchFlags.DefaultH };
        var r = new Option<int>("--r") { Description = "Re-rank factor R, K·R exact distances per partition at most (expert: sets the plan instead of a recall target).", DefaultValueFactory = _ => SearchFlags.DefaultR };
        var functionKey = EndpointFlags.FunctionKey();
        var filterOption = new Option<string?>("--filter") { Description = "Filter JSON, e.g. {\"label\":{\"$in\":[1,2]},\"price\":{\"$lt\":100}} (applies to every query)." };
        var cmd = new Command("query", "Answer k-nearest-neighbour queries from a vector file.") { index, vectors, flags.K, json, limit, recall, cf, h, r, flags.MaxPartitions, flags.Exact, endpoint, filterOption, functionKey };
        IndexLocation.AddStoreOptions(cmd);
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            var options = SearchFlags.Options(pr.GetValue(flags.K), pr.GetValue(cf), pr.GetValue(h), pr.GetValue(r), pr.GetValue(flags.Exact),
                pr.GetValue(recall), SearchFlags.Given(pr, cf) || SearchFlags.Given(pr, r) || pr.GetValue(flags.MaxPartitions) is not null, pr.GetValue(flags.MaxPartitions));
            CliErrors.Require(options.MaxPartitions is null || pr.GetValue(filterOption) is null,
                $"--max-partitions {SearchOptions.MaxPartitionsUnfilteredOnly}");
            int max = pr.GetValue(limit);
            CliErrors.Require(max >= 0, $"--limit must be ≥ 0, got {max}");
            var path = pr.GetValue(vectors)!;
            CliErrors.RequireFile("--vectors", path);
            if (pr.GetValue(endpoint) is { } url)
            {
                JsonElement? filterBody = null;
                if (pr.GetValue(filterOption) is { } filterText)
                {
                    try { filterBody = JsonDocument.Parse(filterText).RootElement.Clone(); }
                    catch (JsonException e) { throw new UsageException($"--filter is not valid JSON: {e.Message}"); }
                }
                var baseAddress = EndpointFlags.ParseEndpoint(url);
                var key = EndpointFlags.Key(pr, functionKey);
                var vs = VectorFile.Read(path, max > 0 ? max : null);
                using var http = EndpointFlags.Client(baseAddress, key, TimeSpan.FromMinutes(2));
                for (int i = 0; i < vs.Count; i++)
                {
                    var body = new
                    {
                        vector = vs.Row(i).ToArray(), k = options.K, filter = filterBody,
                        options = options.Recall is { } target
                            ? (object)new { exact = options.Exact, recall = target, hammingKeepPercent = options.HammingKeepPercent }
                            : new { exact = options.Exact, centroidFactor = options.CentroidFactor, hammingKeepPercent = options.HammingKeepPercent, rerankFactor = options.RerankFactor,
                                maxPartitions = options.MaxPartitions },
                    };
                    var response = await System.Net.Http.Json.HttpClientJsonExtensions.PostAsJsonAsync(http, $"api/indexes/{pr.GetValue(index)}/query", body, ct);
                    var text = await response.Content.ReadAsStringAsync(ct);
                    if (!response.IsSuccessStatusCode) throw new IOException($"query {i}: the endpoint answered {(int)response.StatusCode}: {text}");
                    if (pr.GetValue(json)) { Console.Out.WriteLine(CliJson.WithQueryNumber(i, text)); continue; }
                    using var doc = JsonDocument.Parse(text);
                    var hits = doc.RootElement.GetProperty("results").EnumerateArray().Select(e => $"{IdText(e.GetProperty("id"))}:{e.GetProperty("distance").GetSingle():G6}");
                    var st = doc.RootElement.GetProperty("stats");
                    Console.Out.WriteLine($"{i}: {string.Join(' ', hits)}");
                    Console.Out.WriteLine($"   complete={doc.RootElement.GetProperty("complete").GetBoolean()} invocations={st.GetProperty("invocations")} " +
                        $"cold={st.GetProperty("coldInstances")} warm={st.GetProperty("warmInstances")} cacheHits={st.GetProperty("cacheHits")} cacheMisses={st.GetProperty("cacheMisses")} " +
                        $"bytesRead={st.GetProperty("bytesRead")} ms={st.GetProperty("milliseconds")} cost=${st.GetProperty("estimatedCostUsd").GetDouble():G3}");
                }
                return 0;
            }
            CliErrors.Require(pr.GetValue(functionKey) is null, $"{EndpointFlags.FunctionKeyFlag} is for --endpoint");
            var store = IndexLocation.Open(pr, pr.GetValue(index));
            // An index in a store (a folder or Azure) is opened lazily, as a function instance would: routing data
            // now, then per query only what that query needs, and the bytes each query read are reported.
            bool lazy = pr.GetValue<string?>(IndexLocation.StoreFlag) is not null;
            var loaded = await OpenedIndex.OpenAsync(store, loadAll: !lazy, ct);
            var queries = VectorFile.Read(path, max > 0 ? max : null);
            CliErrors.Require(queries.Dimensions == loaded.Manifest.Dimensions,
                $"--vectors: queries have {queries.Dimensions} dimensions but the index has {loaded.Manifest.Dimensions}");
            if (pr.GetValue(filterOption) is { } filterJson) options = options with { Filter = loaded.Filters.Compile(filterJson) };
            var engine = new SearchEngine(loaded);
            var results = new SearchResult[queries.Count];
            var fetched = new FetchedAnswer[queries.Count];
            if (lazy)
            {
                // One at a time, so that each query's bytes are its own (later queries find earlier ones' data cached).
                for (int i = 0; i < queries.Count; i++)
                {
                    fetched[i] = await FetchingSearch.SearchAsync(engine, queries.Row(i).ToArray(), options, ct);
                    results[i] = fetched[i].Result;
                }
            }
            else
            {
                Parallel.For(0, queries.Count, new ParallelOptions { CancellationToken = ct }, i => results[i] = engine.Search(queries.Row(i), options));
            }
            var stdout = Console.Out;
            for (int i = 0; i < results.Length; i++)
            {
                var res = results[i];
                if (pr.GetValue(json))
                {
                    stdout.WriteLine(CliJson.Answer(i, res, lazy ? fetched[i] : null));
                }
                else
                {
                    // String ids when the index has them (row numbers for vectors without one).
                    stdout.WriteLine($"{i}: " + string.Join(' ', res.Ids.Select((id, j) => $"{res.Keys?[j] ?? id.ToString(System.Globalization.CultureInfo.InvariantCulture)}:{res.Distances[j]:G6}")));
                    if (lazy)
                        stdout.WriteLine($"   bytesRead={fetched[i].BytesRead} cacheHits={fetched[i].CacheHits} cacheMisses={fetched[i].CacheMisses} requests={fetched[i].Requests} partitions={fetched[i].Partitions}");
                }
            }
            return 0;
        }));
        return cmd;
    }

    /// <summary>An answer's id as printed: the user's string id, or the row number.</summary>
    private static string IdText(JsonElement id) => id.ValueKind == JsonValueKind.String ? id.GetString()! : id.GetRawText();
}
