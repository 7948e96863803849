using System.Runtime.CompilerServices;

// The tests hold the calibration's background threads (BackgroundPriority.Hold) to take the hand-over path.
[assembly: InternalsVisibleTo("Squash.Search.Tests")]
