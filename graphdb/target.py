"""Where a graph lives: a Neo4j server URI or an embedded graph folder.

Plain functions of strings and paths (no backend is imported), so that the store, both
backends and :func:`graphdb.open_store` share them without importing one another.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

SERVER_SCHEMES = ("neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc")
GRAPH_DIR = "graph"


def is_server_uri(target: str | os.PathLike) -> bool:
    """Whether ``target`` names a Neo4j server rather than an embedded graph folder."""
    return isinstance(target, str) and urlsplit(target).scheme.lower() in SERVER_SCHEMES


def redact(uri: str) -> str:
    """``uri`` without any user info, for messages and the manifest."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def resolve_target(workspace: str | os.PathLike, graph: str | None = None) -> str:
    """Where a workspace's graph lives: ``graph``, else ``$NEO4J_URI``, else ``W/graph``."""
    return graph or os.environ.get("NEO4J_URI") or str(Path(workspace) / GRAPH_DIR)


__all__ = ["GRAPH_DIR", "SERVER_SCHEMES", "is_server_uri", "redact", "resolve_target"]
