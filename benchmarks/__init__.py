"""Side-by-side performance runs (``make bench``); figures in benchmarks/RESULTS.md."""
