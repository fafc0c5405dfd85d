"""The embed benchmark's label-ceiling cohort: every training row typed from truth.json."""

from __future__ import annotations

import json

import pandas as pd

from benchmarks.bench_embed import _type_training_rows
from patientgraph import synth


def test_training_rows_get_their_true_types_and_nothing_else_changes(tmp_path):
    synth.generate(tmp_path, n_patients=12, seed=3, image_size=128, images=False)
    truth = json.loads((tmp_path / "truth.json").read_text())
    before = pd.read_csv(tmp_path / "DL_info.csv")
    _type_training_rows(tmp_path / "DL_info.csv", truth)
    after = pd.read_csv(tmp_path / "DL_info.csv")

    train = before["Train_Val_Test"] == 1
    assert train.any() and (~train).any()
    assert (before.loc[train, "Coarse_lesion_type"] == -1).all()  # untyped, as in DeepLesion
    stems = before["File_name"].str.removesuffix(".png")
    ids = stems + "_" + before.groupby("File_name").cumcount().astype(str)
    expected = [truth["lesions"][i]["true_type"] for i in ids[train]]
    assert after.loc[train, "Coarse_lesion_type"].tolist() == expected
    assert set(expected) <= set(range(1, 9))
    pd.testing.assert_frame_equal(after.loc[~train], before.loc[~train])
    pd.testing.assert_frame_equal(after.drop(columns="Coarse_lesion_type"),
                                  before.drop(columns="Coarse_lesion_type"))
