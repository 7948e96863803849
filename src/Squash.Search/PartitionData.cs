using Squash.Index.Model;

namespace Squash.Search;

/// <summary>What a scan of one partition reads: its codes, its raw vectors (all rows, or only those the query re-ranks) and its attributes (null without a filter or attributes).</summary>
public sealed record PartitionData(PartitionCodes Codes, PartitionVectors Vectors, PartitionAttributes? Attributes);
