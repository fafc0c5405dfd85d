"""Errors of the graph store that the user can fix; all are :class:`InputError` subclasses.

The command line turns them into one paragraph and exit code 2. Their messages name the
graph (a folder, or a URI with any user info removed) and never carry credentials.
"""

from __future__ import annotations

from patientgraph.errors import InputError


class GraphConnectionError(InputError):
    """The graph database could not be opened or stopped answering."""


class GraphAuthError(GraphConnectionError):
    """The server refused the login (or no credentials were given)."""


class GraphUnavailableError(GraphConnectionError):
    """Nothing answers at the address, it stopped answering, or the store is locked."""


class GraphDatabaseNotFoundError(GraphConnectionError):
    """The server runs but has no database of that name; or there is no graph at the path."""


class GraphQueryError(InputError):
    """A query or a write failed (bad Cypher, a type mismatch, an unknown filter)."""


class WriteRefusedError(GraphQueryError):
    """A write was attempted through a read-only query or a read-only store."""


class QueryRefusedError(WriteRefusedError):
    """A user query that is not one read-only statement (see :mod:`graphdb.guard`)."""
