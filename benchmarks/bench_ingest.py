"""Synthetic generator and DeepLesion ingest at DeepLesion scale (4,427 patients).

Ingest (header checks only, validated tables, atomic write) runs beside a naive baseline
that a one-off script would write: ``csv`` rows plus a full decode of every key slice.
Target: the ~32,700-row table and its image index in under 30 s on 2 cores.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.results import median_time, record
from patientgraph import ingest_deeplesion
from patientgraph.synth import generate

BENCH = "ingest"
CACHE = Path.home() / ".cache" / "patientgraph" / "bench"


def naive_ingest(info: Path, images: Path) -> int:
    """Baseline: read DL_info.csv row by row and decode each key slice fully."""
    n = 0
    with open(info, newline="") as fh:
        for row in csv.DictReader(fh):
            name = row["File_name"]
            folder, slice_name = name.rsplit("_", 1)
            with Image.open(images / folder / slice_name) as im:
                arr = np.asarray(im, dtype=np.int32) - 32768
            _ = [float(v) for v in row["Bounding_boxes"].split(",")], arr.mean()
            n += 1
    return n


def cached_cohort(n_patients: int, seed: int = 0) -> Path:
    """A DeepLesion-scale synthetic cohort, generated once and kept between runs."""
    root = CACHE / f"cohort-{n_patients}-{seed}"
    if not (root / "truth.json").exists():
        generate(root, n_patients=n_patients, seed=seed)
    return root


def bench_synth(n_patients: int) -> None:
    """Generator throughput with 2 worker processes beside 1 (the baseline)."""
    tmp = Path(tempfile.mkdtemp(prefix="pg-bench-synth-"))
    try:
        secs = {}
        for workers in (1, 2):
            t0 = time.perf_counter()
            summary = generate(tmp / f"w{workers}", n_patients=n_patients, seed=1,
                               workers=workers)
            secs[workers] = time.perf_counter() - t0
        rows = summary["lesion_rows"]
        record("synth", "generate lesions/s", rows / secs[2], "lesions/s",
               baseline_value=rows / secs[1], n=rows,
               note=f"{n_patients} patients; baseline: 1 worker process")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(quick: bool = False) -> None:
    bench_synth(60 if quick else 300)
    n_patients = 300 if quick else 4427
    cohort = cached_cohort(n_patients)
    rows = sum(1 for _ in open(cohort / "DL_info.csv")) - 1
    ws = Path(tempfile.mkdtemp(prefix="pg-bench-ingest-"))
    try:
        def ours():
            return ingest_deeplesion(
                cohort / "DL_info.csv", cohort / "Images_png", ws / "w",
                records=cohort / "records.csv", outcomes=cohort / "outcomes.csv",
                studies=cohort / "studies.csv", force=True)

        ours_s, _ = median_time(ours, repeats=3)
        base_s, n = median_time(lambda: naive_ingest(cohort / "DL_info.csv",
                                                     cohort / "Images_png"), repeats=1)
        assert n == rows
        record(BENCH, "deeplesion rows/s", rows / ours_s, "rows/s",
               baseline_value=rows / base_s, n=rows,
               note="median of 3; baseline: csv rows + full decode of each key slice")
        record(BENCH, "deeplesion seconds", ours_s, "s", baseline_value=base_s, n=rows,
               higher_is_better=False, note="target < 30 s at 32,735 rows")
    finally:
        shutil.rmtree(ws, ignore_errors=True)
