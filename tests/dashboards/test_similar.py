"""The explorer's similar patients: the same answers as embed.similar, kept in a bounded
LRU that never answers from another workspace or from an index since replaced."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from dashboards.cache import LRU
from dashboards.context import Explorer
from dashboards.data import ExplorerData
from dashboards.similar import PatientSimilarity
from embed.similar import similar_patients
from patientgraph import Workspace
from patientgraph.errors import InputError


def patient_ids(ws: Workspace) -> list[str]:
    return sorted(ws.table("patients")["patient_id"].astype(str))


@pytest.mark.parametrize("weights", [None, {"imaging": 0.5, "records": 0.5},
                                     {"imaging": 1.0, "records": 0.0},
                                     {"imaging": 0.2, "records": 0.8}])
@pytest.mark.parametrize("k", [1, 5, 100])
def test_answers_are_embed_similar_patients(workspace, weights, k):
    search = PatientSimilarity(workspace)
    for patient in patient_ids(workspace)[:6]:
        got = search.query(patient, k, weights).frame
        want = similar_patients(workspace, patient, k, weights)
        assert got["patient_id"].tolist() == want["patient_id"].tolist()
        for column in ("score", "imaging", "records"):
            np.testing.assert_allclose(got[column], want[column], atol=1e-5)
        assert patient not in got["patient_id"].tolist()


def test_bad_questions_are_refused(workspace):
    search = PatientSimilarity(workspace)
    patient = patient_ids(workspace)[0]
    with pytest.raises(InputError, match="k is 0"):
        search.query(patient, 0)
    with pytest.raises(InputError, match="patient_id"):
        search.query("no-such-patient", 5)
    with pytest.raises(InputError, match="unknown modality"):
        search.query(patient, 5, {"pixels": 1.0})


def test_answers_are_kept_up_to_the_bound(workspace):
    search = PatientSimilarity(workspace, cache=3)
    patients = patient_ids(workspace)[:5]
    first = search.query(patients[0], 5)
    assert search.query(patients[0], 5) is first
    for patient in patients[1:]:
        search.query(patient, 5)
    assert search.cached() == 3
    assert search.query(patients[0], 5) is not first  # the oldest was dropped
    assert search.query(patients[0], 5).patient_ids == first.patient_ids


def test_a_cache_of_zero_keeps_nothing(workspace):
    search = PatientSimilarity(workspace, cache=0)
    patient = patient_ids(workspace)[0]
    assert search.query(patient, 5) is not search.query(patient, 5)
    assert search.cached() == 0


def test_a_replaced_index_is_read_again(workspace_copy):
    from embed.index import VectorIndex

    search = PatientSimilarity(workspace_copy, recheck_s=0)
    patient = patient_ids(workspace_copy)[0]
    before = search.query(patient, 5)
    folder = workspace_copy.path("index")
    index = VectorIndex.load(folder, "patients")
    vectors = index.vectors()
    ids = [str(i) for i in index.ids]
    shuffled = list(np.random.default_rng(0).permutation(ids))  # same vectors, other ids
    VectorIndex.build(shuffled, vectors, factory="Flat").save(folder, "patients")
    after = search.query(patient, 5)
    assert search.cached() == 1  # the answers of the old index were dropped
    want = similar_patients(workspace_copy, patient, 5)
    assert list(after.patient_ids) == want["patient_id"].tolist()
    assert after.patient_ids != before.patient_ids


def test_each_workspace_answers_from_its_own_index(workspace, tmp_path):
    other = Workspace(tmp_path / "ws")
    shutil.copytree(workspace.root, other.root)
    from embed.index import VectorIndex

    folder = other.path("index")
    index = VectorIndex.load(folder, "patients")
    ids = [str(i) for i in index.ids]
    VectorIndex.build(ids, index.vectors()[::-1].copy(), factory="Flat").save(folder, "patients")
    a = Explorer(ExplorerData.load(workspace.root))
    b = Explorer(ExplorerData.load(other.root))
    patient = ids[0]
    assert a.similar_ids(patient, 5) == similar_patients(workspace, patient, 5)[
        "patient_id"].tolist()
    assert b.similar_ids(patient, 5) == similar_patients(other, patient, 5)[
        "patient_id"].tolist()
    assert a.similar_ids(patient, 5) != b.similar_ids(patient, 5)
    a.data.graph.close()
    b.data.graph.close()


def test_lru_drops_the_least_recently_used():
    lru: LRU[int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "b" is now the oldest
    lru.put("c", 3)
    assert (lru.get("a"), lru.get("b"), lru.get("c"), len(lru)) == (1, None, 3, 2)
    assert lru.get_or_make("d", lambda: 4) == 4 and len(lru) == 2
    lru.clear()
    assert len(lru) == 0
    with pytest.raises(ValueError, match="0 or more"):
        LRU(-1)


def test_the_warm_up_loads_the_index_after_the_first_page(workspace):
    explorer = Explorer(ExplorerData.load(workspace.root))
    thread = explorer.warm_in_background(wait_s=60)
    explorer.first_page.set()
    thread.join(60)
    assert not thread.is_alive()
    assert explorer.neighbours._loaded is not None
    explorer.data.graph.close()


def test_a_stopped_warm_up_loads_nothing_and_ends(workspace):
    explorer = Explorer(ExplorerData.load(workspace.root))
    thread = explorer.warm_in_background(wait_s=60)
    explorer.stop_warming(timeout_s=10)  # what runs at exit (Ctrl+C before the first page)
    assert not thread.is_alive()
    assert explorer.neighbours._loaded is None
    explorer.first_page.set()
    thread.join(1)
    assert explorer.neighbours._loaded is None
    explorer.data.graph.close()


SERVE_WITHOUT = """
import sys
from dashboards.app import create_app
from dashboards.protocol import CallbackClient
app = create_app(sys.argv[1])
client = CallbackClient(app, app.server.test_client().post)
explorer = app.server.config["explorer"]
patient = explorer.data.patient_ids[0]
client.call("page.children", {"url.pathname": "/"})
client.call("patient-similar.data", {"patient-select.value": patient, "patient-k.value": 5,
                                     "patient-weight.value": 0.5})
client.call("patient-km.figure", {"patient-select.value": patient, "patient-k.value": 5,
                                  "patient-weight.value": 0.5})
explorer.warm()
print("loaded:" + ",".join(sorted(m for m in ("torch", "monai") if m in sys.modules)))
"""


def test_serving_never_imports_the_deep_learning_stack(workspace):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", SERVE_WITHOUT, str(workspace.root)],
                         capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "loaded:"
