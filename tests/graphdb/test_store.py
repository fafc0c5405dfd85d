"""The GraphStore contract, run against both backends (embedded LadybugDB and a real Neo4j).

Every answer is checked against a pandas reference computed from the same frames, so the
two backends are held to the same answers.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pandas as pd
import pytest

from graphdb.errors import GraphQueryError, WriteRefusedError
from graphdb.frames import similarity_edges
from graphdb.store import GraphStore
from tests.graphdb.conftest import BACKENDS, expected_stats, load, open_backend

# -- pandas references -------------------------------------------------------------------


def _passes(values: pd.Series, condition) -> pd.Series:
    if isinstance(condition, dict):
        ok = values.notna()
        if condition.get("min") is not None:
            ok &= values >= condition["min"]
        if condition.get("max") is not None:
            ok &= values <= condition["max"]
        return ok.fillna(False).astype(bool)
    if isinstance(condition, list):
        return values.isin(condition) & values.notna()
    return (values == condition).fillna(False).astype(bool) & values.notna()


LESION_FIELDS = {"coarse_type", "cluster", "long_mm", "short_mm", "loc_x", "loc_y", "loc_z"}


def reference_cohort(cohort, filters, lesions=None) -> list[str]:
    patients = cohort["patients"].merge(cohort["records"], on="patient_id", how="left")
    lesions = cohort["lesions"] if lesions is None else lesions
    ok = pd.Series(True, index=patients.index)
    lesion_ok = pd.Series(True, index=lesions.index)
    for name, condition in filters.items():
        if name in LESION_FIELDS:
            lesion_ok &= _passes(lesions[name], condition)
        else:
            ok &= _passes(patients[name], condition)
    if any(name in LESION_FIELDS for name in filters):
        ok &= patients["patient_id"].isin(set(lesions.loc[lesion_ok, "patient_id"]))
    return sorted(patients.loc[ok, "patient_id"])


def reference_similar(cohort, patient_id, k, where=None) -> pd.DataFrame:
    edges = similarity_edges(cohort["patient_knn"])
    mine = edges[edges["src"] == patient_id]
    allowed = set(reference_cohort(cohort, where or {}))
    mine = mine[mine["dst"].isin(allowed)]
    mine = mine.sort_values(["score", "dst"], ascending=[False, True]).head(k)
    return pd.DataFrame({"patient_id": mine["dst"].to_numpy(), "score": mine["score"].to_numpy(),
                         "rank": mine["rank"].to_numpy()})


def reference_neighborhood(cohort, patient_id, hops) -> set[tuple[str, str, int]]:
    adjacency: dict[tuple, set] = {}

    def link(a, b):
        adjacency.setdefault(a, set()).add(b)
        adjacency.setdefault(b, set()).add(a)

    for s in cohort["studies"].itertuples():
        link(("Patient", s.patient_id), ("Study", s.study_id))
    for lesion in cohort["lesions"].itertuples():
        link(("Study", lesion.study_id), ("Lesion", lesion.lesion_id))
    for label, table in (("Lesion", "lesion_knn"), ("Patient", "patient_knn")):
        for e in similarity_edges(cohort[table]).itertuples():
            link((label, e.src), (label, e.dst))
    start = ("Patient", patient_id)
    seen, queue = {start: 0}, deque([start])
    while queue:
        node = queue.popleft()
        if seen[node] == hops:
            continue
        for nxt in adjacency.get(node, ()):
            if nxt not in seen:
                seen[nxt] = seen[node] + 1
                queue.append(nxt)
    return {(label, node_id, d) for (label, node_id), d in seen.items() if d > 0}


# -- the contract ------------------------------------------------------------------------


def test_load_counts_and_idempotent_rerun(store: GraphStore, cohort):
    load(store, cohort)
    assert store.stats() == expected_stats(cohort)
    load(store, cohort)  # a rerun merges: nothing is duplicated
    assert store.stats() == expected_stats(cohort)
    assert expected_stats(cohort)["nodes"]["Patient"] == 40


def test_record_fields_become_patient_properties(loaded):
    types = loaded.patient_types()
    assert types["ldh"] == "DOUBLE" and types["smoking"] == "STRING"
    out = loaded.query("MATCH (p:Patient) WHERE p.patient_id = $id RETURN p.ldh AS ldh, "
                       "p.smoking AS smoking, p.sex AS sex", {"id": "000002"})
    assert len(out) == 1


@pytest.mark.parametrize("where", [None, {"sex": "F"}, {"coarse_type": [4, 5]},
                                   {"age": {"min": 40}, "smoking": ["never", "former"]}])
def test_similar_patients_match_reference(loaded, cohort, where):
    for patient_id in ("000001", "000017", "000040"):
        got = loaded.similar_patients(patient_id, k=5, where=where)
        want = reference_similar(cohort, patient_id, 5, where)
        assert got["patient_id"].tolist() == want["patient_id"].tolist()
        np.testing.assert_allclose(got["score"], want["score"], rtol=1e-9)
        assert got["rank"].tolist() == want["rank"].tolist()


def test_similar_patients_of_unknown_patient(loaded):
    with pytest.raises(GraphQueryError, match="not in the graph"):
        loaded.similar_patients("no-such-patient")


@pytest.mark.parametrize("filters", [
    {},
    {"sex": "F"},
    {"age": {"min": 50, "max": 70}},
    {"coarse_type": [4, 5]},
    {"ldh": {"min": 250}},
    {"smoking": "never", "long_mm": {"min": 30}},
    {"sex": "M", "coarse_type": 1, "long_mm": {"max": 15}},
])
def test_cohort_matches_reference(loaded, cohort, filters):
    assert loaded.cohort(filters) == reference_cohort(cohort, filters)


def test_cohort_rejects_unknown_field_and_bad_values(loaded):
    with pytest.raises(GraphQueryError, match="Did you mean 'age'"):
        loaded.cohort({"agee": {"min": 3}})
    with pytest.raises(GraphQueryError, match="unknown filter field"):
        loaded.cohort({"age) DETACH DELETE (p": 1})
    with pytest.raises(GraphQueryError, match="DOUBLE values, not 'old'"):
        loaded.cohort({"age": "old"})
    with pytest.raises(GraphQueryError, match="no range"):
        loaded.cohort({"sex": {"min": "F"}})


@pytest.mark.parametrize("hops", [1, 2])
def test_neighborhood_matches_reference(loaded, cohort, hops):
    got = loaded.neighborhood("000005", hops)
    assert set(got.itertuples(index=False, name=None)) == reference_neighborhood(
        cohort, "000005", hops)


def test_to_pyg_shapes(loaded, cohort):
    data = loaded.to_pyg()
    assert data["patient"].num_nodes == 40
    assert data["lesion"].num_nodes == len(cohort["lesions"])
    assert data["patient"].patient_id == sorted(cohort["patients"]["patient_id"])
    assert data["patient", "has_study", "study"].edge_index.shape == (2, len(cohort["studies"]))
    sim = data["lesion", "similar_to", "lesion"]
    assert sim.edge_index.shape[1] == len(similarity_edges(cohort["lesion_knn"]))
    assert sim.edge_attr.shape == (sim.edge_index.shape[1], 1)
    for kind in ("patient", "study", "lesion"):
        x = data[kind].x
        assert x.shape[1] == len(data[kind].feature_names)
        assert bool(x.isfinite().all())
    assert "risk" not in data["patient"].feature_names
    assert data.validate()


@pytest.mark.parametrize("statement", [
    "CREATE (:Patient {patient_id: 'intruder'})",
    "MATCH (p:Patient) SET p.age = 1",
    "MATCH (p:Patient) DETACH DELETE p",
    "MERGE (:Patient {patient_id: 'intruder'})",
])
def test_query_refuses_writes(loaded, statement):
    before = loaded.stats()
    with pytest.raises(WriteRefusedError):
        loaded.query(statement)
    assert loaded.stats() == before
    assert loaded.query("MATCH (p:Patient) WHERE p.age = 1 RETURN count(p) AS n")["n"][0] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_only_store_refuses_every_write(backend, request, tmp_path, cohort):
    with open_backend(backend, request, tmp_path) as writer:
        load(writer, cohort)
        target = writer.target
    from graphdb import open_store

    with open_store(target, read_only=True) as reader:
        assert reader.stats()["nodes"]["Patient"] == 40
        with pytest.raises(WriteRefusedError, match="read-only"):
            reader.write_cohort(cohort["patients"], cohort["studies"], cohort["lesions"])
        with pytest.raises(WriteRefusedError):
            reader.clear()
        with pytest.raises(WriteRefusedError):
            reader.query("MATCH (p:Patient) DETACH DELETE p")
        assert reader.stats()["nodes"]["Patient"] == 40


def test_edges_to_missing_nodes_are_an_error(store, cohort):
    load(store, cohort)
    knn = pd.DataFrame({"src": ["000001"], "dst": ["ghost"], "score": [0.5], "rank": [1]})
    with pytest.raises(GraphQueryError, match="nodes the graph does not have"):
        store.write_similarity("patient", knn)


def _clusters(cohort, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lesions = cohort["lesions"]
    return pd.DataFrame({"lesion_id": lesions["lesion_id"],
                         "cluster": rng.integers(-1, 4, len(lesions)),
                         "probability": rng.random(len(lesions)),
                         "x": 0.0, "y": 0.0})


def test_clusters_replace_and_filter(store, cohort):
    load(store, cohort)
    loaded = store
    loaded.write_clusters(_clusters(cohort, 0))
    clusters = _clusters(cohort, 1)
    counts = loaded.write_clusters(clusters)  # replaces the first clustering
    members = clusters[clusters["cluster"] >= 0]
    assert counts == {"Cluster": members["cluster"].nunique(),
                      "Lesion-IN_CLUSTER->Cluster": len(members),
                      "Lesion.cluster": len(clusters)}
    stats = loaded.stats()
    assert stats["nodes"]["Cluster"] == members["cluster"].nunique()
    assert stats["edges"]["Lesion-IN_CLUSTER->Cluster"] == len(members)
    sizes = loaded.query("MATCH (c:Cluster) RETURN c.cluster_id AS id, c.size AS n "
                          "ORDER BY id")
    assert sizes["n"].tolist() == members.groupby("cluster").size().tolist()
    lesions = cohort["lesions"].assign(cluster=clusters["cluster"].to_numpy())
    for filters in ({"cluster": 2}, {"cluster": [0, 3], "sex": "F"}):
        assert loaded.cohort(filters) == reference_cohort(cohort, filters, lesions)


def test_tracks_biomarkers_and_risk(store, cohort):
    load(store, cohort)
    loaded = store
    lesions = cohort["lesions"].merge(cohort["studies"][["study_id", "day"]], on="study_id")
    lesions["track_id"] = (lesions["patient_id"] + "-"
                           + lesions["lesion_id"].str.rsplit("_", n=1).str[1])
    tracks = lesions[["track_id", "lesion_id", "patient_id", "study_id", "day", "long_mm"]]
    expected = int((tracks.groupby("track_id").size() - 1).sum())
    assert loaded.write_tracks(tracks) == expected
    assert loaded.write_tracks(tracks) == expected  # replaced, not added
    assert loaded.stats()["edges"]["Lesion-SAME_LESION->Lesion"] == expected

    loaded.write_clusters(_clusters(cohort, 2))
    biomarkers = pd.DataFrame({
        "candidate": ["cluster 1", "cluster 2", "ldh"], "family": ["cluster", "cluster", "record"],
        "hr": [1.8, 0.7, 1.1], "ci_low": [1.2, 0.5, 0.9], "ci_high": [2.5, 0.95, 1.3],
        "p": [0.001, 0.02, 0.4], "q": [0.003, 0.03, 0.4], "n": [40, 40, 32], "events": [20] * 3})
    assert loaded.write_biomarkers(biomarkers) == {"Biomarker": 3,
                                                   "Biomarker-DESCRIBES->Cluster": 2}
    described = loaded.query("MATCH (b:Biomarker)-[:DESCRIBES]->(c:Cluster) "
                             "RETURN b.candidate AS name, c.cluster_id AS id ORDER BY name")
    assert described["id"].tolist() == [1, 2]

    risk = pd.DataFrame({"patient_id": cohort["patients"]["patient_id"],
                         "risk": np.linspace(0, 1, 40), "risk_cox": np.linspace(1, 0, 40)})
    assert loaded.write_risk(risk) == 40
    top = loaded.query("MATCH (p:Patient) RETURN p.patient_id AS id ORDER BY p.risk DESC "
                       "LIMIT 1")
    assert top["id"][0] == "000040"
    with pytest.raises(GraphQueryError, match="not in the graph"):
        loaded.write_risk(pd.DataFrame({"patient_id": ["ghost"], "risk": [0.5]}))


def test_forecasts_go_on_each_tracks_last_lesion(store, cohort):
    load(store, cohort)
    last = cohort["lesions"].groupby("patient_id")["lesion_id"].last().iloc[:5]
    rows = []
    for i, lesion in enumerate(last):
        for target, mm in ((130.0, 10.0 + i), (100.0 + 90, 11.0 + i), (100.0 + 180, 12.0 + i)):
            rows.append({"track_id": f"T{i}", "lesion_id": lesion, "patient_id": "x",
                         "last_day": 100.0, "target_day": target, "long_mm": mm,
                         "long_mm_lo": mm - 2, "long_mm_hi": mm + 3, "method": "similarity"})
    forecasts = pd.DataFrame(rows)
    assert store.write_forecasts(forecasts) == 5
    got = store.query("MATCH (l:Lesion) WHERE l.forecast_90_mm IS NOT NULL RETURN "
                      "l.lesion_id AS id, l.forecast_next_day AS next_day, l.forecast_next_mm "
                      "AS next_mm, l.forecast_90_mm AS mm90, l.forecast_180_hi AS hi180, "
                      "l.forecast_method AS method ORDER BY id")
    expected = forecasts.assign(i=np.repeat(np.arange(5), 3)).sort_values("lesion_id")
    assert got["id"].tolist() == expected["lesion_id"].unique().tolist()
    order = [int(last.tolist().index(i)) for i in got["id"]]
    assert got["next_day"].tolist() == [130.0] * 5
    assert got["next_mm"].tolist() == [10.0 + i for i in order]
    assert got["mm90"].tolist() == [11.0 + i for i in order]
    assert got["hi180"].tolist() == [15.0 + i for i in order]
    assert set(got["method"]) == {"similarity"}
    # a second write replaces the first: lesions no longer forecast lose their properties
    assert store.write_forecasts(forecasts[forecasts["lesion_id"] == last.iloc[0]]) == 1
    left = store.query("MATCH (l:Lesion) WHERE l.forecast_method IS NOT NULL "
                       "RETURN l.lesion_id AS id")
    assert left["id"].tolist() == [last.iloc[0]]
    with pytest.raises(GraphQueryError, match="not in the graph"):
        store.write_forecasts(forecasts.assign(lesion_id="ghost").iloc[:1])


def test_incremental_writes_merge_into_a_loaded_graph(store, cohort):
    half = cohort["patients"].iloc[:20]
    studies = cohort["studies"][cohort["studies"]["patient_id"].isin(half["patient_id"])]
    lesions = cohort["lesions"][cohort["lesions"]["study_id"].isin(studies["study_id"])]
    store.write_cohort(half, studies, lesions, cohort["records"])
    load(store, cohort)  # the rest arrives by MERGE into non-empty tables
    assert store.stats()["nodes"]["Lesion"] == len(cohort["lesions"])
    assert store.cohort({"ldh": {"min": 250}}) == reference_cohort(cohort, {"ldh": {"min": 250}})


def test_reload_with_changed_edges_gives_the_new_properties(store, cohort):
    load(store, cohort)
    knn = cohort["lesion_knn"].copy()
    knn.loc[::7, "score"] = knn.loc[::7, "score"] / 2  # some edges change, the rest do not
    knn.loc[::11, "rank"] = knn.loc[::11, "rank"] + 100
    want = similarity_edges(knn)
    assert store.write_similarity("lesion", knn) == len(want)
    got = store.query("MATCH (a:Lesion)-[r:SIMILAR_TO]->(b:Lesion) RETURN a.lesion_id AS src, "
                      "b.lesion_id AS dst, r.score AS score, r.rank AS rank")
    key = ["src", "dst"]
    got = got.astype({"rank": "int64"}).sort_values(key, ignore_index=True)
    want = want.astype({"src": object, "dst": object}).sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(got[list(want.columns)], want, check_dtype=False)
    assert store.stats() == expected_stats(cohort)


def test_edges_added_to_a_part_loaded_kind(store, cohort):
    knn = cohort["lesion_knn"]
    store.write_cohort(cohort["patients"], cohort["studies"], cohort["lesions"],
                       cohort["records"])
    store.write_similarity("lesion", knn.iloc[::3])  # a third first, then all of them
    assert store.write_similarity("lesion", knn) == len(similarity_edges(knn))
    store.write_similarity("patient", cohort["patient_knn"])
    assert store.stats() == expected_stats(cohort)
    got = store.query("MATCH (a:Lesion)-[r:SIMILAR_TO]->(b:Lesion) RETURN a.lesion_id AS src, "
                      "b.lesion_id AS dst, r.score AS score ORDER BY src, dst")
    want = similarity_edges(knn).sort_values(["src", "dst"], ignore_index=True)
    assert got["score"].tolist() == want["score"].tolist()
