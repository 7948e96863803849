using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Squash.Functions.Tests;

/// <summary>
/// The publish step's output started the way the Azure Functions host starts a custom handler: the
/// executable from host.json, the app folder as working directory, the port in FUNCTIONS_CUSTOMHANDLER_PORT.
/// </summary>
[Collection(nameof(IndexCollection))]
public sealed class PublishedAppTests(IndexFixture fx)
{
    [Fact]
    public async Task ThePublishedFolderStartsLikeTheFunctionsHostStartsItAndAnswersQueries()
    {
        var root = new DirectoryInfo(AppContext.BaseDirectory);
        while (!File.Exists(Path.Combine(root.FullName, "Serverless.sln"))) root = root.Parent!;
        var output = Path.Combine(Path.GetTempPath(), "squash-publish-" + Guid.NewGuid().ToString("N"));
        try
        {
            var publish = Process.Start(new ProcessStartInfo("bash", [Path.Combine(root.FullName, "scripts", "publish.sh"), output])
            { WorkingDirectory = root.FullName, RedirectStandardOutput = true, RedirectStandardError = true })!;
            var log = await publish.StandardOutput.ReadToEndAsync() + await publish.StandardError.ReadToEndAsync();
            await publish.WaitForExitAsync();
            Assert.True(publish.ExitCode == 0, log);

            using var host = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "host.json")));
            var exe = host.RootElement.GetProperty("customHandler").GetProperty("description").GetProperty("defaultExecutablePath").GetString()!;
            Assert.True(host.RootElement.GetProperty("customHandler").GetProperty("enableForwardingHttpRequest").GetBoolean());
            foreach (var f in new[] { "query", "scan", "index-info", "health" }) Assert.True(File.Exists(Path.Combine(output, f, "function.json")), f);

            int port;
            using (var l = new TcpListener(IPAddress.Loopback, 0)) { l.Start(); port = ((IPEndPoint)l.LocalEndpoint).Port; }
            var psi = new ProcessStartInfo(Path.Combine(output, exe)) { WorkingDirectory = output, RedirectStandardOutput = true, RedirectStandardError = true };
            psi.Environment["FUNCTIONS_CUSTOMHANDLER_PORT"] = port.ToString();
            psi.Environment["FUNCTIONS_WORKER_RUNTIME"] = "custom";
            psi.Environment["Squash__Store"] = "dir:" + fx.Root;
            psi.Environment["Squash__Depth"] = "0";
            using var app = Process.Start(psi)!;
            try
            {
                using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(5) };
                for (int i = 0; ; i++)
                {
                    try { if ((await client.GetAsync("/")).IsSuccessStatusCode) break; }
                    catch (HttpRequestException) when (i < 300) { await Task.Delay(100); }
                }
                Assert.Equal("""{"status":"ok"}""", await client.GetStringAsync("/api/health"));
                var body = new StringContent(JsonSerializer.Serialize(new { vector = fx.Queries[0], k = 5 }), Encoding.UTF8, "application/json");
                var response = await client.PostAsync($"/api/indexes/{IndexFixture.IndexName}/query", body);
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                using var answer = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
                var ids = answer.RootElement.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("id").GetInt64()).ToArray();
                Assert.Equal(fx.Engine.Search(fx.Queries[0], new Squash.Search.SearchOptions { K = 5 }).Ids, ids);
            }
            finally
            {
                app.Kill(entireProcessTree: true);
            }
        }
        finally
        {
            try { Directory.Delete(output, true); } catch (IOException) { }
        }
    }
}
