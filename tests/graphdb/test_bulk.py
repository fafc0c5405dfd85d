"""The Neo4j bulk import (graphdb.bulk) against the real local server.

An imported graph is the same graph as one loaded through UNWIND: the same counts, the
same properties on every node and edge, the same answers to similar_patients and cohort.
Where the import does not apply (a database with data, a server that is not ours, a small
load by default, frames the importer cannot take) the load goes through UNWIND.
"""

from __future__ import annotations

import stat
import tempfile

import pandas as pd
import pytest

from graphdb import bulk, open_store
from graphdb.synthetic import synthetic_cohort
from tests.graphdb.conftest import expected_stats

FILTERS = [None, {"sex": "F"}, {"coarse_type": [4, 5], "age": {"min": 50}},
           {"coarse_type": 2, "sex": "M"}]


def _write_graph(store, cohort):
    knn = {"lesion": cohort["lesion_knn"], "patient": cohort["patient_knn"]}
    return store.write_graph(cohort["patients"], cohort["studies"], cohort["lesions"],
                             cohort["records"], knn)


def _snapshot(store, cohort) -> dict:
    """Everything the graph holds of the load, in a comparable form."""
    nodes = {}
    for label, key in (("Patient", "patient_id"), ("Study", "study_id"),
                       ("Lesion", "lesion_id")):
        out = store._read(f"MATCH (n:{label}) RETURN n.{key} AS k, properties(n) AS p "
                          "ORDER BY k", {})
        nodes[label] = dict(zip(out["k"], out["p"], strict=True))
    edges = {}
    for rel, src, dst in (("HAS_STUDY", "Patient", "Study"), ("HAS_LESION", "Study", "Lesion"),
                          ("SIMILAR_TO", "Lesion", "Lesion"),
                          ("SIMILAR_TO", "Patient", "Patient")):
        key = {"Patient": "patient_id", "Study": "study_id", "Lesion": "lesion_id"}
        out = store._read(f"MATCH (a:{src})-[r:{rel}]->(b:{dst}) RETURN a.{key[src]} AS a, "
                          f"b.{key[dst]} AS b, properties(r) AS p ORDER BY a, b", {})
        edges[f"{src}-{rel}->{dst}"] = list(zip(out["a"], out["b"], out["p"], strict=True))
    ids = cohort["patients"]["patient_id"].iloc[:5]
    similar = [store.similar_patients(i, k=5).to_dict("list") for i in ids]
    cohorts = [store.cohort(f) for f in FILTERS]
    return {"stats": store.stats(), "nodes": nodes, "edges": edges, "similar": similar,
            "cohorts": cohorts, "types": store.patient_types()}


def test_import_gives_the_graph_of_unwind(neo4j_server, cohort):
    with open_store(neo4j_server.uri, bulk_import=True,
                    server_home=neo4j_server.home) as store:
        store.clear()
        imported_counts = _write_graph(store, cohort)
        assert store.load_path[0] == "import"
        imported = _snapshot(store, cohort)
        indexes = store._read("SHOW INDEXES YIELD name, state WHERE name ENDS WITH '_unique' "
                              "OR name ENDS WITH '_index' RETURN collect(state) AS s", {})
        assert set(indexes["s"][0]) == {"ONLINE"} and len(indexes["s"][0]) == 9

        store.clear()
        store.bulk_import = False
        unwind_counts = _write_graph(store, cohort)
        assert store.load_path == ("unwind", "bulk_import=False")
        assert imported_counts == unwind_counts
        assert imported == _snapshot(store, cohort)
    assert imported["stats"] == expected_stats(cohort)
    assert all(imported["cohorts"]) and all(s["patient_id"] for s in imported["similar"])


def test_import_leaves_no_files(neo4j_server, cohort, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with open_store(neo4j_server.uri, bulk_import=True,
                    server_home=neo4j_server.home) as store:
        store.clear()
        _write_graph(store, cohort)
        assert store.load_path[0] == "import"
    assert list(tmp_path.iterdir()) == []


def test_not_empty_database_loads_through_unwind(neo4j_server, cohort):
    small = synthetic_cohort(5, seed=1)
    with open_store(neo4j_server.uri, bulk_import=True,
                    server_home=neo4j_server.home) as store:
        store.clear()
        store.write_cohort(small["patients"], small["studies"], small["lesions"],
                           small["records"])
        _write_graph(store, cohort)
        assert store.load_path == ("unwind", "the database is not empty")
        after = store.stats()
    ids = set(small["patients"]["patient_id"]) | set(cohort["patients"]["patient_id"])
    assert after["nodes"]["Patient"] == len(ids)  # merged with what was there
    assert after["edges"]["Lesion-SIMILAR_TO->Lesion"] >= len(cohort["lesion_knn"]) - 1


def test_server_not_ours_loads_through_unwind(neo4j_server, cohort, tmp_path):
    with open_store(neo4j_server.uri, bulk_import=True, server_home=tmp_path) as store:
        store.clear()
        _write_graph(store, cohort)
        assert store.load_path[0] == "unwind"
        assert "not the one graphdb.server runs" in store.load_path[1]
        assert store.stats() == expected_stats(cohort)


def test_small_load_by_default_loads_through_unwind(neo4j_server, cohort):
    with open_store(neo4j_server.uri, server_home=neo4j_server.home) as store:
        store.clear()
        _write_graph(store, cohort)
        assert store.load_path[0] == "unwind" and "fewer than" in store.load_path[1]
        assert store.stats() == expected_stats(cohort)


@pytest.mark.parametrize(("uri", "database", "why"), [
    ("bolt://10.1.2.3:7687", None, "not a local one"),
    ("neo4j+s://127.0.0.1:7687", None, "not a local one"),
    ("bolt://127.0.0.1:1", None, "not the one graphdb.server runs"),
])
def test_reason_not_to_import(uri, database, why, tmp_path):
    assert why in bulk.reason_not_to_import(uri, database, tmp_path, 0)


def test_other_database_or_data_is_not_imported(neo4j_server):
    home = neo4j_server.home
    assert bulk.reason_not_to_import(neo4j_server.uri, None, home, 0) is None
    assert "default one" in bulk.reason_not_to_import(neo4j_server.uri, "other", home, 0)
    assert "not empty" in bulk.reason_not_to_import(neo4j_server.uri, None, home, 3)


def test_plan_refuses_what_the_importer_cannot_take(cohort):
    knn = {"lesion": cohort["lesion_knn"]}
    ok = bulk.plan(cohort["patients"], cohort["studies"], cohort["lesions"],
                   cohort["records"], knn)
    assert isinstance(ok, bulk.Plan) and ok.counts()["lesion_edges"] > 0
    records = cohort["records"].rename(columns={cohort["records"].columns[1]: "a:b"})
    assert "CSV header" in bulk.plan(cohort["patients"], cohort["studies"],
                                     cohort["lesions"], records, knn)
    dangling = cohort["lesion_knn"].copy()
    dangling.loc[0, "dst"] = "no-such-lesion"
    assert "point at nodes" in bulk.plan(cohort["patients"], cohort["studies"],
                                         cohort["lesions"], cohort["records"],
                                         {"lesion": dangling})


def test_csv_files_are_private_and_typed(cohort, tmp_path):
    load = bulk.plan(cohort["patients"], cohort["studies"], cohort["lesions"],
                     cohort["records"], {"patient": cohort["patient_knn"]})
    nodes, rels = bulk.write_files(load, tmp_path)
    assert len(nodes) == 3 and len(rels) == 3
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    header = (tmp_path / "Lesion.header.csv").read_text().strip().split(",")
    assert header[0] == "lesion_id:ID(Lesion)" and "coarse_type:long" in header
    assert "long_mm:double" in header
    rows = pd.read_csv(tmp_path / "edges2.csv", header=None)
    assert len(rows) == load.counts()["patient_edges"]
