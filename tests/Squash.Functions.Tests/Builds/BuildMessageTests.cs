using System.Net;
using System.Text;
using System.Text.Json;
using Squash.Functions.Builds;

namespace Squash.Functions.Tests.Builds;

/// <summary>Queue-triggered invocations: the host's payload read tolerantly, task messages read strictly.</summary>
[Collection(nameof(BuildQueueCollection))]
public sealed class BuildMessageTests
{
    [Theory]
    [InlineData("\"3\"", 3)]      // the host's form: the JSON text of the number, as a string
    [InlineData("3", 3)]          // a plain number
    [InlineData("\"\\\"3\\\"\"", 3)] // a string holding a quoted string
    [InlineData("\"zero\"", 1)]   // unreadable: the first delivery
    public void DequeueCountIsReadInEveryShapeTheHostMaySend(string dequeueJson, int expected)
    {
        var payload = """{"Data":{"task":"{\"index\":\"x\"}"},"Metadata":{"DequeueCount":""" + dequeueJson + ""","Id":"\"abc-1\"","sys":{"MethodName":"build-train"}}}""";
        using var doc = JsonDocument.Parse(payload);
        var parsed = QueueInvocation.Parse(doc.RootElement, "task");
        Assert.Equal(expected, parsed.DequeueCount);
        Assert.Equal("abc-1", parsed.MessageId);
        Assert.Equal("""{"index":"x"}""", parsed.MessageText);
    }

    [Fact]
    public void TheHostsSecondJsonEncodingOfAStringMessageIsUndone()
    {
        // What the host sends for the message text {"index":"x"}: Data.task holds "\"{\\\"index\\\":\\\"x\\\"}\"".
        var payload = JsonSerializer.Serialize(new Dictionary<string, object> { ["Data"] = new Dictionary<string, string> { ["task"] = JsonSerializer.Serialize("""{"index":"x"}""") } });
        using var doc = JsonDocument.Parse(payload);
        Assert.Equal("""{"index":"x"}""", QueueInvocation.Parse(doc.RootElement, "task").MessageText);
    }

    [Fact]
    public void AMessageGivenAsAnObjectRatherThanAStringIsReadToo()
    {
        using var doc = JsonDocument.Parse("""{"Data":{"task":{"index":"x","buildId":"b1","stage":"train","task":0}},"Metadata":{}}""");
        Assert.Equal("""{"index":"x","buildId":"b1","stage":"train","task":0}""", QueueInvocation.Parse(doc.RootElement, "task").MessageText);
    }

    [Fact]
    public void TaskMessagesAreStrict()
    {
        const string id = "b20261203-121530123-3f9a1c0b7e2d";
        Assert.NotNull(QueueInvocation.ParseMessage($$"""{"index":"p","buildId":"{{id}}","stage":"assign","task":2}""", "assign").Message);
        var (m, problem, named) = QueueInvocation.ParseMessage($$"""{"index":"p","buildId":"{{id}}","stage":"encode","task":2}""", "assign");
        Assert.Null(m);
        Assert.Equal("it is for stage \"encode\" but arrived at build-assign", problem);
        Assert.Equal(("p", id), named);
        (m, problem, named) = QueueInvocation.ParseMessage("not json", "assign");
        Assert.Null(named);
        Assert.StartsWith("it is not JSON (", problem);
        (m, problem, named) = QueueInvocation.ParseMessage($$"""{"index":"p","buildId":"{{id}}","stage":"assign","task":"2"}""", "assign");
        Assert.Equal(("p", id), named);
        Assert.Equal("task: must be a whole number, got the string \"2\"", problem);
    }

    public static (string?, string?, string?) Error(JsonElement view)
    {
        var e = view.GetProperty("error");
        return (e.GetProperty("code").GetString(), e.GetProperty("message").GetString(), e.GetProperty("task").GetString());
    }

    private static async Task<(int Status, JsonElement Body)> Invoke(BuildTestApp app, string function, string messageText, int dequeue = 1)
    {
        var payload = JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["Data"] = new Dictionary<string, object> { ["task"] = messageText },
            ["Metadata"] = new Dictionary<string, object> { ["DequeueCount"] = dequeue.ToString(), ["Id"] = "\"m-1\"" },
        });
        using var response = await app.Client.PostAsync("/" + function, new StringContent(payload, Encoding.UTF8, "application/json"));
        return ((int)response.StatusCode, JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone());
    }

    [Fact]
    public async Task AMalformedMessageFailsTheJobItNamesAndOneThatNamesNoJobIsDroppedWithALogLine()
    {
        using var app = await BuildTestApp.StartAsync();
        await app.UploadAsync("data/base.fvecs", BuildTestApp.Fvecs(new float[40 * 4], 4));
        var buildId = await app.SubmitOkAsync("products", """{"source":{"vectors":"data/base.fvecs"},"options":{"partitions":2}}""");

        var (status, body) = await Invoke(app, "build-assign", """{"index":"nobody","buildId":"b20261203-121530123-3f9a1c0b7e2d","stage":"assign","task":0}""");
        Assert.Equal(200, status);
        // The host's answer shape: Outputs, Logs, ReturnValue (present, null).
        Assert.Equal(["Outputs", "Logs", "ReturnValue"], body.EnumerateObject().Select(p => p.Name).ToArray());
        Assert.Equal(JsonValueKind.Null, body.GetProperty("ReturnValue").ValueKind);
        Assert.Equal(["dropped message assign[0]: index 'nobody' has no build 'b20261203-121530123-3f9a1c0b7e2d'"], body.GetProperty("Logs").EnumerateArray().Select(l => l.GetString()!).ToArray());
        (status, body) = await Invoke(app, "build-assign", "[1,2]");
        Assert.Equal(200, status);
        Assert.Equal("dropped a queue message on squash-build-assign (message id m-1) that names no build: it must be a JSON object {\"index\",\"buildId\",\"stage\",\"task\"}, got an array",
            body.GetProperty("Logs")[0].GetString());
        Assert.Equal("queued", (await app.ShowAsync("products", buildId)).GetProperty("status").GetString());

        (status, _) = await Invoke(app, "build-assign", $$"""{"index":"products","buildId":"{{buildId}}","stage":"assign","task":7}""");
        Assert.Equal(200, status);
        var view = await app.ShowAsync("products", buildId);
        Assert.Equal("failed", view.GetProperty("status").GetString());
        Assert.Equal(("bad-message", "the queue message on squash-build-assign names task 7; the build has 1 assign task (0..0)", "assign[7]"), Error(view));
    }

    [Fact]
    public async Task AMessageForAnotherStageFailsTheJobNamingTheQueue()
    {
        using var app = await BuildTestApp.StartAsync();
        await app.UploadAsync("data/base.fvecs", BuildTestApp.Fvecs(new float[40 * 4], 4));
        var buildId = await app.SubmitOkAsync("products", """{"source":{"vectors":"data/base.fvecs"},"options":{"partitions":2}}""");
        var (status, _) = await Invoke(app, "build-train", $$"""{"index":"products","buildId":"{{buildId}}","stage":"publish","task":0}""");
        Assert.Equal(200, status);
        Assert.Equal(("bad-message", "a queue message on squash-build-train is not valid: it is for stage \"publish\" but arrived at build-train", "train[?]"),
            Error(await app.ShowAsync("products", buildId)));
    }
}
