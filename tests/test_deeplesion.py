"""Ingest of the DeepLesion release format, on the hand-made mini archive."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from patientgraph import InputError, Workspace, ingest_deeplesion
from patientgraph.deeplesion import read_dl_info
from tests.conftest import MINI, ingest_args, run_cli


@pytest.fixture
def ws(tmp_path, mini):
    ws = Workspace(tmp_path / "ws")
    ingest_deeplesion(mini / "DL_info.csv", mini / "Images_png", ws,
                      records=mini / "records.csv", outcomes=mini / "outcomes.csv",
                      studies=mini / "studies.csv")
    return ws


def test_coordinates_become_zero_based():
    _, _, lesions, _ = read_dl_info(MINI / "DL_info.csv")
    raw = pd.read_csv(MINI / "DL_info.csv", dtype=str)
    first = [float(v) for v in raw.loc[0, "Bounding_boxes"].split(",")]
    np.testing.assert_allclose(lesions.loc[0, "bbox"], np.array(first) - 1)
    recist = [float(v) for v in raw.loc[0, "Measurement_coordinates"].split(",")]
    np.testing.assert_allclose(lesions.loc[0, "recist"], np.array(recist) - 1)
    # centre of the long axis, 0-based
    assert lesions.loc[0, "center_x"] == pytest.approx((recist[0] + recist[2]) / 2 - 1)


def test_tables_follow_the_release(ws):
    lesions = ws.table("lesions")
    assert len(lesions) == 6
    # two rows share one key slice and stay two lesions
    shared = lesions[lesions["image_ref"] == "000001_01_01/012.png"]
    assert list(shared["lesion_id"]) == ["000001_01_01_012_0", "000001_01_01_012_1"]
    assert list(lesions["source_row"]) == list(range(6))
    # -1 is missing, not a type; training rows carry no type
    assert lesions.loc[lesions["split"] == 1, "coarse_type"].isna().all()
    assert lesions["coarse_type"].dropna().astype(int).tolist() == [4, 5, 4, 1]
    assert lesions["noisy"].sum() == 1
    # diameters in mm = pixels x spacing
    assert lesions.loc[0, "long_mm"] == pytest.approx(10.0 * 0.8)
    assert lesions.loc[5, "image_ref"] == "000003_01_02/007.png"


def test_patients_studies_records_outcomes(ws):
    patients = ws.table("patients").set_index("patient_id")
    assert patients.loc["000001", "sex"] == "F"
    assert patients.loc["000001", "age"] == 61  # age at the first study
    assert np.isnan(patients.loc["000003", "age"])  # empty age allowed
    studies = ws.table("studies").set_index("study_id")
    assert studies.loc["000001_02", "day"] == 91
    records = ws.table("records").set_index("patient_id")
    assert records["ldh"].dtype == float and np.isnan(records.loc["000002", "ldh"])
    assert np.isnan(records.loc["000003", "albumin"])  # "NA" is missing
    assert records.loc["000002", "smoking"] == "current"
    assert pd.isna(records.loc["000003", "smoking"])
    outcomes = ws.table("outcomes").set_index("patient_id")
    assert outcomes.loc["000002", "event"] == 1 and outcomes.loc["000003", "time_days"] == 95


def test_records_keyed_by_patient_id(tmp_path, mini):
    pd.DataFrame({"patient_id": ["000001", "000003"], "crp": [3.0, 40.0]}).to_parquet(
        mini / "records.parquet")
    ws = Workspace(tmp_path / "ws")
    ingest_deeplesion(mini / "DL_info.csv", mini / "Images_png", ws,
                      records=mini / "records.parquet")
    assert ws.table("records")["crp"].tolist() == [3.0, 40.0]
    assert ws.table("outcomes").empty


def test_rerun_is_skipped_until_inputs_change(ws, mini):
    manifest = ws.manifest()["stages"]["ingest"]
    assert set(manifest["inputs"]) == {"info", "records", "outcomes", "studies", "images"}
    assert manifest["versions"]["pandas"] == pd.__version__
    kwargs = dict(records=mini / "records.csv", outcomes=mini / "outcomes.csv",
                  studies=mini / "studies.csv")
    again = ingest_deeplesion(mini / "DL_info.csv", mini / "Images_png", ws, **kwargs)
    assert again["skipped"]
    forced = ingest_deeplesion(mini / "DL_info.csv", mini / "Images_png", ws, force=True,
                               **kwargs)
    assert not forced["skipped"]
    (mini / "outcomes.csv").write_text("Patient_index,time_days,event\n1,10,1\n")
    changed = ingest_deeplesion(mini / "DL_info.csv", mini / "Images_png", ws, **kwargs)
    assert not changed["skipped"] and changed["outcomes"] == 1


def test_custom_outcome_columns(tmp_path, mini):
    (mini / "os.csv").write_text("Patient_index,os_months,dead\n1,12,1\n2,30,0\n")
    with pytest.raises(InputError, match="no column 'time_days'"):
        ingest_deeplesion(mini / "DL_info.csv", mini / "Images_png", tmp_path / "a",
                          outcomes=mini / "os.csv")
    ingest_deeplesion(mini / "DL_info.csv", mini / "Images_png", tmp_path / "b",
                      outcomes=mini / "os.csv", time_col="os_months", event_col="dead")
    out = Workspace(tmp_path / "b").table("outcomes")
    assert out["time_days"].tolist() == [12.0, 30.0] and out["event"].tolist() == [1, 0]


def test_any_deeplesion_dataset_not_only_ours(tmp_path, mini):
    """Real releases carry extra columns and odd spacing; column order does not matter."""
    raw = pd.read_csv(mini / "DL_info.csv", dtype=str)
    raw = raw[list(reversed(raw.columns))]
    raw["Extra_notes"] = "x"
    raw.to_csv(mini / "DL_info.csv", index=False)
    summary = ingest_deeplesion(mini / "DL_info.csv", mini / "Images_png", tmp_path / "ws")
    assert summary["lesions"] == 6 and summary["patients"] == 3


def test_cli_ingest_and_info(tmp_path):
    ws = tmp_path / "ws"
    res = run_cli(*ingest_args(MINI, ws))
    assert res.returncode == 0, res.stderr
    assert "lesions: 6" in res.stderr
    assert "000001" not in res.stderr + res.stdout  # no patient ids in the log
    again = run_cli(*ingest_args(MINI, ws))
    assert again.returncode == 0 and "up to date" in again.stderr
    info = run_cli("info", "--workspace", ws, "--json")
    assert json.loads(info.stdout)["stages"]["ingest"]["summary"]["patients"] == 3


def test_moved_images_are_reported(tmp_path, mini):
    ws = tmp_path / "ws"
    shutil.rmtree(mini / "Images_png")
    with pytest.raises(InputError, match="image folder does not exist"):
        ingest_deeplesion(mini / "DL_info.csv", mini / "Images_png", ws)
    assert not ws.exists()
