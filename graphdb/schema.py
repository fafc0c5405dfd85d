"""The graph schema, identical on both backends (docs/design.md, "Graph schema").

Node and edge types with their typed properties. Patients also carry the record fields of
the cohort (``records.parquet``), whose names and types are only known at load time: see
:func:`record_properties`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from patientgraph.errors import InputError

STRING, DOUBLE, INT64, BOOLEAN = "STRING", "DOUBLE", "INT64", "BOOLEAN"
NUMERIC = (DOUBLE, INT64)


@dataclass(frozen=True)
class NodeType:
    """A node label, its unique key and its properties (name -> type, key first)."""

    label: str
    key: str
    properties: Mapping[str, str]


@dataclass(frozen=True)
class EdgeType:
    """A relationship type between two labels; ``name`` tells apart the two SIMILAR_TO."""

    rel: str
    src: str
    dst: str
    properties: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.src}-{self.rel}->{self.dst}"


PATIENT = NodeType("Patient", "patient_id", {
    "patient_id": STRING, "sex": STRING, "age": DOUBLE, "risk": DOUBLE, "risk_cox": DOUBLE,
})
STUDY = NodeType("Study", "study_id", {"study_id": STRING, "day": DOUBLE})
FORECAST_HORIZONS = (90, 180)
"""Days after a track's last study whose forecasts go onto its last Lesion (with "next")."""
FORECAST_PROPERTIES: dict[str, str] = {"forecast_method": STRING, "forecast_next_day": DOUBLE} | {
    f"forecast_{when}_{what}": DOUBLE
    for when in ("next", *map(str, FORECAST_HORIZONS)) for what in ("mm", "lo", "hi")
}
"""Growth forecast on the last Lesion of each track: the long diameter (mm) and its
interval at the patient's next study day (where known) and at each horizon."""
LESION = NodeType("Lesion", "lesion_id", {
    "lesion_id": STRING, "coarse_type": INT64, "long_mm": DOUBLE, "short_mm": DOUBLE,
    "loc_x": DOUBLE, "loc_y": DOUBLE, "loc_z": DOUBLE, "cluster": INT64,
    **FORECAST_PROPERTIES,
})
CLUSTER = NodeType("Cluster", "cluster_id", {"cluster_id": INT64, "size": INT64})
BIOMARKER = NodeType("Biomarker", "candidate", {
    "candidate": STRING, "family": STRING, "level": STRING, "hr": DOUBLE, "ci_low": DOUBLE,
    "ci_high": DOUBLE, "p": DOUBLE, "q": DOUBLE, "n": INT64, "events": INT64,
})
NODES: dict[str, NodeType] = {n.label: n for n in (PATIENT, STUDY, LESION, CLUSTER, BIOMARKER)}

_SIMILARITY = {"score": DOUBLE, "rank": INT64}
HAS_STUDY = EdgeType("HAS_STUDY", "Patient", "Study")
HAS_LESION = EdgeType("HAS_LESION", "Study", "Lesion")
LESION_SIMILAR = EdgeType("SIMILAR_TO", "Lesion", "Lesion", _SIMILARITY)
PATIENT_SIMILAR = EdgeType("SIMILAR_TO", "Patient", "Patient", _SIMILARITY)
IN_CLUSTER = EdgeType("IN_CLUSTER", "Lesion", "Cluster", {"probability": DOUBLE})
SAME_LESION = EdgeType("SAME_LESION", "Lesion", "Lesion", {"days": DOUBLE})
DESCRIBES = EdgeType("DESCRIBES", "Biomarker", "Cluster")
EDGES: dict[str, EdgeType] = {e.name: e for e in (
    HAS_STUDY, HAS_LESION, LESION_SIMILAR, PATIENT_SIMILAR, IN_CLUSTER, SAME_LESION, DESCRIBES,
)}

def edge_columns(edge: EdgeType) -> dict[str, str]:
    """The columns of an edge frame: ``src`` and ``dst`` (end-node keys), then properties."""
    src, dst = NODES[edge.src], NODES[edge.dst]
    return {"src": src.properties[src.key], "dst": dst.properties[dst.key], **edge.properties}


# Properties that results write onto patients and lesions; never used as model inputs
# (to_pyg).
PATIENT_OUTPUTS = ("risk", "risk_cox")
LESION_OUTPUTS = ("cluster", *FORECAST_PROPERTIES)


def schema_version() -> str:
    """A short hash of the node and edge types: a graph built under another one is rebuilt."""
    import hashlib
    import json

    blob = json.dumps({"nodes": {k: [n.key, n.properties] for k, n in NODES.items()},
                       "edges": {k: [e.src, e.dst, e.properties] for k, e in EDGES.items()}},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

_BAD_NAME = re.compile(r"[`\x00-\x1f]")


def property_type(series: pd.Series) -> str:
    """The graph type that holds a column: BOOLEAN, INT64, DOUBLE or STRING."""
    if pd.api.types.is_bool_dtype(series):
        return BOOLEAN
    if pd.api.types.is_integer_dtype(series):
        return INT64
    if pd.api.types.is_float_dtype(series):
        return DOUBLE
    return STRING


def record_properties(records: pd.DataFrame, source: str = "records.parquet") -> dict[str, str]:
    """The extra Patient properties of a records table (name -> type), checked.

    Every column but ``patient_id`` becomes a property. A name that an identifier cannot
    hold (a backtick or a control character), that starts with ``_`` (reserved by the
    embedded engine) or that clashes with a Patient property raises :class:`InputError`.
    """
    taken = {name.lower() for name in PATIENT.properties}
    out: dict[str, str] = {}
    for column in records.columns:
        if column == "patient_id":
            continue
        name = str(column)
        if not name or _BAD_NAME.search(name) or name.startswith("_"):
            raise InputError(source, f"the record field {name!r} cannot be a graph property name",
                             "rename the column to letters, digits, spaces and underscores, "
                             "not starting with '_', and ingest again", column=name)
        if name.lower() in taken:
            raise InputError(source, f"the record field {name!r} clashes with a Patient "
                             "property of the graph (names are compared ignoring case)",
                             "rename the column in the records file and ingest again",
                             column=name)
        taken.add(name.lower())
        out[name] = property_type(records[column])
    return out
