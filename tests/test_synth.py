"""The synthetic DeepLesion-format cohort: exact format, determinism and honest difficulty."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patientgraph import synth
from patientgraph.imaging import png_header, read_png_hu

SIZE = 256
SPACING_RANGE = (synth.FOV_MM[0] / SIZE - 1e-6, synth.FOV_MM[1] / SIZE + 1e-6)


def _floats(cell: str) -> list[float]:
    return [float(v) for v in cell.split(", ")]


def _read_rows(root: Path) -> list[dict]:
    with open(root / "DL_info.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _png(root: Path, file_name: str) -> Path:
    folder, slice_png = file_name.rsplit("_", 1)
    return root / "Images_png" / folder / slice_png


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "cohort"
    calls = []
    summary = synth.generate(root, n_patients=40, seed=11, progress=lambda *a: calls.append(a))
    assert calls[-1] == (40, 40) and len(calls) == 40
    assert summary["patients"] == 40 and summary["lesion_rows"] == len(_read_rows(root))
    return root


@pytest.fixture(scope="module")
def rows(cohort) -> list[dict]:
    return _read_rows(cohort)


@pytest.fixture(scope="module")
def truth(cohort) -> dict:
    return json.loads((cohort / "truth.json").read_text())


def _truth_of_rows(rows, truth) -> list[dict]:
    """The truth entry of every row, in row order (k-th row of a shared File_name -> _k)."""
    seen: dict[str, int] = defaultdict(int)
    out = []
    for row in rows:
        stem = row["File_name"][:-4]
        out.append(truth["lesions"][f"{stem}_{seen[stem]}"])
        seen[stem] += 1
    return out


# --------------------------------------------------------------------------- format


def test_dl_info_has_exactly_the_deeplesion_columns(cohort):
    with open(cohort / "DL_info.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert header == [
        "File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index",
        "Measurement_coordinates", "Bounding_boxes", "Lesion_diameters_Pixel_",
        "Normalized_lesion_location", "Coarse_lesion_type", "Possibly_noisy", "Slice_range",
        "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender", "Patient_age",
        "Train_Val_Test",
    ]
    text = (cohort / "DL_info.csv").read_text()
    assert '"0.' in text or '", ' in text  # list cells are quoted, comma+space separated


def test_every_cell_parses_as_in_the_real_release(rows):
    for row in rows:
        m = re.fullmatch(r"(\d{6})_(\d{2})_(\d{2})_(\d{3})\.png", row["File_name"])
        assert m, row["File_name"]
        assert [int(g) for g in m.groups()] == [
            int(row["Patient_index"]), int(row["Study_index"]), int(row["Series_ID"]),
            int(row["Key_slice_index"]),
        ]
        assert int(row["Series_ID"]) in (1, 2)
        key = int(row["Key_slice_index"])
        assert row["Slice_range"] == f"{key - 1}, {key + 1}"
        assert row["Image_size"] == f"{SIZE}, {SIZE}"
        sx, sy, sz = _floats(row["Spacing_mm_px_"])
        assert sx == sy and SPACING_RANGE[0] <= sx <= SPACING_RANGE[1]
        assert sz in synth.SLICE_INTERVALS_MM
        lo, hi = (int(v) for v in row["DICOM_windows"].split(", "))
        assert lo < hi
        assert int(row["Coarse_lesion_type"]) in (-1, *range(1, 9))
        assert row["Possibly_noisy"] in ("0", "1")
        assert row["Train_Val_Test"] in ("1", "2", "3")
        assert row["Patient_gender"] in ("M", "F")
        assert row["Patient_age"] == "" or 18 <= int(row["Patient_age"]) <= 100


def test_recist_box_and_location_are_consistent(rows):
    for row in rows:
        coords = np.array(_floats(row["Measurement_coordinates"])).reshape(4, 2)
        assert coords.min() >= 1 and coords.max() <= SIZE  # 1-based pixels inside the image
        x1, y1, x2, y2 = _floats(row["Bounding_boxes"])
        assert x1 == pytest.approx(max(coords[:, 0].min() - 5, 1), abs=1e-3)
        assert y1 == pytest.approx(max(coords[:, 1].min() - 5, 1), abs=1e-3)
        assert x2 == pytest.approx(min(coords[:, 0].max() + 5, SIZE), abs=1e-3)
        assert y2 == pytest.approx(min(coords[:, 1].max() + 5, SIZE), abs=1e-3)
        long_px, short_px = _floats(row["Lesion_diameters_Pixel_"])
        assert long_px == pytest.approx(np.linalg.norm(coords[0] - coords[1]), rel=1e-4)
        assert short_px == pytest.approx(np.linalg.norm(coords[2] - coords[3]), rel=1e-4)
        assert 0 < short_px <= long_px * 1.05
        long_axis, short_axis = coords[1] - coords[0], coords[3] - coords[2]
        cosine = abs(long_axis @ short_axis) / (long_px * short_px)
        assert cosine < 0.35  # the short axis is (nearly) perpendicular, as measured by hand
        x, y, z = _floats(row["Normalized_lesion_location"])
        assert 0 <= x <= 1 and 0 <= y <= 1 and 0 <= z <= 1
        assert x1 <= x * SIZE + 1 <= x2 and y1 <= y * SIZE + 1 <= y2
        spacing = _floats(row["Spacing_mm_px_"])[0]
        assert synth.SIZE_RANGE_MM[0] - spacing <= long_px * spacing <= synth.MAX_LONG_MM + spacing


def test_key_slices_and_neighbours_are_16bit_ct(cohort, rows):
    for row in rows:
        key = int(row["Key_slice_index"])
        for k in (key - 1, key, key + 1):
            assert _png(cohort, f"{row['File_name'][:-8]}_{k:03d}.png").is_file()
    for row in rows[:: max(len(rows) // 12, 1)]:
        with Image.open(_png(cohort, row["File_name"])) as im:
            assert im.mode == "I;16" and im.size == (SIZE, SIZE)
            hu = np.asarray(im).astype(np.float32) - 32768
        assert np.median(hu[:8, :8]) < -900  # air in the corner
        body = hu[hu > -500]
        assert 0.1 < np.mean((body > -20) & (body < 110))  # soft tissue
        assert np.mean((body > -160) & (body < -40)) > 0.03  # fat
        assert hu.max() > 300  # bone
        x1, y1, x2, y2 = (int(round(v)) - 1 for v in _floats(row["Bounding_boxes"]))
        assert hu[y1:y2 + 1, x1:x2 + 1].size > 0


def test_shared_key_slices_are_written_once_with_distinct_truth(rows, truth):
    names = [r["File_name"] for r in rows]
    shared = {n for n in names if names.count(n) > 1}
    assert shared, "some rows should share a key slice"
    assert len(truth["lesions"]) == len(rows)
    assert all(f"{n[:-4]}_1" in truth["lesions"] for n in shared)


# --------------------------------------------------------------------------- determinism


def _small(tmp_path: Path, name: str, seed: int, workers: int = 1) -> Path:
    root = tmp_path / name
    synth.generate(root, n_patients=5, seed=seed, image_size=128, workers=workers)
    return root


def _slice_bytes(root: Path) -> dict[str, bytes]:
    files = sorted((root / "Images_png").rglob("*.png"))
    return {str(f.relative_to(root)): f.read_bytes() for f in files[:: max(len(files) // 5, 1)]}


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a, b = _small(tmp_path, "a", 3), _small(tmp_path, "b", 3, workers=2)
    c = _small(tmp_path, "c", 4)
    for name in ("DL_info.csv", "records.csv", "outcomes.csv", "studies.csv", "truth.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert _slice_bytes(a) == _slice_bytes(b)
    assert (a / "DL_info.csv").read_bytes() != (c / "DL_info.csv").read_bytes()
    a_slices = _slice_bytes(a)
    common = set(a_slices) & set(_slice_bytes(c))
    assert all(a_slices[k] != _slice_bytes(c)[k] for k in common)


def test_one_or_two_workers_write_the_same_slices_and_the_reader_reads_them(tmp_path):
    """Same files, and the same pixels as the ingest reader decodes them, with 1 or 2 workers."""
    a, b = _small(tmp_path, "a", 7), _small(tmp_path, "b", 7, workers=2)
    names = sorted(str(f.relative_to(a)) for f in (a / "Images_png").rglob("*.png"))
    assert names == sorted(str(f.relative_to(b)) for f in (b / "Images_png").rglob("*.png"))
    for name in names[:: max(len(names) // 6, 1)]:
        assert png_header(a / name) == ("I;16", 128, 128)
        hu = read_png_hu(a / name)
        assert np.array_equal(hu, read_png_hu(b / name))
        assert -1024 <= hu.min() and hu.max() <= 3071 and np.median(hu[:4, :4]) < -900


def test_without_images_the_tables_and_truth_are_the_same(tmp_path):
    full = _small(tmp_path, "full", 3)
    bare = tmp_path / "bare"
    summary = synth.generate(bare, n_patients=5, seed=3, image_size=128, images=False)
    assert not (bare / "Images_png").exists() and summary["slices"] == 0
    for name in ("DL_info.csv", "records.csv", "outcomes.csv", "studies.csv", "truth.json"):
        assert (bare / name).read_bytes() == (full / name).read_bytes(), name
    assert any((full / "Images_png").rglob("*.png"))


def test_refuses_to_replace_a_foreign_folder_and_bad_arguments(tmp_path):
    (tmp_path / "keep.txt").write_text("not a cohort")
    with pytest.raises(FileExistsError, match="not an earlier synthetic cohort"):
        synth.generate(tmp_path, n_patients=1)
    assert (tmp_path / "keep.txt").read_text() == "not a cohort"
    with pytest.raises(ValueError, match="n_patients"):
        synth.generate(tmp_path / "x", n_patients=0)
    with pytest.raises(ValueError, match="image_size"):
        synth.generate(tmp_path / "x", image_size=16)


# --------------------------------------------------------------------------- difficulty


def test_types_only_on_validation_and_test_with_some_wrong(rows, truth):
    by_patient = defaultdict(set)
    for row, t in zip(rows, _truth_of_rows(rows, truth), strict=True):
        split, given = int(row["Train_Val_Test"]), int(row["Coarse_lesion_type"])
        by_patient[row["Patient_index"]].add(split)
        assert given == t["given_type"]
        assert (given == -1) == (split == 1)
        assert t["wrong_label"] == (given != -1 and given != t["true_type"])
    assert all(len(s) == 1 for s in by_patient.values())  # split by patient
    given = [t for t in truth["lesions"].values() if t["given_type"] != -1]
    assert given and sum(t["wrong_label"] for t in given) / len(given) < 0.12
    assert truth["params"]["label_error_rate"] == pytest.approx(0.03)


def test_location_alone_does_not_give_the_type_away(rows, truth):
    xyz = np.array([_floats(r["Normalized_lesion_location"]) for r in rows])
    types = np.array([t["true_type"] for t in _truth_of_rows(rows, truth)])
    patient = np.array([int(r["Patient_index"]) for r in rows])
    test = patient % 3 == 0
    d = ((xyz[test][:, None] - xyz[~test][None]) ** 2).sum(-1)
    nearest = np.argsort(d, axis=1)[:, :7]
    votes = types[~test][nearest]
    predicted = np.array([np.bincount(v, minlength=9).argmax() for v in votes])
    accuracy = (predicted == types[test]).mean()
    majority = np.bincount(types).max() / len(types)
    assert majority < accuracy < 0.8
    assert len(set(types)) >= 6


def test_patients_have_studies_growth_and_a_primary_type(cohort, rows, truth):
    with open(cohort / "studies.csv", newline="") as fh:
        studies = list(csv.DictReader(fh))
    days = defaultdict(list)
    for s in studies:
        days[s["Patient_index"]].append(int(s["day"]))
    assert {len(d) for d in days.values()} <= {1, 2, 3} and len({len(d) for d in days.values()}) > 1
    for d in days.values():
        assert d[0] == 0 and all(30 <= b - a <= 200 for a, b in zip(d[:-1], d[1:], strict=True))
    assert 1.8 <= len(studies) / len(days) <= 3.0
    assert 4.5 <= len(rows) / len(days) <= 10
    sizes = defaultdict(list)
    for t in _truth_of_rows(rows, truth):
        sizes[t["physical_lesion"]].append(t["long_mm"])
    followed = [s for s in sizes.values() if len(s) > 1]
    assert any(s[-1] > s[0] * 1.05 for s in followed)  # some grow
    assert any(s[-1] < s[0] * 0.95 for s in followed)  # some shrink
    share = [
        np.mean([les["true_type"] == p["primary_type"] for les in p["physical_lesions"].values()])
        for p in truth["patients"].values()
    ]
    assert 0.55 < np.mean(share) < 0.95
    assert set(truth["patients"]) == {f"{int(p):06d}" for p in days}


def test_records_and_outcomes(cohort, truth):
    with open(cohort / "records.csv", newline="") as fh:
        records = list(csv.DictReader(fh))
    fields = [f for f in records[0] if f != "Patient_index"]
    assert len(fields) >= 12 and {"ldh", "albumin", "ecog", "sodium"} <= set(fields)
    missing = {f: np.mean([r[f] == "" for r in records]) for f in fields}
    overall = np.mean(list(missing.values()))
    assert 0.08 <= overall <= 0.22 and max(missing.values()) > 2 * min(missing.values())
    assert truth["missing_fraction"] == pytest.approx(overall, abs=1e-3)
    with open(cohort / "outcomes.csv", newline="") as fh:
        outcomes = list(csv.DictReader(fh))
    assert [r["Patient_index"] for r in outcomes] == [r["Patient_index"] for r in records]
    assert all(float(r["time_days"]) > 0 and r["event"] in ("0", "1") for r in outcomes)
    censored = np.mean([r["event"] == "0" for r in outcomes])
    assert 0.15 <= censored <= 0.7
    effects = {e["name"]: e for e in truth["effects"]}
    assert {"lesion_burden", "growth_rate", "liver_primary", "ldh", "albumin"} <= set(effects)
    assert {e["kind"] for e in effects.values()} == {"imaging", "record"}
    assert effects["albumin"]["direction"] == -1 and effects["ldh"]["direction"] == 1
    assert set(truth["decoys"]) <= set(fields) and not set(truth["decoys"]) & set(effects)


def test_outcomes_follow_the_planted_linear_predictor(cohort, truth):
    """Harrell's concordance of the true linear predictor with the observed times."""
    with open(cohort / "outcomes.csv", newline="") as fh:
        outcomes = {r["Patient_index"]: r for r in csv.DictReader(fh)}
    eta, time, event = (np.array(v) for v in zip(*[
        (p["linear_predictor"], float(outcomes[str(int(pid))]["time_days"]),
         int(outcomes[str(int(pid))]["event"]))
        for pid, p in truth["patients"].items()
    ], strict=True))
    earlier = (time[:, None] < time[None, :]) & (event[:, None] == 1)
    concordant = (eta[:, None] > eta[None, :]) & earlier
    assert concordant.sum() / earlier.sum() > 0.62


def test_a_script_without_a_main_guard_gets_a_clear_error_not_a_hang(tmp_path):
    script = tmp_path / "make_cohort.py"
    script.write_text("from patientgraph.synth import generate\n"
                      "generate('cohort', n_patients=4, images=False, workers=2)\n")
    done = subprocess.run([sys.executable, script.name], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    assert 'call generate() under `if __name__ == "__main__":`' in done.stderr
    assert not (tmp_path / "cohort").exists()


def test_slices_keep_every_16bit_value(tmp_path):
    pixels = np.arange(0, 65536, 17, dtype=np.uint16)[:3840].reshape(60, 64)
    pixels[0, :2] = (0, 65535)
    synth._write_png16(tmp_path / "s.png", pixels)
    with Image.open(tmp_path / "s.png") as img:
        assert img.mode == "I;16"
        assert np.array_equal(np.asarray(img), pixels)
