"""``ingest table``: lesions pointing at NIfTI files and DICOM series, on real files
(pydicom's own CT_small.dcm; a NIfTI written by nibabel from a known array)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file

from patientgraph import InputError, Workspace
from patientgraph.imaging import lesion_crop
from patientgraph.table_ingest import ingest_table
from tests.conftest import run_cli, tree_digest

CT_SMALL = get_testdata_file("CT_small.dcm")

# A LAS-oriented volume (x axis toward patient left), 0.8 x 0.8 x 2.5 mm.
LAS = np.diag([-0.8, 0.8, 2.5, 1.0])
LAS[:3, 3] = [40.0, -30.0, 100.0]
SHAPE = (48, 40, 12)  # native i, j, k
BLOB = (30, 12, 6)  # native voxel of a bright lesion


def write_volume(path):
    raw = np.full(SHAPE, 1040, dtype=np.int16)  # 40 HU after slope 1 / inter -1000
    i, j, k = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    ball = ((i - BLOB[0]) * 0.8) ** 2 + ((j - BLOB[1]) * 0.8) ** 2 + ((k - BLOB[2]) * 2.5) ** 2
    raw[ball <= 5.0**2] = 1300  # 300 HU
    img = nib.Nifti1Image(raw, LAS)
    img.header.set_slope_inter(1.0, -1000.0)
    nib.save(img, path)
    return path


def write_series(folder, n=4, step=2.5):
    folder.mkdir(parents=True)
    for s in range(n):
        ds = pydicom.dcmread(CT_SMALL)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + step * s]
        ds.InstanceNumber = s + 1
        ds.save_as(folder / f"{n - s:03d}.dcm")  # file order opposite to slice order
    return folder


@pytest.fixture
def archive(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    write_volume(root / "p1.nii.gz")
    write_series(root / "p2_ct")
    world = nib.load(root / "p1.nii.gz").affine @ np.array([*BLOB, 1.0])
    lps = world[:3] * [-1, -1, 1]
    ds = pydicom.dcmread(CT_SMALL)
    pd.DataFrame([
        {"lesion_id": "a", "patient_id": "P1", "study_id": "S1", "image": "p1.nii.gz",
         "coords": "voxel", "x": BLOB[0], "y": BLOB[1], "z": BLOB[2], "long_mm": 10,
         "coarse_type": 4, "day": 0, "sex": "F", "age": 64, "window_lo": -175,
         "window_hi": 275},
        {"lesion_id": "b", "patient_id": "P1", "study_id": "S2", "image": "p1.nii.gz",
         "coords": "world", "x": lps[0], "y": lps[1], "z": lps[2], "long_mm": 9,
         "coarse_type": -1, "day": 120, "sex": "F", "age": 64, "window_lo": "",
         "window_hi": ""},
        {"lesion_id": "c", "patient_id": "P2", "study_id": "S3", "image": "p2_ct",
         "coords": "voxel", "x": 64, "y": 60, "z": 2, "long_mm": "", "coarse_type": "",
         "day": "", "sex": "M", "age": "", "window_lo": -1350, "window_hi": 150},
    ]).to_csv(root / "lesions.csv", index=False)
    pd.DataFrame({"patient_id": ["P1", "P2"], "ldh": [250, ""]}).to_csv(
        root / "records.csv", index=False)
    pd.DataFrame({"patient_id": ["P1", "P2"], "time_days": [400, 90], "event": [0, 1]}).to_csv(
        root / "outcomes.csv", index=False)
    assert float(ds.RescaleIntercept) == -1024  # the file pydicom ships
    return root


def test_voxel_and_world_coordinates_agree(tmp_path, archive):
    ws = Workspace(tmp_path / "ws")
    summary = ingest_table(archive / "lesions.csv", ws, records=archive / "records.csv",
                           outcomes=archive / "outcomes.csv")
    assert summary["lesions"] == 3 and summary["patients"] == 2 and summary["studies"] == 3
    les = ws.table("lesions").set_index("lesion_id")
    for col in ("center_x", "center_y", "key_slice"):
        assert les.loc["a", col] == pytest.approx(les.loc["b", col], abs=1e-6)
    # LAS -> canonical LPS flips j (anterior -> posterior); i already points left.
    assert les.loc["a", "center_x"] == pytest.approx(BLOB[0])
    assert les.loc["a", "center_y"] == pytest.approx(SHAPE[1] - 1 - BLOB[1])
    assert les.loc["a", "spacing_z"] == pytest.approx(2.5)
    assert les.loc["a", "image_format"] == "nifti" and les.loc["c", "image_format"] == "dicom"
    studies = ws.table("studies").set_index("study_id")
    assert studies.loc["S2", "study_index"] == 2 and studies.loc["S2", "day"] == 120
    assert ws.table("patients").set_index("patient_id").loc["P1", "age"] == 64
    assert les.loc["a", ["window_lo", "window_hi"]].tolist() == [-175, 275]
    assert les.loc["c", ["window_lo", "window_hi"]].tolist() == [-1350, 150]
    assert les.loc["b", ["window_lo", "window_hi"]].isna().all()


def test_crop_finds_the_lesion_in_the_volume(tmp_path, archive):
    ws = Workspace(tmp_path / "ws")
    ingest_table(archive / "lesions.csv", ws)
    row = ws.table("lesions").iloc[0]
    crop = lesion_crop(row, None, size_mm=32.0, out_px=32, n_slices=1)
    assert crop.shape == (1, 32, 32)
    assert crop[0, 16, 16] == pytest.approx(300.0, abs=1)  # HU after slope/intercept
    assert crop[0, 2, 2] == pytest.approx(40.0, abs=1)


def test_dicom_series_rescale_is_honoured(tmp_path, archive):
    ws = Workspace(tmp_path / "ws")
    ingest_table(archive / "lesions.csv", ws)
    row = ws.table("lesions").set_index("lesion_id").loc["c"]
    assert row["slice_last"] == 3 and row["spacing_z"] == pytest.approx(2.5)
    # one sample exactly at the centre (row 60, column 64; CT_small is axial, L-P-S already)
    crop = lesion_crop(row, None, size_mm=0.661468, out_px=1, n_slices=1)
    stored = pydicom.dcmread(CT_SMALL).pixel_array.astype(float)
    assert crop[0, 0, 0] == pytest.approx(stored[60, 64] * 1.0 - 1024.0, abs=1e-3)


def test_cli_ingest_table(tmp_path, archive):
    res = run_cli("ingest", "table", "--lesions", archive / "lesions.csv", "--workspace",
                  tmp_path / "ws", "--outcomes", archive / "outcomes.csv")
    assert res.returncode == 0, res.stderr
    assert "lesions: 3" in res.stderr


@pytest.mark.parametrize("edit, column, problem", [
    (lambda d, a: (a / "p2_ct" / "001.dcm").write_text("not a dicom"), "image",
     "cannot be read"),
    (lambda d, a: d.__setitem__("x", [BLOB[0], 1e4, 64]), "x", "outside the image"),
    (lambda d, a: d.__setitem__("image", ["p1.nii.gz", "p1.nii.gz", "nope.nii"]), "image",
     "does not exist"),
    (lambda d, a: d.__setitem__("coords", ["voxel", "mm", "voxel"]), "coords", "voxel or world"),
    (lambda d, a: d.__setitem__("window_hi", [275, None, None]), "window_hi",
     "window_lo is given but window_hi is empty"),
    (lambda d, a: d.__setitem__("window_hi", [-200, None, 150]), "window_hi",
     "is not above window_lo"),
    (lambda d, a: d.__setitem__("window_lo", ["soft", None, -1350]), "window_lo",
     "window_lo is the display window's lower bound in HU"),
])
def test_bad_table_input(tmp_path, archive, edit, column, problem):
    lesions = pd.read_csv(archive / "lesions.csv")
    edit(lesions, archive)
    lesions.to_csv(archive / "lesions.csv", index=False)
    ws = tmp_path / "ws"
    before = tree_digest(ws)
    res = run_cli("ingest", "table", "--lesions", archive / "lesions.csv", "--workspace", ws)
    assert res.returncode == 2, res.stderr
    msg = " ".join(res.stderr.split())
    assert "lesions.csv" in msg and f"column '{column}'" in msg and problem in msg
    assert "row " in msg and "Fix:" in msg
    assert tree_digest(ws) == before and not ws.exists()


def test_unreadable_dicom_names_the_row(tmp_path, archive):
    (archive / "p2_ct" / "002.dcm").write_bytes(b"\x00" * 200)
    with pytest.raises(InputError) as exc:
        ingest_table(archive / "lesions.csv", tmp_path / "ws")
    assert exc.value.row == 2 and exc.value.column == "image"
