"""No patient identifiers, cell values or image paths in errors beyond what the user typed.

Ingest errors name the file, row, column and fix but never quote a cell (a records cell may
hold free text with a record number); "did you mean" names a known id only when it differs
from the typed one by formatting alone; the Patient page checks the id and clamps k on the
server.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import dash
import numpy as np
import pandas as pd
import pytest
from dash import dcc, html

from dashboards.cohorts import MAX_SIMILAR_K, CohortDefinition, definition_from_controls
from dashboards.pages import patient as patient_page
from dashboards.protocol import CallbackClient
from embed.index import VectorIndex
from embed.index_stage import INDEX_DIR
from patientgraph.errors import InputError
from patientgraph.schema import canonical_id, unknown_id
from tests.conftest import ingest_args, run_cli
from tests.test_table_ingest import write_volume

SECRET = "5550123"
MARKER = f"MRN-{SECRET}"


def edit_csv(path: Path, row: int, column: str, value: str) -> None:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.loc[row, column] = value
    table.to_csv(path, index=False)


def assert_refused_privately(res, file: str, row: int | None, column: str) -> str:
    """Exit 2 with one message naming file, row and column, quoting no secret."""
    assert res.returncode == 2, res.stdout + res.stderr
    message = " ".join(res.stderr.split())
    assert "Traceback" not in res.stderr
    assert file in message and f"column '{column}'" in message and "Fix:" in message
    if row is not None:
        assert f"row {row} (line {row + 2})" in message
    for shown in (SECRET, f"{float(SECRET):g}"):  # the number, also as %g prints it
        assert shown not in res.stdout + res.stderr, message
    return message


# -- DeepLesion ingest: DL_info.csv ----------------------------------------------------------

DL_INFO_CASES = [
    # (column, row, cell, the column the error names)
    ("Patient_age", 4, MARKER, "Patient_age"),  # not a number
    ("Patient_age", 0, SECRET, "Patient_age"),  # a number, out of range
    ("Patient_gender", 2, MARKER, "Patient_gender"),
    ("Measurement_coordinates", 1, MARKER, "Measurement_coordinates"),
    ("Bounding_boxes", 1, f"10, 22, {MARKER}, 38", "Bounding_boxes"),
    ("File_name", 3, f"{MARKER}.png", "File_name"),
    ("Patient_index", 2, SECRET, "Patient_index"),  # does not match File_name
    ("Image_size", 3, f"{SECRET}, 64", "Image_size"),  # does not match the PNG
    ("Possibly_noisy", 5, SECRET, "Possibly_noisy"),
]


@pytest.mark.parametrize("column, row, cell, named", DL_INFO_CASES)
def test_dl_info_errors_quote_no_cell(mini, tmp_path, column, row, cell, named):
    edit_csv(mini / "DL_info.csv", row, column, cell)
    res = run_cli(*ingest_args(mini, tmp_path / "ws"))
    assert_refused_privately(res, "DL_info.csv", row, named)


def test_a_missing_key_slice_is_not_named_by_its_path(mini, tmp_path):
    (mini / "Images_png" / "000003_01_02" / "007.png").unlink()
    res = run_cli(*ingest_args(mini, tmp_path / "ws"))
    message = assert_refused_privately(res, "DL_info.csv", 5, "File_name")
    assert "does not exist" in message
    assert "000003_01_02" not in message and "007.png" not in message


# -- records, outcomes and study days --------------------------------------------------------

EXTRA_CASES = [
    # (file, its new content, row, the column the error names)
    ("records.csv", f"Patient_index,ldh\n1,240\n2,{MARKER}\n3,610\n", 1, "ldh"),
    ("records.csv", f"Patient_index,ldh\n1,240\n{MARKER},300\n", 1, "Patient_index"),
    ("records.csv", f"patient_id,ldh\n000001,240\n{MARKER},300\n", 1, "patient_id"),
    ("records.csv", f"patient_id,ldh\n{MARKER},240\n{MARKER},300\n", 0, "patient_id"),
    ("outcomes.csv", f"Patient_index,time_days,event\n1,730,0\n2,{MARKER},1\n", 1, "time_days"),
    ("outcomes.csv", f"Patient_index,time_days,event\n1,730,0\n2,-{SECRET},1\n", 1,
     "time_days"),
    ("outcomes.csv", f"Patient_index,time_days,event\n1,730,{SECRET}\n", 0, "event"),
    ("outcomes.csv", f"Patient_index,time_days,event\n1,730,0\n{SECRET},400,1\n", 1,
     "Patient_index"),
    ("studies.csv", f"Patient_index,Study_index,day\n1,1,0\n1,2,{MARKER}\n", 1, "day"),
    ("studies.csv", f"Patient_index,Study_index,day\n1,1,0\n1,2,-{SECRET}\n", 1, "day"),
]


@pytest.mark.parametrize("file, content, row, named", EXTRA_CASES)
def test_records_outcomes_and_study_errors_quote_no_cell(mini, tmp_path, file, content, row,
                                                         named):
    (mini / file).write_text(content)
    res = run_cli(*ingest_args(mini, tmp_path / "ws"))
    assert_refused_privately(res, file, row, named)


# -- generic table ingest --------------------------------------------------------------------

@pytest.fixture
def table_archive(tmp_path) -> Path:
    """Two valid lesions on one NIfTI volume (the volume of tests/test_table_ingest.py)."""
    root = tmp_path / "table"
    root.mkdir()
    write_volume(root / "p1.nii.gz")
    pd.DataFrame([
        {"lesion_id": "a", "patient_id": "P1", "study_id": "S1", "image": "p1.nii.gz",
         "coords": "voxel", "x": 30, "y": 12, "z": 6, "coarse_type": 4, "sex": "F",
         "window_lo": -175, "window_hi": 275},
        {"lesion_id": "b", "patient_id": "P2", "study_id": "S2", "image": "p1.nii.gz",
         "coords": "voxel", "x": 20, "y": 10, "z": 4, "coarse_type": 5, "sex": "M",
         "window_lo": -175, "window_hi": 275},
    ]).to_csv(root / "lesions.csv", index=False)
    return root


TABLE_CASES = [
    ("image", 1, f"{MARKER}.nii.gz", "image"),  # does not exist: the path is not quoted
    ("coords", 1, MARKER, "coords"),
    ("x", 1, MARKER, "x"),
    ("x", 1, SECRET, "x"),  # outside the image
    ("sex", 1, MARKER, "sex"),
    ("coarse_type", 1, SECRET, "coarse_type"),
    ("window_hi", 1, f"-{SECRET}", "window_hi"),
    ("study_id", 1, "S1", "study_id"),  # S1 already belongs to P1
    ("lesion_id", 1, "a", "lesion_id"),  # duplicate lesion id
]


@pytest.mark.parametrize("column, row, cell, named", TABLE_CASES)
def test_table_ingest_errors_quote_no_cell(table_archive, tmp_path, column, row, cell, named):
    lesions = table_archive / "lesions.csv"
    edit_csv(lesions, row, column, cell)
    if cell in ("S1", "a"):  # ids: make the secret the id itself
        table = pd.read_csv(lesions, dtype=str, keep_default_na=False)
        table[column] = table[column].replace(cell, MARKER)
        table.to_csv(lesions, index=False)
        row = 0 if column == "lesion_id" else row
    res = run_cli("ingest", "table", "--lesions", lesions, "--workspace", tmp_path / "ws")
    assert_refused_privately(res, "lesions.csv", row, named)


def test_table_ingest_records_errors_quote_no_cell(table_archive, tmp_path):
    (table_archive / "records.csv").write_text(f"patient_id,note\nP1,1.5\nP2,{MARKER}\n"
                                               "P3,2\n")
    res = run_cli("ingest", "table", "--lesions", table_archive / "lesions.csv",
                  "--records", table_archive / "records.csv", "--workspace", tmp_path / "ws")
    assert_refused_privately(res, "records.csv", 1, "note")


# -- "did you mean" over patient ids ----------------------------------------------------------

PATIENTS = [f"{i:06d}" for i in range(1, 61)]


def test_canonical_ids_drop_formatting_only():
    assert canonical_id(" 000042 ") == canonical_id("42") == "42"
    assert canonical_id("L0003_01") == canonical_id("l3_1")
    assert canonical_id("000000") == "0"
    assert canonical_id("420") != canonical_id("42")


@pytest.mark.parametrize("typed, suggested", [
    ("42", "000042"), (" 000042 ", "000042"), ("0042", "000042"),
    ("000070", None), ("000420", None), ("nobody", None), ("00004", "000004"),
])
def test_unknown_patient_suggests_only_a_formatting_variant(typed, suggested):
    message = unknown_id(typed, PATIENTS, "patient_id").message
    shown = [p for p in PATIENTS if p in message and p not in typed]
    assert shown == ([suggested] if suggested and suggested not in typed else [])
    if suggested:
        assert f"Did you mean '{suggested}'?" in message
    else:
        assert "Did you mean" not in message
    assert "cohort/patients.parquet" in message


def test_two_formatting_variants_suggest_neither():
    message = unknown_id("7", ["07", "007", "000123"], "patient_id").message
    assert "Did you mean" not in message and "07" not in message


@pytest.fixture
def indexed(tmp_path) -> Path:
    """A workspace holding only a patient index (enough for the unknown-id check)."""
    ws = tmp_path / "ws"
    vectors = np.random.default_rng(0).normal(size=(len(PATIENTS), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    VectorIndex.build(PATIENTS, vectors).save(ws / INDEX_DIR, "patients")
    return ws


@pytest.mark.parametrize("typed, suggested", [("000070", None), ("nobody", None),
                                              ("42", "000042")])
def test_cli_similar_lists_no_other_patient(indexed, typed, suggested):
    res = run_cli("similar", "--workspace", indexed, "--patient", typed)
    assert res.returncode == 2, res.stdout + res.stderr
    message = " ".join(res.stderr.split())
    assert f"unknown patient_id '{typed}'" in message
    shown = [p for p in PATIENTS if p in res.stdout + res.stderr and p != typed]
    assert shown == ([suggested] if suggested else [])
    assert ("Did you mean" in message) == bool(suggested)


# -- the explorer's Patient page -------------------------------------------------------------

class FakeExplorer:
    """The parts of :class:`dashboards.context.Explorer` the Patient page uses, over 200
    patients; ``similar`` answers as many as asked (up to all) and records each k."""

    def __init__(self):
        ids = [f"{i:06d}" for i in range(1, 201)]
        table = pd.DataFrame({"sex": "F", "age": 60.0, "n_studies": 1, "n_lesions": 1},
                             index=pd.Index(ids, name="patient_id"))
        self.asked: list[int] = []
        self.data = types.SimpleNamespace(
            patient_table=table, patient_ids=ids, record_fields=[], manifest={},
            lesions_of=lambda pid: pd.DataFrame(), has=lambda name: False)

    def similar(self, patient_id, k, weights=None):
        self.asked.append(k)
        others = [p for p in self.data.patient_ids if p != patient_id][:k]
        return pd.DataFrame({"patient_id": others, "score": 0.5, "imaging": 0.25,
                             "records": 0.25})

    def similar_answer(self, patient_id, k, weights=None):
        """What the page calls: :meth:`similar` as a :class:`Neighbours` answer."""
        from dashboards.similar import Neighbours

        frame = self.similar(patient_id, k, weights)
        return Neighbours(tuple(frame["patient_id"]), frame["score"].to_numpy(float),
                          {m: frame[m].to_numpy(float) for m in ("imaging", "records")})

    def derived(self, name, build):
        return build()


@pytest.fixture
def page():
    explorer = FakeExplorer()
    app = dash.Dash(__name__)
    app.layout = html.Div([dcc.Store(id="patient-store"), patient_page.layout(explorer, {})])
    patient_page.register(app, explorer)
    return explorer, CallbackClient(app, app.server.test_client().post)


@pytest.mark.parametrize("k, expected", [(30_000_000, 100), (1e300, 100),
                                         (-5, 1), (0, 1), (7, 7), (None, 10)])
def test_patient_page_clamps_k_on_the_server(page, k, expected):
    explorer, client = page
    assert patient_page.K_MAX == 100
    chosen = {"patient-select.value": "000001", "patient-k.value": k,
              "patient-weight.value": 0.5}
    rows = client.call("patient-similar.data", chosen)["patient-similar"]["data"]
    assert len(rows) == expected and explorer.asked == [expected]
    client.call("patient-km.figure", chosen)
    assert explorer.asked == [expected, expected]


@pytest.mark.parametrize("field, value", [("patient-k.value", "lots"),
                                          ("patient-weight.value", "heavy"),
                                          ("patient-weight.value", float("inf"))])
def test_patient_page_refuses_a_control_that_is_no_number(page, field, value):
    explorer, client = page
    chosen = {"patient-select.value": "000001", "patient-k.value": 5,
              "patient-weight.value": 0.5, field: value}
    out = client.call("patient-similar.data", chosen)
    assert out["patient-similar"]["data"] == [] and explorer.asked == []
    assert "is not a number" in json.dumps(out["patient-similar-error"])


def test_patient_page_weight_is_clamped(page):
    explorer, client = page
    weights = []
    explorer.similar = lambda pid, k, w=None: (weights.append(w), pd.DataFrame(
        {"patient_id": ["000002"], "score": 1.0, "imaging": 1.0, "records": 0.0}))[1]
    client.call("patient-similar.data", {"patient-select.value": "000001",
                                         "patient-k.value": 5, "patient-weight.value": 7})
    assert weights == [{"imaging": 1.0, "records": 0.0}]


@pytest.mark.parametrize("typed, suggested", [("999999", None), ("000201", None),
                                              ("42", "000042"), ("x" * 500, None)])
def test_patient_page_unknown_id_lists_no_other_patient(page, typed, suggested):
    explorer, client = page
    out = client.call("patient-similar.data", {"patient-select.value": typed,
                                               "patient-k.value": 5})
    text = json.dumps(out)
    assert f"unknown patient_id '{typed[:80]}" in text and explorer.asked == []
    shown = [p for p in explorer.data.patient_ids if p in text and p not in typed]
    assert shown == ([suggested] if suggested else [])
    for output in ("patient-crops.children", "patient-risk.children",
                   "patient-graph.elements"):
        text = json.dumps(client.call(output, {"patient-select.value": typed}))
        assert "unknown patient_id" in text
        assert [p for p in explorer.data.patient_ids if p in text and p not in typed] == (
            [suggested] if suggested else [])


# -- cohort definitions: every number checked on the server ----------------------------------

@pytest.mark.parametrize("controls", [
    {"similar_patient": "000001", "similar_k": 30_000_000},
    {"similar_patient": "000001", "similar_k": 0},
    {"similar_patient": "000001", "similar_k": "lots"},
    {"types": ["liver"]},
    {"clusters": [float("nan")]},
    {"age": ("old", None)},
    {"record_field": "ldh", "record_max": float("inf")},
])
def test_cohort_controls_are_checked_on_the_server(controls):
    with pytest.raises(InputError):
        definition_from_controls("A", **controls)


def test_cohort_definitions_bound_k():
    assert definition_from_controls("A", similar_patient="000001",
                                    similar_k=MAX_SIMILAR_K).similar_to["k"] == MAX_SIMILAR_K
    with pytest.raises(InputError, match="whole number k from 1 to"):
        CohortDefinition.from_dict({"similar_to": {"patient_id": "000001", "k": 10**9}})
    with pytest.raises(InputError, match="neither text nor a finite number"):
        CohortDefinition.from_dict({"filters": {"coarse_type": [4, {"$gt": 1}]}})
