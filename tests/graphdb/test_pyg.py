"""HeteroData from frames: the feature rule and edge indices on a hand-built graph."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from graphdb.pyg import features, hetero_data
from graphdb.schema import PATIENT


def test_features_standardise_one_hot_and_flag_missing():
    frame = pd.DataFrame({"age": [40.0, 60.0, None], "sex": ["F", None, "M"],
                          "coarse_type": pd.array([4, None, 8], dtype="Int64")})
    x, names = features(frame, {"age": "DOUBLE", "sex": "STRING", "coarse_type": "INT64"})
    assert names == ["age", "age_missing", "sex=F", "sex=M", "sex_missing",
                     *[f"coarse_type_{c}" for c in range(1, 9)], "coarse_type_missing"]
    np.testing.assert_allclose(x[:, 0], [-1.0, 1.0, 0.0])
    np.testing.assert_array_equal(x[:, 1], [0, 0, 1])
    np.testing.assert_array_equal(x[:, 2:5], [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    assert x[0, names.index("coarse_type_4")] == 1
    np.testing.assert_array_equal(x[:, -1], [0, 1, 0])


def _graph():
    nodes = {
        "Patient": pd.DataFrame({"patient_id": ["p1", "p2"], "sex": ["F", "M"],
                                 "age": [50.0, 70.0], "risk": [0.1, 0.9]}),
        "Study": pd.DataFrame({"study_id": ["s1", "s2"], "day": [0.0, 0.0]}),
        "Lesion": pd.DataFrame({"lesion_id": ["l1", "l2", "l3"],
                                "coarse_type": pd.array([1, 2, None], dtype="Int64"),
                                "long_mm": [10.0, 20.0, 30.0]}),
    }
    edges = {
        "Patient-HAS_STUDY->Study": pd.DataFrame({"src": ["p1", "p2"], "dst": ["s1", "s2"]}),
        "Study-HAS_LESION->Lesion": pd.DataFrame({"src": ["s1", "s1", "s2"],
                                                  "dst": ["l1", "l2", "l3"]}),
        "Lesion-SIMILAR_TO->Lesion": pd.DataFrame({"src": ["l1"], "dst": ["l3"],
                                                   "score": [0.7], "rank": [1]}),
        "Patient-SIMILAR_TO->Patient": pd.DataFrame({"src": ["p2"], "dst": ["p1"],
                                                     "score": [0.5], "rank": [1]}),
    }
    return nodes, edges


def test_hetero_data_indices_and_ids():
    nodes, edges = _graph()
    data = hetero_data(nodes, edges, {**PATIENT.properties})
    assert data["patient"].patient_id == ["p1", "p2"]
    assert data["study", "has_lesion", "lesion"].edge_index.tolist() == [[0, 0, 1], [0, 1, 2]]
    assert data["patient", "similar_to", "patient"].edge_index.tolist() == [[1], [0]]
    assert data["lesion", "similar_to", "lesion"].edge_attr.tolist() == [[pytest.approx(0.7)]]
    assert "risk" not in data["patient"].feature_names
    assert data.validate()


def test_an_edge_to_an_unread_node_is_a_bug():
    nodes, edges = _graph()
    edges["Study-HAS_LESION->Lesion"].loc[0, "dst"] = "ghost"
    with pytest.raises(ValueError, match="not among the nodes"):
        hetero_data(nodes, edges, {**PATIENT.properties})
