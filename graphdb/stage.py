"""Pipeline stage ``graph``: the cohort and its kNN edges into the graph store.

Reads ``W/cohort/*.parquet`` and, when the index stage has run, ``W/index/lesion_knn.parquet``
and ``W/index/patient_knn.parquet``. The embedded graph (``W/graph/`` unless the config or
``NEO4J_URI`` names another target) is rebuilt in a temporary folder and swapped into
place, so a crash never leaves a half-loaded graph; a Neo4j server is loaded with merges
(or, when it is a new local one of ours, bulk-imported: :mod:`graphdb.bulk`),
so a rerun after a failure completes it without duplicates. The stage's manifest record is
removed before the load and written after it, with the hash of the graph folder; the
discover stage, which writes into the graph afterwards, re-records that hash.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from graphdb import open_store
from graphdb.embedded import DB_FILE
from graphdb.schema import schema_version
from graphdb.store import GraphStore
from graphdb.target import is_server_uri, redact, resolve_target
from patientgraph.atomic import atomic_dir, clean_leftovers
from patientgraph.errors import InputError
from patientgraph.schema import Source, check_references
from patientgraph.workspace import Workspace, file_sha256, holding_lock

STAGE = "graph"
COHORT = ("patients", "studies", "lesions", "records")
KNN = {"lesion": ("index/lesion_knn.parquet", "lesions", "lesion_id"),
       "patient": ("index/patient_knn.parquet", "patients", "patient_id")}


@holding_lock
def run(workspace: str | Path | Workspace, config: dict[str, Any] | None = None,
        force: bool = False) -> dict[str, Any]:
    """Load the workspace's cohort and kNN edges into its graph; returns the counts.

    ``config`` may hold ``{"graph": target}`` (a folder or a Neo4j URI). Skipped, with the
    last summary and ``skipped=True``, when the inputs and target are unchanged (a Neo4j
    server is trusted to still hold that load: after wiping it, rerun with ``force``).
    """
    ws = Workspace.of(workspace)
    target = resolve_target(ws.root, (config or {}).get("graph"))
    server = is_server_uri(target)
    inputs = _input_hashes(ws)
    stage_config = {
        "graph": redact(target) if server else ws.relative(target),
        "database": os.environ.get("NEO4J_DATABASE") if server else None,
        "schema": schema_version(),  # new node or edge properties: the graph is rebuilt
    }
    stage = ws.start_stage(STAGE, stage_config, inputs)
    if (last := stage.skip(force)) is not None:
        return last

    tables = {name: ws.table(name) for name in COHORT}
    knn = {kind: _knn(ws, kind, tables) for kind in KNN if ws.path(KNN[kind][0]).exists()}
    if server:
        with open_store(target) as store:
            ws.begin_stage(STAGE)  # the server's graph changes in place from here
            summary = load(store, tables, knn)
        outputs: list[str] = []
    else:
        folder = Path(target)
        _check_graph_folder(folder)
        ws.begin_stage(STAGE)
        if folder.parent.is_dir():  # a graph outside the workspace: its killed builds too
            clean_leftovers(folder.parent, only=folder.name)
        with atomic_dir(folder) as tmp, open_store(tmp) as store:
            summary = load(store, tables, knn)
        outputs = [ws.relative(folder)]
    summary = {"backend": "neo4j" if server else "embedded", **summary}
    return stage.finish(outputs, summary)


def load(store: GraphStore, tables: dict[str, pd.DataFrame],
         knn: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Write the cohort tables and the kNN edge tables present; returns the counts.

    One :meth:`~graphdb.store.GraphStore.write_graph` call, so that a new graph on a local
    Neo4j server of ours is bulk-imported (:mod:`graphdb.bulk`).
    """
    counts = store.write_graph(tables["patients"], tables["studies"], tables["lesions"],
                               tables["records"], {kind: knn[kind] for kind in KNN if kind in knn})
    summary = {"patients": counts["Patient"], "studies": counts["Study"],
               "lesions": counts["Lesion"]}
    for kind in KNN:
        summary[f"{kind}_edges"] = counts.get(f"{kind}_edges", 0)
    return summary


def _input_hashes(ws: Workspace) -> dict[str, str]:
    inputs = {}
    for name in COHORT:
        if not ws.table_path(name).exists():
            ws.table(name)  # raises the workspace's own "ingest first" error
        inputs[name] = file_sha256(ws.table_path(name))
    for kind, (rel, _, _) in KNN.items():
        if ws.path(rel).exists():
            inputs[f"{kind}_knn"] = file_sha256(ws.path(rel))
    return inputs


def _knn(ws: Workspace, kind: str, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """A kNN table, checked to join ids of the cohort (it may be older than the cohort)."""
    rel, table, key = KNN[kind]
    knn = ws.read_parquet(rel, writer="index")
    source = Source(str(ws.path(rel)))
    for column in ("src", "dst"):
        if column not in knn.columns:
            raise InputError(source.file, f"the kNN table lacks the column {column!r}",
                             "rebuild it: patientgraph run --stages index --force")
        check_references(knn, column, tables[table][key], source, parent_name=kind,
                         fix="the index is older than the cohort: rebuild it with "
                         "patientgraph run --stages index --force")
    return knn


def _check_graph_folder(folder: Path) -> None:
    """Refuse to replace a folder that is neither empty nor an embedded graph."""
    if folder.exists() and any(folder.iterdir()) and not (folder / DB_FILE).exists():
        raise InputError(folder, "this folder is not empty and holds no embedded graph, and "
                         "building the graph would replace it", "name an empty or new folder "
                         "for the graph, or a neo4j:// URI")
