"""The Neo4j backend: any Neo4j 5 server through the official ``neo4j`` driver.

Credentials come only from ``NEO4J_USER`` (default ``neo4j``) and ``NEO4J_PASSWORD``, the
database from ``NEO4J_DATABASE`` (default: the server's default database). One driver is
kept per process and address, shared by the stores opened on it. Writes are ``UNWIND
$rows`` batches in managed transactions, which the driver retries on transient errors;
reads run in READ access mode, where the server refuses any write.

Loads are idempotent and fast: edges find their end nodes by internal id (looked up once
per distinct key, instead of two key-index seeks per edge), and a load into a label or
edge kind that has nothing yet uses CREATE instead of MERGE. Anything else merges: a rerun
after a partial load, and any retry of a batch (whose commit may have happened), so a
rerun completes the graph without duplicates.

:meth:`Neo4jStore.write_graph` (the graph stage's load) goes further on a server that
:mod:`graphdb.server` runs here, when its database is empty: it stops the server, writes the
store files with Neo4j's bulk importer and starts it again (:mod:`graphdb.bulk`, which says
when that applies). Elsewhere it loads through ``UNWIND`` as above; ``load_path`` says which
path the last load took and why.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import neo4j
import numpy as np
import pandas as pd
from neo4j.exceptions import AuthError, ClientError, DriverError, Neo4jError, TransientError

from graphdb import bulk, cypher
from graphdb.errors import (
    GraphAuthError,
    GraphConnectionError,
    GraphDatabaseNotFoundError,
    GraphQueryError,
    GraphUnavailableError,
    QueryRefusedError,
    WriteRefusedError,
)
from graphdb.filters import compile_filters
from graphdb.schema import BOOLEAN, DOUBLE, INT64, NODES, STRING, EdgeType, NodeType
from graphdb.server import ServerError
from graphdb.store import GraphStore, Progress
from graphdb.target import redact
from patientgraph.errors import InputError

# Rows per UNWIND transaction. bench_graph measured 2,000 to 50,000 on a DeepLesion-scale
# load (2 busy cores, two runs): 16-24k edges/s, flat within the noise, the server's Cypher
# work being the limit. Larger batches only grow each transaction's memory, which the
# server caps, so a small one that is as fast.
BATCH_SIZE = 5_000
# Rows from which write_graph (bulk_import=None) takes the bulk import where it applies: it
# stops and starts the server, whose fixed cost (tens of seconds) a small load does not repay.
BULK_MIN_ROWS = 2_000_000
# Keys per node-id lookup query.
LOOKUP_BATCH = 50_000
# Properties that cohort filters start from; indexed on the server.
INDEXED = (("Lesion", "coarse_type"), ("Lesion", "cluster"), ("Patient", "sex"),
           ("Patient", "age"))
CREDENTIALS_FIX = ("export NEO4J_USER and NEO4J_PASSWORD with an account of this server "
                   "(they are read from the environment only, never from the command line)")
_QUERY_TYPES = {"rw": "a read and write", "w": "a write", "s": "a schema change"}
_VALUE_TYPES = {"STRING": STRING, "FLOAT": DOUBLE, "INTEGER": INT64, "BOOLEAN": BOOLEAN}

# The driver logs connection trouble itself; the user gets one message from us instead.
logging.getLogger("neo4j").addHandler(logging.NullHandler())


class _Drivers:
    """One driver per (address, account, retry time) in this process, shared by stores."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._drivers: dict[tuple, list] = {}

    def acquire(self, uri: str, auth: tuple[str, str], retry_s: float,
                timeout_s: float) -> tuple[tuple, neo4j.Driver]:
        secret = hashlib.sha256("\0".join(auth).encode()).hexdigest()
        key = (uri, secret, retry_s, timeout_s)
        with self._lock:
            if key not in self._drivers:
                args = dict(uri=uri, auth=auth, max_transaction_retry_time=retry_s,
                            connection_timeout=timeout_s,
                            connection_acquisition_timeout=timeout_s,
                            notifications_min_severity="OFF")
                self._drivers[key] = [neo4j.GraphDatabase.driver(**args), 0, args]
            self._drivers[key][1] += 1
            return key, self._drivers[key][0]

    def driver(self, key: tuple) -> neo4j.Driver:
        with self._lock:
            return self._drivers[key][0]

    def renew(self, key: tuple) -> None:
        """Replace the driver of ``key`` with a new one, for every store that shares it
        (after a server restart the old one's pooled connections are dead)."""
        with self._lock:
            entry = self._drivers[key]
            old, entry[0] = entry[0], neo4j.GraphDatabase.driver(**entry[2])
        old.close()

    def release(self, key: tuple) -> None:
        with self._lock:
            entry = self._drivers.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del self._drivers[key]
                entry[0].close()


DRIVERS = _Drivers()


class Neo4jStore(GraphStore):
    """A graph on a Neo4j 5 server at ``uri`` (``neo4j://``, ``bolt://``, ``+s``, ``+ssc``).

    ``batch_size`` rows go in each write transaction; ``retry_s`` bounds the driver's
    retries of a transaction on transient errors (a restarting server, a lost connection);
    ``timeout_s`` bounds connecting. Needs Neo4j 5.13 or newer (``valueType``).

    ``bulk_import`` chooses how :meth:`write_graph` loads into an empty database of the
    server that :mod:`graphdb.server` runs from ``server_home`` (its state folder; default
    ``PATIENTGRAPH_NEO4J_HOME``): None imports loads of at least :data:`BULK_MIN_ROWS`
    rows with the bulk importer, True any load, False none (see :mod:`graphdb.bulk`).
    """

    dialect = "neo4j"
    #: write every batch as MERGE on the nodes' keys (the former load path; bench_graph
    #: sets it to measure the fresh-load path against it in the same run)
    merge_by_key = False
    #: skip edges the graph holds already with the same properties (bench_graph turns it
    #: off to measure the former incremental path, which merged every edge, beside it)
    skip_unchanged = True
    #: how the last write_graph loaded: ("import", seconds of each step) or ("unwind", why)
    load_path: tuple[str, Any] | None = None

    def __init__(self, uri: str, read_only: bool = False, *, database: str | None = None,
                 batch_size: int = BATCH_SIZE, retry_s: float = 30.0, timeout_s: float = 10.0,
                 query_timeout_s: float | None = None, bulk_import: bool | None = None,
                 server_home: str | os.PathLike | None = None):
        super().__init__(redact(uri), read_only)
        self._uri = uri
        self.bulk_import = bulk_import
        self.server_home = server_home
        self.query_timeout_s = query_timeout_s
        parts = urlsplit(uri)
        if parts.username is not None or parts.password is not None:
            raise GraphAuthError(self.target, "the graph URI carries user info",
                                 f"remove it from the URI and {CREDENTIALS_FIX}")
        self.database = database or os.environ.get("NEO4J_DATABASE") or None
        self.batch_size = int(batch_size)
        password = os.environ.get("NEO4J_PASSWORD")
        if not password:
            raise GraphAuthError(self.target, "NEO4J_PASSWORD is not set", CREDENTIALS_FIX)
        auth = (os.environ.get("NEO4J_USER") or "neo4j", password)
        try:
            self._key, _ = DRIVERS.acquire(uri, auth, retry_s, timeout_s)
        except (ValueError, neo4j.exceptions.ConfigurationError) as exc:
            raise InputError(self.target, f"this is not a usable Neo4j URI ({exc})",
                             "give one like neo4j://host:7687 or bolt://127.0.0.1:7687") from None
        self._closed = False
        self._ready = False
        try:
            self._connect()
            if not read_only:
                self._prepare({})
        except BaseException:
            self.close()
            raise

    @property
    def _driver(self) -> neo4j.Driver:
        return DRIVERS.driver(self._key)

    def _connect(self) -> None:
        """Log in and reach the database now, so that problems surface at open."""
        try:
            self._driver.verify_connectivity()
        except (Neo4jError, DriverError, OSError) as exc:
            raise self._error(exc) from None
        self._read("RETURN 1 AS ok", {})

    # -- reads ----------------------------------------------------------------------------

    def _query(self, text: str, params: dict[str, Any]) -> pd.DataFrame:
        # The server's own verdict as a second wall: its plan must be a read-only one
        # (query type "r"); the READ access mode of _read refuses writes a third time.
        plan = self._run_read("EXPLAIN " + text, params, neo4j.Result.consume)
        if plan.query_type != "r":
            raise QueryRefusedError(self.target, f"the query is refused: the server plans it "
                                    f"as {_QUERY_TYPES.get(plan.query_type, plan.query_type)}"
                                    ", and queries only read",
                                    "remove the writing clauses")
        return self._read(text, params)

    def cohort(self, filters: Mapping[str, Any] | None = None) -> list[str]:
        # as GraphStore.cohort, reading the one record without building a DataFrame
        cond = compile_filters(filters, self.patient_types())
        record = self._read_record(cypher.cohort(cond.patient, cond.lesion), cond.params)
        return sorted(str(v) for v in record["patient_ids"]) if record else []

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            DRIVERS.release(self._key)

    # -- bulk import ----------------------------------------------------------------------

    def write_graph(self, patients: pd.DataFrame, studies: pd.DataFrame,
                    lesions: pd.DataFrame, records: pd.DataFrame | None = None,
                    knn: Mapping[str, pd.DataFrame] | None = None, *,
                    progress: Progress | None = None) -> dict[str, int]:
        """As :meth:`GraphStore.write_graph`; a new graph on our local server is imported."""
        self._check_writable()
        knn = dict(knn or {})
        load = why = None
        why = self._why_not_import()
        if why is None:
            load = bulk.plan(patients, studies, lesions, records, knn)
            if isinstance(load, str):
                why = load
            elif self.bulk_import is None and load.rows < BULK_MIN_ROWS:
                why = f"the load has fewer than {BULK_MIN_ROWS:,} rows"
        if why is None and isinstance(load, bulk.Plan):
            try:
                times = bulk.import_graph(load, self.server_home)
            except ServerError as exc:
                why = str(exc)  # the server runs again, with an empty database
            self._reconnect()
            if why is None:
                self.load_path = ("import", times)
                if progress is not None:
                    progress(load.rows, load.rows)
                return load.counts()
        self.load_path = ("unwind", why)
        return super().write_graph(patients, studies, lesions, records, knn,
                                   progress=progress)

    def _why_not_import(self) -> str | None:
        if self.bulk_import is False:
            return "bulk_import=False"
        if self.merge_by_key:
            return "merge_by_key"
        nodes = self._count("MATCH (n) RETURN count(n) AS n")
        return bulk.reason_not_to_import(self._uri, self.database, self.server_home, nodes)

    def _reconnect(self) -> None:
        """After the server restarted: a new driver, then the schema and its indexes
        online (the importer creates none)."""
        DRIVERS.renew(self._key)
        self._connect()
        self._ready = False
        self._patient_types = None
        self._prepare({})
        self._execute("CALL db.awaitIndexes($s)", {"s": bulk.INDEX_WAIT_S})

    # -- backend primitives ---------------------------------------------------------------

    def _prepare(self, patient_extra: Mapping[str, str]) -> None:
        if self._ready:
            return
        for node in NODES.values():
            self._execute(cypher.unique_constraint(node))
        for label, prop in INDEXED:
            self._execute(cypher.property_index(label, prop))
        self._ready = True

    def _write_nodes(self, node: NodeType, frame: pd.DataFrame, *, create: bool,
                     advance: Callable[[int], None]) -> int:
        props = [c for c in frame.columns if c != node.key]
        if not create or self.merge_by_key:
            text = (cypher.merge_nodes if create else cypher.update_nodes)(node, props,
                                                                            self.dialect)
            return self._batches((text, text), rows_of(frame), node.label, advance)
        merge = cypher.merge_nodes(node, props, self.dialect)
        # A label with no nodes yet takes CREATE (keys are unique: the store checked them,
        # and the unique constraint would refuse a repeat); anything else merges.
        fresh = self._count(cypher.count_nodes(node)) == 0
        first = cypher.create_nodes(node, props) if fresh else merge
        return self._batches((first, merge), rows_of(frame), node.label, advance)

    def _write_edges(self, edge: EdgeType, frame: pd.DataFrame, *,
                     advance: Callable[[int], None]) -> int:
        """Edges by the internal ids of their ends, created on a fresh load, else merged.

        The ends' keys are looked up once per distinct key (not twice per edge); edges with
        an end the graph lacks are left out, so ``written`` counts them out as before.
        """
        props = [c for c in frame.columns if c not in ("src", "dst")]
        if self.merge_by_key:
            text = cypher.merge_edges(edge, props, self.dialect)
            return self._batches((text, text), rows_of(frame), edge.name, advance)
        src = self._node_ids(NODES[edge.src], frame["src"])
        dst = self._node_ids(NODES[edge.dst], frame["dst"])
        found = (src >= 0) & (dst >= 0)
        if not found.any():
            advance(len(frame))
            return 0
        kept = frame[found] if not found.all() else frame
        src, dst = src[found], dst[found]
        merge = cypher.write_edges_by_id(edge, props, create=False)
        # CREATE only when no edge of this kind exists and the frame repeats no pair:
        # then it gives exactly what MERGE would. A rerun after a partial load finds edges
        # and merges; a retried batch merges too (see _batches).
        repeats = _repeats_pairs(src, dst)
        fresh = not repeats and self._count(cypher.count_edges_from(edge)) == 0
        create = cypher.write_edges_by_id(edge, props, create=True)
        if fresh or repeats or not self.skip_unchanged:
            parts = [(create if fresh else merge, np.ones(len(src), dtype=bool))]
        else:
            # Compared with what the graph holds: an edge it has once with these very
            # properties needs no write (MERGE would change nothing); one it lacks is created
            # (no pair repeats, so CREATE gives what MERGE would); the rest are merged.
            same, absent = self._compare(edge, props, src, dst, kept)
            advance(int(same.sum()))
            parts = [(create, absent), (merge, ~same & ~absent)]
        written = len(src) - sum(int(m.sum()) for _, m in parts)
        for first, mask in parts:
            if mask.any():
                columns = [src[mask].tolist(), dst[mask].tolist()] + [
                    _values(kept[c][mask]) for c in props]
                rows = list(zip(*columns, strict=True))
                written += self._batches((first, merge), rows, edge.name, advance)
        advance(len(frame) - len(src))
        return written

    def _compare(self, edge: EdgeType, props: list[str], src: np.ndarray, dst: np.ndarray,
                 frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Which rows are an edge the graph holds exactly once with the same properties,
        and which are an edge it does not hold at all."""
        ids = pd.unique(src)
        found = []
        for start in range(0, len(ids), LOOKUP_BATCH):
            record = self._read_record(cypher.edges_from_ids(edge, props),
                                       {"ids": ids[start:start + LOOKUP_BATCH].tolist()})
            if record is not None:
                found.extend(record["rows"])
        if not found:
            return np.zeros(len(src), dtype=bool), np.ones(len(src), dtype=bool)
        load = pd.DataFrame({"a": src, "b": dst,
                             **{p: frame[p].array for p in props}})
        graph = pd.DataFrame(found, columns=["a", "b", *props])
        once = ~graph.duplicated(["a", "b"], keep=False).to_numpy()  # repeats: MERGE decides
        graph["once"] = once
        graph = graph.astype({p: load[p].dtype for p in props})
        both = load.merge(graph.drop_duplicates(["a", "b"]), on=["a", "b"], how="left",
                          suffixes=("", "_graph"), indicator=True)
        absent = (both["_merge"] == "left_only").to_numpy()
        same = ~absent & both["once"].eq(True).to_numpy()
        for p in props:
            mine, theirs = both[p], both[f"{p}_graph"]
            same &= ((mine == theirs).fillna(False) | (mine.isna() & theirs.isna())).to_numpy()
        return same, absent

    def _node_ids(self, node: NodeType, keys: pd.Series) -> np.ndarray:
        """The internal id of each key's node (-1 where the graph has none)."""
        codes, uniques = pd.factorize(keys)
        ids = np.full(len(uniques), -1, dtype=np.int64)
        index = pd.Index(uniques)
        for start in range(0, len(uniques), LOOKUP_BATCH):
            chunk = _values(pd.Series(uniques[start:start + LOOKUP_BATCH]))
            record = self._read_record(cypher.node_ids(node), {"keys": chunk})
            if record is not None and record["keys"]:
                ids[index.get_indexer(record["keys"])] = record["ids"]
        return np.where(codes >= 0, ids[codes], -1)

    def _batches(self, texts: tuple[str, str], rows: list, what: str,
                 advance: Callable[[int], None]) -> int:
        """Write ``rows`` in batches: ``texts[0]`` first, ``texts[1]`` (a merge) on retries.

        A retry follows a failure whose commit may have happened (a lost connection), so
        it must not create again.
        """
        written = start = 0
        try:
            with self._driver.session(database=self.database) as session:
                for start in range(0, len(rows), self.batch_size):
                    batch = rows[start:start + self.batch_size]
                    attempts = [0]
                    written += session.execute_write(_write_batch, texts, batch, attempts)
                    advance(len(batch))
        except (DriverError, TransientError, OSError) as exc:
            raise GraphUnavailableError(
                self.target, f"the Neo4j server stopped answering while {what} was written "
                f"({start} of {len(rows)} rows were committed; {type(exc).__name__})",
                "make sure it runs (patientgraph neo4j status), then run the load again: "
                "writes are merges, so a rerun completes the graph without duplicates",
            ) from None
        except Neo4jError as exc:
            raise self._error(exc) from None
        return written

    def _read_record(self, text: str, params: Mapping[str, Any]) -> neo4j.Record | None:
        """One record of a read (no DataFrame: the cheap path for short answers)."""
        return self._run_read(text, params, neo4j.Result.single)

    def _run_read(self, text: str, params: Mapping[str, Any], transform: Callable) -> Any:
        """A read in READ access mode (the server refuses writes), retried if transient,
        under the store's time limit (the server ends the transaction when it passes)."""
        query = neo4j.Query(text, timeout=self.query_timeout_s) if self.query_timeout_s else text
        try:
            return self._driver.execute_query(
                query, dict(params), routing_=neo4j.RoutingControl.READ,
                database_=self.database, result_transformer_=transform)
        except (Neo4jError, DriverError, OSError) as exc:
            raise self._error(exc) from None

    def _execute(self, text: str, params: Mapping[str, Any] | None = None) -> None:
        # auto-commit: CALL { ... } IN TRANSACTIONS cannot run in a managed transaction
        try:
            with self._driver.session(database=self.database) as session:
                session.run(text, dict(params or {})).consume()
        except (Neo4jError, DriverError, OSError) as exc:
            raise self._error(exc) from None

    def _read(self, text: str, params: Mapping[str, Any]) -> pd.DataFrame:
        return self._run_read(text, params, neo4j.Result.to_df)

    def _patient_property_types(self) -> dict[str, str]:
        out = {}
        for name, types in self._read(cypher.patient_property_types(), {}).itertuples(
                index=False):
            kinds = {_VALUE_TYPES.get(str(t).split()[0], STRING) for t in types}
            if len(kinds) == 1:
                out[name] = kinds.pop()
            else:
                out[name] = DOUBLE if kinds <= {DOUBLE, INT64} else STRING
        return out

    def _error(self, exc: BaseException) -> InputError:
        """The user-facing error for a driver or server error (never with credentials)."""
        code = getattr(exc, "code", None) or ""
        if isinstance(exc, AuthError) or code.startswith("Neo.ClientError.Security"):
            return GraphAuthError(self.target, "the Neo4j server refused the login "
                                  "(NEO4J_USER / NEO4J_PASSWORD)", CREDENTIALS_FIX)
        if code == "Neo.ClientError.Database.DatabaseNotFound":
            return GraphDatabaseNotFoundError(
                self.target, f"the Neo4j server has no database {self.database!r}",
                "set NEO4J_DATABASE to one of its databases (SHOW DATABASES lists them), "
                "or unset it to use the server's default database")
        if code.startswith("Neo.ClientError.Transaction.TransactionTimedOut"):
            return GraphQueryError(
                self.target, f"the query ran longer than the limit of {self.query_timeout_s:g} s "
                "and was stopped", "narrow it: match from fewer nodes, add a WHERE or a "
                "LIMIT, avoid unconnected patterns (a, b)")
        if code == "Neo.ClientError.Statement.AccessMode":
            return WriteRefusedError(self.target, "the query tried to write, and query() only "
                                     "reads", "write through the GraphStore write methods")
        if isinstance(exc, (DriverError, TransientError, OSError)):
            return GraphUnavailableError(
                self.target, "no Neo4j server answers at this address",
                "start it (patientgraph neo4j start), or check the host, the port and "
                "NEO4J_URI")
        message = getattr(exc, "message", None) or str(exc)
        if isinstance(exc, ClientError):
            return GraphQueryError(self.target, f"the query failed: {message}",
                                   "check the Cypher and its parameters")
        return GraphConnectionError(self.target, f"the Neo4j server failed: {message}",
                                    "check the server's log")


def _write_batch(tx: neo4j.ManagedTransaction, texts: tuple[str, str], rows: list,
                 attempts: list[int]) -> int:
    """One batch in a managed transaction: the first try runs ``texts[0]``, a retry (the
    driver runs the function again after a transient failure) the merging ``texts[1]``."""
    text = texts[0] if attempts[0] == 0 else texts[1]
    attempts[0] += 1
    record = tx.run(text, rows=rows).single()
    return int(record["written"]) if record else 0


def _values(col: pd.Series) -> list:
    """A column as plain Python values, None for missing (one conversion, no per-row work
    for numeric columns without gaps)."""
    missing = col.isna().to_numpy()
    if isinstance(col.dtype, np.dtype) and col.dtype.kind in "iufb" and not missing.any():
        return col.to_numpy().tolist()
    values = col.to_numpy(dtype=object)
    if missing.any():
        values = values.copy()
        values[missing] = None
    return values.tolist()


def _repeats_pairs(src: np.ndarray, dst: np.ndarray) -> bool:
    """Whether some (src, dst) pair occurs twice."""
    return bool(pd.DataFrame({"a": src, "b": dst}).duplicated().any())


def rows_of(frame: pd.DataFrame) -> list[list]:
    """The frame's rows as lists of plain Python values (None for missing)."""
    columns = [_values(frame[c]) for c in frame.columns]
    return [list(row) for row in zip(*columns, strict=True)]

