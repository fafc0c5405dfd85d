"""The record encoder: features with missingness indicators, self-supervised training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from embed.config import TabularConfig
from embed.tabular import RecordEncoder, RecordFeatures, standardised_raw


def _records(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    group = rng.integers(2, size=n)
    crp = np.exp(rng.normal(2 + 2 * group, 0.5))  # log-normal, skewed
    albumin = rng.normal(3.8 - 0.6 * group, 0.2)
    smoking = np.where(group == 1, "current", "never").astype(object)
    albumin[::7] = np.nan
    smoking[::5] = None
    return pd.DataFrame({"patient_id": [f"{i:06d}" for i in range(n)], "crp": crp,
                         "albumin": albumin, "smoking": smoking, "group": group})


def test_features_standardise_and_flag_missing_values_without_imputing():
    records = _records().drop(columns="group")
    features = RecordFeatures().fit(records)
    fields = {f.name: f for f in features.fields_}
    assert fields["crp"].log and not fields["albumin"].log
    assert fields["smoking"].categories == ("current", "never")
    values, observed, missing = features.transform(records)
    assert values.shape == (60, 4) and missing.shape == (60, 3)
    assert missing[0].tolist() == [0, 1, 1]  # row 0: albumin and smoking missing
    assert values[0, 1] == 0 and values[0, 2:].tolist() == [0, 0]
    assert not observed[0, 1] and observed[1].all()
    assert values[observed[:, 1], 1].mean() == pytest.approx(0, abs=1e-6)


def test_features_of_unseen_records():
    features = RecordFeatures().fit(_records().drop(columns="group"))
    new = pd.DataFrame({"patient_id": ["x"], "crp": [np.nan], "smoking": ["former"]})
    values, observed, missing = features.transform(new)  # albumin column absent
    assert missing.tolist() == [[1, 1, 0]]
    assert values[0, 2:].tolist() == [0, 0]  # an unseen category is all zero, not missing


def test_encoder_is_deterministic_and_groups_similar_patients():
    records = _records()
    config = TabularConfig(epochs=150, embedding_dim=8, hidden_dim=32, seed=1)
    a = RecordEncoder(config).fit(records.drop(columns="group"))
    b = RecordEncoder(config).fit(records.drop(columns="group"))
    za, zb = a.transform(records), b.transform(records)
    assert np.array_equal(za, zb)
    assert np.linalg.norm(za, axis=1) == pytest.approx(np.ones(len(za)), abs=1e-5)
    assert a.loss_history_[-1] < a.loss_history_[0]
    sims = za @ za.T
    same = records["group"].to_numpy()[:, None] == records["group"].to_numpy()[None, :]
    assert sims[same].mean() > sims[~same].mean() + 0.3


def test_encoder_state_round_trip(tmp_path):
    records = _records().drop(columns="group")
    encoder = RecordEncoder(TabularConfig(epochs=5, embedding_dim=4, hidden_dim=8)).fit(records)
    torch.save(encoder.state(), tmp_path / "record_encoder.pt")
    state = torch.load(tmp_path / "record_encoder.pt", weights_only=True)
    again = RecordEncoder.from_state(state)
    assert np.array_equal(again.transform(records), encoder.transform(records))


def test_standardised_raw_baseline_has_no_indicators_or_logs():
    records = _records().drop(columns="group")
    raw = standardised_raw(records)
    assert raw.shape == (60, 4)
    crp = records["crp"].to_numpy()
    assert raw[:, 0] == pytest.approx((crp - crp.mean()) / crp.std(), rel=1e-4)
