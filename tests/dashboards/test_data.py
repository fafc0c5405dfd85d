"""What the explorer reads from a workspace, and the shared read-only graph."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from dashboards.data import ExplorerData, graph_target, stage_rows, track_growth
from graphdb.errors import WriteRefusedError
from patientgraph.errors import InputError
from patientgraph.workspace import Workspace


@pytest.fixture(scope="module")
def data(workspace):
    loaded = ExplorerData.load(workspace.root)
    yield loaded
    loaded.graph.close()


def test_tables_describe_the_cohort(data, workspace):
    patients, lesions = workspace.table("patients"), workspace.table("lesions")
    assert sorted(data.patient_table.index) == sorted(patients["patient_id"])
    assert data.patient_table["n_lesions"].sum() == len(lesions)
    assert data.patient_table["n_studies"].sum() == len(workspace.table("studies"))
    assert {"time_days", "event", "ldh"} <= set(data.patient_table.columns)
    assert len(data.lesion_table) == len(lesions)
    assert data.lesion_table["day"].notna().all()
    typed = data.lesion_table["coarse_type"].notna()
    assert (data.lesion_table.loc[~typed, "type"] == "unlabelled").all()
    assert "ldh" in data.numeric_record_fields and "smoking" not in data.numeric_record_fields


def test_discover_results_join_the_lesions(data):
    assert data.has("clusters") and data.has("biomarkers")
    assert {"cluster", "x", "y", "track_id", "growth_per_100d"} <= set(data.lesion_table)
    assert data.clusters() == sorted(data.discovery["clusters"]["cluster"].unique())


def test_without_discover_results_the_pages_know(workspace, tmp_path):
    shutil.copytree(workspace.root, tmp_path / "ws")
    shutil.rmtree(tmp_path / "ws" / "discovery", ignore_errors=True)
    data = ExplorerData.load(tmp_path / "ws")
    assert not data.has("clusters")
    assert "cluster" not in data.lesion_table and data.clusters() == []


def test_a_folder_that_is_no_workspace_is_refused(tmp_path):
    with pytest.raises(InputError, match="not an ingested PatientGraph workspace"):
        ExplorerData.load(tmp_path)


def test_graph_target_follows_the_manifest(workspace):
    assert graph_target(workspace, None) == str(workspace.root / "graph")
    assert graph_target(workspace, "neo4j://db:7687") == "neo4j://db:7687"
    assert graph_target(Workspace(workspace.root / "nowhere"), None) is None


def test_the_graph_is_read_only_and_shared_by_threads(data):
    count = "MATCH (p:Patient) RETURN count(p) AS n"
    n_patients = len(data.patient_table)

    def read(_):
        return int(data.graph.run(lambda store: store.query(count))["n"].iloc[0])

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(read, range(64))) == {n_patients}
    with pytest.raises(WriteRefusedError):
        data.graph.run(lambda store: store.query("CREATE (:Patient {patient_id: 'x'})"))
    assert read(0) == n_patients


def test_track_growth_is_the_least_squares_slope_of_log_size():
    tracks = pd.DataFrame({"track_id": ["a", "a", "a", "b", "c", "c"],
                           "day": [0.0, 100.0, 200.0, 0.0, 0.0, 50.0],
                           "long_mm": [10.0, 10 * np.e, 10 * np.e ** 2, 5.0, 8.0, 4.0]})
    growth = track_growth(tracks).set_index("track_id")["growth_per_100d"]
    assert growth["a"] == pytest.approx(1.0)
    assert np.isnan(growth["b"])
    assert growth["c"] == pytest.approx(100 * np.log(0.5) / 50)


def test_stage_rows_summarise_the_manifest(data):
    rows = stage_rows(data.manifest)
    assert rows["stage"].tolist()[:4] == ["ingest", "embed", "index", "graph"]
    assert rows["seconds"].notna().all()
