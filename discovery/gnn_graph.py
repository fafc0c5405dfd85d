"""The patient graph of the GNN risk model (:mod:`discovery.gnn`): nodes, features, edges.

Nodes are patients, edges the symmetrised patient kNN graph (``SIMILAR_TO``, weight = the
similarity score), node features the patient embedding (or its principal components) and the
record fields, encoded by the rule of :func:`graphdb.pyg.features`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data
from torch_geometric.utils import remove_self_loops, to_undirected

from graphdb.pyg import features
from graphdb.schema import PATIENT_OUTPUTS, property_type, record_properties
from patientgraph.errors import InputError

KNN = "index/patient_knn.parquet"
EMBEDDINGS = "embeddings/patients.parquet"
MIN_WEIGHT = 1e-6
"""Edge weights are similarity scores clipped below at this (a weighted mean needs w > 0)."""


# -- the graph ---------------------------------------------------------------------------------

def patient_graph(patients: pd.DataFrame, records: pd.DataFrame, embeddings: pd.DataFrame,
                  knn: pd.DataFrame | None, *, embedding_components: int | None = 16) -> Data:
    """The patient graph as a validated ``Data``: one node per row of ``patients``, in order.

    ``x`` holds the embedding block (``embedding_components`` principal components, each
    scaled to unit variance, or every embedding dimension standardised when ``None``), then
    the patient and record fields. ``feature_names`` names each column and
    ``feature_groups`` its source (``"embedding"`` or the field name). ``edge_index`` holds
    both directions of every kNN edge without self-loops; ``edge_weight`` is the score.
    """
    ids = _unique_ids(patients, "cohort/patients.parquet")
    _unique_ids(records, "cohort/records.parquet")
    embedding, names = _embedding_block(ids, embeddings, embedding_components)
    blocks, groups = [embedding], ["embedding"] * len(names)
    table = patients.drop(columns=[c for c in PATIENT_OUTPUTS if c in patients.columns])
    types = {c: property_type(table[c]) for c in table.columns if c != "patient_id"}
    types.update(record_properties(records))
    if len(records.columns) > 1:
        records = records.assign(patient_id=records["patient_id"].astype(str))
        table = table.assign(patient_id=ids).merge(records, on="patient_id", how="left")
    for field, type_ in types.items():
        block, field_names = features(table[[field]], {field: type_})
        blocks.append(block)
        names += field_names
        groups += [field] * len(field_names)
    x = np.concatenate(blocks, axis=1).astype(np.float32)
    edge_index, edge_weight = _edges(ids, knn)
    data = Data(x=torch.from_numpy(x), edge_index=edge_index, edge_weight=edge_weight,
                num_nodes=len(ids))
    data.patient_id = list(ids)
    data.feature_names = names
    data.feature_groups = groups
    data.validate(raise_on_error=True)
    return data


def _unique_ids(frame: pd.DataFrame, file: str) -> pd.Index:
    if "patient_id" not in frame.columns:
        raise InputError(file, "there is no patient_id column", "add the patient_id column",
                         column="patient_id")
    ids = pd.Index(frame["patient_id"].astype(str))
    if ids.has_duplicates:
        rows = np.flatnonzero(ids.duplicated())
        raise InputError(file, f"patient {ids[rows[0]]!r} appears more than once",
                         "keep one row per patient", row=int(rows[0]), column="patient_id",
                         more=len(rows) - 1)
    return ids


def _embedding_block(ids: pd.Index, embeddings: pd.DataFrame,
                     components: int | None) -> tuple[np.ndarray, list[str]]:
    """Embedding columns (standardised or PCA), 0 plus an indicator where a patient has none."""
    emb_ids = _unique_ids(embeddings, EMBEDDINGS)
    rows = emb_ids.get_indexer(ids)
    present = rows >= 0
    if not present.any():
        raise InputError(EMBEDDINGS, "no patient of the cohort has an embedding",
                         "run the embed stage for this cohort", column="embedding")
    matrix = np.stack(embeddings["embedding"].to_numpy()[rows[present]]).astype(np.float64)
    centred = matrix - matrix.mean(axis=0)
    if components is not None and components < matrix.shape[1]:
        # PCA from the (dim x dim) covariance: far cheaper than an SVD of the rows. Each
        # component's sign is fixed so that its largest loading is positive.
        values, vectors = np.linalg.eigh(centred.T @ centred)
        vt = vectors[:, np.argsort(values)[::-1][:components]].T
        vt *= np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])[:, None]
        centred = centred @ vt.T
        names = [f"embedding_pc{i + 1}" for i in range(centred.shape[1])]
    else:
        names = [f"embedding_{i}" for i in range(centred.shape[1])]
    sd = centred.std(axis=0)
    block = np.zeros((len(ids), centred.shape[1]), np.float64)
    block[present] = centred / np.where(sd > 0, sd, 1.0)
    if not present.all():
        block = np.column_stack([block, ~present])
        names.append("embedding_missing")
    return block.astype(np.float32), names


def _edges(ids: pd.Index, knn: pd.DataFrame | None) -> tuple[torch.Tensor, torch.Tensor]:
    if knn is None:
        raise InputError(KNN, "there is no patient kNN graph, which the GNN risk model needs",
                         "run the index stage before the discover stage")
    for column in ("src", "dst", "score"):
        if column not in knn.columns:
            raise InputError(KNN, f"there is no {column} column", "rerun the index stage",
                             column=column)
    src = ids.get_indexer(knn["src"].astype(str))
    dst = ids.get_indexer(knn["dst"].astype(str))
    bad = np.flatnonzero((src < 0) | (dst < 0))
    if bad.size:
        raise InputError(KNN, "an edge names a patient that is not in the cohort",
                         "rerun the index stage after the embed stage", row=int(bad[0]),
                         column="src" if src[bad[0]] < 0 else "dst", more=bad.size - 1)
    score = knn["score"].to_numpy(dtype=np.float32, copy=True)
    if not np.isfinite(score).all():
        raise InputError(KNN, "a similarity score is not a finite number",
                         "rerun the index stage", row=int(np.flatnonzero(~np.isfinite(score))[0]),
                         column="score")
    edge_index = torch.as_tensor(np.stack([src, dst]), dtype=torch.long)
    weight = torch.as_tensor(np.maximum(score, MIN_WEIGHT))
    edge_index, weight = remove_self_loops(edge_index, weight)
    return to_undirected(edge_index, weight, num_nodes=len(ids), reduce="max")
