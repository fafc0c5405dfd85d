"""Synthetic generator and DeepLesion ingest at DeepLesion scale (4,427 patients).

The generator runs beside its baseline (the renderer before the compiled pixel loops, from
git) on a sample of the cohort, then alone at full size. Target: 4,427 patients in under
2 minutes.

Ingest (header checks only, validated tables, atomic write) runs beside a naive baseline
that a one-off script would write: ``csv`` rows plus a full decode of every key slice.
Target: the ~32,700-row table and its image index in under 30 s on 2 cores.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.results import median_time, record
from benchmarks.trees import REPO, export_tree
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


SYNTH_BASELINE = "378940f"
"""The last commit with the numpy-only renderer (before the compiled pixel loops and the
writer's own PNG encoder): the baseline of the synth rows."""


def _time_generate(code_root: Path, out: Path, n_patients: int, workers: int) -> dict:
    """Run ``generate`` of the package under ``code_root`` in a fresh interpreter; its
    summary with the wall and CPU seconds of the call, worker processes included (imports
    excluded). CPU seconds say more than wall seconds when other jobs share the cores."""
    script = (
        "import json, resource, time\n"
        "from patientgraph.synth import generate\n"
        "def cpu():\n"
        "    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, "
        "resource.RUSAGE_CHILDREN))\n"
        "    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime\n"
        "if __name__ == '__main__':\n"
        "    t0, c0 = time.perf_counter(), cpu()\n"
        f"    summary = generate({str(out)!r}, n_patients={n_patients}, seed=1, "
        f"workers={workers})\n"
        "    summary['wall_s'], summary['cpu_s'] = time.perf_counter() - t0, cpu() - c0\n"
        "    print(json.dumps(summary))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=out.parent, check=True,
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(code_root)})
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_synth(sample: int, full: int | None, workers: int = 2) -> None:
    """Generator throughput beside the baseline renderer on ``sample`` patients (same run,
    same seed, ``workers`` processes each), then the generator alone on ``full`` patients."""
    tmp = Path(tempfile.mkdtemp(prefix="pg-bench-synth-"))
    try:
        baseline = export_tree(SYNTH_BASELINE, tmp / "baseline", ("patientgraph",))
        old = _time_generate(baseline, tmp / "old", sample, workers)
        new = _time_generate(REPO, tmp / "new", sample, workers)
        rows = new["lesion_rows"]
        assert rows == old["lesion_rows"]
        shared = f"{workers} worker processes on a shared {os.cpu_count()}-core machine"
        record("synth", "generate lesions/s", rows / new["wall_s"], "lesions/s",
               baseline_value=rows / old["wall_s"], n=rows,
               note=f"{sample} patients, {shared}; baseline: the renderer of "
                    f"{SYNTH_BASELINE} in the same run ({old['wall_s']:.1f} s against "
                    f"{new['wall_s']:.1f} s; CPU {old['cpu_s']:.1f} s against "
                    f"{new['cpu_s']:.1f} s)")
        if full:
            big = _time_generate(REPO, tmp / "full", full, workers)
            rate = big["lesion_rows"] / big["wall_s"]
            record("synth", f"synth {full:,} patients seconds", big["wall_s"], "s",
                   n=big["lesion_rows"], higher_is_better=False,
                   note=f"{rate:.0f} lesions/s, {big['slices']:,} slices, CPU "
                        f"{big['cpu_s']:.0f} s; {shared}; "
                        f"target < 120 s; the baseline renderer was timed on {sample} "
                        "patients only (the generate lesions/s row of the same run)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(quick: bool = False) -> None:
    bench_synth(60 if quick else 300, None if quick else 4427)
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
