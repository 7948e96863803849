using Azure.Storage.Queues.Models;

namespace Squash.LocalHost.Tests;

/// <summary>The pieces of the queue runtime that need no queue: the payload's exact text, queue names, host.json checks.</summary>
public sealed class QueueInvocationTests
{
    [Fact]
    public void TheBodyIsTheHostsDoubleEncodedDataAndStringifiedMetadata()
    {
        var message = QueuesModelFactory.QueueMessage("id-1", "pop/1+=", """{"index":"products","n":1}""", 2,
            nextVisibleOn: new DateTimeOffset(2026, 12, 3, 10, 0, 30, TimeSpan.Zero),
            insertedOn: new DateTimeOffset(2026, 12, 3, 10, 0, 0, TimeSpan.Zero),
            expiresOn: new DateTimeOffset(2026, 12, 10, 10, 0, 0, TimeSpan.Zero));
        var body = QueueInvocation.Body("build-train", "task", message, new DateTime(2026, 12, 3, 10, 0, 1, 500, DateTimeKind.Utc), Guid.Parse("00000000-0000-0000-0000-000000000001"));
        Assert.Equal(
            """{"Data":{"task":"\"{\\\"index\\\":\\\"products\\\",\\\"n\\\":1}\""},"Metadata":{"DequeueCount":"2","ExpirationTime":"\"2026-12-10T10:00:00+00:00\"","Id":"\"id-1\"","InsertionTime":"\"2026-12-03T10:00:00+00:00\"","NextVisibleTime":"\"2026-12-03T10:00:30+00:00\"","PopReceipt":"\"pop/1+=\"","sys":{"MethodName":"build-train","UtcNow":"2026-12-03T10:00:01.5Z","RandGuid":"00000000-0000-0000-0000-000000000001"}}}""",
            body);
    }

    [Fact]
    public void TheRequestGoesToTheFunctionsNameWithoutTheRoutePrefixAndCarriesTheHostsHeaders()
    {
        var id = Guid.NewGuid();
        using var request = QueueInvocation.Request(new Uri("http://127.0.0.1:5000"), "build-train", "{}", id);
        Assert.Equal(HttpMethod.Post, request.Method);
        Assert.Equal("http://127.0.0.1:5000/build-train", request.RequestUri!.ToString());
        Assert.Equal(id.ToString(), request.Headers.GetValues("X-Azure-Functions-InvocationId").Single());
        Assert.Equal(QueueInvocation.HostVersion, request.Headers.GetValues("X-Azure-Functions-HostVersion").Single());
        Assert.Equal("application/json", request.Content!.Headers.ContentType!.MediaType);
    }

    [Fact]
    public void QueueNamesResolveAppSettingsAndAreCheckedNamingTheFile()
    {
        FunctionDefinition Def(string queue) => new("probe", new FunctionBinding("queueTrigger", "in", "task", QueueName: queue), []);
        var settings = new Dictionary<string, string> { ["BUILD_QUEUE"] = "Squash-Build" };
        Assert.Equal("squash-build-train", QueueTriggerHost.ResolveQueueName(Def("squash-build-train"), settings, "/app"));
        Assert.Equal("squash-build-x", QueueTriggerHost.ResolveQueueName(Def("%BUILD_QUEUE%-x"), settings, "/app"));
        var missing = Assert.Throws<InvalidDataException>(() => QueueTriggerHost.ResolveQueueName(Def("%NO_SUCH_SETTING_7F3%"), settings, "/app"));
        Assert.Equal("/app/probe/function.json: queueName refers to the app setting NO_SUCH_SETTING_7F3, which is not set", missing.Message);
        var invalid = Assert.Throws<InvalidDataException>(() => QueueTriggerHost.ResolveQueueName(Def("bad_name"), settings, "/app"));
        Assert.Equal("/app/probe/function.json: queueName 'bad_name' is not a valid queue name (3-63 lower-case letters, digits and single hyphens)", invalid.Message);
    }

    [Fact]
    public void OnlyAConnectionStringStoreHasQueues()
    {
        Assert.Null(QueueTriggerHost.ConnectionStringOf("dir:/data"));
        Assert.Null(QueueTriggerHost.ConnectionStringOf("azure:https://acct.blob.core.windows.net"));
        Assert.Equal("UseDevelopmentStorage=true", QueueTriggerHost.ConnectionStringOf("azure:UseDevelopmentStorage=true"));
    }

    [Fact]
    public void AnOutOfRangeQueueSettingInHostJsonIsAnErrorNamingTheFileAndTheSetting()
    {
        var app = Directory.CreateTempSubdirectory("squash-queue-app-");
        try
        {
            File.WriteAllText(Path.Combine(app.FullName, "host.json"), """{"version":"2.0","extensions":{"queues":{"batchSize":40}}}""");
            Directory.CreateDirectory(Path.Combine(app.FullName, "work"));
            File.WriteAllText(Path.Combine(app.FullName, "work", "function.json"),
                """{"bindings":[{"type":"queueTrigger","direction":"in","name":"task","queueName":"work","connection":"AzureWebJobsStorage"}]}""");
            var e = Assert.Throws<InvalidDataException>(() => new QueueTriggerHost(FunctionDefinitions.Load(app.FullName), "UseDevelopmentStorage=true",
                Path.Combine(app.FullName, "app.dll"), new Dictionary<string, string>(), new LocalHostOptions { Store = "azure:UseDevelopmentStorage=true" }, null, _ => { }, app.FullName));
            Assert.Equal($"{Path.Combine(app.FullName, "host.json")}: extensions.queues.batchSize must be 1..32, got 40", e.Message);
        }
        finally { app.Delete(true); }
    }

    [Fact]
    public void HostJsonFunctionTimeoutIsRead()
    {
        var app = Directory.CreateTempSubdirectory("squash-queue-app-");
        try
        {
            File.WriteAllText(Path.Combine(app.FullName, "host.json"), """{"version":"2.0","functionTimeout":"00:05:00"}""");
            Assert.Equal(TimeSpan.FromMinutes(5), FunctionDefinitions.Load(app.FullName).Host.FunctionTimeout);
            File.WriteAllText(Path.Combine(app.FullName, "host.json"), """{"version":"2.0"}""");
            Assert.Equal(TimeSpan.FromMinutes(30), FunctionDefinitions.Load(app.FullName).Host.FunctionTimeout);
        }
        finally { app.Delete(true); }
    }
}
