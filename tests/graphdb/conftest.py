"""Fixtures of the graph tests: a private real Neo4j server, and a store of each backend.

The Neo4j server is the project's own (``graphdb.server``), started once per test process
on a free port with a fresh data folder and a random password. When it cannot be built or
started the Neo4j tests fail with the reason; they are never skipped.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from graphdb import GraphStore, open_store
from graphdb.synthetic import synthetic_cohort

BACKENDS = ["embedded", "neo4j"]


@dataclass(frozen=True)
class Neo4jServer:
    uri: str
    port: int
    home: Path
    data_dir: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def neo4j_server(tmp_path_factory) -> Iterator[Neo4jServer]:
    """A real local Neo4j 5.26 (graphdb.server) with its own port and data folder.

    Its user is ``neo4j`` with the exported NEO4J_PASSWORD (CI exports one), or with a
    random password exported for the session; NEO4J_DATABASE is unset meanwhile.
    """
    from graphdb import server

    home = tmp_path_factory.mktemp("neo4j")
    saved = {k: os.environ.get(k) for k in ("NEO4J_USER", "NEO4J_PASSWORD", "NEO4J_DATABASE")}
    os.environ["NEO4J_USER"] = "neo4j"
    os.environ.setdefault("NEO4J_PASSWORD", secrets.token_urlsafe(18))
    os.environ.pop("NEO4J_DATABASE", None)
    try:
        info = server.start(port=_free_port(), home=home, wait_s=180)
        yield Neo4jServer(info.uri, info.port, home, info.data_dir)
    finally:
        server.stop(home=home)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def restart(srv: Neo4jServer) -> None:
    """Start the session's server again after a test stopped it (same port and data)."""
    from graphdb import server

    server.start(srv.data_dir, srv.port, wait_s=180, home=srv.home)


@pytest.fixture(scope="session")
def cohort() -> dict[str, pd.DataFrame]:
    """40 patients, ~96 studies, ~296 lesions, 10 neighbours per lesion and patient."""
    return synthetic_cohort(40, seed=3)


def open_backend(backend: str, request, tmp_path: Path, **options) -> GraphStore:
    """An empty read-write store of ``backend``."""
    if backend == "embedded":
        return open_store(tmp_path / "graph", **options)
    srv = request.getfixturevalue("neo4j_server")
    store = open_store(srv.uri, **options)
    store.clear()
    return store


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path) -> Iterator[GraphStore]:
    """An empty store of each backend."""
    s = open_backend(request.param, request, tmp_path)
    yield s
    s.close()


def load(store: GraphStore, cohort: dict[str, pd.DataFrame]) -> None:
    store.write_cohort(cohort["patients"], cohort["studies"], cohort["lesions"],
                       cohort["records"])
    store.write_similarity("lesion", cohort["lesion_knn"])
    store.write_similarity("patient", cohort["patient_knn"])


def expected_stats(cohort: dict[str, pd.DataFrame]) -> dict[str, dict[str, int]]:
    """What :func:`load` gives: node and edge counts."""
    from graphdb.frames import similarity_edges

    nodes = {"Patient": len(cohort["patients"]), "Study": len(cohort["studies"]),
             "Lesion": len(cohort["lesions"]), "Cluster": 0, "Biomarker": 0}
    edges = {"Patient-HAS_STUDY->Study": len(cohort["studies"]),
             "Study-HAS_LESION->Lesion": len(cohort["lesions"]),
             "Lesion-SIMILAR_TO->Lesion": len(similarity_edges(cohort["lesion_knn"])),
             "Patient-SIMILAR_TO->Patient": len(similarity_edges(cohort["patient_knn"])),
             "Lesion-IN_CLUSTER->Cluster": 0, "Lesion-SAME_LESION->Lesion": 0,
             "Biomarker-DESCRIBES->Cluster": 0}
    return {"nodes": nodes, "edges": edges}


@pytest.fixture(scope="module", params=BACKENDS)
def _shared(request, tmp_path_factory) -> Iterator[GraphStore]:
    s = open_backend(request.param, request, tmp_path_factory.mktemp("graph"))
    yield s
    s.close()


@pytest.fixture
def loaded(_shared, cohort) -> GraphStore:
    """A store of each backend holding the cohort and its kNN edges, for tests that read.

    Loaded once per module; loaded again when a writing test (which uses ``store``) has
    changed the Neo4j database meanwhile.
    """
    if _shared.stats() != expected_stats(cohort):
        _shared.clear()
        load(_shared, cohort)
    return _shared
