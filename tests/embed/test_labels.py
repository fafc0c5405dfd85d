"""Weak labels: type labels, the patient split and mined same-lesion pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embed.labels import (
    HOLDOUT,
    TRAIN,
    VALIDATION,
    location_size_targets,
    mine_same_lesion_pairs,
    split_patients,
    standardise,
    tracks,
    type_labels,
)


def _lesions() -> pd.DataFrame:
    # patient A: two lesions followed over two studies (the second study lists them swapped)
    # plus a new lesion; patient B: one study.
    rows = [
        ("A_1_0", "A", "A_1", 0.30, 0.40, 0.50, 4, False, 2),
        ("A_1_1", "A", "A_1", 0.70, 0.30, 0.20, 5, False, 2),
        ("A_2_0", "A", "A_2", 0.71, 0.31, 0.21, 5, True, 2),
        ("A_2_1", "A", "A_2", 0.31, 0.41, 0.49, None, False, 2),
        ("A_2_2", "A", "A_2", 0.50, 0.90, 0.90, None, False, 2),
        ("B_1_0", "B", "B_1", 0.50, 0.50, 0.50, None, False, 1),
        ("C_1_0", "C", "C_1", 0.50, 0.50, 0.50, 1, False, 3),
    ]
    df = pd.DataFrame(rows, columns=["lesion_id", "patient_id", "study_id", "loc_x", "loc_y",
                                     "loc_z", "coarse_type", "noisy", "split"])
    df["coarse_type"] = df["coarse_type"].astype("Int64")
    df["split"] = df["split"].astype("Int64")
    df["long_mm"] = [10.0, 20, 22, 11, 5, 8, 30]
    df["short_mm"] = [5.0, 10, 11, 6, 3, 4, np.nan]
    return df


def _studies() -> pd.DataFrame:
    return pd.DataFrame({"study_id": ["A_1", "A_2", "B_1", "C_1"],
                         "patient_id": ["A", "A", "B", "C"], "study_index": [1, 2, 1, 1],
                         "day": [0.0, 90.0, 0.0, 0.0]})


def test_type_labels_drop_noisy_rows():
    assert type_labels(_lesions()).tolist() == [4, 5, -1, -1, -1, -1, 1]


def test_split_is_by_patient_and_holds_out_the_test_split():
    role = split_patients(_lesions(), holdout_split=3, validation_share=0.0)
    assert role.to_dict() == {"A": TRAIN, "B": TRAIN, "C": HOLDOUT}
    role = split_patients(_lesions(), holdout_split=None, validation_share=0.5, seed=0)
    assert (role == VALIDATION).sum() == 1 and role["B"] == TRAIN  # B has no typed lesion


def test_split_keeps_a_labelled_patient_for_training():
    role = split_patients(_lesions(), holdout_split=3, validation_share=1.0)
    assert role["A"] == TRAIN  # the only typed training patient is not taken for validation


def test_mined_pairs_follow_location_not_row_order():
    pairs = mine_same_lesion_pairs(_lesions(), _studies(), max_distance=0.06)
    assert sorted(zip(pairs["a"], pairs["b"], strict=True)) == [(0, 3), (1, 2)]
    assert (pairs["distance"] < 0.06).all()
    track = tracks(7, pairs)
    assert track[0] == track[3] != track[1] == track[2]
    assert track[4] == track[5] == track[6] == -1


def test_mining_drops_matches_beyond_the_distance():
    assert mine_same_lesion_pairs(_lesions(), _studies(), max_distance=0.001).empty


def test_location_size_targets_and_standardise():
    targets = location_size_targets(_lesions())
    assert targets.shape == (7, 5)
    assert targets[0, 3] == pytest.approx(np.log(10.0))
    assert np.isnan(targets[6, 4])
    z = standardise(targets, targets)
    assert np.nanmean(z, axis=0) == pytest.approx(np.zeros(5), abs=1e-5)
