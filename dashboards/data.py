"""What the explorer reads: the workspace tables (once, read-only) and the graph (read-only).

:class:`ExplorerData` loads the cohort tables, the optional discover results and the
manifest when the app starts and derives the per-patient and per-lesion tables the pages
colour and filter by. :class:`GraphAccess` opens the graph read-only on first use: one
store per process (LadybugDB allows one database object per process, read-only ones in
several processes at once). Calls from the web server's threads run side by side: the
embedded store gives each thread its own read-only connection and the Neo4j driver its
own session, so one slow query does not hold up the other users; every read is stopped by
the engine after ``PATIENTGRAPH_QUERY_TIMEOUT_S`` seconds (default 5), a limit set where
the server starts, which users of the explorer cannot change.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from graphdb.schema import FORECAST_HORIZONS
from patientgraph.errors import InputError
from patientgraph.options import env_number
from patientgraph.workspace import Workspace

DISCOVERY_DIR = "discovery"
DISCOVERY_TABLES = ("clusters", "cluster_summary", "tracks", "patient_growth", "candidates",
                    "biomarkers", "risk", "risk_explain", "forecasts", "patient_forecasts")
FORECAST_HORIZON = float(max(FORECAST_HORIZONS))
"""Days after a patient's last study of the forecast the explorer shows and splits by (the
discover stage's longest default horizon)."""
SIMILAR_TRACKS_K = 5
COARSE_TYPE_NAMES = {1: "bone", 2: "abdomen", 3: "mediastinum", 4: "liver", 5: "lung",
                     6: "kidney", 7: "soft tissue", 8: "pelvis"}
LESION_FIELDS = ("coarse_type", "cluster", "long_mm", "short_mm", "loc_x", "loc_y", "loc_z")
"""Lesion properties a cohort filter can use (the graph's Lesion properties)."""

T = TypeVar("T")
QUERY_TIMEOUT_ENV = "PATIENTGRAPH_QUERY_TIMEOUT_S"
DEFAULT_QUERY_TIMEOUT_S = 5.0


def forecast_categories() -> tuple[str, ...]:
    """The forecast categories a cohort can select (discovery.recist's, worst first).

    Read on first use: the discovery package imports pandera, which serving the first page
    does not need. Also importable as ``FORECAST_CATEGORIES``.
    """
    from discovery.recist import CATEGORIES

    return tuple(reversed(CATEGORIES))


def __getattr__(name: str) -> Any:
    if name == "FORECAST_CATEGORIES":
        return forecast_categories()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def query_timeout_s(environ: Mapping[str, str] | None = None) -> float:
    """The explorer's limit on each graph read, in seconds (from the environment)."""
    return env_number(QUERY_TIMEOUT_ENV, DEFAULT_QUERY_TIMEOUT_S, low=0.1, high=3600,
                      unit="seconds", environ=environ)


def type_name(code: Any) -> str:
    """The radiologist's coarse lesion type as a word ("unlabelled" when missing)."""
    try:
        return COARSE_TYPE_NAMES.get(int(code), f"type {int(code)}")
    except (TypeError, ValueError):
        return "unlabelled"


def discover_note(workspace: Workspace | str | Path) -> str:
    """The message shown where a page needs the discover stage's results."""
    root = workspace.root if isinstance(workspace, Workspace) else workspace
    return ("This needs the discover stage's results, which this workspace does not hold "
            f"yet. Run: patientgraph run --workspace {root} --stages discover")


class GraphAccess:
    """The workspace graph, opened read-only on first use, each read under a time limit."""

    def __init__(self, target: str | None, timeout_s: float | None = None):
        self.target = target
        self.timeout_s = query_timeout_s() if timeout_s is None else timeout_s
        self._lock = threading.Lock()
        self._store = None
        self._pid: int | None = None
        self._error: str | None = None

    @property
    def available(self) -> bool:
        return self.target is not None

    def run(self, fn: Callable[[Any], T]) -> T:
        """``fn(store)``; raises InputError when the graph cannot be opened."""
        if self.target is None:
            raise InputError(None, "this workspace has no graph",
                             "run the graph stage: patientgraph run --workspace W --stages graph")
        return fn(self._open())

    def _open(self):
        from graphdb import open_store

        with self._lock:
            if self._store is None or self._pid != os.getpid():  # a forked worker opens its own
                self._store = open_store(self.target, read_only=True,
                                         query_timeout_s=self.timeout_s)
                self._pid = os.getpid()
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


@dataclass
class ExplorerData:
    """The workspace as the explorer sees it (see the module docstring)."""

    workspace: Workspace
    patients: pd.DataFrame
    studies: pd.DataFrame
    lesions: pd.DataFrame
    records: pd.DataFrame
    outcomes: pd.DataFrame
    discovery: dict[str, pd.DataFrame]
    manifest: dict[str, Any]
    graph: GraphAccess

    @classmethod
    def load(cls, workspace: str | Path | Workspace, graph: str | None = None) -> ExplorerData:
        """Read the workspace; ``graph`` is a graph URI or folder (default: the workspace's)."""
        ws = Workspace.of(workspace)
        manifest = ws.manifest()
        if "ingest" not in manifest.get("stages", {}):
            raise InputError(ws.root, "this is not an ingested PatientGraph workspace (its "
                             "manifest records no ingest)",
                             "give the folder you ingested into (patientgraph ingest ... "
                             "--workspace W), or ingest an archive into it first")
        tables = {name: _optional_table(ws, name) for name in
                  ("patients", "studies", "lesions", "records", "outcomes")}
        for name in ("patients", "studies", "lesions"):
            if tables[name] is None:
                ws.table(name)  # raises the workspace's own clear error
        folder = ws.path(DISCOVERY_DIR)
        discovery = {name: pd.read_parquet(folder / f"{name}.parquet")
                     for name in DISCOVERY_TABLES if (folder / f"{name}.parquet").exists()}
        return cls(workspace=ws, patients=tables["patients"], studies=tables["studies"],
                   lesions=tables["lesions"],
                   records=_or_empty(tables["records"]), outcomes=_or_empty(tables["outcomes"]),
                   discovery=discovery, manifest=manifest,
                   graph=GraphAccess(graph_target(ws, graph)))

    def __post_init__(self) -> None:
        self.patient_table = patient_table(self)
        self.lesion_table = lesion_table(self)
        self.record_fields = [c for c in self.records.columns if c != "patient_id"]
        self.numeric_record_fields = [c for c in self.record_fields
                                      if pd.api.types.is_numeric_dtype(self.records[c])]
        self.patient_ids = sorted(self.patient_table.index)
        self.similar_tracks = SimilarTracks(self.workspace)

    def has(self, name: str) -> bool:
        """Whether the discover stage's table ``name`` is there (and not empty)."""
        return name in self.discovery and not self.discovery[name].empty

    def lesions_of(self, patient_id: str) -> pd.DataFrame:
        """A patient's lesions with their study day, cluster and track, by day."""
        rows = self.lesion_table[self.lesion_table["patient_id"] == patient_id]
        return rows.sort_values(["day", "lesion_id"], kind="stable")

    def clusters(self) -> list[int]:
        if "cluster" not in self.lesion_table:
            return []
        values = self.lesion_table["cluster"].dropna().astype(int)
        return sorted(int(v) for v in values.unique())


def graph_target(ws: Workspace, graph: str | None) -> str | None:
    """Where the workspace's graph is: ``graph``, else where the graph stage loaded it."""
    from graphdb.target import is_server_uri

    if graph:
        return graph
    record = ws.stage_record("graph")
    if record is None:
        return None
    loaded = str(record.get("config", {}).get("graph") or "graph")
    return loaded if is_server_uri(loaded) else str(ws.root / loaded)


def patient_table(data: ExplorerData) -> pd.DataFrame:
    """One row per patient (index patient_id): demographics, records, outcome, counts, risk."""
    out = data.patients.set_index("patient_id")
    out.index = out.index.astype(str)
    extra = [data.records, data.outcomes, data.discovery.get("patient_growth"),
             data.discovery.get("risk")]
    for frame in extra:
        if frame is not None and not frame.empty:
            frame = frame.set_index(frame["patient_id"].astype(str)).drop(columns="patient_id")
            out = out.join(frame[[c for c in frame.columns if c not in out.columns]])
    forecast = horizon_forecasts(data.discovery.get("forecasts"),
                                 data.discovery.get("patient_forecasts"))
    if not forecast.empty:
        out["forecast_category"] = forecast["category"].reindex(out.index).astype(object)
    out["n_studies"] = data.studies.groupby("patient_id").size().reindex(out.index).fillna(0)
    out["n_lesions"] = data.lesions.groupby("patient_id").size().reindex(out.index).fillna(0)
    out["n_studies"] = out["n_studies"].astype(int)
    out["n_lesions"] = out["n_lesions"].astype(int)
    return out


def lesion_table(data: ExplorerData) -> pd.DataFrame:
    """One row per lesion: its own fields, study day, type name, cluster, map, growth."""
    keep = ["lesion_id", "patient_id", "study_id", "coarse_type", "long_mm", "short_mm",
            "loc_x", "loc_y", "loc_z"]
    out = data.lesions[[c for c in keep if c in data.lesions.columns]].copy()
    out = out.merge(data.studies[["study_id", "day"]], on="study_id", how="left")
    out["type"] = out["coarse_type"].map(type_name)
    clusters = data.discovery.get("clusters")
    if clusters is not None and not clusters.empty:
        out = out.merge(clusters[["lesion_id", "cluster", "probability", "x", "y"]],
                        on="lesion_id", how="left")
    tracks = data.discovery.get("tracks")
    if tracks is not None and not tracks.empty:
        out = out.merge(tracks[["lesion_id", "track_id"]].drop_duplicates("lesion_id"),
                        on="lesion_id", how="left")
        out = out.merge(track_growth(tracks), on="track_id", how="left")
    return out.reset_index(drop=True)


def track_growth(tracks: pd.DataFrame) -> pd.DataFrame:
    """Each track's growth: slope of log long diameter per day (least squares), per 100 days.

    Tracks seen on one day only have no slope (NaN).
    """
    t = tracks[["track_id", "day", "long_mm"]].dropna()
    t = t[t["long_mm"] > 0]
    log = np.log(t["long_mm"].to_numpy(float))
    day = t["day"].to_numpy(float)
    frame = pd.DataFrame({"track_id": t["track_id"].to_numpy(), "d": day, "y": log})
    g = frame.groupby("track_id")
    mean_d, mean_y = g["d"].transform("mean"), g["y"].transform("mean")
    frame["sxy"] = (frame["d"] - mean_d) * (frame["y"] - mean_y)
    frame["sxx"] = (frame["d"] - mean_d) ** 2
    sums = frame.groupby("track_id")[["sxy", "sxx"]].sum()
    slope = np.where(sums["sxx"] > 0, sums["sxy"] / sums["sxx"].where(sums["sxx"] > 0), np.nan)
    return pd.DataFrame({"track_id": sums.index, "growth_per_100d": slope * 100.0})


def horizon_forecasts(forecasts: pd.DataFrame | None, patient_forecasts: pd.DataFrame | None,
                      horizon: float = FORECAST_HORIZON) -> pd.DataFrame:
    """Each patient's forecast ``horizon`` days after its last study (index patient_id):
    target_day, sum_long_mm, sum_lo, sum_hi, category. Empty without forecasts."""
    columns = ["target_day", "sum_long_mm", "sum_lo", "sum_hi", "category"]
    if (forecasts is None or patient_forecasts is None or forecasts.empty
            or patient_forecasts.empty):
        return pd.DataFrame(columns=columns, index=pd.Index([], name="patient_id"))
    last = forecasts.groupby(forecasts["patient_id"].astype(str))["last_day"].max()
    rows = patient_forecasts.assign(patient_id=patient_forecasts["patient_id"].astype(str))
    want = last.reindex(rows["patient_id"]).to_numpy(float) + horizon
    rows = rows[np.isclose(rows["target_day"].to_numpy(float), want)]
    return rows.drop_duplicates("patient_id").set_index("patient_id")[columns]


class SimilarTracks:
    """Other patients' lesion tracks nearest to a lesion: the growth forecaster's training
    lesions (``W/models/forecaster.pkl``), loaded on first use, once per process.

    A neighbour is a track of another training patient measured on two days or more; the
    match is the neighbour's lesion whose embedding is nearest (cosine) to the query lesion,
    and the neighbour's days are shifted so that the matched lesion falls on the query
    lesion's day (its later measurements show what followed a similar lesion).
    """

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._lock = threading.Lock()
        self._state: tuple | None = None
        self._error: InputError | None = None

    def _load(self) -> tuple:
        with self._lock:
            if self._state is None and self._error is None:
                try:
                    self._state = self._build()
                except InputError as exc:
                    self._error = exc
            if self._error is not None:
                raise self._error
            return self._state

    def _build(self) -> tuple:
        from discovery.results import load_forecaster

        model = load_forecaster(self.workspace)
        lookup = getattr(model, "lesion_vectors_", None)
        if lookup is None:
            raise InputError(None, "the growth forecaster was fitted without lesion "
                             "embeddings, so it has no similar lesions",
                             "run the embed stage, then the discover stage again")
        hist = model.history_[["track_id", "lesion_id", "patient_id", "day", "long_mm"]]
        hist = hist.astype({"track_id": str, "lesion_id": str, "patient_id": str})
        ids, vectors = lookup
        days = hist.groupby("track_id")["day"].transform("nunique")
        train = set(map(str, getattr(model, "train_patients_", hist["patient_id"])))
        pool = hist[(days >= 2) & hist["patient_id"].isin(train)]
        pos = ids.get_indexer(pool["lesion_id"])
        pool = pool[pos >= 0].reset_index(drop=True)
        matrix = np.asarray(vectors[pos[pos >= 0]], np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.where(norms > 0, norms, 1.0)
        return (ids, vectors, pool, matrix, hist, hist.groupby("track_id").indices)

    def of(self, queries: pd.DataFrame, k: int = SIMILAR_TRACKS_K) -> pd.DataFrame:
        """For each query (track_id, lesion_id, patient_id, day), the trajectories of the
        ``k`` nearest other patients' tracks: query_track, track_id, patient_id, day
        (aligned), long_mm, similarity. Raises InputError when there is no forecaster."""
        ids, vectors, pool, matrix, hist, rows_of = self._load()
        out = []
        for q in queries.itertuples(index=False):
            at = ids.get_indexer([str(q.lesion_id)])[0]
            if at < 0 or pool.empty:
                continue
            vec = np.asarray(vectors[at], np.float32)
            vec = vec / (np.linalg.norm(vec) or 1.0)
            score = matrix @ vec
            score[pool["patient_id"].to_numpy() == str(q.patient_id)] = -np.inf
            seen: set[str] = set()
            for i in np.argsort(-score, kind="stable"):
                if not np.isfinite(score[i]) or len(seen) >= k:
                    break
                track = pool.at[i, "track_id"]
                if track in seen:
                    continue
                seen.add(track)
                traj = hist.iloc[rows_of[track]]
                out.append(pd.DataFrame({
                    "query_track": str(q.track_id), "track_id": track,
                    "patient_id": traj["patient_id"].to_numpy(),
                    "day": traj["day"].to_numpy(float) - float(pool.at[i, "day"])
                    + float(q.day),
                    "long_mm": traj["long_mm"].to_numpy(float),
                    "similarity": float(score[i])}))
        columns = ["query_track", "track_id", "patient_id", "day", "long_mm", "similarity"]
        return pd.concat(out, ignore_index=True)[columns] if out else pd.DataFrame(
            columns=columns)


def _optional_table(ws: Workspace, name: str) -> pd.DataFrame | None:
    path = ws.table_path(name)
    return pd.read_parquet(path) if path.exists() else None


def _or_empty(frame: pd.DataFrame | None) -> pd.DataFrame:
    return frame if frame is not None else pd.DataFrame({"patient_id": pd.Series([], str)})


def stage_rows(manifest: Mapping[str, Any]) -> pd.DataFrame:
    """The stages run, when (UTC, to the minute) and how long, from the manifest."""
    rows = []
    for name, rec in manifest.get("stages", {}).items():
        summary = rec.get("summary", {})
        shown = ", ".join(f"{k}={_short(v)}" for k, v in summary.items()
                          if not isinstance(v, (dict, list)) and k != "skipped"
                          and not (isinstance(v, str) and len(v) > 24))
        finished = str(rec.get("finished", ""))[:16].replace("T", " ")
        rows.append({"stage": name, "finished (UTC)": finished,
                     "seconds": rec.get("seconds"), "summary": shown})
    return pd.DataFrame(rows, columns=["stage", "finished (UTC)", "seconds", "summary"])


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
