"""Similar patients and similar lesions of a workspace (what ``patientgraph similar`` shows).

>>> similar_patients("W", "000042", k=5, weights={"imaging": 0.7, "records": 0.3})
... # doctest: +SKIP
   patient_id  score  imaging  records
0      000107  0.912    0.651    0.261
...

A patient score is ``sum_m w_m cos_m`` over the modalities (weights normalised to sum to
1); the columns ``imaging`` and ``records`` are the terms and add up to ``score``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from embed.fusion import (
    MODALITIES,
    contributions,
    resolve_weights,
    split_parts,
    weighted_query,
)
from embed.index import VectorIndex
from embed.index_stage import INDEX_DIR
from embed.outputs import PATIENTS, default_weights
from patientgraph.errors import InputError
from patientgraph.workspace import Workspace


def similar_patients(
    workspace: str | Path | Workspace,
    patient_id: str,
    k: int = 10,
    weights: Mapping[str, float] | None = None,
    among: Iterable[str] | None = None,
) -> pd.DataFrame:
    """The ``k`` patients most similar to ``patient_id``, best first.

    Columns: patient_id, score, and one contribution per modality (they sum to score).
    ``weights`` (e.g. ``{"imaging": 1, "records": 0}``) default to those the embed stage
    used; ``among`` restricts the answer to a cohort of patient ids.
    """
    ws = _workspace(workspace)
    _check_k(k)
    index = _load(ws, "patients")
    k = min(int(k), len(index))  # no more neighbours than there are patients
    patient_id = str(patient_id)
    _require(index, patient_id, "patient_id")
    w = resolve_weights(weights, _default_weights(ws))
    dims = _part_dims(ws)
    query = split_parts(index.vectors([patient_id])[0], dims)
    allowed = None if among is None else [str(p) for p in among if str(p) != patient_id]
    found: list[str] = []
    if allowed is None or allowed:
        weighted = weighted_query({m: q[None] for m, q in query.items()}, w)
        ids, _ = index.search(weighted, k + 1, among=allowed)
        found = [i for i in ids[0] if i is not None and i != patient_id][:k]
    candidates = split_parts(index.vectors(found), dims) if found else {
        m: np.zeros((0, d), np.float32) for m, d in dims.items()}
    parts = contributions(query, candidates, w)
    out = pd.DataFrame({"patient_id": found, "score": parts.sum(axis=1).to_numpy()})
    out = pd.concat([out, parts], axis=1)
    return out.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def similar_lesions(
    workspace: str | Path | Workspace,
    lesion_id: str,
    k: int = 10,
    among: Iterable[str] | None = None,
    exclude_same_patient: bool = False,
) -> pd.DataFrame:
    """The ``k`` lesions most similar to ``lesion_id`` (cosine), best first.

    Columns: lesion_id, score, patient_id, study_id. ``among`` restricts the answer to some
    lesion ids; ``exclude_same_patient`` leaves out the query patient's own lesions (mostly
    the same lesion at other studies).
    """
    ws = _workspace(workspace)
    _check_k(k)
    index = _load(ws, "lesions")
    k = min(int(k), len(index))  # no more neighbours than there are lesions
    lesion_id = str(lesion_id)
    _require(index, lesion_id, "lesion_id")
    cohort = ws.table("lesions").set_index("lesion_id")[["patient_id", "study_id"]]
    allowed = None if among is None else {str(i) for i in among}
    if exclude_same_patient:
        own = cohort.index[cohort["patient_id"] == cohort.loc[lesion_id, "patient_id"]]
        allowed = (set(index.ids) if allowed is None else allowed) - set(own)
    allowed = None if allowed is None else sorted(allowed - {lesion_id})
    edges = index.search_ids([lesion_id], k, among=allowed)
    out = pd.DataFrame({"lesion_id": edges["dst"].to_numpy(), "score": edges["score"].to_numpy()})
    return out.join(cohort, on="lesion_id").reset_index(drop=True)


def _workspace(workspace: str | Path | Workspace) -> Workspace:
    return Workspace.of(workspace)


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(None, f"k is {k!r}", "ask for k >= 1 neighbours")


def _load(ws: Workspace, name: str) -> VectorIndex:
    folder = ws.path(INDEX_DIR)
    path = folder / f"{name}.faiss"
    if not path.exists():
        raise InputError(ws.root, "the workspace has no vector index yet",
                         "run `patientgraph run --workspace W --stages embed,index` first")
    try:
        return _cached_index(str(folder), name, _stamp(path))
    except InputError:
        raise
    except (RuntimeError, ValueError, OSError, KeyError, TypeError) as exc:  # faiss: Runtime
        raise InputError(path, f"the vector index is damaged or foreign ({type(exc).__name__})",
                         ws.rerun_fix("index")) from None


def _stamp(path: Path) -> tuple[int, int]:
    """What changes when a file is replaced (the stages write by rename)."""
    st = path.stat()
    return st.st_mtime_ns, st.st_ino


# Queries from the explorer or a notebook repeat against the same files: keep the last few
# loaded, keyed by the file's stamp so a rebuilt index is read again.
@functools.lru_cache(maxsize=4)
def _cached_index(folder: str, name: str, stamp: tuple[int, int]) -> VectorIndex:
    return VectorIndex.load(Path(folder), name)


@functools.lru_cache(maxsize=4)
def _patient_meta(path: str, stamp: tuple[int, int]) -> tuple[dict[str, float], dict[str, int]]:
    frame = pd.read_parquet(path, columns=["patient_id", *MODALITIES])
    dims = {m: len(frame[m].iloc[0]) for m in MODALITIES}
    return default_weights(frame), dims


def _default_weights(ws: Workspace) -> dict[str, float]:
    path = ws.path(PATIENTS)
    return dict(_patient_meta(str(path), _stamp(path))[0])


def _require(index: VectorIndex, value: str, what: str) -> None:
    index.positions([value], what=what)


def _part_dims(ws: Workspace) -> dict[str, int]:
    path = ws.path(PATIENTS)
    return dict(_patient_meta(str(path), _stamp(path))[1])
