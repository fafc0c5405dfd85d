"""Side-by-side performance runs (``make bench``); see benchmarks/README.md."""
