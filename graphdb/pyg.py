"""The graph as a ``torch_geometric`` HeteroData for the GNN (pure: frames in, data out).

Node types ``patient``, ``study`` and ``lesion``; each has ``x`` (float32 features), the
ids in row order (``patient_id``, ...), and ``feature_names``. Edge types
``(patient, has_study, study)``, ``(study, has_lesion, lesion)`` and the two
``similar_to`` with ``edge_attr = [score]``. Features, by a fixed rule:

- numeric properties: standardised (mean 0, sd 1 over known values), never log-transformed
  (``GRAPH_FEATURE_SKEW`` in :mod:`patientgraph.encoding`, which says why the record
  encoder and the survival scan do log skewed fields); a missing value is 0 with a
  ``<name>_missing`` indicator column, added only when some value is missing;
- text properties (sex, categorical records): one column per value seen, plus
  ``<name>_missing`` when some value is missing;
- ``coarse_type``: one column per lesion type (1..8) plus ``coarse_type_missing``;
- results written back to patients (``risk``, ``risk_cox``) are never features.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import HeteroData

from graphdb.schema import (
    HAS_LESION,
    HAS_STUDY,
    LESION,
    LESION_OUTPUTS,
    LESION_SIMILAR,
    NUMERIC,
    PATIENT,
    PATIENT_OUTPUTS,
    PATIENT_SIMILAR,
    STUDY,
    EdgeType,
    NodeType,
)
from patientgraph.encoding import GRAPH_FEATURE_SKEW, wants_log
from patientgraph.schema import COARSE_TYPES

NODE_TYPES = {"Patient": "patient", "Study": "study", "Lesion": "lesion"}
EDGE_TYPES = {
    HAS_STUDY.name: ("patient", "has_study", "study"),
    HAS_LESION.name: ("study", "has_lesion", "lesion"),
    LESION_SIMILAR.name: ("lesion", "similar_to", "lesion"),
    PATIENT_SIMILAR.name: ("patient", "similar_to", "patient"),
}
_NODE = {"Patient": PATIENT, "Study": STUDY, "Lesion": LESION}
_EDGE = {e.name: e for e in (HAS_STUDY, HAS_LESION, LESION_SIMILAR, PATIENT_SIMILAR)}


def features(frame: pd.DataFrame, types: Mapping[str, str]) -> tuple[np.ndarray, list[str]]:
    """The feature matrix of a node frame (see the module docstring) and its column names."""
    columns: list[np.ndarray] = []
    names: list[str] = []
    for name, type_ in types.items():
        if name not in frame.columns:
            continue
        col = frame[name]
        missing = col.isna().to_numpy()
        if name == "coarse_type":
            codes = pd.to_numeric(col, errors="coerce").to_numpy()
            for code in COARSE_TYPES:
                columns.append((codes == code).astype(np.float32))
                names.append(f"coarse_type_{code}")
        elif type_ in NUMERIC:
            values = pd.to_numeric(col, errors="coerce").astype(float).to_numpy()
            known = values[~missing]
            if wants_log(known, GRAPH_FEATURE_SKEW):  # never: see patientgraph.encoding
                values, known = np.log(values), np.log(known)
            mean = known.mean() if known.size else 0.0
            sd = known.std() if known.size > 1 and known.std() > 0 else 1.0
            columns.append(np.where(missing, 0.0, (values - mean) / sd).astype(np.float32))
            names.append(name)
        else:
            for value in sorted(col.dropna().astype(str).unique()):
                columns.append((col.astype(str).to_numpy() == value) & ~missing)
                names.append(f"{name}={value}")
        if missing.any() or name == "coarse_type":
            columns.append(missing.astype(np.float32))
            names.append(f"{name}_missing")
    if not columns:
        return np.zeros((len(frame), 0), dtype=np.float32), names
    return np.column_stack(columns).astype(np.float32), names


def _feature_types(node: NodeType, types: Mapping[str, str]) -> dict[str, str]:
    skip = {node.key, *LESION_OUTPUTS, *PATIENT_OUTPUTS}
    return {k: t for k, t in types.items() if k not in skip}


def _edge_index(frame: pd.DataFrame, src_ids: pd.Index, dst_ids: pd.Index) -> torch.Tensor:
    src = src_ids.get_indexer(frame["src"].astype(str))
    dst = dst_ids.get_indexer(frame["dst"].astype(str))
    if (src < 0).any() or (dst < 0).any():
        raise ValueError("an edge joins a node that is not among the nodes read")
    return torch.as_tensor(np.stack([src, dst]), dtype=torch.long)


def hetero_data(nodes: Mapping[str, pd.DataFrame], edges: Mapping[str, pd.DataFrame],
                patient_types: Mapping[str, str]) -> HeteroData:
    """Build and validate the HeteroData from node frames (by label) and edge frames."""
    data = HeteroData()
    ids: dict[str, pd.Index] = {}
    for label, frame in nodes.items():
        node = _NODE[label]
        types = patient_types if node is PATIENT else node.properties
        x, names = features(frame, _feature_types(node, types))
        kind = NODE_TYPES[label]
        ids[label] = pd.Index(frame[node.key].astype(str))
        data[kind].x = torch.from_numpy(x)
        data[kind].num_nodes = len(frame)
        data[kind].feature_names = names
        setattr(data[kind], node.key, list(ids[label]))
    for name, frame in edges.items():
        edge: EdgeType = _EDGE[name]
        index = _edge_index(frame, ids[edge.src], ids[edge.dst])
        store = data[EDGE_TYPES[name]]
        store.edge_index = index
        if "score" in edge.properties:
            score = frame["score"].to_numpy(dtype=np.float32, copy=True)
            store.edge_attr = torch.as_tensor(score, dtype=torch.float32).view(-1, 1)
    data.validate(raise_on_error=True)
    return data
