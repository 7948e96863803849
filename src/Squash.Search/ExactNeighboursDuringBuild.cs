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
            if (!Priority.Lower()) return;
            try { body(stop); }
            finally { Priority.Ended(); }
        }, stop, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    public BackgroundPriority.Lowering Priority { get; } = BackgroundPriority.NewLowering.Value?.Invoke() ?? new();

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
    /// finish no longer waits for must get a core to see that it is cancelled. So while it is lowered, a timer watches how
    /// much CPU other processes take: from <see cref="BusyCores"/> of theirs the thread runs at the normal policy (the
    /// idle core it was to use is not there, and at its fair share it never waits long for one), and below
    /// <see cref="FreeCores"/> it goes back to the idle policy. The process's own threads do not count: a build's
    /// parallel steps leave it no core either, but their GCs free the cores it waits for. Leaving the idle policy needs
    /// root or an RLIMIT_NICE that allows nice 0; without either, nothing is watched and the thread stays lowered.
    /// </summary>
    internal sealed class Lowering
    {
        /// <summary>Cores of other processes' CPU from which a lowered thread runs at the normal policy, and below which it goes back.</summary>
        public const double BusyCores = 0.5, FreeCores = 0.25;

        private readonly object _gate = new();
        private readonly Func<double?> _othersCores;
        private Thread? _thread;
        private readonly Timer _watch;
        private bool _restored, _raised;
        /// <summary>The lowered thread's nice value before it was lowered: what raising it goes back to (a build run under nice stays there).</summary>
        private int _nice;

        /// <param name="othersCores">Samples the cores other processes used since its last call (null: not known); default <see cref="OtherProcesses"/>.</param>
        /// <param name="period">How often the load is sampled.</param>
        public Lowering(Func<double?>? othersCores = null, TimeSpan? period = null)
        {
            _othersCores = othersCores ?? new OtherProcesses().CoresSinceLast;
            var every = period ?? TimeSpan.FromMilliseconds(250);
            // Started here, on the build's thread, not by the lowered thread: a thread inherits the policy of the thread that
            // creates it, and the first timer of a process creates the runtime's timer thread, which creates pool threads.
            // From the lowered thread they all ran at the idle policy, and under load the build's parallel steps starved.
            _watch = new Timer(_ => Watch(), null, every, every);
        }

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
                bool mayRaise = MayLeaveIdlePolicy();
                ThreadId = LowerCurrent(mayRaise, out _nice);
                if (ThreadId == 0 || !mayRaise) _watch.Dispose(); // nothing to watch for, or nothing to do about it
                return true;
            }
        }

        /// <summary>Back to the normal policy (and, where the process may, the nice value it had before); a thread that starts later does nothing.</summary>
        public void Restore()
        {
            lock (_gate)
            {
                if (_restored) return;
                _restored = true;
                _watch.Dispose();
                if (_thread is not null) Raise(_thread, ThreadId, _nice);
            }
        }

        /// <summary>The lowered thread is done: its priority is left alone from now on (its kernel id may go to another thread).</summary>
        public void Ended()
        {
            lock (_gate)
            {
                _restored = true;
                _watch.Dispose();
            }
        }

        private void Watch()
        {
            lock (_gate)
            {
                // Not lowered yet: the samples only start the count.
                if (_restored || _othersCores() is not { } others || ThreadId == 0) return;
                if (!_raised && others >= BusyCores)
                {
                    // Refused, the thread stays at the idle policy, and the next sample tries again.
                    _raised = Raise(_thread!, ThreadId, _nice);
                }
                else if (_raised && others < FreeCores)
                {
                    _raised = !LowerAgain(ThreadId);
                }
            }
        }
    }

    /// <summary>
    /// The CPU other processes take: the machine's busy time (<c>/proc/stat</c>) less this process's own
    /// (<see cref="Environment.CpuUsage"/>), in cores over the wall time since the last sample.
    /// </summary>
    internal sealed class OtherProcesses
    {
        // The kernel reports /proc/stat in USER_HZ ticks, 100 a second on every Linux ABI .NET runs on.
        private const double TicksPerSecond = 100;
        private double _busy, _own;
        private long _at;

        /// <summary>Cores used by other processes since the last call (null on the first call, or where /proc/stat cannot be read).</summary>
        public double? CoresSinceLast()
        {
            if (MachineBusySeconds() is not { } busy) return null;
            double own = Environment.CpuUsage.TotalTime.TotalSeconds;
            long at = System.Diagnostics.Stopwatch.GetTimestamp();
            double? cores = _at == 0 ? null
                : Math.Max(0, (busy - _busy) - (own - _own)) / System.Diagnostics.Stopwatch.GetElapsedTime(_at, at).TotalSeconds;
            (_busy, _own, _at) = (busy, own, at);
            return cores;
        }

        /// <summary>The machine's CPU time spent outside idle and I/O wait, from the first line of /proc/stat.</summary>
        private static double? MachineBusySeconds()
        {
            try
            {
                using var reader = new StreamReader("/proc/stat");
                var fields = reader.ReadLine()?.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (fields is not { Length: >= 9 } || fields[0] != "cpu") return null;
                // user nice system idle iowait irq softirq steal
                long busy = 0;
                foreach (int i in (ReadOnlySpan<int>)[1, 2, 3, 6, 7, 8]) busy += long.Parse(fields[i], System.Globalization.CultureInfo.InvariantCulture);
                return busy / TicksPerSecond;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or OverflowException)
            {
                return null;
            }
        }
    }

    /// <summary>Whether the process may take a thread from the idle policy back to the normal one: root, or an RLIMIT_NICE that allows nice 0.</summary>
    private static bool MayLeaveIdlePolicy()
    {
        if (Environment.IsPrivilegedProcess) return true;
        try
        {
            Span<ulong> limit = stackalloc ulong[2]; // struct rlimit: current, maximum
            unsafe
            {
                fixed (ulong* l = limit) return GetResourceLimit(RlimitNice, l) == 0 && limit[0] >= 20;
            }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    /// <param name="keepNice">Leave the nice value as it is under the idle policy (which ignores it), so that the thread can be raised again.</param>
    private static int LowerCurrent(bool keepNice, out int nice)
    {
        nice = 0;
        try
        {
            Thread.CurrentThread.Priority = ThreadPriority.Lowest;
            if (OperatingSystem.IsLinux() && System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture == System.Runtime.InteropServices.Architecture.X64)
            {
                int tid = (int)Syscall(SysGettid);
                nice = NiceOf(tid);
                // A nice-19 thread can keep its core for the rest of its slice when a build thread wakes; an idle-policy
                // thread gives it up at once (bench/recall.md). Where the policy is refused, nice 19 stays.
                if (!keepNice) _ = SetPriority(PrioProcess, tid, Nicest);
                int priority = 0;
                unsafe
                {
                    if (SetScheduler(tid, SchedIdle, &priority) != 0 && keepNice) _ = SetPriority(PrioProcess, tid, Nicest);
                }
                return tid;
            }
        }
        catch (Exception e) when (e is PlatformNotSupportedException or ThreadStateException or DllNotFoundException or EntryPointNotFoundException)
        {
            // Only slower to hide: the neighbours come out the same.
        }
        return 0;
    }

    /// <summary>Back to the normal policy at nice <paramref name="nice"/>; false when the kernel refused it.</summary>
    private static bool Raise(Thread thread, int tid, int nice)
    {
        try
        {
            thread.Priority = ThreadPriority.Normal;
            if (tid > 0)
            {
                // Leaving the idle policy, like going from nice 19 back to 0, needs CAP_SYS_NICE or an RLIMIT_NICE that allows nice 0.
                int priority = 0;
                bool raised;
                unsafe { raised = SetScheduler(tid, SchedOther, &priority) == 0; }
                return SetPriority(PrioProcess, tid, nice) == 0 && raised;
            }
            return true;
        }
        catch (Exception e) when (e is PlatformNotSupportedException or ThreadStateException or DllNotFoundException or EntryPointNotFoundException)
        {
            // The thread ended, or priorities cannot be set here: nothing to restore.
            return true;
        }
    }

    /// <summary>Back to the idle policy (always allowed); false when refused or the thread has ended.</summary>
    private static bool LowerAgain(int tid)
    {
        int priority = 0;
        try { unsafe { return SetScheduler(tid, SchedIdle, &priority) == 0; } }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return false; }
    }

    /// <summary>Where a background thread can be held (<see cref="Hold"/>).</summary>
    public enum Point { Started, ChunkClaimed }

    /// <summary>
    /// Called by the background threads started in this async flow at each <see cref="Point"/>: a test holds one there to
    /// stand for a thread that gets no core for minutes (no load a test can put on a machine does that reliably).
    /// </summary>
    public static readonly AsyncLocal<Action<Point>?> Hold = new();

    public static void Reached(Point point) => Hold.Value?.Invoke(point);

    /// <summary>Makes the <see cref="Lowering"/> of the background threads started in this async flow: a test's load.</summary>
    public static readonly AsyncLocal<Func<Lowering>?> NewLowering = new();

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

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "getpriority", SetLastError = true)]
    private static partial int GetPriority(int which, int who);

    /// <summary>A thread's nice value (0 where it cannot be read: -1 is a nice value, so only errno tells a failure).</summary>
    private static int NiceOf(int tid)
    {
        System.Runtime.InteropServices.Marshal.SetLastPInvokeError(0);
        int nice = GetPriority(PrioProcess, tid);
        return nice == -1 && System.Runtime.InteropServices.Marshal.GetLastPInvokeError() != 0 ? 0 : nice;
    }

    private const int SchedOther = 0, SchedIdle = 5, RlimitNice = 13;

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "getrlimit")]
    private static unsafe partial int GetResourceLimit(int resource, ulong* limit);

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "sched_setscheduler")]
    private static unsafe partial int SetScheduler(int pid, int policy, int* param);

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "syscall")]
    private static partial long Syscall(long number);
}
