"""First loads into a new local Neo4j database with Neo4j's bulk importer.

``neo4j-admin database import full`` writes the store files of a database directly from CSV
files, skipping transactions and the Cypher runtime, which is what a first load of millions
of edges spends its time on. It needs the database offline, so it applies only where
:class:`graphdb.neo4j_store.Neo4jStore` can stop and start the server itself:

- the store's URI is the loopback address and port of the server that :mod:`graphdb.server`
  runs from its state folder (ours: launched by ``graphdb/launcher``, which carries the
  importer on its class path), and the database is the server's default one (``neo4j``);
- that database holds no node at all (a new or cleared database: nothing is overwritten
  that was not empty already);
- the frames need nothing the importer cannot express: every edge's ends are in the load,
  no (src, dst) pair repeats, and property names fit a CSV header.

Anything else (a remote server, a server someone else runs, a database with data) is loaded
through ``UNWIND`` batches as before, which :func:`reason_not_to_import` explains. The
import stops the server, imports, and starts it again on the same port and data folder; the
constraints and indexes are created afterwards (the importer of Neo4j Community creates
none). The CSV files are written to a private temporary folder (0700), which is removed
afterwards whatever happens, and the importer's output, which can quote rows, is never
logged or shown. The importer's memory outside its heap is capped by
``NEO4J_IMPORT_OFFHEAP`` (default 2G; Neo4j's own default is 90% of the free memory), its
heap is ``NEO4J_HEAP`` as for the server. If the import fails, the half-written database is
removed, the server starts with an empty one, and the caller loads through ``UNWIND``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from graphdb import frames, server
from graphdb.schema import (
    HAS_LESION,
    HAS_STUDY,
    LESION,
    LESION_SIMILAR,
    PATIENT,
    PATIENT_SIMILAR,
    STUDY,
    EdgeType,
    NodeType,
    edge_columns,
    record_properties,
)

#: the database that the launcher serves (Neo4j Community has one user database)
DATABASE = "neo4j"
#: importer header types of the graph types
CSV_TYPES = {"STRING": "string", "DOUBLE": "double", "INT64": "long", "BOOLEAN": "boolean"}
ARROW_TYPES = {"STRING": pa.string(), "DOUBLE": pa.float64(), "INT64": pa.int64(),
               "BOOLEAN": pa.bool_()}
# Property names a header can hold as they are (no comma, colon, quote or line break).
_HEADER_NAME = re.compile(r"[^,:\"'\r\n\x00]+")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Seconds to wait for the restarted server and for its new indexes to come online.
START_WAIT_S = 300
INDEX_WAIT_S = 3600


@dataclass
class Plan:
    """The typed node and edge frames of one load, in the order they are written."""

    nodes: list[tuple[NodeType, pd.DataFrame, dict[str, str]]] = field(default_factory=list)
    edges: list[tuple[EdgeType, pd.DataFrame, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {node.label: len(frame) for node, frame, _ in self.nodes}
        for _, frame, name in self.edges:
            out[name] = len(frame)
        return out

    @property
    def rows(self) -> int:
        return sum(len(f) for _, f, _ in self.nodes) + sum(len(f) for _, f, _ in self.edges)


def plan(patients: pd.DataFrame, studies: pd.DataFrame, lesions: pd.DataFrame,
         records: pd.DataFrame | None, knn: Mapping[str, pd.DataFrame]) -> Plan | str:
    """The frames of a load as the importer takes them, or why it cannot take them."""
    from graphdb.store import _typed

    extra = record_properties(records) if records is not None else {}
    out = Plan()
    for node, frame, types in ((PATIENT, frames.patient_nodes(patients, records),
                                {**PATIENT.properties, **extra}),
                               (STUDY, frames.study_nodes(studies), dict(STUDY.properties)),
                               (LESION, frames.lesion_nodes(lesions), dict(LESION.properties))):
        frame = _typed(frame, types)
        keys = frame[node.key]
        if keys.isna().any() or keys.duplicated().any():
            return f"a {node.label} key is missing or repeated"
        if any(not _HEADER_NAME.fullmatch(str(c)) or str(c) != str(c).strip()
               for c in frame.columns):
            return "a property name cannot go into a CSV header"
        out.nodes.append((node, frame, types))
    keys = {node.label: frame[node.key] for node, frame, _ in out.nodes}
    edges = [(HAS_STUDY, frames.has_study(studies), HAS_STUDY.name),
             (HAS_LESION, frames.has_lesion(lesions), HAS_LESION.name)]
    names = {"lesion": LESION_SIMILAR, "patient": PATIENT_SIMILAR}
    for kind, table in knn.items():
        edge = names[kind]
        edges.append((edge, frames.similarity_edges(table, f"index/{kind}_knn.parquet"),
                      f"{kind}_edges"))
    for edge, frame, name in edges:
        types = edge_columns(edge)
        frame = _typed(frame[list(types)], types)
        if not (frame["src"].isin(keys[edge.src]).all()
                and frame["dst"].isin(keys[edge.dst]).all()):
            return f"some {edge.name} edges point at nodes the load does not have"
        if frame.duplicated(["src", "dst"]).any():
            return f"some {edge.name} edges repeat a pair"
        out.edges.append((edge, frame, name))
    return out


def reason_not_to_import(uri: str, database: str | None, home: str | os.PathLike | None,
                         node_count: int) -> str | None:
    """Why the bulk import does not apply to this server and database (None: it does)."""
    parts = urlsplit(uri)
    if parts.scheme not in ("bolt", "neo4j") or parts.hostname not in _LOOPBACK:
        return "the server is not a local one on the loopback address"
    state = server.status(home)
    if not state["running"] or int(state["port"] or 0) != (parts.port or 7687):
        return "the server is not the one graphdb.server runs from its state folder"
    if database not in (None, DATABASE):
        return f"the database is not the server's default one ({DATABASE})"
    if node_count:
        return "the database is not empty"
    return None


def write_files(load: Plan, folder: Path) -> tuple[list[str], list[str]]:
    """Header and data CSV files of every node and edge frame; the importer's arguments."""
    nodes, rels = [], []
    for node, frame, types in load.nodes:
        header = [f"{node.key}:ID({node.label})"] + [
            f"{c}:{CSV_TYPES[types.get(c, 'STRING')]}" for c in frame.columns if c != node.key]
        order = [node.key] + [c for c in frame.columns if c != node.key]
        files = _csv(folder, node.label, header, frame[order], types)
        nodes.append(f"--nodes={node.label}={files}")
    for i, (edge, frame, _) in enumerate(load.edges):
        types = edge_columns(edge)
        header = [f":START_ID({edge.src})", f":END_ID({edge.dst})"] + [
            f"{c}:{CSV_TYPES[types[c]]}" for c in frame.columns if c not in ("src", "dst")]
        files = _csv(folder, f"edges{i}", header, frame, types)
        rels.append(f"--relationships={edge.rel}={files}")
    return nodes, rels


def _csv(folder: Path, name: str, header: list[str], frame: pd.DataFrame,
         types: Mapping[str, str]) -> str:
    """Write ``NAME.header.csv`` and ``NAME.csv``; returns both paths joined by a comma.

    Every value is quoted and a missing one is left empty and unquoted, which the importer
    reads as "no property" (as ``UNWIND`` leaves it), while an empty text stays "".
    """
    head, data = folder / f"{name}.header.csv", folder / f"{name}.csv"
    with open(os.open(head, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
        fh.write(",".join(header) + "\n")
    table = pa.table({str(c): pa.array(frame[c], type=ARROW_TYPES[types.get(c, "STRING")],
                                       from_pandas=True) for c in frame.columns})
    os.close(os.open(data, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    pacsv.write_csv(table, data, pacsv.WriteOptions(include_header=False,
                                                    quoting_style="all_valid"))
    return f"{head},{data}"


def import_graph(load: Plan, home: str | os.PathLike | None = None) -> dict[str, float]:
    """Stop the server of ``home``, import ``load`` into its default database, start it.

    Returns the seconds of each step. Raises :class:`graphdb.server.ServerError` when the
    import failed (the server then runs again, with an empty database).
    """
    state = server.status(home)
    port, data_dir = int(state["port"]), Path(state["data_dir"])
    java = server.java_executable()
    build_dir, _ = server.ensure_built()
    times: dict[str, float] = {}
    folder = Path(tempfile.mkdtemp(prefix="pg-neo4j-import-"))  # 0700
    try:
        t0 = time.perf_counter()
        nodes, rels = write_files(load, folder)
        (folder / "conf").mkdir(mode=0o700)
        dense = os.environ.get("NEO4J_DENSE_THRESHOLD", "10").strip() or "10"
        conf = folder / "conf" / "neo4j.conf"
        conf.touch(mode=0o600)
        conf.write_text(f"db.relationship_grouping_threshold={int(dense)}\n")
        times["csv_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        server.stop(home=home)
        times["stop_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        code = _run_import(java, build_dir, data_dir, folder, nodes + rels)
        times["import_s"] = time.perf_counter() - t0
        if code != 0:
            _drop_database(data_dir)
        t0 = time.perf_counter()
        server.start(data_dir, port, wait_s=START_WAIT_S, home=home)
        times["start_s"] = time.perf_counter() - t0
        if code != 0:
            raise server.ServerError(f"the Neo4j bulk import failed (exit code {code}); the "
                                     "database was left empty")
        return times
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_import(java: str, build_dir: Path, data_dir: Path, folder: Path,
                files: list[str]) -> int:
    """Run ``neo4j-admin database import full`` from the launcher's class path."""
    heap = os.environ.get("NEO4J_HEAP", "1g").strip() or "1g"
    if not re.fullmatch(r"\d+[kKmMgG]?", heap):
        raise server.ServerError(f"NEO4J_HEAP must look like 512m or 2g, got {heap!r}")
    offheap = os.environ.get("NEO4J_IMPORT_OFFHEAP", "2G").strip() or "2G"
    if not re.fullmatch(r"\d+[kKmMgG]?|\d+%", offheap):
        raise server.ServerError(f"NEO4J_IMPORT_OFFHEAP must look like 2G or 50%, "
                                 f"got {offheap!r}")
    cmd = [java, f"-Xmx{heap}", "-XX:+ExitOnOutOfMemoryError", "-Dfile.encoding=UTF-8",
           "--add-opens=java.base/java.nio=ALL-UNNAMED",
           "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
           "-cp", server.classpath(build_dir), "org.neo4j.cli.AdminTool",
           "database", "import", "full", DATABASE, "--overwrite-destination=true",
           "--multiline-fields=true", f"--max-off-heap-memory={offheap}",
           f"--report-file={folder / 'import.report'}",
           *files]
    env = {k: v for k, v in os.environ.items() if k != "NEO4J_PASSWORD"}
    env.update(NEO4J_HOME=str(data_dir), NEO4J_CONF=str(folder / "conf"))
    with open(os.open(folder / "import.log", os.O_WRONLY | os.O_CREAT, 0o600), "wb") as log:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log,
                              stderr=subprocess.STDOUT, env=env, cwd=folder, umask=0o077)
    return proc.returncode


def _drop_database(data_dir: Path) -> None:
    """Remove the default database's store and logs; the server makes an empty one."""
    for part in ("databases", "transactions"):
        shutil.rmtree(data_dir / "data" / part / DATABASE, ignore_errors=True)
