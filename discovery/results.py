"""Reading the discover stage's results back from a workspace (notebooks, explorer, API),
and forecasting from the growth model it fitted (``patientgraph forecast``)."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patientgraph.errors import InputError
from patientgraph.schema import Source, resolve_id, unknown_id
from patientgraph.validate import fail_rows
from patientgraph.workspace import Workspace

OUT_DIR = "discovery"
FORECASTER = "models/forecaster.pkl"
BATCH_COLUMNS = ["patient_id", "day", "track_id", "last_lesion_id", "long_mm", "long_mm_lo",
                 "long_mm_hi"]
"""The batch forecast's columns: one row per target (patient, day) and track of the patient;
summing ``long_mm`` over a target's rows gives the forecast sum of long diameters."""


@dataclass(frozen=True)
class DiscoveryResults:
    """The tables of ``W/discovery/`` (see docs/design.md) and the stage's metrics."""

    clusters: pd.DataFrame
    cluster_summary: pd.DataFrame
    tracks: pd.DataFrame
    patient_growth: pd.DataFrame
    forecasts: pd.DataFrame
    patient_forecasts: pd.DataFrame
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


FORECAST_MODULES = ("forecast.py", "forecast_data.py", "forecast_mixed.py", "recist.py")
"""The files of ``discovery/`` that a pickled growth forecaster runs."""


def forecaster_code() -> str:
    """A hash of the forecasting code: a model pickled by other code is refitted, not run."""
    import hashlib

    h = hashlib.sha256()
    for name in FORECAST_MODULES:
        h.update(name.encode() + b"\0" + (Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:16]


def load_forecaster(workspace: str | Path | Workspace):
    """The growth forecaster the discover stage fitted (``W/models/forecaster.pkl``).

    The file is unpickled only when it is still the bytes the stage recorded in the
    manifest, so a damaged or replaced file is refused, never run.
    """
    ws = Workspace.of(workspace)
    path = ws.path(FORECASTER)
    fix = f"run the stage: patientgraph run --workspace {ws.root} --stages discover"
    if not path.exists() or ws.stage_record("discover") is None:
        raise InputError(path, "the workspace holds no growth forecaster", fix)
    if ws.changed_outputs("discover", [FORECASTER]):
        raise InputError(path, "the workspace file is not the one the discover stage wrote "
                         "(changed or damaged)", ws.rerun_fix("discover"))
    saved = pickle.loads(path.read_bytes())
    if not isinstance(saved, dict) or saved.get("code") != forecaster_code():
        raise InputError(path, "the growth forecaster was fitted by another version of "
                         "PatientGraph", ws.rerun_fix("discover"))
    model = saved["model"]
    if model is None:
        why = (ws.stage_record("discover") or {}).get("summary", {}).get("forecast_why", "")
        raise InputError(None, "the discover stage fitted no growth forecaster on this "
                         f"cohort{': ' + why if why else ''}", "forecasting learns from "
                         "patients with more than one study; ingest their follow-up studies")
    return model


def _tracked_patient(model, ws: Workspace, typed: str) -> str:
    """``typed`` as a patient id with lesion tracks (``1`` finds ``000001``)."""
    known = pd.unique(model.history_["patient_id"])
    pid = resolve_id(typed, known)
    if pid in set(known):
        return pid
    cohort = ws.table("patients")["patient_id"] if ws.table_path("patients").exists() else []
    if resolve_id(typed, cohort) in set(map(str, cohort)):
        raise InputError(None, "the patient has no measured lesions to forecast",
                         "choose a patient with lesion measurements", column="patient_id")
    raise unknown_id(typed, known, "patient_id")


def forecast_patient(workspace: str | Path | Workspace, patient_id: str, day: float):
    """Every track of one patient forecast at ``day`` (after its last study), with the
    patient's sum of long diameters and RECIST-style category: a
    :class:`discovery.forecast.PatientForecast`."""
    from discovery.forecast import forecast_on_day

    ws = Workspace.of(workspace)
    model = load_forecaster(ws)
    return forecast_on_day(model, _tracked_patient(model, ws, str(patient_id)), day)


def forecast_batch(workspace: str | Path | Workspace,
                   targets: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Forecasts for a table of (patient_id, day) targets, a CSV file or a DataFrame: one
    row per target and track of its patient, :data:`BATCH_COLUMNS`.

    Each row is checked (a number for the day, a patient with lesion tracks, a day after
    that patient's last study); the first bad row is an :class:`InputError` naming the file,
    row and column.
    """
    ws = Workspace.of(workspace)
    if isinstance(targets, pd.DataFrame):
        table, source = targets.reset_index(drop=True), Source("targets")
    else:
        path = Path(targets)
        if not path.is_file():
            raise InputError(path, "the file does not exist", "give a CSV with the columns "
                             "patient_id and day")
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise InputError(path, f"the file is not a readable CSV ({type(exc).__name__})",
                             "save it as comma-separated text with a header row "
                             "patient_id,day") from None
        source = Source(str(path))
    table.columns = [str(c).strip() for c in table.columns]
    for col in ("patient_id", "day"):
        if col not in table.columns:
            raise InputError(source.file, f"the table has no column {col!r}",
                             "give one row per forecast with the columns patient_id and day",
                             column=col)
    if table.empty:
        raise InputError(source.file, "the table has no rows", "add patient_id,day rows")
    model = load_forecaster(ws)
    hist = model.history_
    known = pd.unique(hist["patient_id"])
    typed = table["patient_id"].astype(str).str.strip()
    pids = typed.map({v: resolve_id(v, known) for v in pd.unique(typed)})
    days = pd.to_numeric(table["day"], errors="coerce")
    fail_rows(source, ~np.isfinite(days.to_numpy(float)), "day", "the day is not a number",
              "give the day as a number of days since the patient's first study")
    fail_rows(source, ~pids.isin(set(known)), "patient_id", "the patient has no lesion "
              "tracks in this workspace (an unknown id, or no measured lesions)",
              "give patients of the ingested cohort that have lesion measurements")
    last = hist.groupby("patient_id")["day"].max()
    fail_rows(source, days.to_numpy(float) <= last.reindex(pids).to_numpy(float), "day",
              "the day is not after the patient's last study",
              "forecast days after each patient's last study; earlier days are measured")
    asked = pd.DataFrame({"patient_id": pids.to_numpy(), "day": days.to_numpy(float)})
    tracks = hist.groupby("track_id")["patient_id"].first()
    pairs = asked.drop_duplicates().merge(tracks.reset_index(), on="patient_id")
    pred = model.predict(pd.DataFrame({"track_id": pairs["track_id"],
                                       "target_day": pairs["day"]}))
    pairs[["last_lesion_id", "long_mm", "long_mm_lo", "long_mm_hi"]] = pred[
        ["lesion_id", "long_mm", "long_mm_lo", "long_mm_hi"]].to_numpy()
    out = asked.merge(pairs, on=["patient_id", "day"], how="left")
    return out[BATCH_COLUMNS].astype({c: float for c in BATCH_COLUMNS[4:]})
