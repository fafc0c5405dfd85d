"""The index stage: indexes on disk and the kNN graphs the graph stage consumes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embed import index_stage, stage
from embed.fusion import MODALITIES
from embed.index import VectorIndex
from patientgraph.errors import InputError
from patientgraph.workspace import Workspace


def test_outputs(embedded):
    folder = embedded.path(index_stage.INDEX_DIR)
    lesions = VectorIndex.load(folder, "lesions")
    patients = VectorIndex.load(folder, "patients")
    assert lesions.factory == patients.factory == "Flat"  # small: exact
    assert len(lesions) == len(embedded.table("lesions"))
    for name, n in ((index_stage.LESION_KNN, len(lesions)),
                    (index_stage.PATIENT_KNN, len(patients))):
        graph = pd.read_parquet(folder / name)
        assert list(graph.columns) == ["src", "dst", "score", "rank"]
        assert (graph["src"] != graph["dst"]).all()
        assert graph.groupby("src")["rank"].apply(list).map(lambda r: r == [1, 2, 3, 4, 5]).all()
        assert graph["src"].nunique() == n
        assert (graph.groupby("src")["score"].diff().dropna() <= 1e-6).all()


def test_patient_graph_scores_are_the_fused_cosines(embedded):
    graph = pd.read_parquet(embedded.path(index_stage.INDEX_DIR, index_stage.PATIENT_KNN))
    patients = pd.read_parquet(embedded.path(stage.PATIENTS)).set_index("patient_id")
    fused = np.stack(patients["embedding"].to_numpy())
    row = patients.index.get_indexer(graph["src"])
    col = patients.index.get_indexer(graph["dst"])
    assert graph["score"].to_numpy() == pytest.approx((fused[row] * fused[col]).sum(1), abs=1e-5)
    assert set(MODALITIES) <= set(patients.columns)


def test_skip_force_and_factory_override(embedded_copy):
    assert index_stage.run(embedded_copy, config={"k": 5})["skipped"]
    summary = index_stage.run(embedded_copy, config={"k": 3, "lesion_factory": "HNSW16"})
    assert summary["lesion_factory"] == "HNSW16" and not summary["skipped"]
    graph = pd.read_parquet(embedded_copy.path("index", index_stage.LESION_KNN))
    assert graph["rank"].max() == 3


def test_bad_options_and_missing_embeddings(embedded_copy, tmp_path):
    with pytest.raises(InputError, match="Did you mean 'lesion_factory'"):
        index_stage.run(embedded_copy, config={"lesion_factry": "Flat"})
    with pytest.raises(InputError, match="run the embed stage first"):
        index_stage.run(Workspace(tmp_path / "empty"))
