namespace Squash.LocalHost;

public sealed record LocalHostOptions
{
    /// <summary>The public port (the Functions front end's role).</summary>
    public int Port { get; init; } = 7071;
    /// <summary>Store the instances read indexes from (<c>dir:PATH</c>, or <c>azure:CONNECTION|ACCOUNT_URL</c>).</summary>
    public required string Store { get; init; }
    /// <summary>Blob container for an azure: store.</summary>
    public string Container { get; init; } = "squash";
    public int Branching { get; init; } = 4;
    public int Depth { get; init; } = 1;
    /// <summary>Processor pools: on Azure each is its own function app; partitions map to pools by tree slot.</summary>
    public int ProcessorPools { get; init; } = 2;
    /// <summary>Instance cap per pool.</summary>
    public int MaxInstancesPerPool { get; init; } = 4;
    /// <summary>Concurrent invocations one instance takes before another is started. 64, the per-instance HTTP
    /// concurrency a Squash deployment sets (Flex's own default for 2,048 MB is 16): tree nodes mostly wait, on
    /// children and blob reads, and a waiting parent holds a slot, so at 16 one query of an 84-slot tree could fill
    /// a pool and start a second, empty instance that fetches its partitions again (bench/serverless.md). Flex bills an
    /// instance's memory once however many invocations share it, so more per instance is also cheaper.</summary>
    public int InstanceConcurrency { get; init; } = 64;
    /// <summary>An instance idle this long is recycled (the next call to its pool is a cold start).</summary>
    public TimeSpan KeepAlive { get; init; } = TimeSpan.FromMinutes(2);
    /// <summary>Memory billed per instance (Flex Consumption sizes: 512, 2048 or 4096 MB).</summary>
    public int InstanceMemoryMb { get; init; } = 2048;
    /// <summary>Indexes every instance opens in the background as it starts (Squash__Preload).</summary>
    public string Preload { get; init; } = "";
    /// <summary>The function app to run (dll, executable or published folder); default: Squash.Functions.dll beside this assembly.</summary>
    public string? AppPath { get; init; }
    /// <summary>Folder for the instances' output, one file per pool (see <see cref="InstanceLog"/>); default: squash-serve-PORT in the temp folder.</summary>
    public string? LogFolder { get; init; }
    /// <summary>Bytes one pool's log file may reach before it is rotated.</summary>
    public long MaxLogBytes { get; init; } = InstanceLog.DefaultMaxBytes;
    /// <summary>Where the host reports what happened to instances (an exit it did not ask for, with the log's path); default: stderr.</summary>
    public Action<string>? Log { get; init; }
    /// <summary>Instance cap of the "builder" pool that runs queue-triggered functions (the builder function app on Azure).</summary>
    public int MaxBuilderInstances { get; init; } = 4;
    /// <summary>Caps host.json maxPollingInterval (the longest wait between polls of an empty queue); tests shorten it.</summary>
    public TimeSpan? QueueMaxPollingInterval { get; init; }
    /// <summary>How long a received queue message stays invisible, renewed at half-time while its invocation runs (the Functions host: 10 minutes).</summary>
    public TimeSpan QueueMessageLease { get; init; } = TimeSpan.FromMinutes(10);
    /// <summary>App settings given to every instance as environment variables (and read by %NAME% in function.json queue names).</summary>
    public IReadOnlyDictionary<string, string>? AppSettings { get; init; }
}
