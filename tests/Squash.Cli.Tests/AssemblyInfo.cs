// CLI tests redirect the process-wide Console, so they run one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
