"""Ingest an archive in the DeepLesion release format: ``DL_info.csv`` + ``Images_png``.

Read exactly as the release defines it: list-valued cells are comma-separated
numbers, pixel coordinates are 1-based (converted to 0-based here), ``Coarse_lesion_type``
-1 means unknown, ``File_name`` ``000001_01_01_109.png`` lives at
``Images_png/000001_01_01/109.png``, and slices are 16-bit PNG with HU = value - 32768.

Only the PNG headers are read at ingest (size and bit depth of each key slice); pixels are
read lazily by later stages through :mod:`patientgraph.imaging`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patientgraph import ingest
from patientgraph.errors import InputError
from patientgraph.schema import Source
from patientgraph.validate import fail_rows
from patientgraph.workspace import INGEST, Workspace, listing_sha256

COLUMNS = (
    "File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index",
    "Measurement_coordinates", "Bounding_boxes", "Lesion_diameters_Pixel_",
    "Normalized_lesion_location", "Coarse_lesion_type", "Possibly_noisy", "Slice_range",
    "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender", "Patient_age",
    "Train_Val_Test",
)
_FILE_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)\.png$")

# (column, how many numbers, what they are, whether the cell may be empty)
_LISTS = {
    "Measurement_coordinates": (8, "long-axis end points then short-axis end points, x y", False),
    "Bounding_boxes": (4, "x1, y1, x2, y2", False),
    "Lesion_diameters_Pixel_": (2, "long, short", False),
    "Normalized_lesion_location": (3, "x, y, z in [0, 1]", False),
    "Slice_range": (2, "first, last", False),
    "Spacing_mm_px_": (3, "x, y, slice interval in mm", False),
    "Image_size": (2, "width, height in pixels", False),
    "DICOM_windows": (2, "low, high in HU", True),
}


def patient_id(index: int) -> str:
    """The workspace's patient id for a DeepLesion ``Patient_index`` (as in File_name)."""
    return f"{int(index):06d}"


def lesion_ids(file_names: pd.Series) -> pd.Series:
    """The lesion id of each DL_info.csv row: its File_name without ``.png`` and the row's
    ordinal among the rows of that File_name (``000001_01_01_116_0``); the keys of a
    synthetic cohort's ``truth.json`` too."""
    ordinal = file_names.groupby(file_names).cumcount()
    return file_names.str.removesuffix(".png") + "_" + ordinal.astype(str)


def normalize_patient_key(values: pd.Series, column: str) -> pd.Series:
    """Map a records/outcomes key column onto the cohort's patient ids."""
    if column == "Patient_index":
        return pd.to_numeric(values).astype("int64").map(patient_id)
    return values.astype(str).str.strip()


class _Reader:
    """Parses DL_info.csv column by column, raising errors that point at the cell."""

    def __init__(self, path: Path):
        self.path = path
        self.raw = ingest.read_table(path)
        self.source = Source(str(path), rows=pd.Series(np.arange(len(self.raw))))
        missing = [c for c in COLUMNS if c not in self.raw.columns]
        if missing:
            raise InputError(
                path,
                f"the column {missing[0]!r} is missing"
                + (f" (and {len(missing) - 1} more: {', '.join(missing[1:])})"
                   if len(missing) > 1 else ""),
                "use the DL_info.csv of the DeepLesion release, whose header names "
                f"these columns: {', '.join(COLUMNS)}",
                column=missing[0],
            )
        if self.raw.empty:
            raise InputError(path, "the table has no rows", "point --info at a DL_info.csv "
                             "with at least one lesion")

    def fail(self, mask: np.ndarray | pd.Series, column: str,
             problem: str | Callable[[int], str], fix: str) -> None:
        """Raise for the first row (position) in ``mask``: :func:`fail_rows`."""
        fail_rows(self.source, np.asarray(mask, dtype=bool), column, problem, fix)

    def numbers(self, column: str, *, integer: bool = False, allow_missing: bool = False,
                fix: str) -> np.ndarray:
        s = self.raw[column]
        missing = ingest.is_missing(s)
        if not allow_missing:
            self.fail(missing, column, "the value is empty", fix)
        values = ingest.to_number(s, self.source, column, integer=integer, fix=fix)
        return values.to_numpy(dtype=float)

    def lists(self, column: str) -> np.ndarray:
        n, meaning, optional = _LISTS[column]
        s = self.raw[column].astype(str)
        empty = ingest.is_missing(self.raw[column]).to_numpy()
        parts = s.str.split(",", regex=False)
        counts = parts.map(len).to_numpy()
        fix = (f"write {n} comma-separated numbers ({meaning}), e.g. "
               f"\"{', '.join(['1.5'] * n)}\"")
        bad_count = (counts != n) & ~(empty & optional)
        self.fail(bad_count, column,
                  lambda row: "the cell is empty" if empty[row]
                  else f"the cell holds {_entries(counts[row])}, not {n}", fix)
        out = np.full((len(s), n), np.nan)
        ok = ~(empty & optional)
        if ok.any():
            flat = pd.to_numeric(
                pd.Series([x.strip() for p in parts[ok] for x in p]), errors="coerce"
            ).to_numpy().reshape(-1, n)
            finite = np.isfinite(flat)
            full_bad = np.zeros(len(s), dtype=bool)
            full_bad[np.flatnonzero(ok)[~finite.all(axis=1)]] = True
            where = np.full(len(s), -1)
            where[np.flatnonzero(ok)] = np.argmin(finite, axis=1)
            self.fail(full_bad, column, lambda row: f"entry {where[row] + 1} of {n} is not a "
                      "number", fix)
            out[ok] = flat
        return out


def _entries(n: int) -> str:
    return "1 comma-separated value" if n == 1 else f"{n} comma-separated values"


def read_dl_info(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Source]:
    """Parse DL_info.csv into (patients, studies, lesions) tables, checking every cell."""
    r = _Reader(Path(path))
    names = r.raw["File_name"].astype(str).str.strip()
    ids = _read_ids(r, names)
    geometry = _read_geometry(r, ids["key"])
    labels = _read_labels(r)
    _check_duplicates(r, names)
    lesions = _lesions_table(names, ids, geometry, labels)
    patients, studies = _patients_and_studies(r, lesions, ids, labels)
    return patients, studies, lesions, r.source


def _read_ids(r: _Reader, names: pd.Series) -> dict[str, np.ndarray]:
    """Patient, study, series and key slice, each checked against the File_name."""
    parsed = names.str.extract(_FILE_NAME)
    r.fail(parsed[0].isna(), "File_name",
           "the value is not a DeepLesion file name",
           "file names look like 000001_01_01_109.png (patient_study_series_slice.png)")
    ids = {
        "patient": r.numbers("Patient_index", integer=True,
                             fix="Patient_index is a positive integer"),
        "study": r.numbers("Study_index", integer=True, fix="Study_index is a positive integer"),
        "series": r.numbers("Series_ID", integer=True, fix="Series_ID is a positive integer"),
        "key": r.numbers("Key_slice_index", integer=True,
                         fix="Key_slice_index is a slice number"),
    }
    for col, part, values in (("Patient_index", 0, ids["patient"]),
                              ("Study_index", 1, ids["study"]),
                              ("Series_ID", 2, ids["series"]), ("Key_slice_index", 3, ids["key"])):
        r.fail(parsed[part].astype(float).to_numpy() != values, col,
               f"{col} does not match File_name",
               "File_name is built from Patient_index, Study_index, Series_ID and "
               "Key_slice_index; correct whichever is wrong")
    return ids


def _read_geometry(r: _Reader, key: np.ndarray) -> dict[str, np.ndarray]:
    """The list-valued columns (pixel coordinates made 0-based), each checked against the
    image size and the others."""
    g = {
        "recist": r.lists("Measurement_coordinates") - 1.0,
        "bbox": r.lists("Bounding_boxes") - 1.0,
        "diam": r.lists("Lesion_diameters_Pixel_"),
        "loc": r.lists("Normalized_lesion_location"),
        "srange": r.lists("Slice_range"),
        "spacing": r.lists("Spacing_mm_px_"),
        "size": r.lists("Image_size"),
        "windows": r.lists("DICOM_windows"),
    }
    recist, bbox, diam, loc, srange, spacing, size = (
        g[k] for k in ("recist", "bbox", "diam", "loc", "srange", "spacing", "size"))

    r.fail((spacing <= 0).any(axis=1), "Spacing_mm_px_",
           "a spacing is not positive", "spacing is in mm and above zero")
    r.fail((size <= 0).any(axis=1) | (size != np.round(size)).any(axis=1), "Image_size",
           "the image size is not two positive whole numbers",
           "write the slice size as \"width, height\" in pixels")
    width, height = size[:, 0], size[:, 1]
    r.fail((diam[:, 0] <= 0) | (diam[:, 1] < 0) | (diam[:, 1] > diam[:, 0] + 1e-6),
           "Lesion_diameters_Pixel_", "the diameters are not long >= short > 0",
           "give the long then the short RECIST diameter in pixels")
    r.fail(((loc < 0) | (loc > 1)).any(axis=1), "Normalized_lesion_location",
           "the location is outside [0, 1]",
           "normalised locations are fractions of the body extent, between 0 and 1")
    eps = 0.5
    outside = (
        (bbox[:, 0] < -eps) | (bbox[:, 1] < -eps)
        | (bbox[:, 2] > width - 1 + eps) | (bbox[:, 3] > height - 1 + eps)
        | (bbox[:, 2] <= bbox[:, 0]) | (bbox[:, 3] <= bbox[:, 1])
    )
    r.fail(outside, "Bounding_boxes",
           "the box is not inside the image or has x2 <= x1 or y2 <= y1",
           "boxes are 1-based x1, y1, x2, y2 with x1 < x2 <= width and y1 < y2 <= height "
           "(Image_size); check the coordinates and the Image_size of the row")
    xs, ys = recist[:, 0::2], recist[:, 1::2]
    r.fail((xs < -eps).any(axis=1) | (ys < -eps).any(axis=1)
           | (xs > width[:, None] - 1 + eps).any(axis=1)
           | (ys > height[:, None] - 1 + eps).any(axis=1),
           "Measurement_coordinates", "a point lies outside the image",
           "RECIST points are 1-based pixel coordinates inside Image_size")
    r.fail((srange[:, 0] > key) | (key > srange[:, 1]), "Slice_range",
           "the range does not contain Key_slice_index",
           "Slice_range is \"first, last\" of the slices around the key slice")
    return g


def _read_labels(r: _Reader) -> dict[str, Any]:
    """Lesion type, noise flag, split, age and sex, each checked for its allowed values."""
    raw = r.raw
    ctype = r.numbers("Coarse_lesion_type", integer=True, fix="use 1-8, or -1 for unknown")
    r.fail(~np.isin(ctype, [-1, 1, 2, 3, 4, 5, 6, 7, 8]), "Coarse_lesion_type",
           "the type is not one of -1, 1..8", "use 1-8, or -1 for unknown")
    noisy = r.numbers("Possibly_noisy", integer=True, fix="Possibly_noisy is 0 or 1")
    r.fail(~np.isin(noisy, [0, 1]), "Possibly_noisy", "the value is not 0 or 1",
           "Possibly_noisy is 0 or 1")
    split = r.numbers("Train_Val_Test", integer=True, fix="Train_Val_Test is 1, 2 or 3")
    r.fail(~np.isin(split, [1, 2, 3]), "Train_Val_Test", "the value is not 1, 2 or 3",
           "Train_Val_Test is 1 (train), 2 (validation) or 3 (test)")
    age = r.numbers("Patient_age", allow_missing=True,
                    fix="Patient_age is a number of years, or empty when unknown")
    r.fail((age < 0) | (age > 130), "Patient_age", "the age is out of range",
           "Patient_age is in years, between 0 and 130")
    sex = raw["Patient_gender"].astype(str).str.strip().str.upper()
    sex_missing = ingest.is_missing(raw["Patient_gender"]).to_numpy()
    r.fail(~sex.isin(["M", "F"]).to_numpy() & ~sex_missing, "Patient_gender",
           "the value is not M or F", "write M or F, or leave it empty when unknown")
    return {"ctype": ctype, "noisy": noisy, "split": split, "age": age,
            "sex": sex.where(~sex_missing)}


def _check_duplicates(r: _Reader, names: pd.Series) -> None:
    """No row repeats an earlier one, nor the same lesion of the same slice."""
    dup = r.raw.duplicated(keep="first").to_numpy()
    r.fail(dup, "File_name", "this row repeats an earlier row exactly",
           "remove the duplicate row")
    same = pd.DataFrame({"f": names, "m": r.raw["Measurement_coordinates"]}).duplicated()
    r.fail(same.to_numpy(), "Measurement_coordinates",
           "this lesion (same File_name and measurement) is already on an earlier row",
           "remove the duplicate row, or correct its Measurement_coordinates")


def _lesions_table(names: pd.Series, ids: dict[str, np.ndarray], g: dict[str, np.ndarray],
                   labels: dict[str, Any]) -> pd.DataFrame:
    """The workspace's lesions table from the checked columns."""
    pid = pd.Series(ids["patient"].astype(int)).map(patient_id)
    study_id = pid + "_" + pd.Series(ids["study"].astype(int)).map("{:02d}".format)
    series_ref = names.str.rsplit("_", n=1).str[0]
    image_ref = series_ref + "/" + names.str.rsplit("_", n=1).str[1]
    recist, spacing, diam, loc = g["recist"], g["spacing"], g["diam"], g["loc"]
    ctype = labels["ctype"]
    return pd.DataFrame({
        "lesion_id": lesion_ids(names),
        "patient_id": pid,
        "study_id": study_id,
        "source_row": np.arange(len(names), dtype="int64"),
        "image_ref": image_ref,
        "image_format": "deeplesion_png",
        "series_ref": series_ref,
        "key_slice": ids["key"].astype("int64"),
        "slice_first": g["srange"][:, 0].astype("int64"),
        "slice_last": g["srange"][:, 1].astype("int64"),
        "bbox": list(g["bbox"].astype(float)),
        "recist": list(recist.astype(float)),
        "center_x": (recist[:, 0] + recist[:, 2]) / 2.0,
        "center_y": (recist[:, 1] + recist[:, 3]) / 2.0,
        "long_mm": diam[:, 0] * spacing[:, 0],
        "short_mm": diam[:, 1] * spacing[:, 0],
        "loc_x": loc[:, 0],
        "loc_y": loc[:, 1],
        "loc_z": loc[:, 2],
        "coarse_type": pd.array(np.where(ctype < 0, pd.NA, ctype), dtype="Int64"),
        "noisy": labels["noisy"].astype(bool),
        "split": pd.array(labels["split"].astype(int), dtype="Int64"),
        "spacing_x": spacing[:, 0],
        "spacing_y": spacing[:, 1],
        "spacing_z": spacing[:, 2],
        "image_w": g["size"][:, 0].astype("int64"),
        "image_h": g["size"][:, 1].astype("int64"),
        "window_lo": g["windows"][:, 0],
        "window_hi": g["windows"][:, 1],
    })


def _patients_and_studies(r: _Reader, lesions: pd.DataFrame, ids: dict[str, np.ndarray],
                          labels: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The patients (one sex each; age at the first study) and studies tables."""
    pid = lesions["patient_id"]
    per_row = pd.DataFrame({"patient_id": pid, "study_id": lesions["study_id"],
                            "study_index": ids["study"], "sex": labels["sex"],
                            "age": labels["age"]})
    _check_consistent(r, per_row, "patient_id", "sex", "Patient_gender")
    studies = (per_row.sort_values(["patient_id", "study_index"])
               .groupby("study_id", sort=False)
               .agg(patient_id=("patient_id", "first"), study_index=("study_index", "first"),
                    age_at_study=("age", "max"))
               .reset_index())
    studies["study_index"] = studies["study_index"].astype("int64")
    studies["day"] = np.nan
    first = studies.sort_values("study_index").groupby("patient_id").first()
    sexes = per_row.dropna(subset=["sex"]).groupby("patient_id")["sex"].first()
    patients = pd.DataFrame({"patient_id": sorted(pid.unique())})
    patients["sex"] = patients["patient_id"].map(sexes).astype(object)
    patients["age"] = patients["patient_id"].map(first["age_at_study"]).astype(float)
    return patients, studies


def _check_consistent(r: _Reader, rows: pd.DataFrame, key: str, col: str, raw_col: str) -> None:
    present = rows.dropna(subset=[col])
    first = present.groupby(key)[col].transform("first")
    bad = np.zeros(len(rows), dtype=bool)
    bad[present.index[(present[col] != first).to_numpy()]] = True
    r.fail(bad, raw_col, f"{raw_col} differs from an earlier row of the same patient",
           f"give each patient one {raw_col}")


def check_images(lesions: pd.DataFrame, images: Path, info: Path, progress=None) -> None:
    """Check that each key slice exists, is a 16-bit PNG and has the row's Image_size."""
    from patientgraph.imaging import PNG_16BIT_MODES, png_header

    if not images.is_dir():
        raise InputError(images, "the image folder does not exist",
                         "point --images at the Images_png folder of the release")
    refs = lesions.drop_duplicates("image_ref")

    def headers(chunk) -> list:
        out = []
        for ref in chunk:
            try:
                out.append(png_header(images / ref))
            except InputError as exc:
                out.append(exc)
        return out

    names = refs["image_ref"].tolist()
    chunks = [names[i:i + 512] for i in range(0, len(names), 512)]
    results: list = []
    with ThreadPoolExecutor(max_workers=4) as pool:  # threads: a network share answers slowly
        for part in pool.map(headers, chunks):
            results += part
            if progress is not None:
                progress(len(results), len(names))
    if progress is not None and not names:
        progress(0, 0)
    ok = np.array([not isinstance(res, InputError) and res[0] in PNG_16BIT_MODES
                   for res in results], dtype=bool)
    sizes = np.array([res[1:] if ok[i] else (-1, -1) for i, res in enumerate(results)],
                     dtype=np.int64).reshape(-1, 2)
    ok &= (sizes[:, 0] == refs["image_w"].to_numpy()) & (sizes[:, 1] == refs["image_h"].to_numpy())
    if ok.all():
        return
    first = int(np.flatnonzero(~ok)[0])  # the first bad row, in the table's order
    row, res = refs.iloc[first], results[first]
    if isinstance(res, InputError):
        raise InputError(
            info, f"the key slice of the row (under --images): {res.problem}", res.fix,
            row=int(row["source_row"]), column="File_name",
        )
    mode, w, h = res
    if mode not in PNG_16BIT_MODES:
        raise InputError(
            info, f"the key slice of the row is an image of mode {mode}, not a 16-bit "
            "grayscale PNG (8-bit or colour slices have lost the Hounsfield units)",
            "use the original 16-bit slices of Images_png, or export slices as 16-bit "
            "PNG holding HU + 32768", row=int(row["source_row"]), column="File_name",
        )
    raise InputError(
        info, f"Image_size does not match the key slice of the row, which is {w} x {h} pixels",
        "correct Image_size (width, height) to the size of the PNG",
        row=int(row["source_row"]), column="Image_size",
    )


def ingest_deeplesion(
    info: str | Path,
    images: str | Path,
    workspace: str | Path | Workspace,
    *,
    records: str | Path | None = None,
    outcomes: str | Path | None = None,
    studies: str | Path | None = None,
    time_col: str = "time_days",
    event_col: str = "event",
    force: bool = False,
    progress=None,
) -> dict[str, Any]:
    """Ingest a DeepLesion-format archive into ``workspace``.

    Returns the cohort summary, with ``skipped=True`` when the inputs and options are
    unchanged since the last ingest (pass ``force=True`` to redo it). On any problem with
    the input an :class:`InputError` is raised and the workspace is left as it was.
    """
    started = time.perf_counter()
    ws = Workspace.of(workspace)
    info, images = Path(info), Path(images)
    if not info.exists():
        raise InputError(info, "the file does not exist", "point --info at DL_info.csv")
    config = {
        "adapter": "deeplesion",
        "image_root": str(images.resolve()),
        "time_col": time_col,
        "event_col": event_col,
    }
    paths = {"info": info, "records": records, "outcomes": outcomes, "studies": studies}
    inputs = ingest.input_hashes(paths)
    patients, studies_t, lesions, lesion_source = read_dl_info(info)
    inputs["images"] = listing_sha256(images, lesions["image_ref"])
    stage = ws.start_stage(INGEST, config, inputs, started)
    if (last := stage.skip(force)) is not None:
        return last

    check_images(lesions, images, info, progress=progress)
    tables = {"patients": patients, "studies": studies_t, "lesions": lesions}
    info_source = Source(str(info))
    sources = {"patients": info_source, "studies": info_source, "lesions": lesion_source}
    if studies is not None:
        days, days_source = ingest.read_study_days(studies, normalize_patient_key)
        tables["studies"] = _attach_days(studies_t, days, days_source)
    extra, extra_sources = ingest.read_extras(records, outcomes, normalize_patient_key,
                                              time_col=time_col, event_col=event_col)
    tables.update(extra)
    sources.update(extra_sources)
    return ingest.commit_cohort(stage, tables, sources)


def _attach_days(studies: pd.DataFrame, days: pd.DataFrame, source: Source) -> pd.DataFrame:
    merged = studies.drop(columns=["day"]).merge(
        days, on=["patient_id", "study_index"], how="left", validate="one_to_one"
    )
    known = set(zip(studies["patient_id"], studies["study_index"], strict=True))
    extra = [i for i, k in enumerate(zip(days["patient_id"], days["study_index"], strict=True))
             if k not in known]
    if extra:
        raise InputError(source.file, "this patient and study are not in DL_info.csv",
                         "remove the row, or check Patient_index and Study_index",
                         row=source.row_of(days.index[extra[0]]), column="Study_index",
                         more=len(extra) - 1)
    return merged
