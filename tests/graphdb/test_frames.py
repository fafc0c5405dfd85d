"""Workspace tables -> node and edge frames, on tiny hand-built tables."""

from __future__ import annotations

import pandas as pd
import pytest

from graphdb import frames
from graphdb.schema import LESION
from patientgraph.errors import InputError


def test_similarity_edges_drop_self_pairs_and_repeats():
    knn = pd.DataFrame({"src": ["a", "a", "a", "b"], "dst": ["a", "b", "b", "a"],
                        "score": [1.0, 0.9, 0.8, 0.9], "rank": [1, 2, 3, 1]})
    edges = frames.similarity_edges(knn)
    assert edges.to_dict("list") == {"src": ["a", "b"], "dst": ["b", "a"],
                                     "score": [0.9, 0.9], "rank": [2, 1]}


def test_similarity_edges_need_their_columns():
    with pytest.raises(InputError, match="lacks the column"):
        frames.similarity_edges(pd.DataFrame({"src": ["a"], "dst": ["b"]}))


def test_patients_carry_their_records():
    patients = pd.DataFrame({"patient_id": ["1", "2"], "sex": ["F", None], "age": [50.0, None]})
    records = pd.DataFrame({"patient_id": ["2"], "ldh": [300.0]})
    nodes = frames.patient_nodes(patients, records)
    assert list(nodes.columns) == ["patient_id", "sex", "age", "ldh"]
    assert nodes["ldh"].isna().tolist() == [True, False]


def test_clusters_leave_noise_out_of_cluster_nodes():
    clusters = pd.DataFrame({"lesion_id": ["l1", "l2", "l3"], "cluster": [0, 0, -1],
                             "probability": [0.9, 0.8, 0.0]})
    parts = frames.cluster_frames(clusters)
    assert parts["clusters"].to_dict("list") == {"cluster_id": [0], "size": [2]}
    assert parts["members"]["src"].tolist() == ["l1", "l2"]
    assert parts["lesions"]["cluster"].tolist() == [0, 0, -1]


def test_same_lesion_links_consecutive_sightings():
    tracks = pd.DataFrame({"track_id": [1, 1, 1, 2], "lesion_id": ["c", "a", "b", "d"],
                           "day": [200.0, 0.0, 90.0, 0.0]})
    edges = frames.same_lesion_edges(tracks)
    assert edges.to_dict("list") == {"src": ["a", "b"], "dst": ["b", "c"],
                                     "days": [90.0, 110.0]}


def test_biomarkers_describe_the_cluster_they_name():
    biomarkers = pd.DataFrame({"candidate": ["cluster 3", "ldh"], "family": ["cluster", "lab"],
                               "hr": [2.0, 1.1], "p": [0.01, 0.5], "q": [0.02, 0.5]})
    parts = frames.biomarker_frames(biomarkers)
    assert parts["describes"].to_dict("list") == {"src": ["cluster 3"], "dst": [3]}
    bad = biomarkers.assign(candidate=["cluster three", "ldh"])
    with pytest.raises(InputError, match="does not end in a cluster number"):
        frames.biomarker_frames(bad)


def test_forecast_updates_pivot_each_lesion_to_next_and_horizons():
    f = pd.DataFrame({
        "lesion_id": ["a", "a", "a", "b", "b"], "last_day": [10.0] * 3 + [0.0] * 2,
        "target_day": [40.0, 100.0, 190.0, 90.0, 180.0],
        "long_mm": [1.0, 2.0, 3.0, 4.0, 5.0], "long_mm_lo": [0.5] * 5,
        "long_mm_hi": [9.0] * 5, "method": ["m"] * 5})
    up = frames.forecast_updates(f).set_index("lesion_id")
    assert up.loc["a", "forecast_next_day"] == 40.0 and up.loc["a", "forecast_next_mm"] == 1.0
    assert up.loc["a", "forecast_90_mm"] == 2.0 and up.loc["a", "forecast_180_mm"] == 3.0
    assert pd.isna(up.loc["b", "forecast_next_mm"]) and up.loc["b", "forecast_90_mm"] == 4.0
    assert set(up.columns) <= set(LESION.properties) and up.index.is_unique
    with pytest.raises(InputError, match="target_day"):
        frames.forecast_updates(f.drop(columns=["target_day"]))
