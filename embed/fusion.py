"""Patient vectors: pooled lesion embeddings fused with the record embedding.

Each modality gives a patient a unit vector (or a zero vector when the patient has none:
no readable lesion, no record). With weights ``w`` normalised to sum to 1, the similarity of
two patients is ``score = sum_m w_m * cos_m``, and ``w_m * cos_m`` is what modality ``m``
contributed, so every score splits exactly into its parts. The fused vector
``concat_m(sqrt(w_m) * part_m)`` has that score as its inner product; an index over the
unweighted concatenation answers any weights by weighting the query instead
(:func:`weighted_query`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from patientgraph.errors import InputError, did_you_mean

MODALITIES = ("imaging", "records")


def pool_lesions(patient_ids: Sequence[str], lesion_patient: np.ndarray,
                 lesion_vectors: np.ndarray) -> np.ndarray:
    """Unit mean of each patient's lesion vectors (all studies), zero for none.

    Rows follow ``patient_ids``; ``lesion_patient`` is the patient of each lesion vector.
    """
    index = pd.Index(patient_ids)
    rows = index.get_indexer(lesion_patient)
    keep = rows >= 0
    sums = np.zeros((len(index), lesion_vectors.shape[1]), np.float64)
    np.add.at(sums, rows[keep], lesion_vectors[keep])
    return _unit_or_zero(sums)


def _unit_or_zero(vectors: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.where(norm > 0, vectors / np.where(norm > 0, norm, 1.0), 0.0).astype(np.float32)


def resolve_weights(weights: Mapping[str, float] | None,
                    default: Mapping[str, float]) -> dict[str, float]:
    """Weights for every modality, normalised to sum to 1.

    A modality left out of ``weights`` gets 0 (``None`` means ``default``). Unknown names,
    negative weights or all-zero weights are an :class:`InputError`.
    """
    weights = dict(default if weights is None else weights)
    for name, value in weights.items():
        if name not in MODALITIES:
            raise InputError(None, f"unknown modality {name!r}.{did_you_mean(name, MODALITIES)}",
                             f"weight the modalities {', '.join(MODALITIES)}")
        if not np.isfinite(value) or value < 0:
            raise InputError(None, f"the weight of {name!r} is {value!r}",
                             "give each modality a weight of 0 or more")
    total = sum(weights.values())
    if total <= 0:
        raise InputError(None, "every modality weight is 0",
                         "give at least one modality a positive weight")
    return {m: float(weights.get(m, 0.0)) / total for m in MODALITIES}


def concat_parts(parts: Mapping[str, np.ndarray]) -> np.ndarray:
    """The unweighted concatenation of the modality parts (what the patient index holds)."""
    return np.concatenate([parts[m] for m in MODALITIES], axis=1).astype(np.float32)


def fuse(parts: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Fused vectors ``concat(sqrt(w_m) * part_m)``: inner product = weighted score."""
    return np.concatenate([np.sqrt(weights[m]) * parts[m] for m in MODALITIES],
                          axis=1).astype(np.float32)


def weighted_query(parts: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """``concat(w_m * part_m)``: its inner product with :func:`concat_parts` is the score."""
    return np.concatenate([weights[m] * parts[m] for m in MODALITIES],
                          axis=1).astype(np.float32)


def contributions(query: Mapping[str, np.ndarray], candidates: Mapping[str, np.ndarray],
                  weights: Mapping[str, float]) -> pd.DataFrame:
    """Per-modality contributions ``w_m * <q_m, c_m>`` of one query ``(d_m,)`` against
    candidates ``(n, d_m)``; the columns sum to the score."""
    return pd.DataFrame({m: weights[m] * (candidates[m] @ query[m]) for m in MODALITIES})


def split_parts(vectors: np.ndarray, dims: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Cut concatenated vectors back into their modality parts."""
    out, start = {}, 0
    for m in MODALITIES:
        out[m] = vectors[..., start:start + dims[m]]
        start += dims[m]
    return out
