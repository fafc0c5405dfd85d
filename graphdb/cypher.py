"""The Cypher text of every statement the stores run, built by small pure functions.

Values never appear in the text: they travel as parameters (``$rows``, ``$id``, ...). Names
(labels, relationship types, property names) come from :mod:`graphdb.schema` or from checked
record field names, and are always backtick-quoted.

Batched writes read their rows from ``$rows`` in one of two dialects:

``neo4j``    ``UNWIND $rows AS row`` over a list of lists; column i is ``row[i]``
``ladybug``  ``LOAD FROM $rows`` over an Arrow table whose columns are named c0, c1, ...
             (LadybugDB scans the table natively; its UNWIND over a long list is slow)
"""

from __future__ import annotations

from collections.abc import Sequence

from graphdb.schema import NODES, EdgeType, NodeType

DIALECTS = ("neo4j", "ladybug")


def quote(name: str) -> str:
    """A backtick-quoted identifier (a backtick inside is doubled)."""
    return "`" + name.replace("`", "``") + "`"


def column(i: int) -> str:
    """The name of column ``i`` of a ``LOAD FROM`` row source."""
    return f"c{i}"


def _rows(dialect: str, width: int) -> tuple[str, list[str]]:
    """The clause that yields the batch's rows and the expression of each column."""
    if dialect == "neo4j":
        return "UNWIND $rows AS row", [f"row[{i}]" for i in range(width)]
    if dialect == "ladybug":
        return "LOAD FROM $rows", [column(i) for i in range(width)]
    raise ValueError(f"unknown dialect {dialect!r}; choose from {DIALECTS}")


def _set(var: str, props: Sequence[str], values: Sequence[str]) -> str:
    if not props:
        return ""
    pairs = zip(props, values, strict=True)
    return " SET " + ", ".join(f"{var}.{quote(p)} = {v}" for p, v in pairs)


def _node(var: str, label: str, key: str | None = None, value: str | None = None) -> str:
    inner = f" {{{quote(key)}: {value}}}" if key else ""
    return f"({var}:{quote(label)}{inner})"


# -- batched writes ---------------------------------------------------------------------


def merge_nodes(node: NodeType, props: Sequence[str], dialect: str) -> str:
    """Upsert a batch of nodes: row = key, then ``props`` in order; returns ``written``."""
    source, cols = _rows(dialect, 1 + len(props))
    return (f"{source} MERGE {_node('n', node.label, node.key, cols[0])}"
            f"{_set('n', props, cols[1:])} RETURN count(n) AS written")


def update_nodes(node: NodeType, props: Sequence[str], dialect: str) -> str:
    """Set properties of existing nodes only (unknown keys match nothing)."""
    source, cols = _rows(dialect, 1 + len(props))
    return (f"{source} MATCH {_node('n', node.label, node.key, cols[0])}"
            f"{_set('n', props, cols[1:])} RETURN count(n) AS written")


def merge_edges(edge: EdgeType, props: Sequence[str], dialect: str) -> str:
    """Upsert a batch of edges: row = source key, target key, then ``props`` in order.

    Edges whose end nodes do not exist match nothing, so ``written`` counts them out.
    """
    source, cols = _rows(dialect, 2 + len(props))
    src, dst = NODES[edge.src], NODES[edge.dst]
    return (f"{source} MATCH {_node('a', src.label, src.key, cols[0])} "
            f"MATCH {_node('b', dst.label, dst.key, cols[1])} "
            f"MERGE (a)-[r:{quote(edge.rel)}]->(b){_set('r', props, cols[2:])} "
            "RETURN count(r) AS written")


def create_nodes(node: NodeType, props: Sequence[str]) -> str:
    """Neo4j: create a batch of nodes (row = key, then ``props``); for a label with no nodes.

    The unique constraint on the key makes a repeated key fail rather than duplicate.
    """
    source, cols = _rows("neo4j", 1 + len(props))
    return (f"{source} CREATE {_node('n', node.label, node.key, cols[0])}"
            f"{_set('n', props, cols[1:])} RETURN count(n) AS written")


def node_ids(node: NodeType) -> str:
    """Neo4j: the internal ids of the nodes with keys ``$keys``, as two parallel lists.

    One record with two lists: the driver builds a record per row, which costs more than
    the lookup itself on large key lists.
    """
    return (f"UNWIND $keys AS k MATCH {_node('n', node.label, node.key, 'k')} "
            "RETURN collect(k) AS keys, collect(id(n)) AS ids")


def write_edges_by_id(edge: EdgeType, props: Sequence[str], create: bool) -> str:
    """Neo4j: write a batch of edges whose rows hold the end nodes' internal ids.

    Row = source id, target id, then ``props``. The ends are found by id (a direct record
    lookup, far cheaper than a key index seek) and checked for their label. ``create``
    creates the edges (a fresh load of pairs known to be new), else they are merged.
    """
    source, cols = _rows("neo4j", 2 + len(props))
    verb = "CREATE" if create else "MERGE"
    return (f"{source} MATCH (a:{quote(edge.src)}) WHERE id(a) = {cols[0]} "
            f"MATCH (b:{quote(edge.dst)}) WHERE id(b) = {cols[1]} "
            f"{verb} (a)-[r:{quote(edge.rel)}]->(b){_set('r', props, cols[2:])} "
            "RETURN count(r) AS written")


def edges_from_ids(edge: EdgeType, props: Sequence[str]) -> str:
    """Neo4j: the edges of the type leaving the nodes whose internal ids are ``$ids``.

    One record: ``rows``, a list of [source id, target id, then ``props``] (nulls kept).
    """
    values = "".join(f", r.{quote(p)}" for p in props)
    return (f"UNWIND $ids AS i MATCH (a:{quote(edge.src)}) WHERE id(a) = i "
            f"MATCH (a)-[r:{quote(edge.rel)}]->(b:{quote(edge.dst)}) "
            f"RETURN collect([id(a), id(b){values}]) AS rows")


def count_edges_from(edge: EdgeType) -> str:
    """Neo4j: edges of the type leaving nodes of the source label (from the count store).

    Zero means no edge of this kind exists; the count may include edges of the same type
    to other labels, which only makes a load take the merging path.
    """
    return f"MATCH (:{quote(edge.src)})-[r:{quote(edge.rel)}]->() RETURN count(r) AS n"


# Deletes on Neo4j commit every DELETE_BATCH rows (``CALL { WITH ... } IN TRANSACTIONS``,
# the form every Neo4j 5 accepts), so that a large delete fits the transaction memory.
DELETE_BATCH = 5_000


def _each(var: str, match: str, action: str, dialect: str) -> str:
    if dialect == "neo4j":
        return (f"MATCH {match} CALL {{ WITH {var} {action} }} "
                f"IN TRANSACTIONS OF {DELETE_BATCH} ROWS")
    _rows(dialect, 0)  # checks the dialect
    return f"MATCH {match} {action}"


def delete_nodes(node: NodeType, dialect: str) -> str:
    """Delete every node of a label with its edges."""
    return _each("n", _node("n", node.label), "DETACH DELETE n", dialect)


def delete_edges(edge: EdgeType, dialect: str) -> str:
    """Delete every edge of a type."""
    match = f"{_node('a', edge.src)}-[r:{quote(edge.rel)}]->{_node('b', edge.dst)}"
    return _each("r", match, "DELETE r", dialect)


def clear_property(node: NodeType, prop: str, dialect: str) -> str:
    """Set a property to null on every node of a label."""
    return _each("n", _node("n", node.label), f"SET n.{quote(prop)} = NULL", dialect)


# -- schema -----------------------------------------------------------------------------


def unique_constraint(node: NodeType) -> str:
    """Neo4j: the unique constraint on a label's key."""
    name = f"{node.label.lower()}_{node.key}_unique"
    return (f"CREATE CONSTRAINT {quote(name)} IF NOT EXISTS FOR (n:{quote(node.label)}) "
            f"REQUIRE n.{quote(node.key)} IS UNIQUE")


def property_index(label: str, prop: str) -> str:
    """Neo4j: a range index on a property that cohort filters start from."""
    name = f"{label.lower()}_{prop}_index"
    return (f"CREATE INDEX {quote(name)} IF NOT EXISTS FOR (n:{quote(label)}) "
            f"ON (n.{quote(prop)})")


def node_table(node: NodeType, extra: dict[str, str] | None = None) -> str:
    """LadybugDB: the node table of a label (its key is the primary key)."""
    props = {**node.properties, **(extra or {})}
    columns = ", ".join(f"{quote(p)} {t}" for p, t in props.items())
    return (f"CREATE NODE TABLE IF NOT EXISTS {quote(node.label)}"
            f"({columns}, PRIMARY KEY ({quote(node.key)}))")


def rel_table(edges: Sequence[EdgeType]) -> str:
    """LadybugDB: one relationship table for all the edge types that share a name."""
    rel = edges[0].rel
    if any(e.rel != rel or e.properties != edges[0].properties for e in edges):
        raise ValueError(f"edge types of {rel} differ in name or properties")
    parts = [f"FROM {quote(e.src)} TO {quote(e.dst)}" for e in edges]
    parts += [f"{quote(p)} {t}" for p, t in edges[0].properties.items()]
    return f"CREATE REL TABLE IF NOT EXISTS {quote(rel)}({', '.join(parts)})"


def add_property(label: str, prop: str, type_: str) -> str:
    """LadybugDB: add a column (a record field) to a node table."""
    return f"ALTER TABLE {quote(label)} ADD IF NOT EXISTS {quote(prop)} {type_}"


def table_info(label: str) -> str:
    """LadybugDB: the columns of a table, in order, with their types."""
    return f"CALL table_info('{label}') RETURN name, type"


def copy_nodes(node: NodeType) -> str:
    """LadybugDB: bulk-load an Arrow table whose columns are the table's, in order."""
    return f"COPY {quote(node.label)} FROM $rows"


def copy_edges(edge: EdgeType) -> str:
    """LadybugDB: bulk-load edges: source key, target key, then the properties in order."""
    return f"COPY {quote(edge.rel)} FROM $rows (from='{edge.src}', to='{edge.dst}')"


def patient_property_types() -> str:
    """Neo4j: every property name on patients with the value types it holds."""
    return ("MATCH (p:Patient) UNWIND keys(p) AS name "
            "RETURN name, collect(DISTINCT valueType(p[name])) AS types")


# -- reads ------------------------------------------------------------------------------


def count_nodes(node: NodeType) -> str:
    return f"MATCH {_node('n', node.label)} RETURN count(n) AS n"


def count_edges(edge: EdgeType) -> str:
    return (f"MATCH {_node('a', edge.src)}-[r:{quote(edge.rel)}]->{_node('b', edge.dst)} "
            "RETURN count(r) AS n")


def read_nodes(node: NodeType, props: Sequence[str]) -> str:
    """Every node of a label with the given properties, ordered by key."""
    cols = ", ".join(f"n.{quote(p)} AS {quote(p)}" for p in props)
    return f"MATCH {_node('n', node.label)} RETURN {cols} ORDER BY {quote(node.key)}"


def read_edges(edge: EdgeType) -> str:
    """Every edge of a type: ``src``, ``dst`` keys and its properties, ordered."""
    src, dst = NODES[edge.src], NODES[edge.dst]
    cols = "".join(f", r.{quote(p)} AS {quote(p)}" for p in edge.properties)
    return (f"MATCH {_node('a', edge.src)}-[r:{quote(edge.rel)}]->{_node('b', edge.dst)} "
            f"RETURN a.{quote(src.key)} AS src, b.{quote(dst.key)} AS dst{cols} "
            "ORDER BY src, dst")


def _where(patient_var: str, patient_where: Sequence[str], lesion_where: Sequence[str]) -> str:
    """The WHERE clause: the patient's conditions, and one lesion of it meeting all of its."""
    conditions = list(patient_where)
    if lesion_where:
        # No labels on the inner nodes: HAS_STUDY and HAS_LESION only ever join a study and a
        # lesion, and each label check is a store read per row on Neo4j.
        conditions.append(f"EXISTS {{ MATCH ({patient_var})-[:HAS_STUDY]->()"
                          f"-[:HAS_LESION]->(l) WHERE {' AND '.join(lesion_where)} }}")
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def similar_patients(patient_where: Sequence[str] = (),
                     lesion_where: Sequence[str] = ()) -> str:
    """The stored nearest neighbours ``q`` of patient ``$id`` passing the filters, best first.

    Parameters: ``$id``, ``$k`` and those of the conditions.
    """
    return ("MATCH (p:Patient {patient_id: $id})-[s:SIMILAR_TO]->(q:Patient)"
            f"{_where('q', patient_where, lesion_where)} "
            "RETURN q.patient_id AS patient_id, s.score AS score, s.`rank` AS `rank` "
            "ORDER BY score DESC, patient_id LIMIT $k")


def cohort(patient_where: Sequence[str] = (), lesion_where: Sequence[str] = ()) -> str:
    """The ids of patients ``p`` that pass the filters, as one list ``patient_ids``.

    One list rather than a row per patient: the Neo4j driver builds a record per row, and
    that, not the query, dominated the latency of a cohort of a few thousand patients.
    """
    return (f"MATCH (p:Patient){_where('p', patient_where, lesion_where)} "
            "RETURN collect(p.patient_id) AS patient_ids")


def neighborhood(start: NodeType, target: NodeType, hops: int) -> str:
    """Nodes of ``target`` within ``hops`` edges (any type, any direction) of node ``$id``.

    Returns ``id`` and ``hops`` (the fewest edges to it); the start node is left out.
    """
    if not 1 <= int(hops) <= 3:
        raise ValueError(f"hops must be 1, 2 or 3, got {hops}")
    return (f"MATCH path = {_node('s', start.label, start.key, '$id')}-[*1..{int(hops)}]-"
            f"{_node('n', target.label)} WHERE n <> s "
            f"RETURN n.{quote(target.key)} AS id, min(length(path)) AS hops ORDER BY hops, id")


def exists(node: NodeType) -> str:
    return f"MATCH {_node('n', node.label, node.key, '$id')} RETURN count(n) AS n"
