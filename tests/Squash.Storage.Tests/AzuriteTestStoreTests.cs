using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Squash.Testing;

namespace Squash.Storage.Tests;

/// <summary>
/// The test emulator is this run's own or nothing: scripts/lib/setup.sh picks free ports and refuses a port another
/// server holds, and the tests' shared connection getter fails at once with one message when nothing (or something
/// else) answers.
/// </summary>
public sealed class AzuriteTestStoreTests
{
    private static string ConnectionTo(int port) =>
        $"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;";

    /// <summary>A port with no listener: the kernel gave it to us and we closed it.</summary>
    private static int UnusedPort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    /// <summary>A plain web server (not Azure Storage) on a free loopback port, answering 200 to every request.</summary>
    private sealed class ForeignServer : IDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly CancellationTokenSource _stop = new();

        public ForeignServer()
        {
            _listener.Start();
            _ = Task.Run(async () =>
            {
                while (!_stop.IsCancellationRequested)
                {
                    try
                    {
                        using var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                        var stream = client.GetStream();
                        var buffer = new byte[4096];
                        _ = await stream.ReadAsync(buffer, _stop.Token);
                        await stream.WriteAsync("HTTP/1.1 200 OK\r\nServer: not-azurite\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"u8.ToArray(), _stop.Token);
                    }
                    catch (Exception) when (_stop.IsCancellationRequested) { return; }
                    catch (IOException) { }
                    catch (SocketException) { }
                }
            });
        }

        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

        public void Dispose()
        {
            _stop.Cancel();
            _listener.Stop();
        }
    }

    [Fact]
    public void WithoutTheVariableTheMessageSaysHowToRunTheTests()
    {
        var e = Assert.Throws<InvalidOperationException>(() => AzuriteTestStore.Probe(null));
        Assert.Equal("SQUASH_TEST_AZURITE is not set: run the tests through scripts/test.sh, which starts Azurite and sets it", e.Message);
    }

    [Fact]
    public void NothingListeningFailsAtOnceNamingTheEndpoint()
    {
        int port = UnusedPort();
        var e = Assert.Throws<InvalidOperationException>(() => AzuriteTestStore.Probe(ConnectionTo(port)));
        Assert.StartsWith($"Azurite is not reachable at 127.0.0.1:{port} (SQUASH_TEST_AZURITE): ConnectionRefused.", e.Message);
    }

    [Fact]
    public void AForeignServerOnThePortIsNamedAsNotAzureStorage()
    {
        using var foreign = new ForeignServer();
        var e = Assert.Throws<InvalidOperationException>(() => AzuriteTestStore.Probe(ConnectionTo(foreign.Port)));
        Assert.Equal($"the server at 127.0.0.1:{foreign.Port} (SQUASH_TEST_AZURITE) is not Azure Storage (HTTP 200, server 'not-azurite'): another program holds the port", e.Message);
    }

    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (!File.Exists(Path.Combine(dir.FullName, "Serverless.sln"))) dir = dir.Parent ?? throw new InvalidOperationException("Serverless.sln not found above the test folder");
        return dir.FullName;
    }

    /// <summary>Runs a bash script with scripts/lib/setup.sh sourced, in the repository, under a deadline.</summary>
    private static async Task<(int Exit, string Out, string Err)> SetupScriptAsync(string script, IDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo("bash", ["-c", "source scripts/lib/setup.sh\n" + script])
        {
            WorkingDirectory = RepoRoot(), RedirectStandardOutput = true, RedirectStandardError = true,
        };
        // The caller's own Azurite settings must not leak into the script under test.
        foreach (var name in new[] { "AZURITE_BLOB_PORT", "AZURITE_QUEUE_PORT", "AZURITE_TABLE_PORT", "SQUASH_TEST_AZURITE" }) psi.Environment.Remove(name);
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        using var process = Process.Start(psi)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        try
        {
            await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(3));
        }
        catch (TimeoutException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"setup script did not finish within 3 minutes: {script}");
        }
        return (process.ExitCode, await output, await error);
    }

    [Fact]
    public async Task StartAzuriteRefusesPortsThatAnotherServerHolds()
    {
        using var blob = new ForeignServer();
        using var queue = new ForeignServer();
        var (exit, output, error) = await SetupScriptAsync(
            "start_azurite || exit 3\necho \"started: $SQUASH_TEST_AZURITE\"\nstop_azurite",
            new Dictionary<string, string> { ["AZURITE_BLOB_PORT"] = blob.Port.ToString(), ["AZURITE_QUEUE_PORT"] = queue.Port.ToString() });
        Assert.True(exit == 3, $"start_azurite accepted ports held by another server (exit {exit}): {output}{error}");
        Assert.Contains($"Azurite could not start: a port of {blob.Port}/{queue.Port}/", error);
        Assert.Contains("is held by another process", error);
    }

    [Fact]
    public async Task TwoRunsOnOneMachineGetTheirOwnAzuriteAndADeadOneIsReported()
    {
        // Both start at the same time with default settings, as two scripts/test.sh runs would.
        const string script = """
            start_azurite || exit 3
            echo "$SQUASH_TEST_AZURITE" | grep -o 'BlobEndpoint=[^;]*'
            kill -9 "$AZURITE_PID"; wait "$AZURITE_PID" 2>/dev/null
            azurite_check_alive && exit 4
            stop_azurite
            exit 0
            """;
        var runs = await Task.WhenAll(SetupScriptAsync(script), SetupScriptAsync(script));
        foreach (var (exit, output, error) in runs)
        {
            Assert.True(exit == 0, $"exit {exit}: {output}{error}");
            Assert.Contains("error: Azurite (pid ", error);
            Assert.Contains(") died during the run", error);
        }
        var endpoints = runs.Select(r => r.Out.Trim()).ToArray();
        Assert.All(endpoints, e => Assert.StartsWith("BlobEndpoint=http://127.0.0.1:", e));
        Assert.NotEqual(endpoints[0], endpoints[1]);
    }
}
