"""Append benchmark figures to ``benchmarks/results.jsonl`` and render ``RESULTS.md``.

One JSON object a line: benchmark, metric, value, unit, baseline_value, ratio, n, machine,
commit, date (docs/design.md, "Benchmarks"). ``RESULTS.md`` is a table of the latest figure of
each (benchmark, metric).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
RESULTS = HERE / "results.jsonl"
REPORT = HERE / "RESULTS.md"


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "platform": platform.platform()}
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def record(benchmark: str, metric: str, value: float, unit: str, *,
           baseline_value: float | None = None, n: int | None = None,
           higher_is_better: bool = True, note: str = "", path: Path = RESULTS) -> dict:
    """Append one figure; ``ratio`` is how many times better than the baseline it is."""
    ratio = None
    if baseline_value not in (None, 0) and value not in (None, 0):
        ratio = value / baseline_value if higher_is_better else baseline_value / value
    row = {
        "benchmark": benchmark, "metric": metric, "value": _round(value), "unit": unit,
        "baseline_value": _round(baseline_value), "ratio": _round(ratio), "n": n,
        "machine": machine(), "commit": commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "note": note,
    }
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(f"{benchmark:12s} {metric:40s} {row['value']} {unit}"
          + (f"  (baseline {row['baseline_value']}, x{row['ratio']})" if ratio else ""))
    return row


def peak_rss_mib(pid: int) -> float:
    """A running process's peak resident memory (VmHWM, reset by exec), in MiB; NaN when
    /proc shows none. Raises OSError once the process is gone."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _round(v: float | None) -> float | None:
    return None if v is None else float(f"{v:.4g}")


def median_time(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    """Median wall time of ``fn`` over ``repeats`` runs, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def latency_ms(fn: Callable[[int], Any], calls: int, warmup: int = 2) -> tuple[float, float]:
    """p50 and p99 in ms of ``fn(i)`` for i in 0..calls-1, after ``warmup`` calls on
    ``fn(-1)``, ``fn(-2)``, ... (inputs the timed calls do not reuse)."""
    for i in range(warmup):
        fn(-1 - i)
    times = []
    for i in range(calls):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def retired(bench: str, metric: str) -> bool:
    """A metric that no benchmark writes any more, listed apart from today's figures.

    The explorer's in-process timings (Dash's test client, the development server, a start
    that timed ``create_app`` alone) were replaced on 2026-12-07 by what a user waits for:
    ``patientgraph serve`` launched to its first page and every callback over HTTP.
    """
    return bench.startswith("dashboards") and not (
        "(HTTP" in metric or metric.startswith("start: "))


def render(path: Path = RESULTS, out: Path = REPORT) -> None:
    """Rewrite RESULTS.md: the latest figure of each (benchmark, metric), retired metrics
    (:func:`retired`) in a table of their own at the end."""
    latest: dict[tuple[str, str], dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                latest[(row["benchmark"], row["metric"])] = row
    header = [
        "| benchmark | metric | value | unit | baseline | ratio | n | machine | commit | date |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    current = [key for key in sorted(latest) if not retired(*key)]
    old = [key for key in sorted(latest) if retired(*key)]
    lines = [
        "# Benchmark results",
        "",
        "Latest figure of each metric from `benchmarks/results.jsonl` (written by "
        "`make bench`). Ratio = times better than the baseline run beside it.",
        "",
        *header, *(_row(latest[key]) for key in current),
    ]
    if old:
        lines += ["", "## Retired metrics", "",
                  "No benchmark writes these any more; their last figures, measured the "
                  "way described in `benchmarks/results.py` (`retired`), for history.", "",
                  *header, *(_row(latest[key]) for key in old)]
    out.write_text("\n".join(lines) + "\n")


def _row(r: dict) -> str:
    m = r.get("machine", {})
    mach = f"{m.get('cores')} cores, {m.get('memory_gib')} GiB" + (
        f", {m['gpu']}" if m.get("gpu") else "")
    return (f"| {r['benchmark']} | {r['metric']} | {r['value']} | {r['unit']} | "
            f"{'' if r['baseline_value'] is None else r['baseline_value']} | "
            f"{'' if r['ratio'] is None else r['ratio']} | {r.get('n') or ''} | {mach} | "
            f"{r['commit']} | {r['date'][:10]} |")
