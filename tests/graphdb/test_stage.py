"""The ``graph`` stage on the ingested mini archive, with kNN tables built here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from graphdb import open_store, stage
from patientgraph.atomic import write_parquet
from patientgraph.errors import InputError
from patientgraph.workspace import Workspace
from tests.conftest import ingest_args, run_cli


@pytest.fixture
def ws(mini, tmp_path, monkeypatch) -> Workspace:
    """The ingested mini archive; NEO4J_URI unset, so the graph goes to W/graph."""
    monkeypatch.delenv("NEO4J_URI", raising=False)
    result = run_cli(*ingest_args(mini, tmp_path / "ws"))
    assert result.returncode == 0, result.stderr
    return Workspace(tmp_path / "ws")


def knn(ids: np.ndarray, vectors: np.ndarray, k: int) -> pd.DataFrame:
    """Exact cosine kNN (self excluded), as the index stage writes it."""
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    rows = [(ids[i], ids[j], float(sim[i, j]), r + 1)
            for i in range(len(ids)) for r, j in enumerate(order[i])]
    return pd.DataFrame(rows, columns=["src", "dst", "score", "rank"])


def write_knn(ws: Workspace, k: int = 2) -> None:
    lesions = ws.table("lesions")
    features = lesions[["loc_x", "loc_y", "loc_z", "long_mm"]].to_numpy(float)
    write_parquet(knn(lesions["lesion_id"].to_numpy(), features, k),
                  ws.path("index", "lesion_knn.parquet"))
    per_patient = lesions.groupby("patient_id")[["loc_x", "loc_y", "loc_z", "long_mm"]].mean()
    write_parquet(knn(per_patient.index.to_numpy(), per_patient.to_numpy(float), k),
                  ws.path("index", "patient_knn.parquet"))


def test_stage_loads_skips_and_reruns(ws):
    summary = stage.run(ws, {})
    assert summary == {"backend": "embedded", "patients": 3, "studies": 4, "lesions": 6,
                       "lesion_edges": 0, "patient_edges": 0, "skipped": False}
    assert ws.stage_record("graph")["outputs"] == ["graph"]
    assert stage.run(ws, {})["skipped"] is True
    write_knn(ws)  # the index stage ran: new inputs, so the graph is rebuilt
    summary = stage.run(ws, {})
    assert (summary["skipped"], summary["lesion_edges"], summary["patient_edges"]) == (
        False, 12, 6)
    assert stage.run(ws, {}, force=True)["skipped"] is False
    with open_store(ws.path("graph"), read_only=True) as store:
        assert store.stats()["edges"]["Lesion-SIMILAR_TO->Lesion"] == 12
        assert store.similar_patients("000001", k=1)["patient_id"].tolist() in (
            ["000002"], ["000003"])
        assert store.cohort({"ldh": {"min": 300}}) == ["000003"]


def test_stage_refuses_a_knn_table_older_than_the_cohort(ws):
    write_knn(ws)
    table = pd.read_parquet(ws.path("index", "lesion_knn.parquet"))
    table.loc[3, "dst"] = "999999_01_01_001_0"
    write_parquet(table, ws.path("index", "lesion_knn.parquet"))
    with pytest.raises(InputError, match="lesion_knn.parquet, row 3") as failure:
        stage.run(ws, {})
    assert "rebuild it" in str(failure.value)
    assert not ws.path("graph").exists()


def test_stage_will_not_replace_a_folder_that_is_not_a_graph(ws, tmp_path):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="holds no embedded graph"):
        stage.run(ws, {"graph": str(other)})
    assert (other / "keep.txt").read_text() == "mine"


def test_cli_runs_the_graph_stage(ws):
    result = run_cli("run", "--workspace", ws.root, "--stages", "graph")
    assert result.returncode == 0, result.stderr
    assert "graph: done" in result.stderr
