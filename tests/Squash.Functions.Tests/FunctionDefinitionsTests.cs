using Squash.LocalHost;

namespace Squash.Functions.Tests;

/// <summary>The local host reads the function.json and host.json that ship with the app (copied beside the test binaries).</summary>
public sealed class FunctionDefinitionsTests
{
    [Fact]
    public void ReadsTheShippedFunctionsAndTheirTriggers()
    {
        var defs = FunctionDefinitions.Load(AppContext.BaseDirectory);
        var query = defs.Find("query")!;
        Assert.True(query.IsHttp);
        Assert.Equal("function", query.Trigger.AuthLevel);
        Assert.Equal("indexes/{index}/query", query.Trigger.Route);
        Assert.Equal(["POST"], query.Trigger.Methods!);
        Assert.Contains(defs.Functions, f => f.Name == "scan");
        Assert.Equal("api", defs.Host.RoutePrefix);
    }

    [Fact]
    public void AFunctionJsonWithoutATriggerIsAnErrorNamingTheFile()
    {
        var dir = Directory.CreateTempSubdirectory("squash-defs-");
        try
        {
            Directory.CreateDirectory(Path.Combine(dir.FullName, "broken"));
            File.WriteAllText(Path.Combine(dir.FullName, "broken", "function.json"), """{"bindings":[{"type":"http","direction":"out","name":"res"}]}""");
            var e = Assert.Throws<InvalidDataException>(() => FunctionDefinitions.Load(dir.FullName));
            Assert.Equal($"{Path.Combine(dir.FullName, "broken", "function.json")}: 0 trigger bindings (a function has exactly one)", e.Message);
        }
        finally { dir.Delete(true); }
    }

    [Fact]
    public void QueueSettingsOfHostJsonOverrideTheDefaults()
    {
        var dir = Directory.CreateTempSubdirectory("squash-defs-");
        try
        {
            File.WriteAllText(Path.Combine(dir.FullName, "host.json"),
                """{"version":"2.0","extensions":{"queues":{"batchSize":2,"maxDequeueCount":3,"visibilityTimeout":"00:00:07"}}}""");
            var q = FunctionDefinitions.Load(dir.FullName).Host.Queues;
            Assert.Equal((2, 3, TimeSpan.FromSeconds(7), "base64"), (q.BatchSize, q.MaxDequeueCount, q.VisibilityTimeout, q.MessageEncoding));
        }
        finally { dir.Delete(true); }
    }
}
