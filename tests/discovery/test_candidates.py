"""Tests of discovery/candidates.py: the patients x candidates table of the survival scan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from discovery.candidates import (
    build_candidates,
    cluster_membership,
    embedding_components,
    first_study,
    imaging_at_first_study,
)
from patientgraph import ingest, synth
from patientgraph.deeplesion import _attach_days, normalize_patient_key, read_dl_info


def plan_cohort_tables(out: Path, n_patients: int, seed: int) -> tuple[dict, dict]:
    """A synthetic cohort's five tables and truth without rendering a single image.

    ``synth.generate`` renders every slice (the slow part); the survival tests need only the
    tables, so this plans the patients with the generator's own code, writes its CSVs and
    truth.json, and reads them with the ingest readers (the image check is what is skipped).
    """
    out.mkdir(parents=True, exist_ok=True)
    planned = [synth._plan_patient(seed, pid, 64) for pid in range(1, n_patients + 1)]
    synth._write_tables(out, planned, seed)
    patients, studies, lesions, _ = read_dl_info(out / "DL_info.csv")
    days, source = ingest.read_study_days(out / "studies.csv", normalize_patient_key)
    studies = _attach_days(studies, days, source)
    extra, _ = ingest.read_extras(out / "records.csv", out / "outcomes.csv",
                                  normalize_patient_key, time_col="time_days", event_col="event")
    tables = {"patients": patients, "studies": studies, "lesions": lesions, **extra}
    return tables, json.loads((out / "truth.json").read_text())


@pytest.fixture
def tiny():
    """Three patients: P1 two studies (first by day, not by index), P2 one, P3 no lesions."""
    patients = pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "sex": ["F", "M", None],
                             "age": [50.0, 61.0, np.nan]})
    studies = pd.DataFrame({"study_id": ["P1_01", "P1_02", "P2_01", "P3_01"],
                            "patient_id": ["P1", "P1", "P2", "P3"],
                            "study_index": [1, 2, 1, 1], "day": [30.0, 0.0, 0.0, 0.0]})
    lesions = pd.DataFrame({
        "lesion_id": ["a", "b", "c", "d", "e", "f"],
        "patient_id": ["P1", "P1", "P1", "P2", "P2", "P2"],
        "study_id": ["P1_01", "P1_02", "P1_02", "P2_01", "P2_01", "P2_01"],
        "long_mm": [99.0, 10.0, 20.0, 5.0, 6.0, 7.0],
    })
    records = pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "ldh": [200.0, np.nan, 300.0],
                            "smoking": ["never", "current", None], "age": [1.0, 2.0, 3.0]})
    outcomes = pd.DataFrame({"patient_id": ["P2", "P1"], "time_days": [100.0, 200.0],
                             "event": [1, 0]})
    clusters = pd.DataFrame({"lesion_id": ["a", "b", "c", "d", "e", "f"],
                             "cluster": [3, 3, -1, 0, 0, 3], "probability": 1.0,
                             "x": 0.0, "y": 0.0})
    growth = pd.DataFrame({"patient_id": ["P1"], "growth_rate": [0.01]})
    emb = pd.DataFrame({"patient_id": ["P1", "P2", "P3"],
                        "embedding": [np.array([1.0, 0, 0]), np.array([0, 1.0, 0]),
                                      np.array([0, 0, 1.0])]})
    return dict(patients=patients, records=records, outcomes=outcomes, lesions=lesions,
                studies=studies, clusters=clusters, patient_growth=growth,
                patient_embeddings=emb)


def test_first_study_is_the_earliest_day(tiny):
    first = first_study(tiny["studies"])
    assert first.to_dict() == {"P1": "P1_02", "P2": "P2_01", "P3": "P3_01"}


def test_imaging_counts_and_burden_at_first_study(tiny):
    img = imaging_at_first_study(tiny["lesions"], tiny["studies"])
    assert img.loc["P1", "lesion_count"] == 2 and img.loc["P1", "lesion_burden"] == 30.0
    assert img.loc["P2", "lesion_count"] == 3 and img.loc["P2", "lesion_burden"] == 18.0
    assert img.loc["P3", "lesion_count"] == 0 and np.isnan(img.loc["P3", "lesion_burden"])


@pytest.mark.parametrize("feature, p1, p2", [("share", 2 / 3, 1 / 3), ("any", 1.0, 1.0)])
def test_cluster_membership(tiny, feature, p1, p2):
    m = cluster_membership(tiny["lesions"], tiny["clusters"], feature)
    assert list(m.columns) == ["cluster_0", "cluster_3"]  # no column for noise (-1)
    assert m.loc["P1", "cluster_3"] == pytest.approx(p1)  # noise counts in the denominator
    assert m.loc["P2", "cluster_3"] == pytest.approx(p2)
    assert m.loc["P1", "cluster_0"] == 0.0
    assert "P3" not in m.index


def test_cluster_feature_checked(tiny):
    with pytest.raises(ValueError, match="share"):
        cluster_membership(tiny["lesions"], tiny["clusters"], "mean")


def test_build_candidates_table_and_families(tiny):
    table, families = build_candidates(**tiny, n_components=2)
    assert list(table["patient_id"]) == ["P1", "P2", "P3"]
    assert list(table.columns[:5]) == ["patient_id", "time_days", "event", "age", "sex"]
    p = table.set_index("patient_id")
    assert p.loc["P1", "time_days"] == 200.0 and p.loc["P2", "event"] == 1
    assert np.isnan(p.loc["P3", "time_days"])  # no outcome: left for the scan to count
    assert p.loc["P1", "age"] == 50.0 and p.loc["P2", "sex"] == "M"
    assert p.loc["P1", "lesion_burden"] == 30.0 and p.loc["P1", "growth_rate"] == 0.01
    assert np.isnan(p.loc["P2", "growth_rate"])
    assert p.loc["P2", "cluster_0"] == pytest.approx(2 / 3)
    assert p.loc["P3", "smoking"] is None or pd.isna(p.loc["P3", "smoking"])
    assert p.loc["P1", "record_age"] == 1.0  # a record field named like a column is renamed
    assert families == {
        "age": "record", "sex": "record", "lesion_count": "imaging",
        "lesion_burden": "imaging", "growth_rate": "imaging", "cluster_0": "cluster",
        "cluster_3": "cluster", "embedding_pc1": "embedding", "embedding_pc2": "embedding",
        "ldh": "record", "smoking": "record", "record_age": "record",
    }
    assert set(families) == set(table.columns) - {"patient_id", "time_days", "event"}


def test_build_candidates_without_optional_inputs(tiny):
    table, families = build_candidates(tiny["patients"], None, tiny["outcomes"],
                                       tiny["lesions"], tiny["studies"])
    assert set(families) == {"age", "sex", "lesion_count", "lesion_burden"}
    assert len(table) == 3


def test_embedding_components_match_pca_and_are_deterministic():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 8)) * np.arange(8, 0, -1)
    emb = pd.DataFrame({"patient_id": [f"{i:06d}" for i in range(40)], "embedding": list(X)})
    pcs = embedding_components(emb, n_components=3)
    ref = PCA(3).fit_transform(X)
    for k in range(3):  # the same components up to sign
        assert abs(np.corrcoef(pcs.iloc[:, k], ref[:, k])[0, 1]) == pytest.approx(1, abs=1e-9)
    shuffled = embedding_components(emb.sample(frac=1, random_state=1), n_components=3)
    np.testing.assert_allclose(shuffled.loc[pcs.index].to_numpy(), pcs.to_numpy(), atol=1e-9)
    assert list(embedding_components(emb.iloc[:3], n_components=5).columns) == [
        "embedding_pc1", "embedding_pc2"]  # at most n - 1 components


def test_candidates_of_a_synthetic_cohort_match_its_truth(tmp_path):
    tables, truth = plan_cohort_tables(tmp_path / "cohort", 40, seed=5)
    table, families = build_candidates(**tables)
    assert len(table) == 40 and table["patient_id"].is_unique
    true_burden = np.exp([truth["patients"][p]["covariates"]["lesion_burden"]
                          for p in table["patient_id"]])
    # Diameters are re-measured from the drawn RECIST end points: within a few percent.
    np.testing.assert_allclose(table["lesion_burden"], true_burden, rtol=0.1)
    assert np.corrcoef(table["lesion_burden"], true_burden)[0, 1] > 0.99
    true_sex = [truth["patients"][p]["sex"] for p in table["patient_id"]]
    assert list(table["sex"]) == true_sex
    for field in truth["decoys"]:
        assert families[field] == "record"
