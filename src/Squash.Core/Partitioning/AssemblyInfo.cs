using System.Runtime.CompilerServices;

// Tests exercise the distance kernel and top-m selection directly.
[assembly: InternalsVisibleTo("Squash.Core.Tests")]
