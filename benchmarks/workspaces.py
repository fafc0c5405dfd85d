"""Embedded workspaces of the cached DeepLesion-scale cohort, shared by the benchmarks.

The first ``n`` patients of ``cohort-4427-<seed>`` (:func:`benchmarks.bench_ingest.
cached_cohort`; the generator is prefix-stable, so they are exactly the cohort
``generate(n_patients=n)`` would give) are ingested, embedded with a given embed config and
indexed, once, under the benchmark cache, in a folder per size, seed and config. A workspace
is reused only while its key matches: the cohort, the size, the embed config and a hash of
the ``embed/`` sources, so a change to the encoder or its training rebuilds it.
``rebuild=True`` always trains afresh (the embed benchmark times training).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.bench_ingest import CACHE, cached_cohort
from patientgraph import Workspace, ingest_deeplesion

DEEPLESION_PATIENTS = 4427
EMBED_SOURCES = Path(__file__).resolve().parent.parent / "embed"


def subset_cohort(source: Path, out: Path, n_patients: int) -> Path:
    """The CSVs of ``source`` restricted to Patient_index <= n_patients (images shared)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("DL_info.csv", "records.csv", "outcomes.csv", "studies.csv"):
        with open(source / name, newline="") as fh, open(out / name, "w", newline="") as dst:
            reader = csv.DictReader(fh)
            writer = csv.DictWriter(dst, reader.fieldnames, lineterminator="\n")
            writer.writeheader()
            writer.writerows(r for r in reader if int(r["Patient_index"]) <= n_patients)
    return out


def embed_sources_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(EMBED_SOURCES.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _config_name(embed: Mapping[str, Any]) -> str:
    """The preset's name, then a digest of any other options: each config its own folder."""
    preset = str(embed.get("preset", "default"))
    rest = {k: v for k, v in embed.items() if k != "preset"}
    if not rest:
        return preset
    return f"{preset}-{hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:8]}"


def embedded_workspace(n_patients: int, embed: Mapping[str, Any], seed: int = 0, *,
                       rebuild: bool = False) -> tuple[Workspace, Path, dict]:
    """(workspace, source cohort folder, embed-stage summary) of the first ``n_patients``.

    The workspace is ingested, embedded with ``embed`` (a stage config) and indexed.
    """
    from embed import index_stage
    from embed import stage as embed_stage

    source = CACHE / f"cohort-{DEEPLESION_PATIENTS}-{seed}"
    if not (source / "truth.json").exists() or n_patients > DEEPLESION_PATIENTS:
        source = cached_cohort(max(n_patients, DEEPLESION_PATIENTS), seed)
    key = {"cohort": source.name, "patients": n_patients, "embed": dict(embed),
           "embed_sources": embed_sources_hash(), "index": "default"}
    root = CACHE / f"ws-{n_patients}-{seed}-{_config_name(embed)}"
    done = root / "bench_key.json"
    ws = Workspace(root / "ws")
    if not rebuild and done.exists():
        stored = json.loads(done.read_text())
        if stored.get("key") == key:
            return ws, source, stored["summary"]
    shutil.rmtree(root, ignore_errors=True)
    tables = subset_cohort(source, root / "cohort", n_patients)
    t0 = time.perf_counter()
    ingest_deeplesion(tables / "DL_info.csv", source / "Images_png", ws.root,
                      records=tables / "records.csv", outcomes=tables / "outcomes.csv",
                      studies=tables / "studies.csv")
    summary = embed_stage.run(ws, config=dict(embed), force=True)
    index_stage.run(ws, force=True)
    summary = json.loads(json.dumps(summary, default=str))
    done.write_text(json.dumps({"key": key, "summary": summary,
                                "seconds_to_build": round(time.perf_counter() - t0, 1)}))
    return ws, source, summary
