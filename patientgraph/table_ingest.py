"""Ingest a lesions table whose rows point at NIfTI volumes or DICOM series folders.

The lesions CSV (or Parquet) has one row per lesion:

============  ==========================================================================
column        meaning
============  ==========================================================================
lesion_id     unique id of the lesion (required)
patient_id    the patient (required)
study_id      the study (required; unique across patients)
image         a NIfTI file (.nii / .nii.gz) or a folder holding one DICOM series,
              relative to the CSV's folder or absolute (required)
x, y, z       the lesion centre (required)
coords        ``voxel`` (0-based i, j, k of the file's own voxel array; for DICOM, column,
              row and slice after sorting along the slice normal) or ``world`` (patient
              coordinates in mm, LPS as in DICOM and ITK); default ``voxel``
long_mm       long diameter in mm (optional; sets the lesion box, else a 20 mm box)
short_mm      short diameter in mm (optional)
coarse_type   1..8 as in DeepLesion, empty or -1 when unknown (optional)
day           days since the patient's first study (optional)
sex, age      patient sex (M/F) and age at the study (optional)
split         1 train, 2 validation, 3 test (optional)
window_lo,    the display window the reader marked the lesion in, low and high HU (e.g.
window_hi     -1350, 150 for lung; optional, both or neither; as DeepLesion's
              DICOM_windows, the lesion encoder takes it as a weak cue to the site)
============  ==========================================================================

Volumes are reoriented to the canonical axial orientation (i to patient left, j to
posterior, k to superior) by :mod:`patientgraph.imaging`; the workspace stores canonical
voxel positions, so every later stage reads NIfTI, DICOM and DeepLesion slices alike. Only
headers are read at ingest.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patientgraph import ingest
from patientgraph.errors import InputError
from patientgraph.schema import Source
from patientgraph.validate import fail_rows
from patientgraph.workspace import INGEST, Workspace, listing_sha256

REQUIRED = ("lesion_id", "patient_id", "study_id", "image", "x", "y", "z")
DEFAULT_BOX_MM = 20.0
BOX_PAD_PX = 5.0


def _identity(values: pd.Series, column: str) -> pd.Series:
    return values.astype(str).str.strip()


def _image_format(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "dicom"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".dcm"):
        return "dicom"
    return "unknown"


def read_lesion_table(path: Path, progress=None) -> tuple[pd.DataFrame, pd.DataFrame,
                                                          pd.DataFrame, Source]:
    """Parse the lesions table into (patients, studies, lesions), reading volume headers."""
    raw = ingest.read_table(path)
    source = Source(str(path), rows=pd.Series(np.arange(len(raw)), index=raw.index))
    _check_columns(raw, path)
    fields = _read_fields(raw, source)
    images = raw["image"].astype(str).str.strip().map(
        lambda p: str(Path(p) if Path(p).is_absolute() else (path.parent / p).resolve()))
    headers = _read_headers(images, source, progress)
    lesions = _lesion_rows(raw, source, fields, images, headers)
    patients, studies = _patients_and_studies(raw, source, fields, lesions)
    return patients, studies, lesions, source


def _check_columns(raw: pd.DataFrame, path: Path) -> None:
    """The required columns are there and the table has rows."""
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise InputError(path, f"the column {missing[0]!r} is missing",
                         f"the lesions table needs the columns {', '.join(REQUIRED)}",
                         column=missing[0])
    if raw.empty:
        raise InputError(path, "the table has no rows", "add at least one lesion")


def _read_fields(raw: pd.DataFrame, source: Source) -> dict[str, pd.Series]:
    """Check and parse every column but the image: ids, centre, coords and the optional
    numbers, each checked for range."""
    for col in ("lesion_id", "patient_id", "study_id", "image"):
        fail_rows(source, ingest.is_missing(raw[col]), col, "the value is empty",
                  f"fill in {col} on every row")
    fields = {c: ingest.to_number(raw[c], source, c, fix=f"{c} is a number")
              for c in ("x", "y", "z")}
    for c in ("x", "y", "z"):
        fail_rows(source, fields[c].isna(), c, "the coordinate is empty",
                  "give the lesion centre")
    coords = (raw["coords"].astype(str).str.strip().str.lower() if "coords" in raw
              else pd.Series("voxel", index=raw.index))
    fail_rows(source, ~coords.isin(["voxel", "world"]), "coords",
              "coords is not voxel or world", "write voxel (0-based i, j, k) or world (LPS mm)")
    fields["coords"] = coords

    def optional(col: str, **kw) -> pd.Series:
        if col not in raw:
            return pd.Series(np.nan, index=raw.index)
        return ingest.to_number(raw[col], source, col, **kw)

    fields["long_mm"] = optional("long_mm", fix="long_mm is a diameter in mm")
    fields["short_mm"] = optional("short_mm", fix="short_mm is a diameter in mm")
    fields["coarse_type"] = optional("coarse_type", integer=True,
                                     fix="coarse_type is 1..8, or -1 / empty")
    fields["day"] = optional("day", fix="day is a number of days since the first study")
    fields["age"] = optional("age", fix="age is a number of years")
    fields["split"] = optional("split", integer=True, fix="split is 1, 2 or 3")
    for c, end in (("window_lo", "lower"), ("window_hi", "upper")):
        fields[c] = optional(c, fix=f"{c} is the display window's {end} bound in HU")
    for col, other in (("window_lo", "window_hi"), ("window_hi", "window_lo")):
        fail_rows(source, fields[col].isna() & fields[other].notna(), col,
                  f"{other} is given but {col} is empty",
                  "give both bounds of the reading window, or neither")
    fail_rows(source, fields["window_hi"] <= fields["window_lo"], "window_hi",
              "window_hi is not above window_lo",
              "window_lo is the lower bound in HU, window_hi the upper")
    long_mm, ctype, day, split = (fields[c] for c in ("long_mm", "coarse_type", "day", "split"))
    for col, values, ok, fix in (
        ("long_mm", long_mm, long_mm > 0, "diameters are positive mm"),
        ("coarse_type", ctype, ctype.isin([-1, 1, 2, 3, 4, 5, 6, 7, 8]), "use 1..8 or -1"),
        ("day", day, day >= 0, "days count from the first study, which is day 0"),
        ("split", split, split.isin([1, 2, 3]), "use 1 (train), 2 (val) or 3 (test)"),
    ):
        fail_rows(source, values.notna() & ~ok, col, "the value is out of range", fix)
    return fields


def _read_headers(images: pd.Series, source: Source, progress) -> dict[str, Any]:
    """The header of each distinct image, refusing paths that are not a NIfTI file or a
    DICOM folder, or cannot be read."""
    from patientgraph.imaging import volume_header

    headers: dict[str, Any] = {}
    for n, (idx, image) in enumerate(images.items()):
        if image in headers:
            continue
        fmt = _image_format(Path(image))
        if not Path(image).exists() or fmt == "unknown":
            problem = ("the image does not exist" if not Path(image).exists()
                       else "the image is neither a NIfTI file nor a DICOM folder")
            raise InputError(source.file, problem,
                             "point image at a .nii/.nii.gz file or a DICOM series folder "
                             "(relative paths are relative to the lesions table)",
                             row=source.row_of(idx), column="image")
        try:
            headers[image] = volume_header(image)
        except InputError as exc:
            raise InputError(source.file, f"the image cannot be read: {exc.problem}", exc.fix,
                             row=source.row_of(idx),
                             column="image") from None
        if progress is not None:
            progress(n + 1, len(images))
    return headers


def _lesion_rows(raw: pd.DataFrame, source: Source, fields: dict[str, pd.Series],
                 images: pd.Series, headers: dict[str, Any]) -> pd.DataFrame:
    """The lesions table: each centre in canonical voxels (refused outside its image) and
    a box of the lesion's long diameter (or the default) around it."""
    from patientgraph.imaging import world_to_voxel

    long_mm, short_mm = fields["long_mm"], fields["short_mm"]
    ctype, split, coords = fields["coarse_type"], fields["split"], fields["coords"]
    rows = []
    for idx in raw.index:
        image = images[idx]
        hdr = headers[image]
        point = np.array([fields["x"][idx], fields["y"][idx], fields["z"][idx]], dtype=float)
        if coords[idx] == "world":
            ijk = np.asarray(world_to_voxel(hdr, point), dtype=float)
        else:
            ijk = np.asarray(hdr.native_to_canonical(point), dtype=float)
        nk, nj, ni = hdr.shape
        inside = (-0.5 <= ijk[0] <= ni - 0.5) and (-0.5 <= ijk[1] <= nj - 0.5) and (
            -0.5 <= ijk[2] <= nk - 0.5)
        if not inside:
            raise InputError(source.file, f"the lesion centre (x, y, z) in {coords[idx]} "
                             f"coordinates lies outside the image ({ni} x {nj} x {nk} voxels)",
                             "check x, y, z and whether they are voxel or world (LPS mm) "
                             "coordinates (column coords)", row=source.row_of(idx), column="x")
        sx, sy, sz = (float(v) for v in hdr.spacing)
        side = long_mm[idx] if not np.isnan(long_mm[idx]) else DEFAULT_BOX_MM
        hx, hy = side / 2 / sx + BOX_PAD_PX, side / 2 / sy + BOX_PAD_PX
        bbox = np.array([max(ijk[0] - hx, 0), max(ijk[1] - hy, 0),
                         min(ijk[0] + hx, ni - 1), min(ijk[1] + hy, nj - 1)])
        fmt = _image_format(Path(image))
        rows.append({
            "lesion_id": str(raw.loc[idx, "lesion_id"]).strip(),
            "patient_id": str(raw.loc[idx, "patient_id"]).strip(),
            "study_id": str(raw.loc[idx, "study_id"]).strip(),
            "source_row": int(source.row_of(idx)),
            "image_ref": image,
            "image_format": fmt,
            "series_ref": image,
            "key_slice": int(np.clip(round(ijk[2]), 0, nk - 1)),
            "slice_first": 0,
            "slice_last": int(nk - 1),
            "bbox": bbox,
            "recist": None,
            "center_x": float(ijk[0]),
            "center_y": float(ijk[1]),
            "long_mm": long_mm[idx],
            "short_mm": short_mm[idx],
            "loc_x": np.nan, "loc_y": np.nan, "loc_z": np.nan,
            "coarse_type": ctype[idx] if ctype[idx] in range(1, 9) else pd.NA,
            "noisy": False,
            "split": split[idx] if not np.isnan(split[idx]) else pd.NA,
            "spacing_x": sx, "spacing_y": sy, "spacing_z": sz,
            "image_w": int(ni), "image_h": int(nj),
            "window_lo": fields["window_lo"][idx], "window_hi": fields["window_hi"][idx],
        })
    lesions = pd.DataFrame(rows)
    lesions["coarse_type"] = pd.array(lesions["coarse_type"], dtype="Int64")
    lesions["split"] = pd.array(lesions["split"], dtype="Int64")
    for col in ("loc_x", "loc_y", "loc_z", "long_mm", "short_mm", "window_lo", "window_hi"):
        lesions[col] = lesions[col].astype(float)
    return lesions


def _patients_and_studies(raw: pd.DataFrame, source: Source, fields: dict[str, pd.Series],
                          lesions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The patients (sex, age at the first study) and studies (day, order per patient)
    tables, refusing a sex other than M/F and a study_id shared by two patients."""
    sex = (raw["sex"].astype(str).str.strip().str.upper() if "sex" in raw
           else pd.Series("", index=raw.index))
    sex = sex.where(~ingest.is_missing(sex))
    fail_rows(source, sex.notna() & ~sex.isin(["M", "F"]), "sex", "sex is not M or F",
              "write M or F, or leave it empty")
    per_row = pd.DataFrame({"patient_id": lesions["patient_id"], "study_id":
                            lesions["study_id"], "day": fields["day"].to_numpy(),
                            "age": fields["age"].to_numpy(), "sex": sex.to_numpy()})
    owners = per_row.groupby("study_id")["patient_id"].nunique()
    if (owners > 1).any():
        sid = owners[owners > 1].index[0]
        idx = per_row.index[per_row["study_id"] == sid][-1]
        raise InputError(source.file, "this study_id belongs to more than one patient",
                         "give each study an id of its own", row=source.row_of(idx),
                         column="study_id")
    studies = (per_row.groupby("study_id", sort=False)
               .agg(patient_id=("patient_id", "first"), day=("day", "min"),
                    age_at_study=("age", "max")).reset_index())
    order = studies.assign(d=studies["day"].fillna(np.inf)).sort_values(["d", "study_id"])
    studies["study_index"] = (order.groupby("patient_id").cumcount() + 1).reindex(
        studies.index).astype("int64")
    sexes = per_row.dropna(subset=["sex"]).groupby("patient_id")["sex"].agg(
        lambda s: s.iloc[0])
    first_age = studies.sort_values("study_index").groupby("patient_id")["age_at_study"].first()
    patients = pd.DataFrame({"patient_id": sorted(lesions["patient_id"].unique())})
    patients["sex"] = patients["patient_id"].map(sexes).astype(object)
    patients["age"] = patients["patient_id"].map(first_age).astype(float)
    return patients, studies


def ingest_table(
    lesions: str | Path,
    workspace: str | Path | Workspace,
    *,
    records: str | Path | None = None,
    outcomes: str | Path | None = None,
    time_col: str = "time_days",
    event_col: str = "event",
    force: bool = False,
    progress=None,
) -> dict[str, Any]:
    """Ingest a lesions table pointing at NIfTI / DICOM volumes into ``workspace``."""
    started = time.perf_counter()
    ws = Workspace.of(workspace)
    lesions = Path(lesions)
    config = {"adapter": "table", "image_root": None, "time_col": time_col,
              "event_col": event_col}
    inputs = ingest.input_hashes({"lesions": lesions, "records": records,
                                  "outcomes": outcomes})
    patients, studies, lesion_t, source = read_lesion_table(lesions, progress=progress)
    files = [str(p) for ref in lesion_t["image_ref"].unique()
             for p in ([ref] if Path(ref).is_file() else sorted(Path(ref).iterdir()))]
    inputs["images"] = listing_sha256("/", files)
    stage = ws.start_stage(INGEST, config, inputs, started)
    if (last := stage.skip(force)) is not None:
        return last
    tables = {"patients": patients, "studies": studies, "lesions": lesion_t}
    table_source = Source(str(lesions))
    sources = {"patients": table_source, "studies": table_source, "lesions": source}
    extra, extra_sources = ingest.read_extras(records, outcomes, _identity,
                                              time_col=time_col, event_col=event_col)
    tables.update(extra)
    sources.update(extra_sources)
    return ingest.commit_cohort(stage, tables, sources)
