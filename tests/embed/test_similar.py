"""Similar patients and lesions from the Python API."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embed import stage
from embed.similar import similar_lesions, similar_patients
from patientgraph.errors import InputError


def _patients(ws) -> pd.DataFrame:
    return pd.read_parquet(ws.path(stage.PATIENTS)).set_index("patient_id")


def test_similar_patients_with_contributions(embedded):
    patients = _patients(embedded)
    query = patients.index[0]
    found = similar_patients(embedded, query, k=5)
    assert list(found.columns) == ["patient_id", "score", "imaging", "records"]
    assert len(found) == 5 and query not in set(found["patient_id"])
    assert (found["imaging"] + found["records"]).to_numpy() == pytest.approx(found["score"])
    assert found["score"].is_monotonic_decreasing
    fused = np.stack(patients["embedding"].to_numpy())
    expected = np.sort(np.delete(fused @ fused[0], 0))[::-1][:5]
    assert found["score"].to_numpy() == pytest.approx(expected, abs=1e-5)


def test_weights_change_the_ranking(embedded):
    patients = _patients(embedded)
    query = patients.index[1]
    imaging = similar_patients(embedded, query, k=3, weights={"imaging": 1})
    assert (imaging["records"] == 0).all()
    parts = np.stack(patients["imaging"].to_numpy())
    expected = np.sort(np.delete(parts @ parts[1], 1))[::-1][:3]
    assert imaging["score"].to_numpy() == pytest.approx(expected, abs=1e-5)
    records = similar_patients(embedded, query, k=3, weights={"records": 2.0})
    assert (records["imaging"] == 0).all()


def test_restrict_to_a_cohort(embedded):
    ids = list(_patients(embedded).index)
    found = similar_patients(embedded, ids[0], k=10, among=ids[3:6] + [ids[0]])
    assert set(found["patient_id"]) == set(ids[3:6])
    assert similar_patients(embedded, ids[0], among=[]).empty


def test_unknown_patient_suggests_only_a_formatting_variant(embedded):
    ids = list(_patients(embedded).index)
    query = ids[0]
    with pytest.raises(InputError, match=rf"unknown patient_id '{query}9'\. Fix") as info:
        similar_patients(embedded, f"{query}9")
    assert [i for i in ids if i in info.value.message] == [query]  # only what was typed
    short = query.lstrip("0")
    with pytest.raises(InputError, match=rf"'{short}'\. Did you mean '{query}'\?") as info:
        similar_patients(embedded, short)
    assert [i for i in ids if i in info.value.message] == [query]
    assert len(similar_patients(embedded, query, k=30_000_000)) == len(ids) - 1  # bounded
    with pytest.raises(InputError, match="k >= 1"):
        similar_patients(embedded, query, k=0)
    with pytest.raises(InputError, match="Did you mean 'records'"):
        similar_patients(embedded, query, weights={"record": 1})


def test_similar_lesions(embedded):
    lesions = embedded.table("lesions")
    query = lesions["lesion_id"].iloc[0]
    found = similar_lesions(embedded, query, k=4)
    assert list(found.columns) == ["lesion_id", "score", "patient_id", "study_id"]
    assert len(found) == 4 and query not in set(found["lesion_id"])
    own = lesions.loc[lesions["lesion_id"] == query, "patient_id"].iloc[0]
    others = similar_lesions(embedded, query, k=4, exclude_same_patient=True)
    assert own not in set(others["patient_id"])
    with pytest.raises(InputError, match="unknown lesion_id"):
        similar_lesions(embedded, "000001_01_01_999_0")


def test_no_index_yet(ingested):
    with pytest.raises(InputError, match="no vector index yet"):
        similar_patients(ingested, "000001")


def test_a_rebuilt_index_is_read_again(embedded_copy):
    """Repeated queries reuse the loaded index, but never a stale one after a rebuild."""
    from embed import index_stage
    from embed.similar import _load

    ws = embedded_copy
    first = _load(ws, "patients")
    assert _load(ws, "patients") is first
    index_stage.run(ws, config={"k": 3}, force=True)
    rebuilt = _load(ws, "patients")
    assert rebuilt is not first
    pid = str(ws.table("patients")["patient_id"].iloc[0])
    assert len(similar_patients(ws, pid, k=3)) == 3
