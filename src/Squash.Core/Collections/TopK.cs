namespace Squash.Core.Collections;

/// <summary>A scored item: smaller distance is better; equal distances order by id.</summary>
public readonly record struct Neighbor(long Id, float Distance) : IComparable<Neighbor>
{
    public int CompareTo(Neighbor other)
    {
        int c = Distance.CompareTo(other.Distance);
        return c != 0 ? c : Id.CompareTo(other.Id);
    }
}

/// <summary>
/// The k best neighbours seen so far: a max-heap of capacity k whose root is the current k-th best,
/// i.e. the pruning threshold (+∞ until k items are in). Ties on distance keep the smaller id, so the
/// result does not depend on the order candidates arrive in.
/// </summary>
public sealed class TopK
{
    private readonly Neighbor[] _heap;
    private int _count;

    public TopK(int k)
    {
        if (k < 1) throw new ArgumentOutOfRangeException(nameof(k), "k must be at least 1");
        _heap = new Neighbor[k];
    }

    public int Capacity => _heap.Length;
    public int Count => _count;

    /// <summary>The distance a candidate must beat (or tie with a smaller id) to enter.</summary>
    public float Threshold => _count < _heap.Length ? float.PositiveInfinity : _heap[0].Distance;

    public void Clear() => _count = 0;

    /// <summary>Whether it holds k items: the next to enter evicts <see cref="Worst"/>.</summary>
    public bool IsFull => _count == _heap.Length;

    /// <summary>The item ranked last (the first to be evicted); only while <see cref="Count"/> &gt; 0.</summary>
    public Neighbor Worst => _count > 0 ? _heap[0] : throw new InvalidOperationException("the top-k is empty");

    /// <summary>Offers a candidate; returns whether it entered.</summary>
    public bool TryAdd(long id, float distance)
    {
        var item = new Neighbor(id, distance);
        if (_count < _heap.Length)
        {
            int i = _count++;
            while (i > 0)
            {
                int parent = (i - 1) >> 1;
                if (_heap[parent].CompareTo(item) >= 0) break;
                _heap[i] = _heap[parent];
                i = parent;
            }
            _heap[i] = item;
            return true;
        }
        if (item.CompareTo(_heap[0]) >= 0) return false;
        SiftDown(item);
        return true;
    }

    private void SiftDown(Neighbor item)
    {
        int i = 0;
        while (true)
        {
            int l = 2 * i + 1;
            if (l >= _count) break;
            int r = l + 1;
            int c = r < _count && _heap[r].CompareTo(_heap[l]) > 0 ? r : l;
            if (_heap[c].CompareTo(item) <= 0) break;
            _heap[i] = _heap[c];
            i = c;
        }
        _heap[i] = item;
    }

    /// <summary>The items in no particular order (valid until the next change).</summary>
    public ReadOnlySpan<Neighbor> Items => _heap.AsSpan(0, _count);

    /// <summary>Whether <paramref name="id"/> is among the items (a scan of at most k).</summary>
    public bool Contains(long id)
    {
        foreach (var item in Items) if (item.Id == id) return true;
        return false;
    }

    /// <summary>The items, best first.</summary>
    public Neighbor[] ToSortedArray()
    {
        var a = _heap.AsSpan(0, _count).ToArray();
        Array.Sort(a);
        return a;
    }
}

/// <summary>Candidates ranked by lower bound: keeps the <c>capacity</c> smallest (bound, row) pairs.</summary>
public sealed class BoundHeap
{
    private (float Bound, int Row)[] _heap;
    private int _count;

    public BoundHeap(int capacity)
    {
        Capacity = capacity;
        _heap = new (float, int)[Math.Min(capacity, 1024)];
    }

    public int Capacity { get; private set; }
    public int Count => _count;
    public bool IsFull => _count >= Capacity;
    public float Max => _count == 0 ? float.PositiveInfinity : _heap[0].Bound;

    public void Reset(int capacity)
    {
        Capacity = capacity;
        _count = 0;
    }

    public void Push(float bound, int row)
    {
        if (_count < Capacity)
        {
            if (_count == _heap.Length) Array.Resize(ref _heap, _heap.Length * 2);
            int i = _count++;
            while (i > 0)
            {
                int parent = (i - 1) >> 1;
                if (!Greater((bound, row), _heap[parent])) break;
                _heap[i] = _heap[parent];
                i = parent;
            }
            _heap[i] = (bound, row);
            return;
        }
        if (!Greater(_heap[0], (bound, row))) return;
        int j = 0;
        while (true)
        {
            int l = 2 * j + 1;
            if (l >= _count) break;
            int r = l + 1;
            int c = r < _count && Greater(_heap[r], _heap[l]) ? r : l;
            if (!Greater(_heap[c], (bound, row))) break;
            _heap[j] = _heap[c];
            j = c;
        }
        _heap[j] = (bound, row);
    }

    private static bool Greater((float Bound, int Row) a, (float Bound, int Row) b) =>
        a.Bound > b.Bound || (a.Bound == b.Bound && a.Row > b.Row);

    /// <summary>Sorts the held items by bound (then row) into the front of the internal buffer and returns them.</summary>
    public ReadOnlySpan<(float Bound, int Row)> SortAscending()
    {
        var span = _heap.AsSpan(0, _count);
        span.Sort(new ByBoundThenRow());
        return span;
    }

    // A struct comparer, so the sort calls no delegate per comparison (every partition scan sorts its candidates).
    private readonly struct ByBoundThenRow : IComparer<(float Bound, int Row)>
    {
        public int Compare((float Bound, int Row) a, (float Bound, int Row) b) => a.Bound != b.Bound ? a.Bound.CompareTo(b.Bound) : a.Row.CompareTo(b.Row);
    }
}
