namespace Squash.Index.Attributes;

/// <summary>
/// One attribute's values for every row, in columnar form. Which arrays are set depends on the type:
/// number → <see cref="Numbers"/>; integer → <see cref="Integers"/>; bool and category →
/// <see cref="Ids"/> (bool: 0/1; category: dictionary id); tags → <see cref="TagOffsets"/>/<see cref="TagIds"/>
/// (ids sorted and distinct per row). <see cref="Present"/> is 0 where the row has no value.
/// </summary>
public sealed class AttributeColumn
{
    public required AttributeDefinition Definition { get; init; }
    public required byte[] Present { get; init; }
    public double[]? Numbers { get; init; }
    public long[]? Integers { get; init; }
    public int[]? Ids { get; init; }
    public int[]? TagOffsets { get; init; }
    public int[]? TagIds { get; init; }
    /// <summary>Category and tag dictionary: id → string, in order of first appearance.</summary>
    public string[]? Dictionary { get; init; }

    public int Count => Present.Length;
    public bool IsPresent(int row) => Present[row] != 0;
    public ReadOnlySpan<int> Tags(int row) => TagIds.AsSpan(TagOffsets![row], TagOffsets[row + 1] - TagOffsets[row]);
}

/// <summary>The attributes of every vector (row = vector number) plus optional string ids.</summary>
public sealed class AttributeTable
{
    private readonly Lazy<IndexAttributes> _encoding;

    public AttributeTable() => _encoding = new(() => AttributeEncoding.Fit(this));

    public required AttributeSchema Schema { get; init; }
    public required int Count { get; init; }
    public required AttributeColumn[] Columns { get; init; }
    /// <summary>User ids per row (null entries: none given); null when the input had no ids at all.</summary>
    public string?[]? Ids { get; init; }

    /// <summary>
    /// <see cref="AttributeEncoding.Fit"/> of this table, fitted once by whichever caller asks first (a calibrated build's
    /// filtered families and the build both need it; the others wait for it, so a lowest-priority thread must not be the
    /// first to ask). A table is not changed once read.
    /// </summary>
    public IndexAttributes Encoding => _encoding.Value;
}
