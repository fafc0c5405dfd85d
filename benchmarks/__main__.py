"""``python -m benchmarks [NAME ...]``: run the benchmarks, then rewrite RESULTS.md."""

from __future__ import annotations

import argparse
import importlib

from benchmarks.results import render

BENCHMARKS = ["bench_ingest", "bench_embed", "bench_graph", "bench_dashboards", "bench_discovery",
              "bench_forecast", "bench_security", "bench_pipeline"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"some of {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHMARKS}")
    for name in args.names or BENCHMARKS:
        importlib.import_module(f"benchmarks.{name}").main(quick=args.quick)
    render()


if __name__ == "__main__":
    main()
