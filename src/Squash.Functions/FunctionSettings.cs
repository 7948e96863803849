namespace Squash.Functions;

/// <summary>App settings (environment variables Squash__Store etc., or appsettings).</summary>
public sealed class FunctionSettings
{
    /// <summary>Where indexes live: <c>dir:PATH</c> (the embedded default) or <c>azure:CONNECTION_STRING|ACCOUNT_URL</c>. Each index is a prefix named after it.</summary>
    public string Store { get; set; } = "dir:data/indexes";
    /// <summary>Blob container when <see cref="Store"/> is azure:….</summary>
    public string Container { get; set; } = "squash";
    /// <summary>Branching factor b of the invocation tree.</summary>
    public int Branching { get; set; } = 4;
    /// <summary>Depth L of the invocation tree (0: the coordinator scans everything itself).</summary>
    public int Depth { get; set; } = 1;
    /// <summary>
    /// Most scan nodes (b + b² + … + b^L) one request may ask for with its own branching and depth, and the most a
    /// scan request may describe: every node is a billed invocation, so a caller must not choose thousands.
    /// </summary>
    public int MaxTreeNodes { get; set; } = 128;
    /// <summary>Base URL of the scan function (processor pool). Empty: this app itself.</summary>
    public string ScanUrl { get; set; } = "";
    /// <summary>Several processor pools, ';'-separated: a tree node goes to pool (node slot mod count), so a partition always reaches the same pool.</summary>
    public string ScanUrls { get; set; } = "";
    /// <summary>
    /// Processor pools with their function keys (<c>Squash__Pools__0__Url</c>, <c>Squash__Pools__0__Key</c>, …), in pool
    /// order; used instead of <see cref="ScanUrls"/>, which names pools without keys. A tree node's call to pool i carries
    /// pool i's key in <c>x-functions-key</c>: on Azure the scan function has authLevel function, so a call without it gets 401.
    /// One setting per pool, so that each key can be a Key Vault reference of its own. On Azure the pools must be set
    /// (this or ScanUrls): with neither, child calls go back to the calling instance and the tree never leaves it.
    /// </summary>
    public List<PoolEndpoint> Pools { get; set; } = [];
    /// <summary>Memory bound of the instance's segment cache (decoded partitions kept between invocations).</summary>
    public int CacheMb { get; set; } = 1024;
    /// <summary>Exact cache bound in bytes; overrides <see cref="CacheMb"/> when positive (tests use small bounds).</summary>
    public long CacheBytes { get; set; }
    /// <summary>Memory billed per instance, for the cost estimate in query statistics.</summary>
    public int InstanceMemoryMb { get; set; } = 2048;
    /// <summary>Per-attempt timeout of a child call.</summary>
    public TimeSpan ChildTimeout { get; set; } = TimeSpan.FromSeconds(10);
    /// <summary>A child slower than this gets a hedged second call.</summary>
    public TimeSpan HedgingDelay { get; set; } = TimeSpan.FromMilliseconds(500);
    /// <summary>
    /// How long an instance answers from the version it last saw before it reads <c>current</c> again (a newer build or
    /// ingest shows after at most this). It bounds how soon eventual reads see ingested writes, so it is short: the
    /// price is one read of a tiny blob per index per second on an instance that is being asked.
    /// </summary>
    public TimeSpan CurrentRecheck { get; set; } = TimeSpan.FromSeconds(1);
    /// <summary>Largest request body accepted (a /scan body may carry up to <see cref="MaxMaskedRows"/> masked rows on top).</summary>
    public long MaxRequestBytes { get; set; } = 4 * 1024 * 1024;
    /// <summary>
    /// Most indexed rows a strong read's write tail may mask (rows it replaced or deleted, not yet ingested) when the query
    /// runs over a tree: every node receives them in its /scan body (<c>excludedRows</c>, at most
    /// <c>RowNumberCodec.MaxTextLength</c> characters of it, beyond <see cref="MaxRequestBytes"/>) and holds them decoded.
    /// Past it a strong read runs on the coordinator alone (depth 0), which ships nothing; one whose request names the tree
    /// is a 503 that says to run ingest. 0 to <c>RowSetCache.DefaultMaxRows</c> (2²², what a node's cache of decoded sets keeps together).
    /// </summary>
    public int MaxMaskedRows { get; set; } = Squash.Search.Writes.RowSetCache.DefaultMaxRows;

    /// <summary>Largest /scan body accepted: a request's worth, plus the most excludedRows text a strong read may send.</summary>
    public static long MaxScanBytes(FunctionSettings settings) =>
        settings.MaxRequestBytes + Squash.Search.Writes.RowNumberCodec.MaxTextLength(settings.MaxMaskedRows);

    /// <summary>What is wrong with <see cref="MaxMaskedRows"/>, naming the setting (null: nothing); the app refuses to start with it.</summary>
    public static string? CheckMaskedRows(FunctionSettings settings) =>
        settings.MaxMaskedRows is < 0 or > Squash.Search.Writes.RowSetCache.DefaultMaxRows
            ? $"Squash:MaxMaskedRows must be between 0 and {Squash.Search.Writes.RowSetCache.DefaultMaxRows} (what a node keeps decoded), got {settings.MaxMaskedRows}"
            : null;
    /// <summary>
    /// The coordinator's app sets this: on start-up it wakes the processor pools (a health call each) so that their
    /// cold starts run alongside its own. Off for processor pools, which would only wake each other.
    /// </summary>
    public bool WakePoolsOnStart { get; set; }
    /// <summary>Indexes (comma-separated names) opened in the background at start-up, to shorten cold starts.</summary>
    public string Preload { get; set; } = "";
    /// <summary>
    /// Cost-budgeted planning: empty (default) runs every query on the fixed shape of <see cref="Branching"/> and
    /// <see cref="Depth"/>; "cost" picks per query the cheapest shape whose predicted p99 is within <see cref="P99TargetMs"/>;
    /// "latency" the fastest whose predicted cost is within <see cref="CostCapUsd"/>. A request's branching/depth override it.
    /// </summary>
    public string Objective { get; set; } = "";
    /// <summary>The p99 target of the "cost" objective, in milliseconds.</summary>
    public double P99TargetMs { get; set; } = 100;
    /// <summary>The cost cap per query of the "latency" objective, in dollars.</summary>
    public double CostCapUsd { get; set; } = 0.00001;
    /// <summary>The planner's time for the call into the coordinator, and its prior for one tree level until the coordinator has measured hops (ShapeCalibration), in milliseconds.</summary>
    public double HopMs { get; set; } = 2;
    /// <summary>The planner's prior for scanning one partition, until the coordinator has measured its own scans (ShapeCalibration), in milliseconds.</summary>
    public double PartitionScanMs { get; set; } = 0.1;
    /// <summary>Most vectors in one batch request.</summary>
    public int MaxBatch { get; set; } = 256;
}

/// <summary>One processor pool (function app): its base URL and the function key its scan function accepts (empty: none).</summary>
public sealed class PoolEndpoint
{
    public string Url { get; set; } = "";
    public string Key { get; set; } = "";
}
