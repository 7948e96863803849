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
    /// <summary>
    /// scripts/publish.sh under a deadline. It builds in the checkout's obj/ and bin/, so under scripts/test.sh it
    /// holds the run's build lock (SQUASH_BUILD_LOCK): a second test run on the machine must not build the same
    /// files at the same time.
    /// </summary>
    private static async Task<(int ExitCode, string Log)> PublishAsync(string root, string output)
    {
        var script = Path.Combine(root, "scripts", "publish.sh");
        var buildLock = Environment.GetEnvironmentVariable("SQUASH_BUILD_LOCK");
        var psi = buildLock is { Length: > 0 }
            ? new ProcessStartInfo("flock", [buildLock, "bash", script, output])
            : new ProcessStartInfo("bash", [script, output]);
        psi.WorkingDirectory = root;
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        using var publish = Process.Start(psi)!;
        // Both pipes at once: reading one to the end while the other fills would block the publish.
        var stdout = publish.StandardOutput.ReadToEndAsync();
        var stderr = publish.StandardError.ReadToEndAsync();
        try
        {
            // Under the run's 20-minute hang bound: two suites on one machine made the lock wait plus two AOT publishes pass 15 minutes.
            await publish.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(18));
        }
        catch (TimeoutException)
        {
            publish.Kill(entireProcessTree: true);
            return (-1, "scripts/publish.sh did not finish within 18 minutes (it waits for the checkout's build lock, which the infra tests' publish also takes)");
        }
        return (publish.ExitCode, await stdout + await stderr);
    }

    /// <summary>Polls until the app answers 2xx; fails with the last answer when it exits or the deadline passes.</summary>
    private static async Task WaitUntilAnswersAsync(HttpClient client, Process app, TimeSpan limit, IEnumerable<string> appLog)
    {
        var deadline = DateTime.UtcNow + limit;
        string last = "no answer yet";
        while (true)
        {
            Assert.False(app.HasExited, $"the published app exited with code {(app.HasExited ? app.ExitCode : 0)} before answering ({last}): {string.Join('\n', appLog)}");
            try
            {
                using var response = await client.GetAsync("/");
                if (response.IsSuccessStatusCode) return;
                last = $"HTTP {(int)response.StatusCode}";
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { last = e.Message; }
            Assert.True(DateTime.UtcNow < deadline, $"the published app did not answer 2xx within {limit.TotalSeconds:0} s ({last}): {string.Join('\n', appLog)}");
            await Task.Delay(100);
        }
    }

    [Fact]
    public async Task WaitingForAnAppThatOnlyAnswers503EndsAtTheDeadlineWithTheLastAnswer()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var stop = new CancellationTokenSource();
        var server = Task.Run(async () =>
        {
            try
            {
                while (true)
                {
                    using var c = await listener.AcceptTcpClientAsync(stop.Token);
                    var stream = c.GetStream();
                    _ = await stream.ReadAsync(new byte[4096], stop.Token);
                    await stream.WriteAsync("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"u8.ToArray(), stop.Token);
                }
            }
            catch (OperationCanceledException) { }
        });
        using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}"), Timeout = TimeSpan.FromSeconds(5) };
        var e = await Assert.ThrowsAnyAsync<Xunit.Sdk.XunitException>(() => WaitUntilAnswersAsync(client, Process.GetCurrentProcess(), TimeSpan.FromSeconds(1), []));
        Assert.Contains("the published app did not answer 2xx within 1 s (HTTP 503)", e.Message);
        stop.Cancel();
        await server;
    }

    [Fact]
    public async Task ThePublishedFolderStartsLikeTheFunctionsHostStartsItAndAnswersQueries()
    {
        var root = new DirectoryInfo(AppContext.BaseDirectory);
        while (!File.Exists(Path.Combine(root.FullName, "Serverless.sln"))) root = root.Parent!;
        var output = Path.Combine(Path.GetTempPath(), "squash-publish-" + Guid.NewGuid().ToString("N"));
        try
        {
            var (exitCode, log) = await PublishAsync(root.FullName, output);
            Assert.True(exitCode == 0, log);

            using var host = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "host.json")));
            var exe = host.RootElement.GetProperty("customHandler").GetProperty("description").GetProperty("defaultExecutablePath").GetString()!;
            Assert.True(host.RootElement.GetProperty("customHandler").GetProperty("enableForwardingHttpRequest").GetBoolean());
            // The package is what azd / az upload: every function of functions/ (byte for byte), host.json, the executable, no symbols.
            var functions = Directory.GetDirectories(Path.Combine(root.FullName, "functions")).Select(Path.GetFileName).ToArray();
            Assert.Contains("scan", functions);
            foreach (var f in functions)
                Assert.Equal(File.ReadAllBytes(Path.Combine(root.FullName, "functions", f!, "function.json")), File.ReadAllBytes(Path.Combine(output, f!, "function.json")));
            Assert.True(File.Exists(Path.Combine(output, exe)), $"host.json names {exe}, which the package does not have");
            Assert.Empty(Directory.GetFiles(output, "*.pdb").Concat(Directory.GetFiles(output, "*.dbg")));

            int port;
            using (var l = new TcpListener(IPAddress.Loopback, 0)) { l.Start(); port = ((IPEndPoint)l.LocalEndpoint).Port; }
            var psi = new ProcessStartInfo(Path.Combine(output, exe)) { WorkingDirectory = output, RedirectStandardOutput = true, RedirectStandardError = true };
            psi.Environment["FUNCTIONS_CUSTOMHANDLER_PORT"] = port.ToString();
            psi.Environment["FUNCTIONS_WORKER_RUNTIME"] = "custom";
            psi.Environment["Squash__Store"] = "dir:" + fx.Root;
            psi.Environment["Squash__Depth"] = "0";
            using var app = Process.Start(psi)!;
            // Drained, so that the app never blocks on a full pipe; kept for the failure message.
            var appLog = new System.Collections.Concurrent.ConcurrentQueue<string>();
            app.OutputDataReceived += (_, e) => { if (e.Data is not null) appLog.Enqueue(e.Data); };
            app.ErrorDataReceived += (_, e) => { if (e.Data is not null) appLog.Enqueue(e.Data); };
            app.BeginOutputReadLine();
            app.BeginErrorReadLine();
            try
            {
                using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(5) };
                await WaitUntilAnswersAsync(client, app, TimeSpan.FromSeconds(60), appLog);
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
