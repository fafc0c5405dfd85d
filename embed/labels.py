"""The weak labels a real archive offers the lesion encoder, and the split by patient.

* Coarse type, where a reader gave one (in DeepLesion only the validation and test splits
  have types) and the row is not flagged ``noisy``.
* Location (normalised x, y, z) and size (log long and short diameters), where known.
* The same lesion in the patient's next study: DeepLesion does not link lesions across
  studies, so pairs are mined, by an optimal assignment on location between consecutive
  studies, with a distance limit (:func:`mine_same_lesion_pairs`).

Splits are by patient, never by lesion or slice: a patient's lesions are all train, all
validation or all held out (:func:`split_patients`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from embed.crops import LOCATION

TRAIN, VALIDATION, HOLDOUT = "train", "validation", "holdout"
_Z_WEIGHT = 1.5
"""loc_z spans the body (~600 mm), x and y the field of view (~350 mm): weigh z up."""


def type_labels(lesions: pd.DataFrame) -> np.ndarray:
    """Coarse type per lesion (1..8), -1 where unknown or flagged possibly noisy."""
    types = lesions["coarse_type"].astype("Int64").fillna(-1).to_numpy(dtype=np.int64)
    noisy = lesions["noisy"].fillna(False).to_numpy(dtype=bool)
    return np.where(noisy, -1, types)


def split_patients(
    lesions: pd.DataFrame,
    *,
    holdout_split: int | None = 3,
    validation_share: float = 0.3,
    seed: int = 0,
) -> pd.Series:
    """The role of each patient: ``train``, ``validation`` or ``holdout``.

    Patients with any lesion in ``holdout_split`` are held out. Validation is
    ``validation_share`` of the other patients that have a typed lesion (or of all other
    patients, if none has), chosen by a seeded shuffle: retrieval on them decides early
    stopping.
    """
    patients = pd.Index(sorted(lesions["patient_id"].astype(str).unique()))
    role = pd.Series(TRAIN, index=patients, name="role")
    if holdout_split is not None:
        split = lesions["split"].astype("Int64")
        held = lesions.loc[(split == holdout_split).fillna(False).to_numpy(), "patient_id"]
        role[role.index.isin(held.astype(str))] = HOLDOUT
    typed = lesions.loc[type_labels(lesions) >= 0, "patient_id"].astype(str)
    pool = role.index[(role == TRAIN) & role.index.isin(typed)]
    if len(pool) == 0:
        pool = role.index[role == TRAIN]
    n_validation = int(round(validation_share * len(pool)))
    if 0 < n_validation == len(pool):
        n_validation -= 1  # keep at least one labelled patient to train on
    chosen = np.random.default_rng(seed).permutation(len(pool))[:n_validation]
    role[pool[chosen]] = VALIDATION
    return role


def mine_same_lesion_pairs(
    lesions: pd.DataFrame, studies: pd.DataFrame, max_distance: float = 0.06
) -> pd.DataFrame:
    """Likely same-lesion pairs between each patient's consecutive studies.

    Returns row positions ``a`` (earlier study) and ``b`` (later study) of ``lesions`` and
    their location ``distance``. Within each pair of consecutive studies lesions are
    matched one-to-one by an optimal assignment on normalised location; matches farther
    than ``max_distance`` are dropped (new or vanished lesions).
    """
    table = lesions.reset_index(drop=True)
    order = studies.assign(day=studies["day"].fillna(-1.0)).sort_values(
        ["patient_id", "day", "study_index"])
    rank = pd.Series(order.groupby("patient_id").cumcount().to_numpy(),
                     index=order["study_id"].to_numpy())
    loc = table[list(LOCATION)].to_numpy(dtype=float) * np.array([1.0, 1.0, _Z_WEIGHT])
    study_rank = table["study_id"].map(rank).to_numpy()
    pairs = []
    for _, rows in table.groupby("patient_id", sort=False).indices.items():
        pairs.extend(_match_consecutive(rows, study_rank[rows], loc, max_distance))
    return pd.DataFrame(pairs, columns=["a", "b", "distance"]).astype(
        {"a": "int64", "b": "int64", "distance": float})


def _match_consecutive(rows: np.ndarray, ranks: np.ndarray, loc: np.ndarray,
                       max_distance: float) -> list[tuple[int, int, float]]:
    out = []
    for r in np.unique(ranks)[:-1]:
        before, after = rows[ranks == r], rows[ranks == r + 1]
        if len(after) == 0:
            continue
        dist = np.linalg.norm(loc[before][:, None] - loc[after][None], axis=-1)
        dist = np.nan_to_num(dist, nan=np.inf)
        i, j = linear_sum_assignment(np.minimum(dist, 1e6))
        keep = dist[i, j] <= max_distance
        out.extend(zip(before[i[keep]], after[j[keep]], dist[i, j][keep], strict=True))
    return out


def tracks(n_lesions: int, pairs: pd.DataFrame) -> np.ndarray:
    """A track id per lesion (connected components of the pairs); -1 for unpaired."""
    if pairs.empty:
        return np.full(n_lesions, -1, np.int64)
    a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n_lesions, n_lesions))
    _, component = connected_components(graph, directed=False)
    paired = np.zeros(n_lesions, bool)
    paired[a] = paired[b] = True
    return np.where(paired, component, -1).astype(np.int64)


def location_size_targets(lesions: pd.DataFrame) -> np.ndarray:
    """``(n, 5)`` loc_x, loc_y, loc_z, log long_mm, log short_mm; NaN where unknown.

    Not yet standardised (see :func:`standardise`).
    """
    loc = lesions[list(LOCATION)].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        size = np.log(lesions[["long_mm", "short_mm"]].to_numpy(dtype=float))
    size[~np.isfinite(size)] = np.nan
    return np.column_stack([loc, size]).astype(np.float32)


def standardise(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Centre and scale each column by the mean and sd of ``reference`` (NaN-aware)."""
    mean = np.nanmean(reference, axis=0)
    sd = np.nanstd(reference, axis=0)
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
    return ((values - np.nan_to_num(mean)) / sd).astype(np.float32)
