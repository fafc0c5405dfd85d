"""The whole pipeline at DeepLesion scale, ingest to discover, as a user runs it.

The cached 4,427-patient synthetic cohort (:func:`benchmarks.bench_ingest.cached_cohort`)
goes through ``patientgraph ingest deeplesion`` and ``patientgraph run --stages S`` for
embed, index, graph and discover, each a fresh process (imports included, as a user waits
for them), into a fresh workspace, with a trained encoder given by ``encoder_checkpoint``
(training is timed by the embed benchmark). Per stage: wall seconds and the peak RSS of
its process (VmHWM). Beside it, in the same run and on the same cohort and
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

from benchmarks.bench_ingest import cached_cohort
from benchmarks.results import peak_rss_mib, record
from benchmarks.trees import REPO, export_tree

BENCH = "pipeline"
BASELINE = "378940f"
"""The last commit before the speed work of issue 23."""
PACKAGES = ("patientgraph", "embed", "graphdb", "discovery", "dashboards")
STAGES = ("embed", "index", "graph", "discover")
CHECKPOINT_TRAINING = {"train": {"max_epochs": 3, "rounds": 1}}
"""The encoder the pipeline is given: the default network, trained briefly on 300 patients
(its weights do not change how long embedding takes)."""


def _env(code: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code)}


def _check_tree(code: Path) -> None:
    """The packages a process started as :func:`_timed` starts it come from ``code`` (run
    from the folder of ``code``: ``python -m`` puts the working folder first on the path,
    before PYTHONPATH, so the repository's own packages would shadow an exported tree)."""
    script = "import patientgraph; print(patientgraph.__file__)"
    found = subprocess.run([sys.executable, "-c", script], env=_env(code), cwd=code,
                           check=True, capture_output=True, text=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(code.resolve()):
        raise RuntimeError(f"patientgraph came from {found}, not from {code}")


def _timed(args: list[str], code: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS GiB) of ``python -m patientgraph *args`` run on ``code``.

    The peak is the process's VmHWM, read from /proc while it runs: the rusage of a child
    would start from this process's own peak (Linux keeps it across fork and exec)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "patientgraph", *args], env=_env(code),
                            cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    peak_mib = 0.0
    while proc.poll() is None:
        try:
            peak_mib = max(peak_mib, peak_rss_mib(proc.pid))  # NaN (no figure yet) is ignored
        except OSError:
            pass  # already gone
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode:
        raise RuntimeError(f"patientgraph {args[0]} failed ({proc.returncode}): {err[-2000:]}")
    return seconds, peak_mib / 1024


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


def discover_parts(ws: Path) -> str:
    """The discover stage's own seconds per part (clusters, tracking, ...), from the
    workspace's manifest."""
    stage = json.loads((ws / "manifest.json").read_text())["stages"]["discover"]
    return ", ".join(f"{k} {v:.1f} s" for k, v in stage["summary"]["seconds"].items())


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
        base = export_tree(BASELINE, tmp / "baseline", PACKAGES)
        for code in (base, REPO):
            _check_tree(code)
        old = run_pipeline(base, cohort, tmp / "old", checkpoint)
        new = run_pipeline(REPO, cohort, tmp / "new", checkpoint)
        parts = {code: discover_parts(tmp / code) for code in ("old", "new")}
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
        inside = (f"; parts {parts['new']}, baseline's {parts['old']}"
                  if stage == "discover" else "")
        record(bench, f"pipeline {stage} seconds", seconds, "s", baseline_value=old[stage][0],
               n=n_patients, higher_is_better=False,
               note=f"{where}; baseline {BASELINE}{inside}")
        record(bench, f"pipeline {stage} peak RSS", rss, "GiB", baseline_value=old[stage][1],
               n=n_patients, higher_is_better=False,
               note=f"{where}; the stage's main process (its VmHWM; crop-reading workers apart); "
                    f"baseline {BASELINE}; target < 8 GiB")


if __name__ == "__main__":
    import argparse

    from benchmarks.results import render

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 patients")
    main(quick=parser.parse_args().quick)
    render()
