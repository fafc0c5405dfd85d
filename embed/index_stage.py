"""Pipeline stage ``index``: FAISS indexes of lesions and patients, and their kNN graphs.

Reads ``W/embeddings/{lesions,patients}.parquet``; writes into ``W/index/`` (one atomic
swap of the folder):

* ``lesions.faiss`` / ``.ids.parquet`` / ``.json``: the lesion embeddings;
* ``patients.*``: the unweighted concatenation of each patient's modality parts, so that
  a query weighted by any modality weights scores ``sum_m w_m cos_m``
  (:mod:`embed.fusion`);
* ``lesion_knn.parquet`` and ``patient_knn.parquet``: src, dst, score (cosine, or the
  weighted score at the default weights for patients), rank (1..k), the graph stage's input.

Options (``config``): ``k`` (10), ``lesion_factory`` / ``patient_factory`` (FAISS factory
strings; default chosen by size, see :func:`embed.index.auto_factory`), ``ef_search``,
``ef_construction``, ``device`` for the kNN graph (``auto``: exact on CUDA).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embed.fusion import MODALITIES, concat_parts, weighted_query
from embed.index import VectorIndex
from embed.outputs import LESIONS, PATIENTS, default_weights
from patientgraph.atomic import atomic_dir
from patientgraph.errors import InputError
from patientgraph.options import merge_options
from patientgraph.workspace import Workspace, file_sha256, holding_lock

STAGE = "index"
INDEX_DIR = "index"
LESION_KNN = "lesion_knn.parquet"
PATIENT_KNN = "patient_knn.parquet"
DEFAULTS: dict[str, Any] = {
    "k": 10,
    "lesion_factory": None,
    "patient_factory": None,
    "ef_search": 128,
    "ef_construction": 80,
    "device": "auto",
}

Progress = Callable[[int, int], None]


@holding_lock
def run(
    workspace: str | Path | Workspace,
    config: Mapping[str, Any] | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Build both indexes and kNN graphs; skipped when the embeddings and config are the
    same as last time."""
    ws = Workspace.of(workspace)
    cfg = _config(config)
    stage = ws.start_stage(STAGE, cfg, _inputs(ws))
    if (last := stage.skip(force)) is not None:
        return last

    lesions = ws.read_parquet(LESIONS, writer="embed", columns=["lesion_id", "embedding"])
    patients = ws.read_parquet(PATIENTS, writer="embed", columns=["patient_id", *MODALITIES])
    lesion_index = _build(lesions["lesion_id"], _matrix(lesions["embedding"]),
                          cfg["lesion_factory"], cfg, progress)
    parts = {m: _matrix(patients[m]) for m in MODALITIES}
    patient_index = _build(patients["patient_id"], concat_parts(parts), cfg["patient_factory"],
                           cfg, progress)
    queries = weighted_query(parts, default_weights(patients))
    k = int(cfg["k"])
    ws.begin_stage(STAGE)
    with atomic_dir(ws.path(INDEX_DIR)) as tmp:
        lesion_index.save(tmp, "lesions")
        patient_index.save(tmp, "patients")
        lesion_index.knn_graph(k, device=cfg["device"], progress=progress).to_parquet(
            tmp / LESION_KNN, index=False)
        patient_index.knn_graph(k, queries=queries, device=cfg["device"],
                                progress=progress).to_parquet(tmp / PATIENT_KNN, index=False)
    summary = {
        "lesion_factory": lesion_index.factory, "patient_factory": patient_index.factory,
        "lesions": len(lesion_index), "patients": len(patient_index), "k": k,
    }
    return stage.finish([INDEX_DIR], summary)


def _config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    return merge_options(DEFAULTS, config, unknown="unknown option index.{key}",
                         fix="choose from")


def _inputs(ws: Workspace) -> dict[str, str]:
    paths = {"lesions": ws.path(LESIONS), "patients": ws.path(PATIENTS)}
    for path in paths.values():
        if not path.exists():
            raise InputError(ws.root, f"the workspace has no {path.relative_to(ws.root)}",
                             "run the embed stage first: `patientgraph run --workspace W "
                             "--stages embed,index`")
    return {name: file_sha256(path) for name, path in paths.items()}


def _matrix(column: pd.Series) -> np.ndarray:
    return np.stack(column.to_numpy()).astype(np.float32)


def _build(ids: pd.Series, vectors: np.ndarray, factory: str | None, cfg: Mapping[str, Any],
           progress: Progress | None) -> VectorIndex:
    return VectorIndex.build(ids.astype(str).tolist(), vectors, factory=factory,
                             ef_construction=int(cfg["ef_construction"]),
                             ef_search=int(cfg["ef_search"]), progress=progress)
