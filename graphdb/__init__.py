"""The patient graph: ``GraphStore`` with an embedded (LadybugDB) and a Neo4j backend.

    from graphdb import open_store

    with open_store("W/graph", read_only=True) as store:          # or "neo4j://host:7687"
        store.similar_patients("000042", k=5, where={"sex": "F"})

Modules: ``store`` (the interface and ``open_store``), ``embedded`` and ``neo4j_store`` (the
backends), ``schema``, ``cypher`` (statement text), ``filters`` (cohort filters), ``frames``
(workspace tables -> node and edge frames), ``pyg`` (HeteroData), ``stage`` (pipeline stage
``graph``), ``synthetic`` (inputs at any scale), ``server`` (the local Neo4j for development).
"""

from __future__ import annotations

from typing import Any

__all__ = ["GraphStore", "open_store"]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``python -m graphdb.server`` does not import pandas and the drivers.
    if name in __all__:
        from graphdb import store

        return getattr(store, name)
    raise AttributeError(f"module 'graphdb' has no attribute {name!r}")
