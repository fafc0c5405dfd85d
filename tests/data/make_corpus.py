"""Write the ingest test corpus: a tiny valid DeepLesion-format archive and broken variants.

    python tests/data/make_corpus.py        # rewrites tests/data/deeplesion_mini and bad/

The valid archive has 3 patients, 4 studies and 6 lesion rows on 64 x 64 slices (two rows
share one key slice). Each folder under ``bad/`` holds only the files that differ from the
valid archive, plus ``case.json``: the command-line arguments to change and what the error
must name (file, row, column). ``tests/test_bad_input.py`` runs every case.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent
MINI = HERE / "deeplesion_mini"
BAD = HERE / "bad"
SIZE = 64

HEADER = [
    "File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index",
    "Measurement_coordinates", "Bounding_boxes", "Lesion_diameters_Pixel_",
    "Normalized_lesion_location", "Coarse_lesion_type", "Possibly_noisy", "Slice_range",
    "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender", "Patient_age",
    "Train_Val_Test",
]

# patient, study, series, key slice, centre x, centre y (1-based), radius px, type, split
LESIONS = [
    (1, 1, 1, 12, 20.0, 30.0, 5.0, 4, 2),
    (1, 1, 1, 12, 44.0, 22.0, 3.0, 5, 2),  # second lesion on the same key slice
    (1, 2, 1, 15, 21.0, 31.0, 6.5, 4, 2),  # same lesion, next study, grown
    (2, 1, 1, 30, 32.0, 40.0, 4.0, -1, 1),
    (2, 1, 1, 33, 28.0, 20.0, 2.5, -1, 1),
    (3, 1, 2, 7, 40.0, 44.0, 7.0, 1, 3),
]
PATIENTS = {1: ("F", 61), 2: ("M", 47), 3: ("M", "")}


def _fmt(values) -> str:
    return ", ".join(f"{v:g}" for v in values)


def dl_rows() -> list[dict[str, str]]:
    rows = []
    for p, s, ser, key, cx, cy, r, ctype, split in LESIONS:
        sex, age = PATIENTS[p]
        long_axis = [cx - r, cy, cx + r, cy]
        short_axis = [cx, cy - 0.6 * r, cx, cy + 0.6 * r]
        rows.append({
            "File_name": f"{p:06d}_{s:02d}_{ser:02d}_{key:03d}.png",
            "Patient_index": str(p),
            "Study_index": str(s),
            "Series_ID": str(ser),
            "Key_slice_index": str(key),
            "Measurement_coordinates": _fmt(long_axis + short_axis),
            "Bounding_boxes": _fmt([max(cx - r - 5, 1), max(cy - 0.6 * r - 5, 1),
                                    min(cx + r + 5, SIZE), min(cy + 0.6 * r + 5, SIZE)]),
            "Lesion_diameters_Pixel_": _fmt([2 * r, 1.2 * r]),
            "Normalized_lesion_location": _fmt([cx / SIZE, cy / SIZE, 0.1 * key / 4]),
            "Coarse_lesion_type": str(ctype),
            "Possibly_noisy": "1" if (p, key) == (2, 33) else "0",
            "Slice_range": f"{key - 1}, {key + 1}",
            "Spacing_mm_px_": "0.8, 0.8, 2.5",
            "Image_size": f"{SIZE}, {SIZE}",
            "DICOM_windows": "-175, 275",
            "Patient_gender": sex,
            "Patient_age": str(age + (s - 1)) if age != "" else "",
            "Train_Val_Test": str(split),
        })
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header or list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue())


def slice_png(path: Path, lesions: list[tuple[float, float, float]], seed: int) -> None:
    """A 16-bit slice: soft tissue with noise, air corners, bright disks at the lesions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    hu = np.where((xx - 32) ** 2 / 30**2 + (yy - 32) ** 2 / 26**2 < 1, 40.0, -1000.0)
    hu += rng.normal(0, 10, hu.shape)
    for cx, cy, r in lesions:  # 1-based centres
        hu[(xx - (cx - 1)) ** 2 + (yy - (cy - 1)) ** 2 <= r**2] = 120.0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((hu + 32768).astype(np.uint16)).save(path)


def write_valid(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    rows = dl_rows()
    write_csv(root / "DL_info.csv", rows, HEADER)
    by_file: dict[str, list] = {}
    for p, s, ser, key, cx, cy, r, *_ in LESIONS:
        for k in (key - 1, key, key + 1):
            name = f"{p:06d}_{s:02d}_{ser:02d}/{k:03d}.png"
            by_file.setdefault(name, []).append((cx, cy, r if k == key else 0.7 * r))
    for i, (name, lesions) in enumerate(sorted(by_file.items())):
        slice_png(root / "Images_png" / name, lesions, seed=i)
    write_csv(root / "records.csv", [
        {"Patient_index": "1", "ldh": "240", "albumin": "3.9", "smoking": "never"},
        {"Patient_index": "2", "ldh": "", "albumin": "4.4", "smoking": "current"},
        {"Patient_index": "3", "ldh": "610", "albumin": "NA", "smoking": ""},
    ])
    write_csv(root / "outcomes.csv", [
        {"Patient_index": "1", "time_days": "730", "event": "0"},
        {"Patient_index": "2", "time_days": "412", "event": "1"},
        {"Patient_index": "3", "time_days": "95", "event": "1"},
    ])
    write_csv(root / "studies.csv", [
        {"Patient_index": "1", "Study_index": "1", "day": "0"},
        {"Patient_index": "1", "Study_index": "2", "day": "91"},
        {"Patient_index": "2", "Study_index": "1", "day": "0"},
        {"Patient_index": "3", "Study_index": "1", "day": "0"},
    ])


def _edit_info(case: Path, edit) -> None:
    rows = dl_rows()
    header = list(HEADER)
    header = edit(rows, header) or header
    write_csv(case / "DL_info.csv", [{k: r.get(k, "") for k in header} for r in rows], header)


def _set(row: int, column: str, value: str):
    def edit(rows, header):
        rows[row][column] = value

    return edit


def write_bad(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    cases = {
        "missing_column": (lambda c: _edit_info(c, lambda rows, h: [x for x in h
                                                                  if x != "Spacing_mm_px_"]),
                           {"file": "DL_info.csv", "column": "Spacing_mm_px_"}),
        "malformed_coordinates": (
            lambda c: _edit_info(c, _set(1, "Measurement_coordinates", "40, 22, 48, x, 1, 2")),
            {"file": "DL_info.csv", "row": 1, "column": "Measurement_coordinates"}),
        "bbox_outside_image": (
            lambda c: _edit_info(c, _set(2, "Bounding_boxes", "10, 20, 70, 40")),
            {"file": "DL_info.csv", "row": 2, "column": "Bounding_boxes"}),
        "wrong_image_size": (
            lambda c: _edit_info(c, _set(3, "Image_size", "512, 512")),
            {"file": "DL_info.csv", "row": 3, "column": "Image_size"}),
        "non_numeric_age": (
            lambda c: _edit_info(c, _set(4, "Patient_age", "forty-seven")),
            {"file": "DL_info.csv", "row": 4, "column": "Patient_age"}),
        "duplicate_rows": (
            lambda c: _edit_info(c, lambda rows, h: rows.insert(3, dict(rows[2]))),
            {"file": "DL_info.csv", "row": 3, "column": "File_name"}),
        "png_8bit": (
            lambda c: _write_png8(c / "Images_png/000002_01_01/030.png"),
            {"file": "DL_info.csv", "row": 3, "column": "File_name", "mention": "16-bit"}),
        "png_missing": (
            None, {"file": "DL_info.csv", "row": 5, "column": "File_name",
                   "delete": "Images_png/000003_01_02/007.png"}),
        "png_corrupt": (
            lambda c: _write_bytes(c / "Images_png/000001_02_01/015.png",
                                   b"\x89PNG\r\n\x1a\n this is not a real png"),
            {"file": "DL_info.csv", "row": 2, "column": "File_name"}),
        "records_unknown_patient": (
            lambda c: write_csv(c / "records.csv", [
                {"Patient_index": "1", "ldh": "240", "albumin": "3.9", "smoking": "never"},
                {"Patient_index": "99", "ldh": "300", "albumin": "4.0", "smoking": "never"},
            ]),
            {"file": "records.csv", "row": 1, "column": "Patient_index"}),
        "records_stray_text": (
            lambda c: write_csv(c / "records.csv", [
                {"Patient_index": str(i), "ldh": v}
                for i, v in [(1, "240"), (2, "310"), (3, "high")]
            ]),
            {"file": "records.csv", "row": 2, "column": "ldh"}),
        "negative_time": (
            lambda c: write_csv(c / "outcomes.csv", [
                {"Patient_index": "1", "time_days": "730", "event": "0"},
                {"Patient_index": "2", "time_days": "-12", "event": "1"},
            ]),
            {"file": "outcomes.csv", "row": 1, "column": "time_days"}),
        "event_not_binary": (
            lambda c: write_csv(c / "outcomes.csv", [
                {"Patient_index": "1", "time_days": "730", "event": "0"},
                {"Patient_index": "2", "time_days": "412", "event": "1"},
                {"Patient_index": "3", "time_days": "95", "event": "2"},
            ]),
            {"file": "outcomes.csv", "row": 2, "column": "event"}),
        "key_slice_outside_range": (
            lambda c: _edit_info(c, _set(0, "Slice_range", "13, 20")),
            {"file": "DL_info.csv", "row": 0, "column": "Slice_range"}),
        "file_name_mismatch": (
            lambda c: _edit_info(c, _set(5, "Key_slice_index", "8")),
            {"file": "DL_info.csv", "row": 5, "column": "Key_slice_index"}),
        "study_day_unknown_study": (
            lambda c: write_csv(c / "studies.csv", [
                {"Patient_index": "1", "Study_index": "1", "day": "0"},
                {"Patient_index": "1", "Study_index": "3", "day": "200"},
            ]),
            {"file": "studies.csv", "row": 1, "column": "Study_index"}),
    }
    for name, (make, expect) in cases.items():
        case = root / name
        case.mkdir(parents=True)
        if make is not None:
            make(case)
        (case / "case.json").write_text(json.dumps(expect, indent=2) + "\n")


def _write_png8(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((SIZE, SIZE), 100, dtype=np.uint8)).save(path)


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


if __name__ == "__main__":
    write_valid(MINI)
    write_bad(BAD)
    print(f"wrote {MINI} and {len(list(BAD.iterdir()))} bad cases under {BAD}")
