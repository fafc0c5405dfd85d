"""The Neo4j backend against the real local server: faults and connection problems.

A server stopped in the middle of a load gives one clear error; after a restart the same
load completes with exactly the expected counts. Wrong credentials, no server and an
unknown database each give one clear message (exit code 2 on the command line) that never
contains the password.
"""

from __future__ import annotations

import os

import pytest

from graphdb import open_store, server
from graphdb.errors import (
    GraphAuthError,
    GraphDatabaseNotFoundError,
    GraphUnavailableError,
)
from graphdb.neo4j_store import rows_of
from graphdb.synthetic import synthetic_cohort
from tests.conftest import ingest_args, run_cli
from tests.graphdb.conftest import _free_port, expected_stats, load, restart


def test_server_stopped_mid_load_then_rerun_completes(neo4j_server):
    big = synthetic_cohort(250, k=20, seed=7)  # ~1,850 lesions, ~37,000 lesion edges
    want = expected_stats(big)
    batches = []

    def stop_after_first_batch(done: int, total: int) -> None:
        batches.append(done)
        if len(batches) == 1:
            server.stop(home=neo4j_server.home)

    with open_store(neo4j_server.uri, batch_size=2_000, retry_s=2) as store:
        store.clear()
        store.write_cohort(big["patients"], big["studies"], big["lesions"], big["records"])
        with pytest.raises(GraphUnavailableError, match="stopped answering") as failure:
            store.write_similarity("lesion", big["lesion_knn"], progress=stop_after_first_batch)
    assert batches == [2_000]
    assert "2000 of" in str(failure.value) and "rerun" in str(failure.value)
    assert os.environ["NEO4J_PASSWORD"] not in str(failure.value)

    restart(neo4j_server)
    with open_store(neo4j_server.uri) as store:
        partial = store.stats()["edges"]["Lesion-SIMILAR_TO->Lesion"]
        assert partial == 2_000  # the committed batch, and nothing of the failed one
        load(store, big)  # the same load again
        assert store.stats() == want
        repeated = store.query("MATCH (a:Lesion)-[r:SIMILAR_TO]->(b:Lesion) "
                               "WITH a, b, count(r) AS n WHERE n > 1 RETURN count(*) AS pairs")
        assert repeated["pairs"][0] == 0


def test_wrong_password(neo4j_server, monkeypatch):
    secret = "not-the-password-4217"
    monkeypatch.setenv("NEO4J_PASSWORD", secret)
    with pytest.raises(GraphAuthError, match="refused the login") as failure:
        open_store(neo4j_server.uri)
    assert secret not in str(failure.value)
    assert "NEO4J_PASSWORD" in str(failure.value)


def test_missing_password(neo4j_server, monkeypatch):
    monkeypatch.delenv("NEO4J_PASSWORD")
    with pytest.raises(GraphAuthError, match="NEO4J_PASSWORD is not set"):
        open_store(neo4j_server.uri)


def test_credentials_in_the_uri_are_refused(neo4j_server):
    uri = neo4j_server.uri.replace("bolt://", "bolt://neo4j:hunter2-secret@")
    with pytest.raises(GraphAuthError, match="user info") as failure:
        open_store(uri)
    assert "hunter2" not in str(failure.value)


def test_unreachable_server(neo4j_server):
    with pytest.raises(GraphUnavailableError, match="no Neo4j server answers"):
        open_store(f"bolt://127.0.0.1:{_free_port()}")


def test_unknown_database(neo4j_server, monkeypatch):
    monkeypatch.setenv("NEO4J_DATABASE", "nosuchdb")
    with pytest.raises(GraphDatabaseNotFoundError, match="no database 'nosuchdb'"):
        open_store(neo4j_server.uri)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The mini DeepLesion archive, ingested."""
    from tests.conftest import MINI

    ws = tmp_path_factory.mktemp("ws")
    assert run_cli(*ingest_args(MINI, ws)).returncode == 0
    return ws


@pytest.mark.parametrize("env, port, message", [
    ({"NEO4J_USER": "nobody"}, None, "refused the login"),
    ({}, "free", "no Neo4j server answers"),
    ({"NEO4J_DATABASE": "nosuchdb"}, None, "no database 'nosuchdb'"),
])
def test_cli_connection_problems_exit_2(neo4j_server, workspace, env, port, message):
    uri = f"bolt://127.0.0.1:{_free_port()}" if port == "free" else neo4j_server.uri
    result = run_cli("run", "--workspace", workspace, "--stages", "graph", "--graph", uri,
                     env=env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    output = result.stdout + result.stderr
    assert os.environ["NEO4J_PASSWORD"] not in output


def test_cli_loads_the_graph_into_neo4j(neo4j_server, workspace):
    with open_store(neo4j_server.uri) as store:
        store.clear()
    result = run_cli("run", "--workspace", workspace, "--stages", "graph", "--graph",
                     neo4j_server.uri, "--force")
    assert result.returncode == 0, result.stderr
    with open_store(neo4j_server.uri, read_only=True) as store:
        assert store.stats()["nodes"]["Lesion"] == 6


def test_rows_are_plain_python_values():
    import pandas as pd

    frame = pd.DataFrame({"a": ["x", None], "b": [1.5, float("nan")],
                          "c": pd.array([3, None], dtype="Int64")})
    assert rows_of(frame) == [["x", 1.5, 3], [None, None, None]]
    assert type(rows_of(frame)[0][2]) is int


def test_a_retried_batch_merges_instead_of_creating():
    import numpy as np

    from graphdb.neo4j_store import _repeats_pairs, _write_batch

    class Tx:
        def __init__(self):
            self.texts = []

        def run(self, text, rows):
            self.texts.append(text)
            return self

        def single(self):
            return {"written": 2}

    tx, attempts = Tx(), [0]
    for _ in range(3):  # the driver calls the function again after a transient failure
        assert _write_batch(tx, ("CREATE", "MERGE"), [[1, 2], [3, 4]], attempts) == 2
    assert tx.texts == ["CREATE", "MERGE", "MERGE"]
    assert _repeats_pairs(np.array([1, 1, 2]), np.array([2, 3, 2])) is False
    assert _repeats_pairs(np.array([1, 2, 1]), np.array([2, 3, 2])) is True
