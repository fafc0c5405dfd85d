"""Pipeline stage ``discover``: clusters, lesion tracks, growth forecasts, the biomarker scan
and GNN risk.

Reads the cohort, ``W/embeddings/*.parquet`` and ``W/index/*_knn.parquet``; writes
``W/discovery/`` in one atomic swap:

* ``clusters.parquet``: lesion_id, cluster (-1 noise), probability, x, y (the 2-D map);
* ``cluster_summary.parquet``: each cluster's size, type/location/size make-up, exemplars;
* ``tracks.parquet``: track_id, lesion_id, patient_id, study_id, day, long_mm;
* ``patient_growth.parquet``: patient_id, growth_rate (log long diameter per day), n_tracks;
* ``forecasts.parquet``: track_id, lesion_id (the track's last), patient_id, last_day,
  target_day, long_mm, long_mm_lo, long_mm_hi, method: each track at the patient's next
  study day where known and at each horizon (90 and 180 days after its last study);
* ``patient_forecasts.parquet``: patient_id, target_day, sum_long_mm, sum_lo, sum_hi,
  category (RECIST-style: progression, stable, partial_response);
* ``candidates.parquet``: the patients x candidates table the scan tested (with outcomes);
* ``biomarkers.parquet``: candidate, family, hr, ci_low, ci_high, p, q, n, events, ...;
* ``risk.parquet``: patient_id, risk (GNN), risk_cox (baseline on the same inputs), split;
* ``risk_explain.parquet``: patient_id, kind (feature/neighbour), name, contribution;
* ``metrics.json``: C-indices with bootstrap intervals, rows left out and why;

``W/models/clusters.pkl`` (assigns new lesions to the clusters without refitting) and
``W/models/forecaster.pkl`` (the fitted growth forecaster: ``patientgraph forecast``).
When the graph stage has run, the results are written back into that graph (Cluster nodes,
IN_CLUSTER, SAME_LESION, Biomarker nodes, risk on Patient, forecast_* on each track's last
Lesion). A rerun is skipped when the
inputs, the config and the graph load are unchanged.

Crash consistency: the stage's manifest record is removed before its files are replaced,
and the graph stage's record is marked pending while the results go into its graph, then
re-hashed (the graph's files change); a process killed before the end leaves the discover
stage, and while writing, the graph too, to be redone by the next run.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from discovery.results import forecaster_code
from graphdb.schema import FORECAST_HORIZONS
from patientgraph.atomic import atomic_dir, atomic_path, make_private, write_json
from patientgraph.errors import InputError
from patientgraph.options import merge_options, signature_defaults
from patientgraph.workspace import Workspace, file_sha256, holding_lock

STAGE = "discover"
OUT_DIR = "discovery"
MODEL = "models/clusters.pkl"
FORECASTER = "models/forecaster.pkl"
COHORT = ("patients", "studies", "lesions", "records", "outcomes")
EMBEDDINGS = {"lesion_embeddings": "embeddings/lesions.parquet",
              "patient_embeddings": "embeddings/patients.parquet"}
KNN = {"lesion_knn": "index/lesion_knn.parquet", "patient_knn": "index/patient_knn.parquet"}
PARTS = ("clusters", "tracking", "forecast", "scan", "gnn")
DEFAULTS: dict[str, Any] = {part: {} for part in PARTS} | {"graph": None, "write_graph": True}


Echo = Callable[[str], None]


@holding_lock
def run(workspace: str | Path | Workspace, config: Mapping[str, Any] | None = None,
        force: bool = False, echo: Echo | None = None) -> dict[str, Any]:
    """Run the four analyses, write ``W/discovery/`` and the graph; returns the summary.

    ``config`` holds one dict of options per part (``clusters``, ``tracking``, ``scan``,
    ``gnn``; see each module), ``graph`` (a folder or Neo4j URI to write the results into;
    default: where the graph stage loaded the cohort) and ``write_graph`` (True).
    """
    ws = Workspace.of(workspace)
    cfg = _config(config)
    inputs = _input_hashes(ws)
    target = _graph_target(ws, cfg)
    fp_config = {k: v for k, v in cfg.items() if k != "graph"} | {"graph": _shown(target, ws)}
    fp_config["forecaster_code"] = forecaster_code()  # a pickled model runs only its own code
    stage = ws.start_stage(STAGE, fp_config, inputs)
    if (last := stage.skip(force)) is not None:
        return last

    say = echo or (lambda _msg: None)
    data = _read_inputs(ws)
    results, seconds = analyse(data, cfg, say)
    summary = _summary(results, seconds)

    ws.begin_stage(STAGE)
    with atomic_dir(ws.path(OUT_DIR)) as tmp:
        for name, frame in results["frames"].items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
        write_json(results["metrics"], tmp / "metrics.json")
    with atomic_path(ws.path(MODEL)) as tmp:
        tmp.write_bytes(pickle.dumps(results["model"]))
    with atomic_path(ws.path(FORECASTER)) as tmp:
        tmp.write_bytes(pickle.dumps({"code": forecaster_code(),
                                      "model": results["forecaster"]}))
    if target is not None:
        t0 = time.perf_counter()
        summary["graph"] = _write_back_recorded(ws, target, fp_config["graph"],
                                                results["frames"])
        seconds["graph_write"] = round(time.perf_counter() - t0, 3)
    summary["seconds"] = seconds
    return stage.finish([OUT_DIR, MODEL, FORECASTER], summary)


def analyse(data: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any],
            say: Echo = lambda _msg: None) -> tuple[dict[str, Any], dict[str, float]]:
    """The analyses on in-memory tables (the stage without the workspace around it)."""
    from discovery.candidates import build_candidates
    from discovery.clusters import cluster_lesions
    from discovery.gnn import fit_risk
    from discovery.survival import BiomarkerScan
    from discovery.tracking import track_lesions

    seconds: dict[str, float] = {}

    def timed(part: str, fn, *args):
        say(f"discover: {part}")
        t0 = time.perf_counter()
        out = fn(*args)
        seconds[part] = round(time.perf_counter() - t0, 3)
        return out

    clusters, cluster_summary, model = timed(
        "clusters", cluster_lesions, data["lesion_embeddings"], data["lesions"],
        data.get("lesion_knn"), dict(cfg["clusters"]))
    tracks, _pairs, growth = timed(
        "tracking", track_lesions, data["lesions"], data["studies"],
        data["lesion_embeddings"], dict(cfg["tracking"]))
    forecaster, forecasts, patient_forecasts, forecast_metrics = timed(
        "forecast", fit_forecasts, tracks, data, dict(cfg["forecast"]))
    scan_cfg = dict(cfg["scan"])
    n_components = scan_cfg.pop("n_components", 5)
    table, families = build_candidates(
        data["patients"], data["records"], data["outcomes"], data["lesions"], data["studies"],
        clusters=clusters, patient_growth=growth,
        patient_embeddings=data["patient_embeddings"], n_components=n_components)
    scan = timed("scan", lambda: BiomarkerScan(**scan_cfg).fit(table, families=families))
    risk, gnn_metrics, explain = timed(
        "gnn", fit_risk, data["patients"], data["records"], data["outcomes"],
        data["patient_embeddings"], data.get("patient_knn"), dict(cfg["gnn"]))
    frames = {
        "clusters": clusters, "cluster_summary": cluster_summary, "tracks": tracks,
        "patient_growth": growth, "forecasts": forecasts,
        "patient_forecasts": patient_forecasts, "candidates": table, "biomarkers": scan.results_,
        "risk": risk, "risk_explain": explain,
    }
    metrics = {"gnn": gnn_metrics, "scan_excluded": getattr(scan, "excluded_", {}),
               "forecast": forecast_metrics}
    return {"frames": frames, "metrics": metrics, "model": model,
            "forecaster": forecaster}, seconds


def fit_forecasts(tracks: pd.DataFrame, data: Mapping[str, pd.DataFrame],
                  options: Mapping[str, Any]):
    """Fit the growth forecaster on every patient with follow-up and forecast each track.

    Returns the fitted model (None when fewer than ``MIN_FOLLOWED`` patients have more than
    one study day: there is nothing to learn growth from), the forecasts, the patient sums
    and categories, and a metrics dict (the conformal quantiles, or why nothing was fitted).
    """
    from discovery.forecast import (
        FORECAST_COLUMNS,
        MIN_FOLLOWED,
        SUMMARY_COLUMNS,
        GrowthForecaster,
        forecast_targets,
        patient_summary,
    )

    defaults = {"horizons": list(FORECAST_HORIZONS), **signature_defaults(GrowthForecaster)}
    opts = merge_options(defaults, options,
                         unknown="unknown forecast option {key!r}", fix="use one of")
    horizons = _horizons(opts.pop("horizons"))
    followed = int((tracks.groupby("patient_id")["day"].nunique() >= 2).sum())
    if followed < MIN_FOLLOWED:
        empty = (pd.DataFrame(columns=FORECAST_COLUMNS), pd.DataFrame(columns=SUMMARY_COLUMNS))
        return None, *empty, {"fitted": False, "why": f"{followed} patients have follow-up; "
                              f"forecasting needs at least {MIN_FOLLOWED}"}
    model = GrowthForecaster(**opts).fit(
        tracks, data["lesions"], data["lesion_embeddings"], data["patient_embeddings"],
        data["records"])
    forecasts = model.predict(forecast_targets(model.history_, horizons, data["studies"]))
    forecasts = forecasts[FORECAST_COLUMNS].reset_index(drop=True)
    summary = patient_summary(forecasts, tracks=model.history_)
    return model, forecasts, summary, {"fitted": True, "method": model.label,
                                       "patients_followed": followed,
                                       "horizons": list(horizons)}


def _horizons(value: Any) -> tuple[float, ...]:
    try:
        horizons = tuple(float(h) for h in value)
    except (TypeError, ValueError):
        horizons = ()
    if not horizons or not all(0 < h <= 3650 for h in horizons):
        raise InputError(None, f"forecast horizons must be a list of days from 1 to 3650, got "
                         f"{value!r}", 'write e.g. {"forecast": {"horizons": [90, 180]}}')
    return horizons


def write_back(target: str, frames: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """Write clusters, tracks, forecasts, biomarkers and risk into the graph at ``target``."""
    from graphdb import open_store

    with open_store(target) as store:
        counts: dict[str, Any] = dict(store.write_clusters(frames["clusters"]))
        counts["SAME_LESION"] = store.write_tracks(frames["tracks"])
        counts["Lesion.forecast"] = store.write_forecasts(frames["forecasts"])
        counts.update(store.write_biomarkers(frames["biomarkers"]))
        counts["Patient.risk"] = store.write_risk(frames["risk"])
    return counts


def _write_back_recorded(ws: Workspace, target: str, shown: str | None,
                         frames: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """:func:`write_back`, keeping the graph stage's record true: when ``target`` is the
    graph that stage loaded, its record is pending while the graph changes and re-hashed
    after, so that a kill half way makes the next run rebuild the graph (and this stage)."""
    from graphdb.target import is_server_uri

    loaded = (ws.stage_record("graph") or {}).get("config", {}).get("graph")
    ours = loaded is not None and loaded == shown
    if ours:
        ws.mark_pending("graph", "the discover stage is writing its results into the graph")
    counts = write_back(target, frames)
    if not is_server_uri(target):
        make_private(target)  # files the engine created while writing
    if ours:
        ws.refresh_outputs("graph")
    return counts


def _summary(results: Mapping[str, Any], seconds: Mapping[str, float]) -> dict[str, Any]:
    frames = results["frames"]
    clusters, biomarkers = frames["clusters"], frames["biomarkers"]
    q = pd.to_numeric(biomarkers["q"], errors="coerce")
    gnn = results["metrics"]["gnn"]
    return {
        "lesions": int(len(clusters)),
        "clusters": int(clusters.loc[clusters["cluster"] >= 0, "cluster"].nunique()),
        "noise_fraction": round(float((clusters["cluster"] < 0).mean()), 4),
        "tracks": int(frames["tracks"]["track_id"].nunique()),
        "forecast_tracks": int(frames["forecasts"]["track_id"].nunique()),
        **({} if results["metrics"]["forecast"]["fitted"]
           else {"forecast_why": results["metrics"]["forecast"]["why"]}),
        "candidates": int(biomarkers["candidate"].nunique()),
        "findings_q05": int((q < 0.05).sum()),
        "c_index_gnn": gnn.get("c_index_gnn"),
        "c_index_cox": gnn.get("c_index_cox"),
        "seconds": dict(seconds),
    }


def _config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = merge_options(DEFAULTS, config, unknown="the discover config has an unknown option "
                        "{key!r}", fix="use")
    for key, value in (config or {}).items():
        if key in PARTS and not isinstance(value, Mapping):
            raise InputError(None, f"the discover option {key!r} must be an object of options, "
                             f"got {value!r}", f'write it as {{"{key}": {{...}}}}')
        cfg[key] = dict(value) if key in PARTS else value
    return cfg


def _required(ws: Workspace) -> dict[str, Path]:
    paths = {name: ws.table_path(name) for name in COHORT}
    paths |= {name: ws.path(rel) for name, rel in EMBEDDINGS.items()}
    for name, path in paths.items():
        if not path.exists():
            stage = "ingest" if name in COHORT else "embed"
            fix = ("ingest outcomes with `patientgraph ingest deeplesion ... --outcomes "
                   "outcomes.csv`" if name == "outcomes" else
                   f"run the {stage} stage first: patientgraph run --workspace {ws.root} "
                   f"--stages {stage if stage != 'ingest' else 'embed'}")
            raise InputError(path, f"the discover stage needs {path.name}, which is missing",
                             fix)
    return paths | {name: ws.path(rel) for name, rel in KNN.items() if ws.path(rel).exists()}


def _input_hashes(ws: Workspace) -> dict[str, str]:
    inputs = {name: file_sha256(path) for name, path in _required(ws).items()}
    graph = ws.stage_record("graph")
    if graph is not None:  # a rebuilt graph has lost the results written into it
        inputs["graph_load"] = graph.get("fingerprint", "") + graph.get("finished", "")
    return inputs


def _read_inputs(ws: Workspace) -> dict[str, pd.DataFrame]:
    return {name: ws.table(name) if name in COHORT else
            ws.read_parquet(path, writer="embed" if name in EMBEDDINGS else "index")
            for name, path in _required(ws).items()}


def _graph_target(ws: Workspace, cfg: Mapping[str, Any]) -> str | None:
    """Where to write the results: the config's graph, else where the graph stage loaded."""
    from graphdb.target import is_server_uri

    if not cfg["write_graph"]:
        return None
    if cfg["graph"]:
        return str(cfg["graph"])
    record = ws.stage_record("graph")
    if record is None:
        return None
    loaded = record["config"]["graph"]
    return loaded if is_server_uri(loaded) else str(ws.root / loaded)


def _shown(target: str | None, ws: Workspace) -> str | None:
    """The target as the manifest shows it: no credentials; a folder relative to W."""
    from graphdb.target import is_server_uri, redact

    if target is None or is_server_uri(target):
        return redact(target) if target else None
    return ws.relative(target)
