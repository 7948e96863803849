using Squash.Core;
using Squash.Core.Vectors;

namespace Squash.Search;

/// <summary>
/// The calibration's exact neighbours (<see cref="GroundTruth"/>), computed on one thread while the input's attributes are
/// read and the index is built: they depend only on the vectors, and reading (one thread) and a build (the KLT's and
/// k-means' serial steps) leave a core idle for much of their time. The thread runs at the lowest priority, so it takes only what the build leaves idle (at normal priority it
/// slowed the build's parallel steps by about as much as it saved: bench/recall.md). <see cref="FinishAsync"/> computes
/// whatever the background thread has not reached on every core, so a build too short to hide them costs little more
/// than computing them afterwards. Results are the same either way: each query's neighbours do not depend on which other
/// queries shared its pass.
/// </summary>
public sealed class ExactNeighboursDuringBuild : IDisposable
{
    // Queries per unit of work: few enough units to share out at the end, enough queries per unit that each pass over the base serves many.
    private const int ChunkQueries = 256;

    private readonly VectorSet _base;
    private readonly VectorSet _queries;
    private readonly int _k;
    private readonly Metric _metric;
    private readonly long[]? _self;
    private readonly int[][] _ids;
    private readonly int _chunks;
    private readonly BackgroundWork _background;
    /// <summary>Per chunk: its neighbours are written.</summary>
    private readonly bool[] _done;
    private int _claimed;

    /// <param name="self">Per query, the base row it is (left out of its own neighbours), or null.</param>
    public ExactNeighboursDuringBuild(VectorSet baseSet, VectorSet queries, int k, Metric metric, long[]? self, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(baseSet);
        ArgumentNullException.ThrowIfNull(queries);
        if (baseSet.Dimensions != queries.Dimensions)
            throw new ArgumentException($"base vectors have {baseSet.Dimensions} dimensions but queries have {queries.Dimensions}", nameof(queries));
        if (self is not null && self.Length < queries.Count) throw new ArgumentException($"{self.Length} self rows for {queries.Count} queries", nameof(self));
        _base = baseSet;
        _queries = queries;
        _k = k;
        _metric = metric;
        _self = self;
        _ids = new int[queries.Count][];
        _chunks = (queries.Count + ChunkQueries - 1) / ChunkQueries;
        _done = new bool[_chunks];
        _background = new BackgroundWork(stop =>
        {
            while (!stop.IsCancellationRequested && RunNextChunk(workers: 1, stop, background: true)) { }
        }, cancellationToken);
    }

    /// <summary>The background thread's priority, lowered while the build runs and restored once it ends.</summary>
    internal BackgroundPriority.Lowering Priority => _background.Priority;

    /// <summary>
    /// Every query's neighbours: the chunks not yet started run now on every core. The background's last one is awaited
    /// for at most <see cref="BackgroundPriority.Handover"/>, then computed here as well (the same neighbours): on a busy
    /// machine a lowest-priority thread can wait minutes for a core.
    /// </summary>
    public async Task<int[][]> FinishAsync(CancellationToken cancellationToken = default)
    {
        // A cancelled build says so, even when the background thread had already done every chunk.
        cancellationToken.ThrowIfCancellationRequested();
        _background.Priority.Restore();
        while (RunNextChunk(workers: 0, cancellationToken)) { }
        if (await _background.HandedOverAsync(cancellationToken).ConfigureAwait(false)) return _ids;
        for (int chunk = 0; chunk < _chunks; chunk++)
            if (!Volatile.Read(ref _done[chunk])) RunChunk(chunk, workers: 0, cancellationToken);
        return _ids;
    }

    private bool RunNextChunk(int workers, CancellationToken cancellationToken, bool background = false)
    {
        int chunk = Interlocked.Increment(ref _claimed) - 1;
        if (chunk >= _chunks) return false;
        if (background) BackgroundPriority.Reached(BackgroundPriority.Point.ChunkClaimed);
        RunChunk(chunk, workers, cancellationToken);
        return true;
    }

    /// <summary>One chunk's neighbours (a chunk computed twice writes equal arrays).</summary>
    private void RunChunk(int chunk, int workers, CancellationToken cancellationToken)
    {
        int first = chunk * ChunkQueries, count = Math.Min(ChunkQueries, _queries.Count - first);
        int dims = _queries.Dimensions;
        var part = new VectorSet(_queries.Data.AsMemory(first * dims, count * dims).ToArray(), count, dims);
        var self = _self;
        var ids = GroundTruth.Compute(_base, part, _k, _metric, accept: self is null ? null : (q, id) => id != self[first + q],
            cancellationToken: cancellationToken, workers: workers);
        ids.CopyTo(_ids, first);
        Volatile.Write(ref _done[chunk], true);
    }

    /// <summary>Stops the background thread (a build that failed or was cancelled does not wait for it).</summary>
    public void Dispose() => _background.Dispose();
}

/// <summary>
/// A calibration's work beside the build: one thread that lowers itself (<see cref="BackgroundPriority.Lowering"/>) and
/// runs the body with a token that <see cref="HandedOverAsync"/> and <see cref="Dispose"/> cancel. The body does
/// nothing when the build has ended before the thread started.
/// </summary>
internal sealed class BackgroundWork : IDisposable
{
    private readonly CancellationTokenSource _stop;
    private readonly Task _thread;

    public BackgroundWork(Action<CancellationToken> body, CancellationToken cancellationToken)
    {
        _stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var stop = _stop.Token;
        _thread = Task.Factory.StartNew(() =>
        {
            if (Priority.Lower()) body(stop);
        }, stop, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    public BackgroundPriority.Lowering Priority { get; } = new();

    /// <summary>
    /// The build has ended: the thread's priority is restored, and whether it ends within <see cref="BackgroundPriority.Handover"/>
    /// (its failure, if it failed, is thrown). False: it is cancelled and left, and the caller does its work instead.
    /// </summary>
    public async Task<bool> HandedOverAsync(CancellationToken cancellationToken)
    {
        Priority.Restore();
        if (await BackgroundPriority.HandedOverAsync(_thread, cancellationToken).ConfigureAwait(false)) return true;
        _stop.Cancel();
        return false;
    }

    /// <summary>
    /// Cancels the work without waiting for it: its result is not wanted, and a lowest-priority thread on a busy machine
    /// may take long to notice. The token source is disposed when the thread ends.
    /// </summary>
    public void Dispose()
    {
        Priority.Restore();
        _stop.Cancel();
        _thread.ContinueWith(_ => _stop.Dispose(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
    }
}

/// <summary>
/// Puts the calling thread below every normal thread, so that it runs on what the build leaves idle instead of taking
/// a share of a core the build is using. Linux ignores <see cref="Thread.Priority"/>, so there it is the thread's nice
/// value (raising one's own is always allowed) and the idle scheduling policy (lowering one's own is allowed too).
/// </summary>
internal static partial class BackgroundPriority
{
    private const int PrioProcess = 0, Nicest = 19, SysGettid = 186;

    /// <summary>
    /// One background thread's priority: lowered by the thread itself as it starts, restored by the build once the build
    /// has ended. A thread at the idle policy that is in managed code but off the CPU holds up every GC until the kernel
    /// gives it a core, which on a busy machine can take a quarter of a second per GC (bench/recall.md), and a thread the
    /// finish no longer waits for must get a core to see that it is cancelled.
    /// </summary>
    internal sealed class Lowering
    {
        private readonly object _gate = new();
        private Thread? _thread;
        private bool _restored;

        /// <summary>The lowered thread's kernel id (0: not lowered, or not on Linux x64).</summary>
        public int ThreadId { get; private set; }

        /// <summary>Lowers the calling thread (first <see cref="Reached"/> <see cref="Point.Started"/>); false when the build has already ended.</summary>
        public bool Lower()
        {
            Reached(Point.Started);
            lock (_gate)
            {
                if (_restored) return false;
                _thread = Thread.CurrentThread;
                ThreadId = LowerCurrent();
                return true;
            }
        }

        /// <summary>Back to the normal policy (and, where the process may, the normal nice value); a thread that starts later does nothing.</summary>
        public void Restore()
        {
            lock (_gate)
            {
                if (_restored) return;
                _restored = true;
                if (_thread is not null) Raise(_thread, ThreadId);
            }
        }
    }

    private static int LowerCurrent()
    {
        try
        {
            Thread.CurrentThread.Priority = ThreadPriority.Lowest;
            if (OperatingSystem.IsLinux() && System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture == System.Runtime.InteropServices.Architecture.X64)
            {
                int tid = (int)Syscall(SysGettid);
                _ = SetPriority(PrioProcess, tid, Nicest);
                // A nice-19 thread can keep its core for the rest of its slice when a build thread wakes; an idle-policy
                // thread gives it up at once (bench/recall.md). Where the policy is refused, nice 19 stays.
                int priority = 0;
                unsafe { _ = SetScheduler(tid, SchedIdle, &priority); }
                return tid;
            }
        }
        catch (Exception e) when (e is PlatformNotSupportedException or ThreadStateException or DllNotFoundException or EntryPointNotFoundException)
        {
            // Only slower to hide: the neighbours come out the same.
        }
        return 0;
    }

    private static void Raise(Thread thread, int tid)
    {
        try
        {
            thread.Priority = ThreadPriority.Normal;
            if (tid > 0)
            {
                // Leaving the idle policy is allowed to any process; going back to nice 0 only where RLIMIT_NICE (or root) allows.
                int priority = 0;
                unsafe { _ = SetScheduler(tid, SchedOther, &priority); }
                _ = SetPriority(PrioProcess, tid, 0);
            }
        }
        catch (Exception e) when (e is PlatformNotSupportedException or ThreadStateException or DllNotFoundException or EntryPointNotFoundException)
        {
            // The thread ended, or priorities cannot be set here: nothing to restore.
        }
    }

    /// <summary>Where a background thread can be held (<see cref="Hold"/>).</summary>
    public enum Point { Started, ChunkClaimed }

    /// <summary>
    /// Called by the background threads started in this async flow at each <see cref="Point"/>: a test holds one there to
    /// stand for a thread that gets no core for minutes (no load a test can put on a machine does that reliably).
    /// </summary>
    public static readonly AsyncLocal<Action<Point>?> Hold = new();

    public static void Reached(Point point) => Hold.Value?.Invoke(point);

    /// <summary>How long a finishing build waits for a background thread's unit of work before doing it itself.</summary>
    public static readonly TimeSpan Handover = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Whether <paramref name="background"/> ended within <see cref="Handover"/> (its failure, if it failed, is thrown);
    /// false: it is still running, and the caller does its work instead.
    /// </summary>
    public static async Task<bool> HandedOverAsync(Task background, CancellationToken cancellationToken)
    {
        if (await Task.WhenAny(background, Task.Delay(Handover, cancellationToken)).ConfigureAwait(false) != background)
        {
            cancellationToken.ThrowIfCancellationRequested();
            return false;
        }
        await background.ConfigureAwait(false);
        return true;
    }

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "setpriority")]
    private static partial int SetPriority(int which, int who, int priority);

    private const int SchedOther = 0, SchedIdle = 5;

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "sched_setscheduler")]
    private static unsafe partial int SetScheduler(int pid, int policy, int* param);

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "syscall")]
    private static partial long Syscall(long number);
}
