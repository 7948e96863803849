using System.Buffers;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Net;
using System.Text.Json;
using Spectre.Console;
using Squash.Cli.Datasets;
using Squash.Core.Vectors;
using Squash.Functions;
using Squash.Functions.Api;
using Squash.Functions.Builds;
using Squash.Functions.Writes;
using Squash.Index.Attributes;

namespace Squash.Cli.Commands;

/// <summary>
/// <c>squash upsert</c> and <c>squash delete</c>: writes to a running service through its HTTP API
/// (<c>POST /api/indexes/{index}/vectors</c>, docs/writes.md). Files are cut into requests of at most
/// <see cref="WriteValidation.MaxItems"/> items and <see cref="MaxBodyBytes"/> of JSON; each request carries its own
/// Idempotency-Key (the run's key and the request's number), so a retried request is applied once.
/// </summary>
public static class WriteCommands
{
    /// <summary>Below the service's default 4 MiB body bound, with room for the envelope.</summary>
    public const int MaxBodyBytes = 3_800_000;

    public static Command Upsert()
    {
        var endpoint = new Option<string>(CliErrors.EndpointFlag) { Description = "The service's URL (as squash serve prints it, or the function app's).", Required = true };
        var index = new Option<string>("--index") { Description = "The index to write to (it must be built: writes take its schema and dimensions).", Required = true };
        var vectors = new Option<string>("--vectors") { Description = "Vectors to insert or replace (.fvecs, .bvecs or .npy), one per row.", Required = true };
        var attributes = new Option<string?>("--attributes")
        {
            Description = "Ids and attributes per row, as squash build reads them: JSON lines ({\"id\": \"…\", \"attributes\": {…}}) or CSV with a header (an 'id' column optional).",
        };
        var schema = new Option<string?>("--schema") { Description = "Attribute types for a CSV --attributes file (name:type,...): number, integer, bool, category, tags." };
        var firstId = new Option<long?>("--first-id")
        {
            Description = "When the rows carry no ids: row i is written as id FIRST-ID + i (an index built without ids names its rows 0, 1, …).",
        };
        var batch = new Option<int>("--batch-size") { Description = $"Upserts per request (1–{WriteValidation.MaxItems}; fewer when a request would pass {MaxBodyBytes / 1_000_000.0:0.#} MB).", DefaultValueFactory = _ => WriteValidation.MaxItems };
        var concurrency = new Option<int>("--concurrency") { Description = "Requests in flight (1–16).", DefaultValueFactory = _ => 4 };
        var key = new Option<string?>("--idempotency-key")
        {
            Description = "Key of this run: request n is sent with KEY-n, so running the same command again with the same key within the service's key retention writes nothing twice. Default: a new key per run.",
        };
        var functionKey = EndpointFlags.FunctionKey();
        var cmd = new Command("upsert", "Insert or replace vectors (with their ids and attributes) in an index of a running service. Each request is durable when acknowledged; "
            + "strong queries see it at once, eventual ones once the index has ingested it.")
        { endpoint, index, vectors, attributes, schema, firstId, batch, concurrency, key, functionKey };
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            var api = EndpointFlags.ParseEndpoint(pr.GetValue(endpoint)!);
            var name = CheckIndex(pr.GetValue(index)!);
            int batchSize = pr.GetValue(batch), inFlight = pr.GetValue(concurrency);
            CliErrors.Require(batchSize is >= 1 and <= WriteValidation.MaxItems, $"--batch-size must be 1 to {WriteValidation.MaxItems}, got {batchSize}");
            CliErrors.Require(inFlight is >= 1 and <= 16, $"--concurrency must be 1 to 16, got {inFlight}");
            var runKey = RunKey(pr.GetValue(key));
            string vectorsPath = pr.GetValue(vectors)!, attributesPath = pr.GetValue(attributes) ?? "";
            CliErrors.RequireFile("--vectors", vectorsPath);
            if (attributesPath.Length > 0) CliErrors.RequireFile("--attributes", attributesPath);
            CliErrors.Require(pr.GetValue(schema) is null || attributesPath.Length > 0, "--schema needs --attributes");
            var data = VectorFile.Read(vectorsPath);
            var table = attributesPath.Length == 0 ? null : AttributeReader.ReadFile(attributesPath, BuildCommand.ParseSchema(pr.GetValue(schema)));
            CliErrors.Require(table is null || table.Count == data.Count,
                $"--attributes: '{attributesPath}' has {table?.Count:N0} rows but --vectors '{vectorsPath}' has {data.Count:N0}: one attributes row per vector");
            var ids = Ids(table, pr.GetValue(firstId), data.Count, attributesPath);

            using var client = new EndpointClient(api, EndpointFlags.Key(pr, functionKey), "writes");
            var info = await IndexInfoAsync(client, name, ct);
            CliErrors.Require(data.Dimensions == info.Dimensions,
                $"--vectors: '{vectorsPath}' has {data.Dimensions} dimensions but index '{name}' has {info.Dimensions}");

            var requests = Requests(data, table, ids, batchSize);
            var sent = await SendAllAsync(client, name, requests, runKey, inFlight, "upsert", ct);
            Console.WriteLine($"upserted {data.Count:N0} vector(s) into '{name}' in {requests.Count:N0} request(s): {Sequences(sent)}; "
                + "strong queries see them now, eventual ones once the index has ingested them (GET /api/indexes/" + name + " shows the lag)");
            return 0;
        }));
        return cmd;
    }

    public static Command Delete()
    {
        var endpoint = new Option<string>(CliErrors.EndpointFlag) { Description = "The service's URL.", Required = true };
        var index = new Option<string>("--index") { Description = "The index to delete from.", Required = true };
        var ids = new Option<string?>("--ids") { Description = "Ids to delete, comma-separated (an id the index does not have is not an error)." };
        var idsFile = new Option<string?>("--ids-file") { Description = "A file of ids to delete, one per line." };
        var where = new Option<string?>("--where") { Description = "Delete every vector matching this filter (the query filter language, as JSON), at the request's sequence." };
        var key = new Option<string?>("--idempotency-key") { Description = "Key of this run (request n is sent with KEY-n). Default: a new key per run." };
        var functionKey = EndpointFlags.FunctionKey();
        var cmd = new Command("delete", "Delete vectors from an index of a running service, by id or by filter; durable when acknowledged.")
        { endpoint, index, ids, idsFile, where, key, functionKey };
        cmd.SetAction((pr, ct) => CliErrors.RunAsync(pr, async () =>
        {
            var api = EndpointFlags.ParseEndpoint(pr.GetValue(endpoint)!);
            var name = CheckIndex(pr.GetValue(index)!);
            string? idList = pr.GetValue(ids), idPath = pr.GetValue(idsFile), filter = pr.GetValue(where);
            CliErrors.Require((idList is null ? 0 : 1) + (idPath is null ? 0 : 1) + (filter is null ? 0 : 1) == 1, "give exactly one of --ids, --ids-file and --where");
            var runKey = RunKey(pr.GetValue(key));
            var bodies = new List<(byte[] Body, int Items, int FirstRow)>();
            if (filter is not null)
            {
                JsonElement parsed;
                try
                {
                    parsed = JsonDocument.Parse(filter).RootElement.Clone();
                }
                catch (JsonException e)
                {
                    throw new UsageException($"--where must be a JSON filter: {e.Message.Split('\n')[0]}");
                }
                CliErrors.Require(parsed.ValueKind == JsonValueKind.Object, "--where must be a JSON object (a filter such as {\"colour\": \"red\"})");
                bodies.Add((Json(w => { w.WriteStartObject(); w.WritePropertyName("deleteWhere"); parsed.WriteTo(w); w.WriteEndObject(); }), 1, 0));
            }
            else
            {
                if (idPath is not null) CliErrors.RequireFile("--ids-file", idPath);
                var list = (idList is not null ? idList.Split(',') : File.ReadAllLines(idPath!)).Select(s => s.Trim()).Where(s => s.Length > 0).ToArray();
                CliErrors.Require(list.Length > 0, idList is not null ? "--ids names no id" : $"--ids-file: '{idPath}' names no id");
                for (int start = 0; start < list.Length; start += WriteValidation.MaxItems)
                {
                    var chunk = list.AsMemory(start, Math.Min(WriteValidation.MaxItems, list.Length - start));
                    bodies.Add((Json(w =>
                    {
                        w.WriteStartObject();
                        w.WriteStartArray("deletes");
                        foreach (var id in chunk.Span) w.WriteStringValue(id);
                        w.WriteEndArray();
                        w.WriteEndObject();
                    }), chunk.Length, start));
                }
            }
            using var client = new EndpointClient(api, EndpointFlags.Key(pr, functionKey), "writes");
            await IndexInfoAsync(client, name, ct);
            var sent = await SendAllAsync(client, name, bodies, runKey, 1, "delete", ct);
            Console.WriteLine(filter is not null
                ? $"deleted what matches --where from '{name}': {Sequences(sent)}"
                : $"deleted {bodies.Sum(b => b.Items):N0} id(s) from '{name}' in {bodies.Count:N0} request(s): {Sequences(sent)}");
            return 0;
        }));
        return cmd;
    }

    private static string CheckIndex(string name)
    {
        CliErrors.Require(IndexCatalog.IsValidName(name), $"--index names an index of the service (lower-case letters, digits and '-', at most 63 characters), got '{name}'");
        return name;
    }

    /// <summary>
    /// The longest run key: request n is sent with KEY-n, and the service takes keys of up to
    /// <see cref="BuildEndpoints.MaxIdempotencyKey"/> characters, so room is left for "-" and a request number.
    /// </summary>
    internal const int MaxRunKey = BuildEndpoints.MaxIdempotencyKey - RequestNumberRoom;
    private const int RequestNumberRoom = 20; // "-" and the request number (an int, at most 10 digits), with room to spare

    private static string RunKey(string? given)
    {
        var key = given ?? "squash-cli-" + Guid.NewGuid().ToString("N");
        CliErrors.Require(key.Length is >= 1 and <= MaxRunKey && key.All(c => c is >= '!' and <= '~'), $"--idempotency-key must be 1 to {MaxRunKey} visible ASCII characters");
        return key;
    }

    /// <summary>The id of each row: the attributes' ids, else FIRST-ID + row; every id once (requests in flight land in any order).</summary>
    private static string[] Ids(AttributeTable? table, long? firstId, int count, string attributesPath)
    {
        string[] ids;
        if (table?.Ids is { } given)
        {
            CliErrors.Require(firstId is null, $"--first-id cannot be combined with ids in --attributes '{attributesPath}'");
            int missing = Array.FindIndex(given, id => id is null);
            CliErrors.Require(missing < 0, $"--attributes: row {missing} of '{attributesPath}' has no id (give every row one, or none and use --first-id)");
            ids = given!;
        }
        else
        {
            CliErrors.Require(firstId is not null, attributesPath.Length == 0
                ? "--first-id is required when the rows carry no ids (no --attributes with an 'id' per row): row i is then written as id FIRST-ID + i"
                : $"--first-id is required: '{attributesPath}' carries no ids (row i is then written as id FIRST-ID + i)");
            CliErrors.Require(firstId >= 0, $"--first-id must be ≥ 0, got {firstId}");
            ids = new string[count];
            for (int i = 0; i < count; i++) ids[i] = (firstId!.Value + i).ToString(CultureInfo.InvariantCulture);
        }
        var firstRow = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < ids.Length; i++)
            if (!firstRow.TryAdd(ids[i], i))
                throw new UsageException($"--vectors: id '{ids[i]}' is given to rows {firstRow[ids[i]]} and {i}; give each id once per run (requests in flight land in any order)");
        return ids;
    }

    /// <summary>The upsert requests: rows in order, at most <paramref name="batchSize"/> per request and <see cref="MaxBodyBytes"/> of JSON.</summary>
    private static List<(byte[] Body, int Items, int FirstRow)> Requests(VectorSet data, AttributeTable? table, string[] ids, int batchSize)
    {
        var requests = new List<(byte[], int, int)>();
        var body = new MemoryStream();
        int first = 0, items = 0;
        void Close()
        {
            body.Write("]}"u8);
            requests.Add((body.ToArray(), items, first));
            body.SetLength(0);
            items = 0;
        }
        var item = new ArrayBufferWriter<byte>(1 << 16);
        using var w = new Utf8JsonWriter(item);
        for (int row = 0; row < data.Count; row++)
        {
            item.Clear();
            w.Reset(item);
            w.WriteStartObject();
            w.WriteString("id", ids[row]);
            // base64 of little-endian float32: the server parses no numbers, and the body is a third the size.
            if (BitConverter.IsLittleEndian) w.WriteBase64String("vector", MemoryMarshal.AsBytes(data.Row(row)));
            else
            {
                w.WriteStartArray("vector");
                foreach (float x in data.Row(row)) w.WriteNumberValue(x);
                w.WriteEndArray();
            }
            if (table is not null) WriteAttributes(w, table, row);
            w.WriteEndObject();
            w.Flush();
            const int envelope = 16; // {"upserts":[ … ]}
            CliErrors.Require(item.WrittenCount + envelope <= MaxBodyBytes,
                $"--vectors: row {row} alone is {item.WrittenCount:N0} bytes of JSON, over the {MaxBodyBytes:N0} a request may carry");
            if (items > 0 && (items == batchSize || body.Length + 1 + item.WrittenCount + 2 > MaxBodyBytes)) Close();
            if (items == 0)
            {
                first = row;
                body.Write("{\"upserts\":["u8);
            }
            else body.WriteByte((byte)',');
            body.Write(item.WrittenSpan);
            items++;
        }
        if (items > 0) Close();
        return requests;
    }

    private static void WriteAttributes(Utf8JsonWriter w, AttributeTable table, int row)
    {
        w.WriteStartObject("attributes");
        foreach (var c in table.Columns)
        {
            if (!c.IsPresent(row)) continue;
            w.WritePropertyName(c.Definition.Name);
            switch (c.Definition.Type)
            {
                case AttributeType.Number: w.WriteNumberValue(c.Numbers![row]); break;
                case AttributeType.Integer: w.WriteNumberValue(c.Integers![row]); break;
                case AttributeType.Bool: w.WriteBooleanValue(c.Ids![row] != 0); break;
                case AttributeType.Category: w.WriteStringValue(c.Dictionary![c.Ids![row]]); break;
                case AttributeType.Tags:
                    w.WriteStartArray();
                    foreach (int t in c.Tags(row)) w.WriteStringValue(c.Dictionary![t]);
                    w.WriteEndArray();
                    break;
            }
        }
        w.WriteEndObject();
    }

    private static byte[] Json(Action<Utf8JsonWriter> write)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer)) write(w);
        return buffer.WrittenSpan.ToArray();
    }

    private static async Task<IndexInfo> IndexInfoAsync(EndpointClient client, string index, CancellationToken ct)
    {
        try
        {
            return (await client.SendAsync<IndexInfo>(() => new HttpRequestMessage(HttpMethod.Get, $"api/indexes/{index}"), retry: true, ct)).Value;
        }
        catch (EndpointProblemException e) when (e.Status == (int)HttpStatusCode.NotFound)
        {
            throw new UsageException($"--index: the endpoint has no index named '{index}' (build it first: writes need its schema and dimensions)");
        }
    }

    /// <summary>
    /// Sends every request, <paramref name="inFlight"/> at a time, each with its Idempotency-Key and retried on transient
    /// failures; stops at the first refusal, naming the rows it was about and what was already acknowledged.
    /// </summary>
    private static async Task<List<long>> SendAllAsync(EndpointClient client, string index, List<(byte[] Body, int Items, int FirstRow)> requests,
        string runKey, int inFlight, string verb, CancellationToken ct)
    {
        var sequences = new long[requests.Count];
        var acknowledged = new bool[requests.Count];
        int total = requests.Sum(r => r.Items), done = 0;
        ProgressTask? bar = null;
        async Task SendOne(int n, CancellationToken token)
        {
            var (body, items, _) = requests[n];
            ApiAnswer<WriteAccepted> answer;
            try
            {
                answer = await client.SendAsync<WriteAccepted>(() =>
                {
                    var message = new HttpRequestMessage(HttpMethod.Post, $"api/indexes/{index}/vectors") { Content = new ByteArrayContent(body) };
                    message.Content.Headers.ContentType = new("application/json");
                    message.Headers.Add("Idempotency-Key", $"{runKey}-{n}");
                    return message;
                }, retry: true, token);
            }
            catch (EndpointProblemException e)
            {
                throw new RequestRefusedException(n, e);
            }
            sequences[n] = answer.Value.Sequence;
            acknowledged[n] = true;
            Interlocked.Add(ref done, items);
            if (bar is not null) bar.Value = Volatile.Read(ref done);
        }
        async Task Run()
        {
            try
            {
                await Parallel.ForEachAsync(Enumerable.Range(0, requests.Count), new ParallelOptions { MaxDegreeOfParallelism = inFlight, CancellationToken = ct }, async (n, token) => await SendOne(n, token));
            }
            catch (RequestRefusedException r)
            {
                throw new EndpointProblemException(r.Problem.Status, Refusal(r, requests, acknowledged, sequences, runKey), null);
            }
        }
        var clock = Stopwatch.StartNew();
        if (!AnsiConsole.Profile.Capabilities.Interactive || requests.Count == 1)
        {
            await Run();
        }
        else
        {
            await AnsiConsole.Progress().AutoClear(true)
                .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .StartAsync(async ctx =>
                {
                    bar = ctx.AddTask(Markup.Escape($"{verb} {total:N0} item(s)"), maxValue: Math.Max(1, total));
                    await Run();
                });
        }
        if (requests.Count > 1)
            Console.Error.WriteLine($"{total:N0} item(s) acknowledged in {clock.Elapsed.TotalSeconds:F1} s ({total / Math.Max(1e-3, clock.Elapsed.TotalSeconds):N0}/s)");
        return [.. sequences];
    }

    private sealed class RequestRefusedException(int request, EndpointProblemException problem) : Exception(problem.Message, problem)
    {
        public int Request { get; } = request;
        public EndpointProblemException Problem { get; } = problem;
    }

    /// <summary>A refused request in the user's terms: the rows it held, each bad item's row, and what is already durable.</summary>
    private static string Refusal(RequestRefusedException refused, List<(byte[] Body, int Items, int FirstRow)> requests, bool[] acknowledged, long[] sequences, string runKey)
    {
        int n = refused.Request;
        var (_, items, firstRow) = requests[n];
        string what = refused.Problem.Describe(field => RowOf(field, firstRow));
        var written = Enumerable.Range(0, requests.Count).Where(i => acknowledged[i]).ToList();
        string durable = written.Count == 0
            ? "nothing was written"
            : $"{written.Sum(i => requests[i].Items):N0} item(s) in {written.Count} other request(s) were written ({Sequences(written.Select(i => sequences[i]).ToList())}); "
              + $"after fixing the input, run again with --idempotency-key {runKey} to send the rest without repeating them";
        string rows = items == 1 ? $"row {firstRow}" : $"rows {firstRow}–{firstRow + items - 1}";
        return $"request {n} ({rows}) was refused: {what}; {durable}";
    }

    /// <summary>"upserts[3].vector" → "row 1003 (vector)"; other fields as they are.</summary>
    private static string? RowOf(string field, int firstRow)
    {
        foreach (var list in new[] { "upserts[", "deletes[" })
        {
            if (!field.StartsWith(list, StringComparison.Ordinal)) continue;
            int close = field.IndexOf(']', list.Length);
            if (close < 0 || !int.TryParse(field.AsSpan(list.Length, close - list.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int item)) return null;
            string rest = field[(close + 1)..].TrimStart('.');
            return $"row {firstRow + item}" + (rest.Length > 0 ? $" ({rest})" : "");
        }
        return null;
    }

    private static string Sequences(List<long> sequences)
    {
        var acked = sequences.Where(s => s > 0).ToList();
        return acked.Count switch
        {
            0 => "no sequence",
            1 => $"sequence {acked[0]}",
            _ => $"sequences {acked.Min()}–{acked.Max()}",
        };
    }
}
