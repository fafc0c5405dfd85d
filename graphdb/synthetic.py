"""Synthetic graph inputs at any scale, for the contract tests and the benchmarks.

Cohort tables with the columns of the workspace (patients, studies, lesions, records) and
kNN edge tables with the columns of ``W/index/*_knn.parquet``. Neighbours are the next
``k`` items in a random 1-D ordering (a cheap stand-in for a vector index with locality),
so that edges cost O(n k) to make at a million lesions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from patientgraph.schema import COARSE_TYPES

DEEPLESION = {"n_patients": 4427, "n_studies": 10594, "n_lesions": 32735}


def _split(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """``parts`` positive counts that add up to ``total``."""
    extra = rng.multinomial(total - parts, np.full(parts, 1.0 / parts))
    return extra + 1


def knn_edges(ids: np.ndarray, k: int, rng: np.random.Generator) -> pd.DataFrame:
    """Edges src -> its k neighbours along a random ordering, rank 1..k, score falling."""
    n = len(ids)
    k = min(k, n - 1)
    order = rng.permutation(n)
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    offsets = np.concatenate([np.arange(1, k // 2 + 1), -np.arange(1, k - k // 2 + 1)])
    nbr_pos = (pos[:, None] + offsets[None, :]) % n
    src = np.repeat(np.arange(n), k)
    dst = order[nbr_pos].ravel()
    rank = np.tile(np.arange(1, k + 1), n)
    score = 0.99 - 0.01 * rank + 0.005 * rng.random(n * k)
    return pd.DataFrame({"src": ids[src], "dst": ids[dst], "score": score, "rank": rank})


def synthetic_cohort(n_patients: int = 40, n_studies: int | None = None,
                     n_lesions: int | None = None, k: int = 10,
                     seed: int = 0) -> dict[str, pd.DataFrame]:
    """Tables patients, studies, lesions, records, lesion_knn and patient_knn.

    Defaults give ~2.4 studies and ~7.4 lesions per patient, as in DeepLesion; pass
    ``**DEEPLESION`` for its exact counts.
    """
    rng = np.random.default_rng(seed)
    n_studies = n_studies or int(round(n_patients * 2.4))
    n_lesions = n_lesions or int(round(n_patients * 7.4))
    patient_ids = np.array([f"{i:06d}" for i in range(1, n_patients + 1)], dtype=object)
    per_patient = _split(n_studies, n_patients, rng)
    study_patient = np.repeat(patient_ids, per_patient)
    study_index = np.concatenate([np.arange(1, c + 1) for c in per_patient])
    study_ids = np.array([f"{p}_{s:02d}" for p, s in zip(study_patient, study_index, strict=True)],
                         dtype=object)
    per_study = _split(n_lesions, n_studies, rng)
    lesion_study = np.repeat(np.arange(n_studies), per_study)
    lesion_index = np.concatenate([np.arange(c) for c in per_study])
    lesion_ids = np.array([f"{study_ids[s]}_{j}"
                           for s, j in zip(lesion_study, lesion_index, strict=True)], dtype=object)
    coarse = rng.integers(1, len(COARSE_TYPES) + 1, n_lesions)
    long_mm = np.round(rng.lognormal(3.0, 0.5, n_lesions), 1)
    patients = pd.DataFrame({
        "patient_id": patient_ids,
        "sex": rng.choice(np.array(["M", "F"], dtype=object), n_patients),
        "age": np.where(rng.random(n_patients) < 0.05, np.nan,
                        np.round(rng.uniform(20, 90, n_patients))),
    })
    studies = pd.DataFrame({
        "study_id": study_ids, "patient_id": study_patient,
        "study_index": study_index.astype("int64"),
        "day": (study_index - 1) * np.round(rng.uniform(30, 200, n_studies)),
    })
    lesions = pd.DataFrame({
        "lesion_id": lesion_ids, "patient_id": study_patient[lesion_study],
        "study_id": study_ids[lesion_study],
        "coarse_type": pd.array(np.where(rng.random(n_lesions) < 0.3, -1, coarse),
                                dtype="Int64").astype("Int64"),
        "long_mm": long_mm, "short_mm": np.round(long_mm * rng.uniform(0.4, 0.9, n_lesions), 1),
        "loc_x": rng.random(n_lesions), "loc_y": rng.random(n_lesions),
        "loc_z": rng.random(n_lesions),
    })
    lesions.loc[lesions["coarse_type"] == -1, "coarse_type"] = pd.NA
    records = pd.DataFrame({
        "patient_id": patient_ids,
        "ldh": np.where(rng.random(n_patients) < 0.2, np.nan,
                        np.round(rng.lognormal(5.4, 0.4, n_patients))),
        "smoking": rng.choice(np.array(["never", "former", "current", None], dtype=object),
                              n_patients),
    })
    return {
        "patients": patients, "studies": studies, "lesions": lesions, "records": records,
        "lesion_knn": knn_edges(lesion_ids, k, rng),
        "patient_knn": knn_edges(patient_ids, k, rng),
    }
