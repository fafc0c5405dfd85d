"""The embedded backend: LadybugDB (the maintained fork of Kuzu), in-process, on disk.

The graph is one database file in a folder (``W/graph/graph.lbug`` by default). Loads into
an empty table use ``COPY ... FROM`` an Arrow table; later writes use ``LOAD FROM ...
MERGE`` in batches. :meth:`EmbeddedStore.query` runs a query that passed the guard
(:mod:`graphdb.guard`) in a read-only transaction, after the engine's own plan for it has
passed :data:`PLAN_OPERATORS` (a second allow-list, so that the parser is not the only
wall); a store opened with ``read_only=True`` opens the database itself read-only, so
several readers (the explorer) can share it.

Each thread gets its own connection to the one database object (LadybugDB allows one per
process), so a slow read in one thread does not hold up another; ``query_timeout_s`` is
set on every connection, where the engine interrupts a read that runs longer.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ladybug
import pandas as pd
import pyarrow as pa

from graphdb import cypher
from graphdb.errors import (
    GraphDatabaseNotFoundError,
    GraphQueryError,
    GraphUnavailableError,
    QueryRefusedError,
    WriteRefusedError,
)
from graphdb.schema import EDGES, NODES, PATIENT, EdgeType, NodeType, edge_columns
from graphdb.store import GraphStore

DB_FILE = "graph.lbug"
# Rows per LOAD FROM ... MERGE: the engine holds a whole MERGE batch in its buffer pool,
# and 300,000 edges at once exhausted it; 50,000 keeps memory flat at full speed.
MERGE_BATCH = 50_000
#: Operators the engine's plan of a user query may hold. Anything else (COPY_TO, a
#: STANDALONE_CALL setting, an operator a newer engine adds) is refused before it runs.
PLAN_OPERATORS = frozenset({
    "RESULT_COLLECTOR", "PROJECTION", "FILTER", "FLATTEN", "LIMIT", "SKIP",
    "MULTIPLICITY_REDUCER", "SCAN_NODE_TABLE", "SCAN_REL_TABLE", "PRIMARY_KEY_SCAN_NODE_TABLE",
    "INDEX_LOOKUP", "QUERY_PRIMARY_KEY_LOOKUP", "EXTEND", "RECURSIVE_EXTEND",
    "PATH_PROPERTY_PROBE", "HASH_JOIN_BUILD", "HASH_JOIN_PROBE", "INTERSECT_BUILD",
    "INTERSECT", "CROSS_PRODUCT", "SEMI_MASKER",
    "AGGREGATE", "AGGREGATE_SCAN", "AGGREGATE_FINALIZE", "ORDER_BY", "ORDER_BY_MERGE",
    "ORDER_BY_SCAN", "TOP_K", "TOP_K_SCAN", "UNWIND", "DUMMY_SCAN", "DUMMY_SINK",
    "EMPTY_RESULT", "TABLE_FUNCTION_CALL", "PARTITIONER", "COUNT_REL_TABLE",
    "SIMPLE_AGGREGATE", "SIMPLE_AGGREGATE_SCAN", "SIMPLE_AGGREGATE_FINALIZE",
})
#: Table functions a plan may call: the catalogue ones, and READ_FTABLE (the engine's scan
#: of its own intermediate results). READ_CSV, READ_PARQUET and the like are refused.
PLAN_FUNCTIONS = frozenset({"SHOW_TABLES", "TABLE_INFO", "SHOW_CONNECTION", "DB_VERSION",
                            "READ_FTABLE"})
_OPERATOR = re.compile(r"([A-Z][A-Z_]*)\[\d+\]")
_FUNCTION = re.compile(r"Function: (\w+)")

ARROW_TYPES = {"STRING": pa.string(), "DOUBLE": pa.float64(), "INT64": pa.int64(),
               "BOOLEAN": pa.bool_()}


class EmbeddedStore(GraphStore):
    """A graph in a LadybugDB database under ``path`` (a folder, created if needed)."""

    dialect = "ladybug"

    def __init__(self, path: str | Path, read_only: bool = False, *, threads: int = 0,
                 query_timeout_s: float | None = None):
        folder = Path(path)
        self.query_timeout_s = query_timeout_s
        super().__init__(str(folder), read_only)
        db_file = folder / DB_FILE
        if read_only and not db_file.exists():
            raise GraphDatabaseNotFoundError(
                folder, "there is no graph database in this folder",
                "build it first: patientgraph run --stages graph --workspace W")
        folder.mkdir(parents=True, exist_ok=True)
        try:
            self._db = ladybug.Database(str(db_file), read_only=read_only,
                                        max_num_threads=threads)
        except RuntimeError as exc:
            raise GraphUnavailableError(
                folder, f"the graph database could not be opened ({_first_line(exc)})",
                "close the program that has it open for writing (a pipeline run), or open "
                "it read-only") from None
        self._local = threading.local()
        self._connections: dict[threading.Thread, ladybug.Connection] = {}
        self._connections_lock = threading.Lock()
        self._closed = False
        self._plans_passed: set[str] = set()
        self._ready = False
        if not read_only:
            self._prepare({})

    @property
    def _conn(self) -> ladybug.Connection:
        """This thread's connection (made on first use, with the store's time limit).

        Connections of threads that have ended are closed here, so a server that starts a
        thread per request (Flask's development server) does not gather them.
        """
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._connections_lock:
                if self._closed:
                    raise GraphUnavailableError(self.target, "the graph store is closed",
                                                "open it again with open_store")
                for thread in [t for t in self._connections if not t.is_alive()]:
                    with contextlib.suppress(RuntimeError):
                        self._connections.pop(thread).close()
                conn = ladybug.Connection(self._db)
                if self.query_timeout_s:
                    conn.set_query_timeout(max(1, round(self.query_timeout_s * 1000)))
                self._connections[threading.current_thread()] = conn
            self._local.conn = conn
        return conn

    # -- reads ----------------------------------------------------------------------------

    def _query(self, text: str, params: dict[str, Any]) -> pd.DataFrame:
        conn = self._conn
        self._check_plan(conn, text, params)
        conn.execute("BEGIN TRANSACTION READ ONLY")
        try:
            result = conn.execute(text, params)
            if isinstance(result, list):  # the guard lets one statement through; belt and braces
                for part in result:
                    part.close()
                raise GraphQueryError(self.target, "query() runs one statement at a time",
                                      "send the statements one by one")
            return _frame(result)
        except RuntimeError as exc:
            raise _query_error(self.target, exc, self.query_timeout_s) from None
        finally:
            with contextlib.suppress(RuntimeError):
                conn.execute("ROLLBACK")

    def _check_plan(self, conn: ladybug.Connection, text: str, params: dict[str, Any]) -> None:
        """Refuse a query whose plan holds an operator or table function off the lists
        (texts that passed are remembered: the plan's operators do not depend on values)."""
        if text in self._plans_passed:
            return
        try:
            plan = "\n".join(str(v) for v in _frame(conn.execute("EXPLAIN " + text, params))
                             .iloc[:, 0])
        except RuntimeError as exc:
            raise _query_error(self.target, exc, self.query_timeout_s) from None
        operators = set(_OPERATOR.findall(plan)) - PLAN_OPERATORS
        functions = {f.upper() for f in _FUNCTION.findall(plan)} - PLAN_FUNCTIONS
        if operators or functions:
            what = ", ".join(sorted(operators | functions))
            raise QueryRefusedError(
                self.target, f"the query is refused: the engine would run it with {what}, "
                "which read-only queries may not use", "write a query that only matches and "
                "returns graph data")
        if len(self._plans_passed) < 512:
            self._plans_passed.add(text)

    def close(self) -> None:
        with self._connections_lock:
            if self._closed:
                return
            self._closed = True
            for conn in self._connections.values():
                with contextlib.suppress(RuntimeError):
                    conn.close()
            self._connections.clear()
            self._db.close()

    # -- backend primitives ---------------------------------------------------------------

    def _prepare(self, patient_extra: Mapping[str, str]) -> None:
        if not self._ready:
            for node in NODES.values():
                self._execute(cypher.node_table(node))
            by_rel: dict[str, list[EdgeType]] = {}
            for edge in EDGES.values():
                by_rel.setdefault(edge.rel, []).append(edge)
            for group in by_rel.values():
                self._execute(cypher.rel_table(group))
            self._ready = True
        if not patient_extra:
            return
        have = self._columns(PATIENT)
        for name, type_ in patient_extra.items():
            if name not in have:
                self._execute(cypher.add_property(PATIENT.label, name, type_))
            elif have[name] != type_:
                raise GraphQueryError(
                    self.target, f"the Patient property {name!r} holds {have[name]} values in "
                    f"the graph but {type_} values in the records",
                    "rebuild the graph: patientgraph run --stages graph --force")

    def _write_nodes(self, node: NodeType, frame: pd.DataFrame, *, create: bool,
                     advance: Callable[[int], None]) -> int:
        columns = self._columns(node)
        if create and self._count(cypher.count_nodes(node)) == 0:
            full = {c: frame[c] if c in frame.columns else None for c in columns}
            table = pa.table({c: _arrow(v, columns[c], len(frame)) for c, v in full.items()})
            self._copy(cypher.copy_nodes(node), table, node.label)
            advance(len(frame))
            return len(frame)
        props = [c for c in frame.columns if c != node.key]
        build = cypher.merge_nodes if create else cypher.update_nodes
        return self._batches(build(node, props, self.dialect), frame, columns, advance)

    def _write_edges(self, edge: EdgeType, frame: pd.DataFrame, *,
                     advance: Callable[[int], None]) -> int:
        types = edge_columns(edge)
        if self._count(cypher.count_edges(edge)) == 0:
            table = pa.table({c: _arrow(frame[c], types[c], len(frame)) for c in frame.columns})
            self._copy(cypher.copy_edges(edge), table, edge.name)
            advance(len(frame))
            return len(frame)
        props = [c for c in frame.columns if c not in ("src", "dst")]
        text = cypher.merge_edges(edge, props, self.dialect)
        return self._batches(text, frame, types, advance)

    def _batches(self, text: str, frame: pd.DataFrame, types: Mapping[str, str],
                 advance: Callable[[int], None]) -> int:
        written = 0
        for start in range(0, len(frame), MERGE_BATCH):
            part = frame.iloc[start:start + MERGE_BATCH]
            table = pa.table({cypher.column(i): _arrow(part[c], types.get(c, "STRING"), len(part))
                              for i, c in enumerate(part.columns)})
            out = self._read(text, {"rows": table})
            written += int(out["written"].sum()) if len(out) else 0
            advance(len(part))
        return written

    def _copy(self, text: str, table: pa.Table, what: str) -> None:
        try:
            self._conn.execute(text, {"rows": table})
        except RuntimeError as exc:
            if "primary key" in str(exc).lower():
                raise GraphQueryError(self.target, f"some {what} rows point at nodes the graph "
                                      "does not have, or repeat a key",
                                      "load the nodes they join first (write_cohort)") from None
            raise _query_error(self.target, exc) from None

    def _execute(self, text: str, params: Mapping[str, Any] | None = None) -> None:
        try:
            self._conn.execute(text, dict(params or {}))
        except RuntimeError as exc:
            raise _query_error(self.target, exc) from None

    def _read(self, text: str, params: Mapping[str, Any]) -> pd.DataFrame:
        try:
            return _frame(self._conn.execute(text, dict(params)))
        except RuntimeError as exc:
            raise _query_error(self.target, exc, self.query_timeout_s) from None

    def _columns(self, node: NodeType) -> dict[str, str]:
        info = self._read(cypher.table_info(node.label), {})
        return dict(zip(info["name"], info["type"], strict=True))

    def _patient_property_types(self) -> dict[str, str]:
        return self._columns(PATIENT)


def _frame(result: ladybug.QueryResult) -> pd.DataFrame:
    try:
        return result.get_as_df()
    finally:
        result.close()


def _arrow(values: pd.Series | None, type_: str, n: int) -> pa.Array:
    """A column as an Arrow array of the graph type (all nulls when ``values`` is None)."""
    arrow_type = ARROW_TYPES[type_]
    if values is None:
        return pa.nulls(n, type=arrow_type)
    return pa.array(values, type=arrow_type, from_pandas=True)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _query_error(target: str, exc: BaseException,
                 timeout_s: float | None = None) -> GraphQueryError:
    message = _first_line(exc)
    if timeout_s and message.rstrip(".").lower() == "interrupted":
        return GraphQueryError(target, f"the query ran longer than the limit of {timeout_s:g} s "
                               "and was stopped", "narrow it: match from fewer nodes, add a "
                               "WHERE or a LIMIT, avoid unconnected patterns (a, b)")
    if "read-only" in message.lower():
        return WriteRefusedError(target, f"the graph refused a write ({message})",
                                 "query() and read-only stores only read; write through the "
                                 "GraphStore write methods of a read-write store")
    return GraphQueryError(target, f"the query failed: {message}",
                           "check the Cypher (LadybugDB dialect) and its parameters")
