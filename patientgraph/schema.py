"""The cohort data model: the five tables of a workspace and their schemas.

``W/cohort/{patients,studies,lesions,records,outcomes}.parquet`` (docs/design.md). Every ingest
adapter builds these tables and passes them through :func:`validate_cohort` before anything
is written: types, ranges, unique ids and every reference resolving. A failure becomes an
:class:`~patientgraph.errors.InputError` that points back at the user's file and row.

Lesion columns beyond the workspace contract (extensions, never renames):

``image_format``  ``deeplesion_png`` | ``nifti`` | ``dicom``
``series_ref``    the folder of PNG slices (DeepLesion) or the volume file / DICOM folder
``spacing_x, spacing_y, spacing_z``  mm per pixel in x, y and between slices
``image_w, image_h``   slice size in pixels
``slice_first, slice_last``   slices available around the key slice (inclusive)
``center_x, center_y``  lesion centre in 0-based pixels (centre of the RECIST long axis)
``recist``        8 floats, long-axis end points then short-axis end points, 0-based px
``window_lo, window_hi``   the display window that came with the lesion (HU), if any
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from patientgraph.errors import InputError

COARSE_TYPES = {
    1: "bone",
    2: "abdomen",
    3: "mediastinum",
    4: "liver",
    5: "lung",
    6: "kidney",
    7: "soft tissue",
    8: "pelvis",
}
SPLITS = {1: "train", 2: "val", 3: "test"}
IMAGE_FORMATS = ("deeplesion_png", "nifti", "dicom")

TABLES = ("patients", "studies", "lesions", "records", "outcomes")
_DIGITS = re.compile(r"\d+")


def _list_of_len(n: int) -> Callable[[pd.Series], pd.Series]:
    def check(s: pd.Series) -> pd.Series:
        return s.map(lambda v: v is not None and len(v) == n and bool(np.all(np.isfinite(v))))

    return check


_nonneg = pa.Check.ge(0)
_unit = pa.Check.in_range(0.0, 1.0)

PATIENTS = pa.DataFrameSchema(
    {
        "patient_id": pa.Column(str, unique=True, nullable=False),
        "sex": pa.Column(str, pa.Check.isin(["M", "F"]), nullable=True),
        "age": pa.Column(float, pa.Check.in_range(0, 130), nullable=True),
    },
    strict=False,
    ordered=False,
)

STUDIES = pa.DataFrameSchema(
    {
        "study_id": pa.Column(str, unique=True, nullable=False),
        "patient_id": pa.Column(str, nullable=False),
        "study_index": pa.Column("int64", _nonneg),
        "day": pa.Column(float, _nonneg, nullable=True),
        "age_at_study": pa.Column(float, pa.Check.in_range(0, 130), nullable=True),
    },
    strict=False,
)

LESIONS = pa.DataFrameSchema(
    {
        "lesion_id": pa.Column(str, unique=True, nullable=False),
        "patient_id": pa.Column(str, nullable=False),
        "study_id": pa.Column(str, nullable=False),
        "source_row": pa.Column("int64", _nonneg),
        "image_ref": pa.Column(str, nullable=False),
        "image_format": pa.Column(str, pa.Check.isin(list(IMAGE_FORMATS))),
        "series_ref": pa.Column(str, nullable=False),
        "key_slice": pa.Column("int64", _nonneg),
        "slice_first": pa.Column("int64", _nonneg),
        "slice_last": pa.Column("int64", _nonneg),
        "bbox": pa.Column(object, pa.Check(_list_of_len(4), element_wise=False)),
        "recist": pa.Column(object, nullable=True),
        "center_x": pa.Column(float),
        "center_y": pa.Column(float),
        "long_mm": pa.Column(float, pa.Check.gt(0), nullable=True),
        "short_mm": pa.Column(float, _nonneg, nullable=True),
        "loc_x": pa.Column(float, _unit, nullable=True),
        "loc_y": pa.Column(float, _unit, nullable=True),
        "loc_z": pa.Column(float, _unit, nullable=True),
        "coarse_type": pa.Column("Int64", pa.Check.isin(list(COARSE_TYPES)), nullable=True),
        "noisy": pa.Column(bool),
        "split": pa.Column("Int64", pa.Check.isin(list(SPLITS)), nullable=True),
        "spacing_x": pa.Column(float, pa.Check.gt(0)),
        "spacing_y": pa.Column(float, pa.Check.gt(0)),
        "spacing_z": pa.Column(float, pa.Check.gt(0), nullable=True),
        "image_w": pa.Column("int64", pa.Check.gt(0)),
        "image_h": pa.Column("int64", pa.Check.gt(0)),
        "window_lo": pa.Column(float, nullable=True),
        "window_hi": pa.Column(float, nullable=True),
    },
    checks=[
        pa.Check(lambda d: d["slice_first"] <= d["key_slice"], error="slice_first <= key_slice"),
        pa.Check(lambda d: d["key_slice"] <= d["slice_last"], error="key_slice <= slice_last"),
    ],
    strict=False,
)

RECORDS = pa.DataFrameSchema(
    {"patient_id": pa.Column(str, unique=True, nullable=False)},
    strict=False,
)

OUTCOMES = pa.DataFrameSchema(
    {
        "patient_id": pa.Column(str, unique=True, nullable=False),
        "time_days": pa.Column(float, _nonneg),
        "event": pa.Column("int64", pa.Check.isin([0, 1])),
    },
    strict=False,
)

SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "patients": PATIENTS,
    "studies": STUDIES,
    "lesions": LESIONS,
    "records": RECORDS,
    "outcomes": OUTCOMES,
}


@dataclass
class Source:
    """Where a table's rows came from, so errors can point back at the user's file.

    ``rows`` maps the table's index to the 0-based data row of ``file``; ``columns`` maps
    the table's column names to the names the user's file used.
    """

    file: str
    rows: pd.Series | None = None
    columns: Mapping[str, str] | None = None

    def row_of(self, index) -> int | None:
        if self.rows is None:
            return int(index) if isinstance(index, (int, np.integer)) else None
        try:
            return int(self.rows.loc[index])
        except (KeyError, TypeError, ValueError):
            return None

    def column_of(self, column: str | None) -> str | None:
        if column is None or self.columns is None:
            return column
        return self.columns.get(column, column)


def validate(table: str, df: pd.DataFrame, source: Source) -> pd.DataFrame:
    """Check ``df`` against the schema of ``table``; raise :class:`InputError` on failure."""
    schema = SCHEMAS[table]
    try:
        return schema.validate(df, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        first = cases.iloc[0]
        column = first.get("column")
        column = None if column is None or pd.isna(column) else str(column)
        index = first.get("index")
        row = None if index is None or pd.isna(index) else source.row_of(index)
        same = cases[(cases["column"] == first["column"]) & (cases["check"] == first["check"])]
        check = str(first.get("check"))
        # failure_case holds the offending cell, which may be a patient id or a clinical
        # value: the message says what is wrong in general terms and never quotes it.
        raise InputError(
            source.file,
            f"{table} table fails the check '{check}': {_problem_for(check)}",
            _fix_for(table, column, check),
            row=row,
            column=source.column_of(column),
            more=max(len(same) - 1, 0),
        ) from None


def _problem_for(check: str) -> str:
    if "unique" in check or "duplicate" in check:
        return "the value appears on more than one row"
    if "column_in_dataframe" in check or "column_in_schema" in check:
        return "the column is missing"
    if "dtype" in check:
        return "the column holds values of another type"
    if "not_nullable" in check:
        return "the value is empty"
    return "the value is not allowed"


def _fix_for(table: str, column: str | None, check: str) -> str:
    if "unique" in check or "duplicate" in check:
        return f"give every {table[:-1]} its own {column} (remove or merge the duplicate rows)"
    if "column_in_dataframe" in check or "column_in_schema" in check:
        return f"add the column {column!r} to the file"
    if "dtype" in check:
        return f"make every value in {column!r} a {check.split('(')[-1].rstrip(')')}"
    if "not_nullable" in check:
        return f"fill in {column!r} on every row"
    return f"correct the value of {column!r} so that it satisfies {check}"


def check_references(
    child: pd.DataFrame,
    key: str,
    parent_ids: pd.Series,
    source: Source,
    *,
    parent_name: str,
    fix: str,
) -> None:
    """Raise :class:`InputError` if some ``child[key]`` is not among ``parent_ids``."""
    unknown = ~child[key].isin(set(parent_ids))
    if unknown.any():
        idx = child.index[unknown.to_numpy()]
        raise InputError(
            source.file,
            f"the {parent_name} of this row is not in this cohort",
            fix,
            row=source.row_of(idx[0]),
            column=source.column_of(key),
            more=len(idx) - 1,
        )


def canonical_id(value: object) -> str:
    """An id with its formatting taken out: surrounding whitespace, case and the leading
    zeros of every run of digits (``" l0042_01 "`` and ``"L42_1"`` both become ``"l42_1"``)."""
    text = str(value).strip().casefold()
    return _DIGITS.sub(lambda m: m.group().lstrip("0") or "0", text)


def resolve_id(value: object, known: Iterable[object]) -> str:
    """``value`` as the known id it stands for: itself when known, else the one known id
    that differs from it by formatting alone (``1`` for ``000001``, see
    :func:`canonical_id`), else ``value`` unchanged (two or more such ids are ambiguous,
    and the caller's unknown-id error then names none of them)."""
    typed = str(value)
    known = [str(k) for k in known]
    if typed in known:
        return typed
    wanted = canonical_id(typed)
    same = [k for k in known if canonical_id(k) == wanted]
    return same[0] if len(same) == 1 else typed


def unknown_id(value: object, known: Iterable[object], what: str, more: int = 0) -> InputError:
    """An :class:`InputError` for an id that is not among ``known``.

    It never lists ids the user did not type: "did you mean" names one known id only when
    it differs from ``value`` by formatting alone (zero padding, case, whitespace; see
    :func:`canonical_id`) and no other known id does too. ``what`` is ``patient_id``,
    ``study_id`` or ``lesion_id``.
    """
    wanted = canonical_id(value)
    same = [k for k in map(str, known) if canonical_id(k) == wanted]
    hint = f" Did you mean {same[0]!r}?" if len(same) == 1 else ""
    extra = f" ({more} more unknown)" if more > 0 else ""
    typed = str(value) if len(str(value)) <= 80 else str(value)[:80] + "..."
    table = {"patient_id": "patients", "study_id": "studies", "lesion_id": "lesions"}.get(
        what, "*")
    where = f"the workspace's cohort/{table}.parquet lists them"
    if what == "patient_id":
        where += ", and so does the patient list of the explorer's Patient page"
    return InputError(None, f"unknown {what} {typed!r}{extra}.{hint}",
                      f"give an existing {what} ({where})")


def validate_cohort(
    tables: Mapping[str, pd.DataFrame], sources: Mapping[str, Source]
) -> dict[str, pd.DataFrame]:
    """Validate every table and every reference between them."""
    out = {name: validate(name, tables[name], sources[name]) for name in TABLES}
    pid = out["patients"]["patient_id"]
    check_references(
        out["studies"], "patient_id", pid, sources["studies"], parent_name="patient",
        fix="every study must belong to a patient listed in the cohort",
    )
    check_references(
        out["lesions"], "study_id", out["studies"]["study_id"], sources["lesions"],
        parent_name="study", fix="every lesion must belong to a study of the cohort",
    )
    for name in ("records", "outcomes"):
        check_references(
            out[name], "patient_id", pid, sources[name], parent_name="patient",
            fix=f"remove the rows of patients that have no lesions in the cohort from "
            f"the {name} file, or check that its patient ids match Patient_index",
        )
    return out


def empty_table(table: str) -> pd.DataFrame:
    """An empty frame with the schema's columns (e.g. records when none were given)."""
    cols = {}
    for name, col in SCHEMAS[table].columns.items():
        dtype = str(col.dtype) if col.dtype is not None else "object"
        cols[name] = pd.Series([], dtype="object" if dtype == "str" else dtype)
    return pd.DataFrame(cols)
