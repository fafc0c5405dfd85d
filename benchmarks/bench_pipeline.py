"""The whole pipeline at DeepLesion scale, ingest to discover, as a user runs it.

The cached 4,427-patient synthetic cohort (:func:`benchmarks.bench_ingest.cached_cohort`)
goes through ``patientgraph ingest deeplesion`` and ``patientgraph run --stages S`` for
embed, index, graph and discover, each a fresh process (imports included, as a user waits
for them), into a fresh workspace, with a trained encoder given by ``encoder_checkpoint``
(training is timed by the embed benchmark). Per stage: wall seconds and the peak RSS of
its process (``os.wait4``). Beside it, in the same run and on the same cohort and
checkpoint, the same commands of the code at BASELINE (exported with ``git archive``).

Targets (issue 23): under 120 s in all on 2 cores; no stage above 8 GiB.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_ingest import REPO, cached_cohort
from benchmarks.results import record

BENCH = "pipeline"
BASELINE = "378940f"
"""The last commit before the speed work of issue 23."""
PACKAGES = ("patientgraph", "embed", "graphdb", "discovery", "dashboards")
STAGES = ("embed", "index", "graph", "discover")
CHECKPOINT_TRAINING = {"train": {"max_epochs": 3, "rounds": 1}}
"""The encoder the pipeline is given: the default network, trained briefly on 300 patients
(its weights do not change how long embedding takes)."""


def export_tree(commit: str, into: Path) -> Path:
    """The project's packages as of ``commit``, exported into ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit, *PACKAGES], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _timed(args: list[str], code: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS GiB) of ``python -m patientgraph *args`` run on ``code``."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "patientgraph", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"patientgraph {args[0]} failed ({proc.returncode}): {err[-2000:]}")
    return seconds, usage.ru_maxrss / 2**20  # KiB on Linux


def run_pipeline(code: Path, cohort: Path, ws: Path, checkpoint: Path) -> dict[str, tuple]:
    """Every stage of a fresh workspace: stage -> (seconds, peak RSS GiB)."""
    out = {"ingest": _timed([
        "ingest", "deeplesion", "--info", str(cohort / "DL_info.csv"),
        "--images", str(cohort / "Images_png"), "--records", str(cohort / "records.csv"),
        "--outcomes", str(cohort / "outcomes.csv"), "--studies", str(cohort / "studies.csv"),
        "--workspace", str(ws)], code)}
    config = json.dumps({"embed": {"encoder_checkpoint": str(checkpoint)}})
    for stage in STAGES:
        out[stage] = _timed(["run", "--workspace", str(ws), "--stages", stage,
                             "--config", config], code)
    return out


def encoder_checkpoint() -> Path:
    from benchmarks.workspaces import embedded_workspace

    ws, _source, _summary = embedded_workspace(300, CHECKPOINT_TRAINING)
    return ws.path("models", "lesion_encoder.pt")


def main(quick: bool = False) -> None:
    n_patients = 300 if quick else 4427
    cohort = cached_cohort(4427)
    if quick:
        from benchmarks.workspaces import subset_cohort

        tables = subset_cohort(cohort, Path(tempfile.mkdtemp(prefix="pg-bench-pipe-")), 300)
        for name in ("Images_png", "truth.json"):
            (tables / name).symlink_to(cohort / name)
        cohort = tables
    checkpoint = encoder_checkpoint()
    tmp = Path(tempfile.mkdtemp(prefix="pg-bench-pipeline-"))
    try:
        old = run_pipeline(export_tree(BASELINE, tmp / "baseline"), cohort, tmp / "old",
                           checkpoint)
        new = run_pipeline(REPO, cohort, tmp / "new", checkpoint)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if quick:
            shutil.rmtree(cohort, ignore_errors=True)
    bench = f"{BENCH}-quick" if quick else BENCH
    total, base = sum(s for s, _ in new.values()), sum(s for s, _ in old.values())
    shares = ", ".join(f"{k} {s:.0f} s ({s / total:.0%})" for k, (s, _) in new.items())
    where = (f"{n_patients} patients, a fresh workspace, each stage a fresh `patientgraph` "
             f"process, encoder_checkpoint given; {os.cpu_count()} cores")
    record(bench, "pipeline ingest to discover seconds", total, "s", baseline_value=base,
           n=n_patients, higher_is_better=False,
           note=f"{where}; {shares}; baseline: the code of {BASELINE} in the same run; "
                "target < 120 s")
    for stage, (seconds, rss) in new.items():
        record(bench, f"pipeline {stage} seconds", seconds, "s", baseline_value=old[stage][0],
               n=n_patients, higher_is_better=False, note=f"{where}; baseline {BASELINE}")
        record(bench, f"pipeline {stage} peak RSS", rss, "GiB", baseline_value=old[stage][1],
               n=n_patients, higher_is_better=False,
               note=f"{where}; the stage's main process (crop-reading workers apart); "
                    f"baseline {BASELINE}; target < 8 GiB")


if __name__ == "__main__":
    import argparse

    from benchmarks.results import render

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 patients")
    main(quick=parser.parse_args().quick)
    render()
