using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;

namespace Squash.Testing;

/// <summary>
/// The build stages' queues have fixed names (squash-build-train, …), so every test process that runs builds on one
/// Azurite shares them, and <c>dotnet test</c> runs the test projects side by side: a message that another process's
/// builders take names a job they cannot find, and is dropped. Test processes therefore take turns at the queues through
/// this lock: a file, keyed by the Azurite they use, held open exclusively (an advisory lock the OS drops when the
/// process ends, however it ends). Use it as a collection fixture of the tests that send build messages.
/// Compiled into each test project that needs it (linked source).
/// </summary>
public sealed class BuildQueueLock : IDisposable
{
    /// <summary>Longer than any one project's build tests take; past it the waiting tests fail and say why.</summary>
    public static readonly TimeSpan Deadline = TimeSpan.FromMinutes(15);

    private readonly FileStream _file;

    public BuildQueueLock()
    {
        var key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(AzuriteTestStore.ConnectionString)))[..16];
        var path = Path.Combine(Path.GetTempPath(), $"squash-build-queues-{key}.lock");
        var clock = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                _file = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
                return;
            }
            catch (IOException) when (clock.Elapsed < Deadline)
            {
                Thread.Sleep(250);
            }
            catch (IOException e)
            {
                throw new TimeoutException($"another test process has held the build queues of this Azurite ({path}) for {Deadline.TotalMinutes:0} minutes", e);
            }
        }
    }

    public void Dispose() => _file.Dispose();
}
