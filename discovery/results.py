"""Reading the discover stage's results back from a workspace (notebooks, explorer, API)."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from patientgraph.errors import InputError
from patientgraph.workspace import Workspace

OUT_DIR = "discovery"


@dataclass(frozen=True)
class DiscoveryResults:
    """The tables of ``W/discovery/`` (see docs/design.md) and the stage's metrics."""

    clusters: pd.DataFrame
    cluster_summary: pd.DataFrame
    tracks: pd.DataFrame
    patient_growth: pd.DataFrame
    candidates: pd.DataFrame
    biomarkers: pd.DataFrame
    risk: pd.DataFrame
    risk_explain: pd.DataFrame
    metrics: dict[str, Any]


def load_results(workspace: str | Path | Workspace) -> DiscoveryResults:
    """The discover stage's results; a clear error when the stage has not run."""
    ws = Workspace.of(workspace)
    folder = ws.path(OUT_DIR)
    names = [f.name for f in fields(DiscoveryResults) if f.name != "metrics"]
    missing = [n for n in names if not (folder / f"{n}.parquet").exists()]
    if missing or not (folder / "metrics.json").exists():
        raise InputError(folder, "the workspace holds no complete discover results "
                         f"(missing {', '.join(missing) or 'metrics.json'})",
                         f"run the stage: patientgraph run --workspace {ws.root} "
                         "--stages discover")
    tables = {n: ws.read_parquet(folder / f"{n}.parquet", writer="discover") for n in names}
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(folder / "metrics.json", "the workspace file is damaged (not JSON: "
                         f"{type(exc).__name__})", ws.rerun_fix("discover")) from None
    return DiscoveryResults(**tables, metrics=metrics)
