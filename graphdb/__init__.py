"""The patient graph: ``GraphStore`` with an embedded (LadybugDB) and a Neo4j backend.

    from graphdb import open_store

    with open_store("W/graph", read_only=True) as store:          # or "neo4j://host:7687"
        store.similar_patients("000042", k=5, where={"sex": "F"})

Modules: ``store`` (the interface), ``target`` (where a graph lives: server URI or folder),
``embedded`` and ``neo4j_store`` (the backends), ``schema``, ``cypher`` (statement text),
``filters`` (cohort filters), ``frames`` (workspace tables -> node and edge frames), ``pyg``
(HeteroData), ``stage`` (pipeline stage ``graph``), ``synthetic`` (inputs at any scale),
``server`` (the local Neo4j for development).

:func:`open_store` lives here, above the store and its backends, which import the store:
the store imports no backend. The package imports nothing heavy until a name is used, so
that ``python -m graphdb.server`` does not import pandas and the drivers.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from graphdb.target import is_server_uri, resolve_target

if TYPE_CHECKING:
    from graphdb.store import GraphStore

__all__ = ["GraphStore", "is_server_uri", "open_store", "resolve_target"]


def open_store(target: str | os.PathLike, read_only: bool = False, **options: Any) -> GraphStore:
    """Open the graph at ``target`` (a folder, or a Neo4j URI).

    ``read_only`` refuses every write; the explorer opens stores this way. ``options`` go
    to the backend: ``database``, ``batch_size``, ``retry_s``, ``timeout_s`` (connecting)
    for Neo4j; ``threads`` for the embedded store; ``query_timeout_s`` for both (a limit on
    every read, enforced by the engine; the explorer sets it). Connection problems raise a
    :class:`~graphdb.errors.GraphConnectionError` with one clear message.
    """
    if is_server_uri(target):
        from graphdb.neo4j_store import Neo4jStore

        return Neo4jStore(str(target), read_only=read_only, **options)
    from graphdb.embedded import EmbeddedStore

    return EmbeddedStore(target, read_only=read_only, **options)


def __getattr__(name: str) -> Any:
    if name == "GraphStore":
        from graphdb.store import GraphStore

        return GraphStore
    raise AttributeError(f"module 'graphdb' has no attribute {name!r}")
