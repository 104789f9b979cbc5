"""Developer tools (benchmarks, analysis, statistics, test helpers): used by the CLI and the tests, never
imported by the library."""
