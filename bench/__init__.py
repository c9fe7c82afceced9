"""dockvol's benchmarks: ``python -m bench`` writes BENCHMARKS.md and bench/ratios.png."""
