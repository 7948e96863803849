using System.Net;
using System.Net.Sockets;

namespace Squash.Testing;

/// <summary>
/// A loopback port nothing listens on, for a host a test starts: the OS picks it, so tests running side by side never
/// collide. Compiled into each test project that needs it (linked source).
/// </summary>
public static class FreePorts
{
    public static int Next()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
