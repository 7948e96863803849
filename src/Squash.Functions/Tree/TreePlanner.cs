using Squash.Functions.Api;

namespace Squash.Functions.Tree;

/// <summary>
/// Lays the partitions a query (or batch) visits over an invocation tree with branching factor b and
/// depth L: A = b + b² + … + b^L node slots, numbered in pre-order as in SQUASH. Each partition goes to
/// the slot that rendezvous hashing picks for it, so a partition lands on the same tree position for
/// every query and a warm instance behind that position already holds it. Empty subtrees are pruned, and a
/// node left with one child and no partitions is replaced by that child.
/// </summary>
public static class TreePlanner
{
    public static int SlotCount(int branching, int depth)
    {
        long total = 0, level = 1;
        for (int l = 1; l <= depth; l++) { level *= branching; total += level; }
        return (int)Math.Min(total, 1 << 20);
    }

    /// <summary>The level-1 nodes (children of the coordinator).</summary>
    public static ScanNode[] Build(IReadOnlyCollection<int> partitions, int branching, int depth)
    {
        if (branching < 1) throw new ArgumentOutOfRangeException(nameof(branching));
        if (depth < 1 || partitions.Count == 0) return [];
        int slots = SlotCount(branching, depth);
        var bySlot = new Dictionary<int, List<int>>();
        foreach (int p in partitions.Order())
        {
            int slot = Owner(p, slots);
            if (!bySlot.TryGetValue(slot, out var list)) bySlot[slot] = list = [];
            list.Add(p);
        }
        var roots = new List<ScanNode>();
        int next = 0;
        for (int i = 0; i < branching; i++)
        {
            var node = BuildNode(ref next, 1, branching, depth, bySlot);
            if (node is not null) roots.Add(node);
        }
        return roots.ToArray();
    }

    private static ScanNode? BuildNode(ref int next, int level, int branching, int depth, Dictionary<int, List<int>> bySlot)
    {
        int id = next++;
        var children = new List<ScanNode>();
        if (level < depth)
            for (int i = 0; i < branching; i++)
            {
                var child = BuildNode(ref next, level + 1, branching, depth, bySlot);
                if (child is not null) children.Add(child);
            }
        var own = bySlot.TryGetValue(id, out var list) ? list.ToArray() : [];
        if (own.Length == 0 && children.Count == 0) return null;
        // A node with nothing of its own and one child would only relay: it costs an invocation, and it holds one
        // of its instance's concurrency slots while it waits, so relays can push a pool past its slots: a second,
        // empty instance starts and fetches its partitions again (bench/serverless.md). Its child takes its place
        // (keeping its own slot, so its pool and cache).
        if (own.Length == 0 && children.Count == 1) return children[0];
        return new ScanNode(id, own, children.ToArray());
    }

    /// <summary>Rendezvous (highest-random-weight) hashing: stable when the slot count changes little.</summary>
    public static int Owner(int partition, int slots)
    {
        int best = 0;
        ulong bestWeight = 0;
        for (int s = 0; s < slots; s++)
        {
            ulong w = Mix(((ulong)(uint)partition << 32) | (uint)s);
            if (w > bestWeight) { bestWeight = w; best = s; }
        }
        return best;
    }

    private static ulong Mix(ulong x)
    {
        x ^= x >> 33; x *= 0xff51afd7ed558ccdUL;
        x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53UL;
        return x ^ (x >> 33);
    }
}
