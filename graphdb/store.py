"""``GraphStore``: the patient graph behind one interface, on LadybugDB or Neo4j.

:func:`graphdb.open_store` picks the backend from its target: a ``neo4j://`` or ``bolt://`` URI
(credentials from ``NEO4J_USER`` / ``NEO4J_PASSWORD``, database from ``NEO4J_DATABASE``)
opens :class:`graphdb.neo4j_store.Neo4jStore`; anything else is a folder for the embedded
:class:`graphdb.embedded.EmbeddedStore`. Both hold the schema of :mod:`graphdb.schema`,
write idempotently (MERGE, in batches) and answer the same reads the same way.

    with open_store(workspace / "graph", read_only=True) as store:
        store.similar_patients("000042", k=5, where={"sex": "F"})
        store.cohort({"coarse_type": 4, "age": {"min": 60}})
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from graphdb import cypher, frames
from graphdb.errors import GraphQueryError, WriteRefusedError
from graphdb.filters import compile_filters
from graphdb.guard import check_read_query
from graphdb.schema import (
    BIOMARKER,
    CLUSTER,
    DESCRIBES,
    EDGES,
    FORECAST_PROPERTIES,
    HAS_LESION,
    HAS_STUDY,
    IN_CLUSTER,
    LESION,
    LESION_SIMILAR,
    NODES,
    PATIENT,
    PATIENT_SIMILAR,
    SAME_LESION,
    STUDY,
    EdgeType,
    NodeType,
    edge_columns,
    record_properties,
)

if TYPE_CHECKING:
    from torch_geometric.data import HeteroData

#: ``progress(done, total)``: rows written so far of this call, after each committed batch.
Progress = Callable[[int, int], None]


class _Counter:
    """Turns a backend's ``advance(rows)`` calls into the caller's ``progress(done, total)``."""

    def __init__(self, total: int, progress: Progress | None):
        self.done, self.total, self.progress = 0, total, progress

    def __call__(self, rows: int) -> None:
        self.done += rows
        if self.progress is not None:
            self.progress(self.done, self.total)


class GraphStore(abc.ABC):
    """The patient graph (schema: :mod:`graphdb.schema`); open it with :func:`open_store`.

    Writes are idempotent: nodes are merged on their key and edges on their end nodes,
    so rerunning a load gives the same graph. Result writers (clusters, tracks, biomarkers)
    replace the previous results of their kind.
    """

    #: how batched writes read their rows (see :mod:`graphdb.cypher`)
    dialect: str

    def __init__(self, target: str, read_only: bool):
        self.target = target
        self.read_only = read_only
        self._patient_types: dict[str, str] | None = None

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"{type(self).__name__}({self.target!r}, {mode})"

    def __enter__(self) -> GraphStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes ---------------------------------------------------------------------------

    def write_cohort(self, patients: pd.DataFrame, studies: pd.DataFrame,
                     lesions: pd.DataFrame, records: pd.DataFrame | None = None, *,
                     progress: Progress | None = None) -> dict[str, int]:
        """Write patients (with their record fields), studies, lesions and their edges."""
        self._check_writable()
        extra = record_properties(records) if records is not None else {}
        self._prepare(extra)
        self._patient_types = None
        work = [
            (PATIENT, frames.patient_nodes(patients, records)),
            (STUDY, frames.study_nodes(studies)),
            (LESION, frames.lesion_nodes(lesions)),
            (HAS_STUDY, frames.has_study(studies)),
            (HAS_LESION, frames.has_lesion(lesions)),
        ]
        counter = _Counter(sum(len(f) for _, f in work), progress)
        counts = {}
        for kind, frame in work:
            if isinstance(kind, NodeType):
                counts[kind.label] = self._nodes(kind, frame, counter,
                                                 extra if kind is PATIENT else None)
            else:
                counts[kind.name] = self._edges(kind, frame, counter)
        return counts

    def write_graph(self, patients: pd.DataFrame, studies: pd.DataFrame,
                    lesions: pd.DataFrame, records: pd.DataFrame | None = None,
                    knn: Mapping[str, pd.DataFrame] | None = None, *,
                    progress: Progress | None = None) -> dict[str, int]:
        """The cohort and its kNN tables (``{"lesion": ..., "patient": ...}``) in one call.

        Returns the counts of :meth:`write_cohort` plus ``lesion_edges`` / ``patient_edges``
        for the kNN tables given. One call, so that a backend can load a whole new graph at
        once (Neo4j: :mod:`graphdb.bulk`); the graph is the same either way.
        """
        counts = self.write_cohort(patients, studies, lesions, records, progress=progress)
        for kind, table in (knn or {}).items():
            counts[f"{kind}_edges"] = self.write_similarity(kind, table, progress=progress)
        return counts

    def write_similarity(self, kind: str, knn: pd.DataFrame, *,
                         progress: Progress | None = None) -> int:
        """Write SIMILAR_TO edges between lesions (``kind="lesion"``) or patients.

        ``knn`` has columns src, dst (ids), score (cosine similarity) and rank (1..k), as in
        ``W/index/lesion_knn.parquet``. Returns the number of edges written.
        """
        edge = {"lesion": LESION_SIMILAR, "patient": PATIENT_SIMILAR}.get(kind)
        if edge is None:
            raise ValueError(f"kind must be 'lesion' or 'patient', got {kind!r}")
        self._check_writable()
        edges = frames.similarity_edges(knn, f"index/{kind}_knn.parquet")
        return self._edges(edge, edges, _Counter(len(edges), progress))

    def write_clusters(self, clusters: pd.DataFrame) -> dict[str, int]:
        """Replace the clustering: Cluster nodes, IN_CLUSTER edges and ``Lesion.cluster``.

        ``clusters`` is ``W/discovery/clusters.parquet`` (lesion_id, cluster, probability).
        """
        self._check_writable()
        parts = frames.cluster_frames(clusters)
        self._execute(cypher.delete_nodes(CLUSTER, self.dialect))
        self._execute(cypher.clear_property(LESION, "cluster", self.dialect))
        total = sum(len(f) for f in parts.values())
        counter = _Counter(total, None)
        return {
            "Cluster": self._nodes(CLUSTER, parts["clusters"], counter),
            IN_CLUSTER.name: self._edges(IN_CLUSTER, parts["members"], counter),
            "Lesion.cluster": self._nodes(LESION, parts["lesions"], counter, create=False),
        }

    def write_tracks(self, tracks: pd.DataFrame) -> int:
        """Replace the SAME_LESION edges with those of ``W/discovery/tracks.parquet``."""
        self._check_writable()
        edges = frames.same_lesion_edges(tracks)
        self._execute(cypher.delete_edges(SAME_LESION, self.dialect))
        return self._edges(SAME_LESION, edges, _Counter(len(edges), None))

    def write_biomarkers(self, biomarkers: pd.DataFrame) -> dict[str, int]:
        """Replace the Biomarker nodes with ``W/discovery/biomarkers.parquet``.

        Cluster candidates get a DESCRIBES edge to their Cluster (write clusters first).
        """
        self._check_writable()
        parts = frames.biomarker_frames(biomarkers)
        self._execute(cypher.delete_nodes(BIOMARKER, self.dialect))
        counter = _Counter(len(parts["biomarkers"]) + len(parts["describes"]), None)
        return {
            "Biomarker": self._nodes(BIOMARKER, parts["biomarkers"], counter),
            DESCRIBES.name: self._edges(DESCRIBES, parts["describes"], counter),
        }

    def write_risk(self, risk: pd.DataFrame) -> int:
        """Set ``risk`` (and ``risk_cox``) on patients from ``W/discovery/risk.parquet``."""
        self._check_writable()
        updates = frames.risk_updates(risk)
        return self._nodes(PATIENT, updates, _Counter(len(updates), None), create=False)

    def write_forecasts(self, forecasts: pd.DataFrame) -> int:
        """Replace the growth forecasts (``forecast_*`` on each track's last Lesion) with
        ``W/discovery/forecasts.parquet``; returns the lesions updated."""
        self._check_writable()
        for prop in FORECAST_PROPERTIES:
            self._execute(cypher.clear_property(LESION, prop, self.dialect))
        updates = frames.forecast_updates(forecasts)
        return self._nodes(LESION, updates, _Counter(len(updates), None), create=False)

    def clear(self) -> None:
        """Delete every node and edge of the schema's labels; other labels are left alone."""
        self._check_writable()
        for node in NODES.values():
            self._execute(cypher.delete_nodes(node, self.dialect))
        self._patient_types = None

    # -- reads ----------------------------------------------------------------------------

    def query(self, text: str, params: Mapping[str, Any] | None = None, *,
              max_rows: int | None = None) -> pd.DataFrame:
        """Run one read-only Cypher query with parameters; anything else is refused.

        The text must pass :func:`graphdb.guard.check_read_query` (one statement of
        reading clauses, allow-listed procedures and functions) before it reaches the
        engine, which then runs it read-only as well. ``max_rows`` makes the engine stop
        after that many rows. A store opened with ``query_timeout_s`` stops any read that
        runs longer.

        Raises :class:`~graphdb.errors.QueryRefusedError` for a query outside the allow-list,
        :class:`~graphdb.errors.WriteRefusedError` for a write the engine refuses and
        :class:`~graphdb.errors.GraphQueryError` for a query the database rejects or stops.
        """
        checked = check_read_query(text, max_rows=max_rows, target=self.target)
        return self._query(checked.text, dict(params or {}))

    @abc.abstractmethod
    def _query(self, text: str, params: dict[str, Any]) -> pd.DataFrame:
        """Run a query that passed the guard, read-only, under the store's time limit."""

    def similar_patients(self, patient_id: str, k: int = 10,
                         where: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """The stored nearest neighbours of a patient, best first: patient_id, score, rank.

        ``where`` filters the neighbours like :meth:`cohort` does; only the neighbours
        stored by the index stage (its k) are candidates, so a filter can leave fewer.
        """
        if int(k) < 1:
            raise GraphQueryError(None, f"k must be at least 1, got {k}", "ask for k >= 1")
        cond = compile_filters(where, self.patient_types(), patient_var="q")
        text = cypher.similar_patients(cond.patient, cond.lesion)
        out = self._read(text, {**cond.params, "id": str(patient_id), "k": int(k)})
        if out.empty:
            self._require_node(PATIENT, patient_id)
        out = out.astype({"patient_id": str, "score": float, "rank": "int64"})
        return out.reset_index(drop=True)

    def cohort(self, filters: Mapping[str, Any] | None = None) -> list[str]:
        """The ids of the patients that pass ``filters`` (see :mod:`graphdb.filters`), sorted."""
        cond = compile_filters(filters, self.patient_types())
        out = self._read(cypher.cohort(cond.patient, cond.lesion), cond.params)
        return sorted(str(v) for v in out["patient_ids"].iloc[0]) if len(out) else []

    def neighborhood(self, node_id: str, hops: int = 1, label: str = "Patient") -> pd.DataFrame:
        """Every node within ``hops`` (1-3) edges of a node: label, id, hops (fewest edges)."""
        if label not in NODES:
            raise GraphQueryError(None, f"unknown label {label!r}",
                                  f"choose one of {', '.join(NODES)}")
        if not 1 <= int(hops) <= 3:
            raise GraphQueryError(None, f"hops must be 1, 2 or 3, got {hops}",
                                  "ask for a smaller neighbourhood")
        start = NODES[label]
        self._require_node(start, node_id)
        parts = []
        for target in NODES.values():
            found = self._read(cypher.neighborhood(start, target, int(hops)),
                               {"id": _key(start, node_id)})
            if not found.empty:
                parts.append(pd.DataFrame({"label": target.label,
                                           "id": found["id"].map(str).to_numpy(),
                                           "hops": found["hops"].astype("int64").to_numpy()}))
        if not parts:
            return pd.DataFrame({"label": [], "id": [], "hops": []}).astype({"hops": "int64"})
        return pd.concat(parts, ignore_index=True).sort_values(
            ["hops", "label", "id"], ignore_index=True)

    def stats(self) -> dict[str, dict[str, int]]:
        """Node counts per label and edge counts per edge type (``Src-REL->Dst``)."""
        nodes = {n.label: self._count(cypher.count_nodes(n)) for n in NODES.values()}
        edges = {e.name: self._count(cypher.count_edges(e)) for e in EDGES.values()}
        return {"nodes": nodes, "edges": edges}

    def to_pyg(self) -> HeteroData:
        """The graph as a validated ``torch_geometric`` HeteroData (see :mod:`graphdb.pyg`)."""
        from graphdb.pyg import hetero_data

        types = self.patient_types()
        nodes = {
            "Patient": self._read(cypher.read_nodes(PATIENT, list(types)), {}),
            "Study": self._read(cypher.read_nodes(STUDY, list(STUDY.properties)), {}),
            "Lesion": self._read(cypher.read_nodes(LESION, list(LESION.properties)), {}),
        }
        edges = {e.name: self._read(cypher.read_edges(e), {})
                 for e in (HAS_STUDY, HAS_LESION, LESION_SIMILAR, PATIENT_SIMILAR)}
        return hetero_data(nodes, edges, types)

    def patient_types(self) -> dict[str, str]:
        """Patient property names held by the graph (schema and record fields) -> type."""
        if self._patient_types is None:
            self._patient_types = {**PATIENT.properties, **self._patient_property_types()}
        return dict(self._patient_types)

    @abc.abstractmethod
    def close(self) -> None:
        """Release the database (idempotent)."""

    # -- helpers shared by the backends --------------------------------------------------

    def _check_writable(self) -> None:
        if self.read_only:
            raise WriteRefusedError(self.target, "this graph store was opened read-only",
                                    "open it with read_only=False to write")

    def _nodes(self, node: NodeType, frame: pd.DataFrame, counter: _Counter,
               types: Mapping[str, str] | None = None, *, create: bool = True) -> int:
        frame = _typed(frame, {**node.properties, **(types or {})})
        keys = frame[node.key]
        if keys.isna().any() or keys.duplicated().any():
            bad = keys[keys.isna() | keys.duplicated()].iloc[0]
            raise GraphQueryError(self.target, f"{node.label} key {node.key} is missing or "
                                  f"repeated (first: {bad!r})", "give every node its own key")
        if frame.empty:
            return 0
        written = self._write_nodes(node, frame, create=create, advance=counter)
        if written != len(frame):
            raise GraphQueryError(self.target, f"{len(frame) - written} of {len(frame)} "
                                  f"{node.label} ids to update are not in the graph",
                                  "load the cohort before the results that refer to it")
        return written

    def _edges(self, edge: EdgeType, frame: pd.DataFrame, counter: _Counter) -> int:
        types = edge_columns(edge)
        frame = _typed(frame[list(types)], types)
        if frame.empty:
            return 0
        written = self._write_edges(edge, frame, advance=counter)
        if written != len(frame):
            raise GraphQueryError(self.target, f"{len(frame) - written} of {len(frame)} "
                                  f"{edge.name} edges point at nodes the graph does not have",
                                  "load the nodes they join first (write_cohort), or drop "
                                  "those edges")
        return written

    def _count(self, text: str, params: Mapping[str, Any] | None = None) -> int:
        out = self._read(text, params or {})
        return int(out.iloc[0, 0]) if len(out) else 0

    def _require_node(self, node: NodeType, node_id: Any) -> None:
        if self._count(cypher.exists(node), {"id": _key(node, node_id)}) == 0:
            raise GraphQueryError(self.target, f"{node.label} {node_id!r} is not in the graph",
                                  f"check the {node.key}")

    # -- what a backend provides -------------------------------------------------------

    @abc.abstractmethod
    def _prepare(self, patient_extra: Mapping[str, str]) -> None:
        """Create the schema if needed, with ``patient_extra`` record fields on patients.

        Backends call it with ``{}`` when they open read-write, so an empty store answers.
        """

    @abc.abstractmethod
    def _write_nodes(self, node: NodeType, frame: pd.DataFrame, *, create: bool,
                     advance: Callable[[int], None]) -> int:
        """Merge (or, ``create=False``, update) nodes; returns how many were written."""

    @abc.abstractmethod
    def _write_edges(self, edge: EdgeType, frame: pd.DataFrame, *,
                     advance: Callable[[int], None]) -> int:
        """Merge edges (frame: src, dst, properties); returns how many were written."""

    @abc.abstractmethod
    def _execute(self, text: str, params: Mapping[str, Any] | None = None) -> None:
        """Run one of this package's own schema or delete statements (auto-commit)."""

    @abc.abstractmethod
    def _read(self, text: str, params: Mapping[str, Any]) -> pd.DataFrame:
        """Run one of this package's own read statements."""

    @abc.abstractmethod
    def _patient_property_types(self) -> dict[str, str]:
        """Patient property names in the graph -> type (STRING, DOUBLE, INT64, BOOLEAN)."""


def _key(node: NodeType, node_id: Any) -> Any:
    return int(node_id) if node.properties[node.key] == "INT64" else str(node_id)


def _typed(frame: pd.DataFrame, types: Mapping[str, str]) -> pd.DataFrame:
    """``frame`` with each known column cast to its graph type (nullable; strings as str)."""
    out = {}
    for name in frame.columns:
        col = frame[name]
        kind = types.get(name, "STRING")
        if kind == "DOUBLE":
            out[name] = pd.to_numeric(col, errors="raise").astype("float64")
        elif kind == "INT64":
            out[name] = col.astype("Int64")
        elif kind == "BOOLEAN":
            out[name] = col.astype("boolean")
        else:
            out[name] = _strings(col)
    out = pd.DataFrame(out, index=frame.index)
    if isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 \
            and frame.index.step == 1:
        return out  # already numbered 0..n-1: no copy for a new index
    return out.reset_index(drop=True)


def _strings(col: pd.Series) -> pd.Series:
    """Text values as Python str, missing as None (the map runs only when needed)."""
    values = col if col.dtype == object else col.astype(object)
    missing = col.isna().to_numpy()
    if missing.any():
        values = values.where(~missing, None)
    if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
        values = values.map(lambda v: v if v is None or isinstance(v, str) else str(v))
    return values
