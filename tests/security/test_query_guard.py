"""Hostile queries against the graph: each attack that got through before the guard.

Every case runs against both backends (a real LadybugDB database and a real local Neo4j
server), through ``GraphStore.query`` as the explorer's Query page calls it, on read-only
and read-write stores; the graph must be unchanged and no file read or written afterwards.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import neo4j
import pytest

from dashboards.data import GraphAccess
from dashboards.pages import query as query_page
from graphdb import open_store
from graphdb.errors import GraphQueryError, QueryRefusedError
from graphdb.guard import check_read_query
from tests.graphdb.conftest import (  # noqa: F401  (fixtures)
    BACKENDS,
    cohort,
    load,
    neo4j_server,
)

SECRET_FILE_LINE = "root:"  # the first field of /etc/passwd's first line

# (name, query): every one was answered or executed before the guard (issue 20).
ATTACKS = [
    ("load from a server file",
     "LOAD FROM '/etc/passwd' (file_format='csv', delim=':', header=false) RETURN *"),
    ("copy to a server file (comment first)",
     "/**/ COPY (MATCH (p:Patient) RETURN p.patient_id, p.age) TO '{out}'"),
    ("copy to a server file", "COPY (MATCH (p:Patient) RETURN p.patient_id) TO '{out}'"),
    ("load extension", "LOAD EXTENSION '{out}'"),
    ("export database", "/**/EXPORT DATABASE '{dir}'"),
    ("import database", "IMPORT DATABASE '{dir}'"),
    ("install extension", "INSTALL json"),
    ("attach database", "ATTACH '{dir}/other.lbug' AS other (dbtype lbug)"),
    ("setting on the shared connection", "CALL timeout=0"),
    ("setting, lower case", "call threads = 1"),
    ("neo4j LOAD CSV file URL", "LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row"),
    ("neo4j LOAD CSV http URL", "LOAD CSV FROM 'http://127.0.0.1:9/x.csv' AS row RETURN row"),
    ("neo4j SHOW TRANSACTIONS", "SHOW TRANSACTIONS"),
    ("neo4j TERMINATE", "TERMINATE TRANSACTIONS 'neo4j-transaction-1'"),
    ("neo4j admin procedure", "CALL dbms.listConnections() YIELD connectionId RETURN *"),
    ("procedure by another name", "CALL apoc.load.json('file:///etc/passwd') YIELD value "
     "RETURN value"),
    ("function off the list", "RETURN apoc.util.sleep(100000) AS x"),
    ("commit then delete", "COMMIT; MATCH (p:Patient) DETACH DELETE p"),
    ("second statement", "MATCH (p:Patient) RETURN count(p); MATCH (p:Patient) DETACH "
     "DELETE p"),
    ("begin a write transaction", "BEGIN TRANSACTION; MATCH (p:Patient) DETACH DELETE p"),
    ("delete", "MATCH (p:Patient) DETACH DELETE p"),
    ("set", "MATCH (p:Patient) SET p.age = 0 RETURN p"),
    ("create", "CREATE (:Patient {patient_id: 'intruder'})"),
    ("merge", "MERGE (p:Patient {patient_id: 'intruder'}) RETURN p"),
    ("remove", "MATCH (p:Patient) REMOVE p.age RETURN p"),
    ("create table", "CREATE NODE TABLE Evil(id INT64, PRIMARY KEY(id))"),
    ("drop table", "DROP TABLE Patient"),
    ("foreach write", "MATCH (p:Patient) FOREACH (x IN [1] | SET p.age = 0)"),
    ("write subquery", "MATCH (p:Patient) CALL { WITH p SET p.age = 0 } RETURN p"),
    ("use another database", "USE system SHOW USERS"),
    ("alter user", "ALTER CURRENT USER SET PASSWORD FROM 'a' TO 'b'"),
    ("checkpoint", "CHECKPOINT"),
    ("empty", "   "),
    ("huge text", "MATCH (p:Patient) RETURN p.patient_id // " + "x" * 30_000),
]


def _text(query: str, tmp_path: Path) -> str:
    return query.replace("{out}", str(tmp_path / "out.csv")).replace(
        "{dir}", str(tmp_path / "export"))


@pytest.mark.parametrize(("name", "query"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_the_guard_refuses_each_attack_before_anything_runs(name, query, tmp_path):
    with pytest.raises(QueryRefusedError, match="refused|empty|characters"):
        check_read_query(_text(query, tmp_path))


@pytest.fixture(scope="module", params=BACKENDS)
def graph(request, tmp_path_factory, cohort):  # noqa: F811
    """A loaded graph of each backend, as a target the stores open."""
    if request.param == "embedded":
        target = str(tmp_path_factory.mktemp("guard") / "graph")
    else:
        target = request.getfixturevalue("neo4j_server").uri
    with open_store(target) as store:
        store.clear()
        load(store, cohort)
    return SimpleNamespace(backend=request.param, target=target,
                           patients=len(cohort["patients"]))


@pytest.mark.parametrize("read_only", [True, False], ids=["read-only", "read-write"])
def test_every_attack_is_refused_by_the_store_and_changes_nothing(graph, read_only, tmp_path):
    with open_store(graph.target, read_only=read_only, query_timeout_s=5) as store:
        before = store.stats()
        refused = 0
        for _name, query in ATTACKS:
            with pytest.raises(QueryRefusedError):
                store.query(_text(query, tmp_path))
            refused += 1
        assert store.stats() == before
        assert store.query("MATCH (p:Patient) RETURN count(p) AS n")["n"][0] == graph.patients
    assert refused == len(ATTACKS)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "export").exists()


def test_the_query_page_refuses_attacks_and_answers_reads(graph, tmp_path):
    explorer = SimpleNamespace(data=SimpleNamespace(graph=GraphAccess(graph.target, 5)))
    try:
        for _name, query in ATTACKS[:12]:
            with pytest.raises(QueryRefusedError):
                query_page.run_query(explorer, _text(query, tmp_path))
        rows, more = query_page.run_query(
            explorer, "MATCH (p:Patient) RETURN p.patient_id AS id ORDER BY id")
        assert len(rows) == graph.patients and not more
    finally:
        explorer.data.graph.close()


def test_the_engine_is_a_second_wall_behind_the_parser(graph, tmp_path):
    """What the grammar would let through if it had a hole: the engine refuses it too."""
    with open_store(graph.target, read_only=True) as store:
        if graph.backend == "embedded":
            with pytest.raises(QueryRefusedError, match="COPY_TO"):
                store._query(f"COPY (MATCH (p:Patient) RETURN p.patient_id) TO "
                             f"'{tmp_path / 'x.csv'}'", {})
            with pytest.raises(QueryRefusedError, match="READ_CSV"):
                store._query("LOAD FROM '/etc/passwd' (file_format='csv', delim=':', "
                             "header=false) RETURN *", {})
            assert not (tmp_path / "x.csv").exists()
        else:
            with pytest.raises(QueryRefusedError, match="write"):
                store._query("MATCH (p:Patient) SET p.age = 0 RETURN p", {})
            # the server itself refuses file and network access from LOAD CSV
            driver = neo4j.GraphDatabase.driver(
                graph.target, auth=("neo4j", __import__("os").environ["NEO4J_PASSWORD"]))
            try:
                for url in ("file:///etc/passwd", "file:///passwd", "http://127.0.0.1:9/x"):
                    with pytest.raises(neo4j.exceptions.ClientError) as info:
                        driver.execute_query(f"LOAD CSV FROM '{url}' AS r RETURN r LIMIT 1")
                    assert "ExternalResourceFailed" in str(info.value.code)
            finally:
                driver.close()


# Four unconnected patterns over ~300 lesions: 8e9 rows through a filter (minutes).
SLOW = ("MATCH (a:Lesion), (b:Lesion), (c:Lesion), (d:Lesion) "
        "WHERE a.long_mm * b.long_mm + c.long_mm - d.long_mm > -1.0 RETURN count(*) AS n")


def test_a_slow_query_is_stopped_at_the_time_limit(graph):
    with open_store(graph.target, read_only=True, query_timeout_s=1) as store:
        started = time.monotonic()
        with pytest.raises(GraphQueryError, match="longer than the limit of 1 s"):
            store.query(SLOW)
        # Stopped by the engine, not run to the end (which takes minutes here).
        assert time.monotonic() - started < 30
        assert store.query("MATCH (p:Patient) RETURN count(p) AS n")["n"][0] == graph.patients


def test_a_slow_query_does_not_hold_up_other_users(graph):
    access = GraphAccess(graph.target, timeout_s=4)
    slow_done = threading.Event()
    errors: list[BaseException] = []

    def slow():
        try:
            access.run(lambda store: store.query(SLOW))
        except GraphQueryError as exc:
            errors.append(exc)
        finally:
            slow_done.set()

    try:
        access.run(lambda store: store.query("RETURN 1 AS one"))  # open before timing
        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.5)
        answer = access.run(lambda store: store.query(
            "MATCH (p:Patient) RETURN count(p) AS n"))
        assert answer["n"][0] == graph.patients
        assert not slow_done.is_set(), "the quick read waited for the slow one"
        thread.join(60)
        assert errors and "longer than the limit" in str(errors[0])
    finally:
        access.close()


def test_rows_are_capped_in_the_engine(graph):
    with open_store(graph.target, read_only=True, query_timeout_s=20) as store:
        # 10 million rows if the cap came after the result was built
        out = store.query("UNWIND range(1, 10000000) AS x RETURN x", max_rows=1001)
        assert len(out) == 1001
        small = store.query("MATCH (p:Patient) RETURN p.patient_id LIMIT 3", max_rows=1001)
        assert len(small) == 3
        ordered = store.query("UNWIND range(1, 50) AS x RETURN x ORDER BY x DESC LIMIT 40",
                              max_rows=10)
        assert ordered["x"].tolist() == list(range(50, 40, -1))


def test_reads_the_explorer_needs_still_pass(graph):
    reads = [
        query_page.EXAMPLE,
        "MATCH (p:Patient) WHERE p.age >= 60 AND p.sex = 'F' RETURN p.patient_id AS id, "
        "p.age AS age ORDER BY age DESC SKIP 1 LIMIT 5",
        "MATCH (p:Patient)-[:HAS_STUDY]->(s:Study) WITH p, count(s) AS n WHERE n > 1 "
        "RETURN p.patient_id AS id, n",
        "OPTIONAL MATCH (p:Patient {patient_id: 'nobody'}) RETURN p.patient_id AS id",
        "MATCH (a:Lesion)-[r:SIMILAR_TO]->(b:Lesion) RETURN count(r) AS edges, "
        "avg(r.score) AS score",
        "UNWIND [1, 2, 3] AS x RETURN x * 2 AS y",
        "MATCH (p:Patient) RETURN DISTINCT p.sex AS sex",
    ]
    with open_store(graph.target, read_only=True, query_timeout_s=5) as store:
        for text in reads:
            store.query(text, max_rows=1001)


def test_connections_of_ended_threads_are_closed(tmp_path):
    """A thread per request (the development server) must not gather connections."""
    with open_store(tmp_path / "graph"):
        pass  # an empty graph: the schema is all the query needs
    with open_store(tmp_path / "graph", read_only=True) as store:
        for _ in range(20):
            thread = threading.Thread(target=lambda: store.query("RETURN 1 AS one"))
            thread.start()
            thread.join()
        store.query("RETURN 1 AS one")
        assert len(store._connections) <= 2
