"""The discover stage on a small workspace: the files the design names, the graph, reruns."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from discovery import load_results, stage
from graphdb import open_store, resolve_target
from patientgraph.errors import InputError
from patientgraph.workspace import Workspace

DESIGN_COLUMNS = {
    "clusters": ["lesion_id", "cluster", "probability", "x", "y"],
    "tracks": ["track_id", "lesion_id", "patient_id", "study_id", "day", "long_mm"],
    "biomarkers": ["candidate", "family", "hr", "ci_low", "ci_high", "p", "q", "n", "events"],
    "risk": ["patient_id", "risk", "risk_cox"],
}


@pytest.fixture
def discovered_copy(discovered, tmp_path) -> Workspace:
    shutil.copytree(discovered.root, tmp_path / "ws")
    return Workspace(tmp_path / "ws")


def test_writes_the_design_files(discovered):
    results = load_results(discovered)
    lesions = discovered.table("lesions")
    patients = discovered.table("patients")
    for name, columns in DESIGN_COLUMNS.items():
        frame = getattr(results, name)
        assert list(frame.columns[:len(columns)]) == columns, name
    assert sorted(results.clusters["lesion_id"]) == sorted(lesions["lesion_id"])
    assert sorted(results.tracks["lesion_id"]) == sorted(lesions["lesion_id"])
    assert sorted(results.risk["patient_id"]) == sorted(patients["patient_id"])
    q = results.biomarkers["q"].to_numpy()
    p = results.biomarkers["p"].to_numpy()
    ranked = pd.DataFrame({"q": q, "p": p}).dropna()
    assert ranked.equals(ranked.sort_values(["q", "p"], kind="stable"))
    assert {"c_index_gnn", "c_index_cox"} <= set(results.metrics["gnn"])


def test_results_are_in_the_graph(discovered):
    results = load_results(discovered)
    with open_store(resolve_target(discovered.root), read_only=True) as store:
        n_clusters = store.query("MATCH (c:Cluster) RETURN count(c) AS n")["n"].iloc[0]
        members = store.query("MATCH (:Lesion)-[r:IN_CLUSTER]->(:Cluster) "
                              "RETURN count(r) AS n")["n"].iloc[0]
        biomarkers = store.query("MATCH (b:Biomarker) RETURN count(b) AS n")["n"].iloc[0]
        same = store.query("MATCH (:Lesion)-[r:SAME_LESION]->(:Lesion) "
                           "RETURN count(r) AS n")["n"].iloc[0]
        risk = store.query("MATCH (p:Patient) WHERE p.risk IS NOT NULL "
                           "RETURN count(p) AS n")["n"].iloc[0]
    clusters = results.clusters
    assert n_clusters == clusters.loc[clusters["cluster"] >= 0, "cluster"].nunique()
    assert members == int((clusters["cluster"] >= 0).sum())
    assert biomarkers == len(results.biomarkers)
    tracks = results.tracks
    assert same == len(tracks) - tracks["track_id"].nunique()  # consecutive pairs per track
    assert risk == len(results.risk)


def test_rerun_is_skipped_until_something_changes(discovered_copy):
    ws = discovered_copy
    assert stage.run(ws)["skipped"] is True
    summary = stage.run(ws, config={"scan": {"alpha": 0.1}})
    assert summary["skipped"] is False
    assert ws.stage_record("discover")["config"]["scan"] == {"alpha": 0.1}


def test_a_rebuilt_graph_gets_the_results_again(discovered_copy):
    from graphdb import stage as graph_stage

    ws = discovered_copy
    graph_stage.run(ws, force=True)
    with open_store(resolve_target(ws.root), read_only=True) as store:
        assert store.query("MATCH (c:Cluster) RETURN count(c) AS n")["n"].iloc[0] == 0
    assert stage.run(ws)["skipped"] is False
    with open_store(resolve_target(ws.root), read_only=True) as store:
        assert store.query("MATCH (c:Cluster) RETURN count(c) AS n")["n"].iloc[0] > 0


def test_unknown_option_is_refused(discovered_copy):
    with pytest.raises(InputError, match="Did you mean 'clusters'"):
        stage.run(discovered_copy, config={"cluster": {}})
    with pytest.raises(InputError, match="must be an object"):
        stage.run(discovered_copy, config={"scan": 3})


def test_missing_embeddings_name_the_stage_to_run(discovered_copy):
    ws = discovered_copy
    (ws.path("embeddings") / "lesions.parquet").unlink()
    with pytest.raises(InputError, match="stages embed"):
        stage.run(ws, force=True)


def test_cli_bad_config_exits_2(discovered_copy):
    from tests.conftest import run_cli

    res = run_cli("run", "--workspace", discovered_copy.root, "--stages", "discover",
                  "--config", json.dumps({"discover": {"gnn": {"hiden": 8}}}))
    assert res.returncode == 2, res.stderr
    assert "hiden" in res.stderr and "Traceback" not in res.stderr
