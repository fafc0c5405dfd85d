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


def main(quick: bool = False) -> None:
    n_patients = 300 if quick else 4427
    root = Path(tempfile.mkdtemp(prefix="pg-bench-ingest-"))
    try:
        t0 = time.perf_counter()
        summary = generate(root / "cohort", n_patients=n_patients, seed=0)
        synth_s = time.perf_counter() - t0
        rows = summary["lesions"]
        record("synth", "generate lesions/s", rows / synth_s, "lesions/s", n=rows,
               note=f"{n_patients} patients in {synth_s:.1f} s")
        record("synth", "generate seconds", synth_s, "s", n=rows, higher_is_better=False)

        cohort = root / "cohort"

        def ours():
            return ingest_deeplesion(
                cohort / "DL_info.csv", cohort / "Images_png", root / "ws",
                records=cohort / "records.csv", outcomes=cohort / "outcomes.csv",
                studies=cohort / "studies.csv", force=True)

        ours_s, _ = median_time(ours, repeats=3)
        base_s, n = median_time(lambda: naive_ingest(cohort / "DL_info.csv",
                                                     cohort / "Images_png"), repeats=1)
        assert n == rows
        record(BENCH, "deeplesion rows/s", rows / ours_s, "rows/s",
               baseline_value=rows / base_s, n=rows,
               note="baseline: csv rows + full decode of each key slice")
        record(BENCH, "deeplesion seconds", ours_s, "s", baseline_value=base_s, n=rows,
               higher_is_better=False, note="target < 30 s at 32,735 rows")
    finally:
        shutil.rmtree(root, ignore_errors=True)
