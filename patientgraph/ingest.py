"""What every ingest adapter shares: reading the non-imaging tables and writing the cohort.

Records, outcomes and study days come as CSV or Parquet keyed by ``Patient_index`` (the
DeepLesion convention) or ``patient_id``. Adapters turn their imaging input into the
patients, studies and lesions tables, then call :func:`commit_cohort`, which validates all
five tables together and writes them into the workspace in one atomic swap.

Errors name the file, row, column and the fix and say what is wrong in general terms; they
never quote a cell (a record cell may hold free text with a record number, and ids and image
paths identify patients), only column names, which the user wrote in the header.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patientgraph.atomic import atomic_dir
from patientgraph.errors import InputError
from patientgraph.schema import TABLES, Source, empty_table, validate_cohort
from patientgraph.validate import fail_rows
from patientgraph.workspace import COHORT_DIR, INGEST, StageRun, file_sha256

KEY_COLUMNS = ("Patient_index", "patient_id")
# A column in which at least this share of the non-missing values are numbers, but not all,
# is a numeric column with stray text: an error, never coerced. Below it, a category.
_NUMERIC_SHARE = 0.5


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file as strings (CSV) so that nothing is coerced silently."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "the file does not exist", "check the path")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise InputError(
            path,
            f"the file cannot be read as a table ({str(exc).splitlines()[0]})",
            "save it as a comma-separated CSV with one header line, or as Parquet",
        ) from None


_MISSING = {"", "na", "n/a", "nan", "null", "none", "."}


def is_missing(s: pd.Series) -> pd.Series:
    """Empty cells and the usual spellings of 'missing' (NA, N/A, NaN, null, none, .)."""
    if s.dtype == object or pd.api.types.is_string_dtype(s):
        text = s.astype("string").str.strip().str.lower()
        return s.isna() | text.isin(_MISSING).fillna(True)
    return s.isna()


def to_number(
    s: pd.Series, source: Source, column: str, *, fix: str, integer: bool = False
) -> pd.Series:
    """Parse a column as numbers (missing stays NaN); any other text is an error."""
    missing = is_missing(s)
    values = pd.to_numeric(s.where(~missing), errors="coerce")
    bad = values.isna() & ~missing
    if integer:
        bad |= values.notna() & (values != np.floor(values.fillna(0)))
    kind = "a whole number" if integer else "a number"
    fail_rows(source, bad, column, f"the value is not {kind}", fix)
    return values.astype(float)


def patient_key(
    df: pd.DataFrame,
    source: Source,
    normalize: Callable[[pd.Series, str], pd.Series],
) -> pd.Series:
    """The patient id of each row, from ``Patient_index`` or ``patient_id``."""
    present = [c for c in KEY_COLUMNS if c in df.columns]
    if len(present) != 1:
        problem = (
            "it has no patient key column"
            if not present
            else "it has both Patient_index and patient_id"
        )
        raise InputError(
            source.file,
            problem,
            "key the table by exactly one of the columns Patient_index (the DeepLesion "
            "integer) or patient_id",
        )
    col = present[0]
    fail_rows(source, is_missing(df[col]), col, "the patient key is empty",
              "fill in the patient of every row")
    if col == "Patient_index":
        to_number(
            df[col], source, col, integer=True,
            fix="Patient_index must be the integer patient number used in DL_info.csv",
        )
    return normalize(df[col], col)


def read_records(
    path: str | Path, normalize: Callable[[pd.Series, str], pd.Series]
) -> tuple[pd.DataFrame, Source]:
    """Read non-imaging covariates: numeric columns become floats, others categories."""
    raw = read_table(path)
    source = Source(str(path), rows=pd.Series(np.arange(len(raw)), index=raw.index))
    pid = patient_key(raw, source, normalize)
    key = next(c for c in KEY_COLUMNS if c in raw.columns)
    out = pd.DataFrame({"patient_id": pid.astype(str)}, index=raw.index)
    for col in raw.columns:
        if col == key:
            continue
        if col == "patient_id" or not str(col).strip():
            raise InputError(
                path, f"column name {col!r} is not allowed for a covariate",
                "rename the column", column=str(col),
            )
        out[col] = _covariate(raw[col], source, col)
    source.columns = {"patient_id": key}
    return out, source


def _covariate(s: pd.Series, source: Source, col: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return s.astype(float)
    missing = is_missing(s)
    present = s[~missing]
    if present.empty:
        return pd.Series(np.nan, index=s.index, dtype=float)
    numeric = pd.to_numeric(present, errors="coerce")
    share = float(numeric.notna().mean())
    if share == 1.0:
        return pd.to_numeric(s.where(~missing), errors="coerce").astype(float)
    if share >= _NUMERIC_SHARE:
        fail_rows(source, numeric.isna(), col,
                  "the column holds numbers, but this cell is not a number",
                  "leave the cell empty (or write NA) where the value is missing, or correct it")
    return s.where(~missing).astype("string").str.strip().astype(object)


def read_outcomes(
    path: str | Path,
    normalize: Callable[[pd.Series, str], pd.Series],
    *,
    time_col: str = "time_days",
    event_col: str = "event",
) -> tuple[pd.DataFrame, Source]:
    """Read survival outcomes: time (days, >= 0) and event (0 = censored, 1 = event)."""
    raw = read_table(path)
    source = Source(str(path), rows=pd.Series(np.arange(len(raw)), index=raw.index))
    for col in (time_col, event_col):
        if col not in raw.columns:
            raise InputError(
                path, f"the outcomes table has no column {col!r}",
                f"add it, or name the column with --{'time' if col == time_col else 'event'}"
                "-col",
                column=col,
            )
    pid = patient_key(raw, source, normalize)
    key = next(c for c in KEY_COLUMNS if c in raw.columns)
    time = to_number(
        raw[time_col], source, time_col,
        fix="give follow-up time as a number of days",
    )
    event = to_number(
        raw[event_col], source, event_col, fix="code the event as 1 (event) or 0 (censored)"
    )
    for col, values, fix in (
        (time_col, time, "give every patient's follow-up time, or drop the row"),
        (event_col, event, "give every patient's event status, or drop the row"),
    ):
        fail_rows(source, values.isna(), col, "the value is missing", fix)
    fail_rows(source, time < 0, time_col, "the follow-up time is negative",
              "time is days from the first study to the event or censoring; it cannot be "
              "negative (check the date arithmetic)")
    fail_rows(source, ~event.isin([0.0, 1.0]), event_col, "the event is not 0 or 1",
              "code the event as 1 (event observed) or 0 (censored)")
    out = pd.DataFrame(
        {"patient_id": pid.astype(str), "time_days": time, "event": event.astype("int64")},
        index=raw.index,
    )
    source.columns = {"patient_id": key, "time_days": time_col, "event": event_col}
    return out, source


def read_study_days(
    path: str | Path, normalize: Callable[[pd.Series, str], pd.Series]
) -> tuple[pd.DataFrame, Source]:
    """Read study days: patient key, ``Study_index`` and ``day`` (days since first study)."""
    raw = read_table(path)
    source = Source(str(path), rows=pd.Series(np.arange(len(raw)), index=raw.index))
    for col in ("Study_index", "day"):
        if col not in raw.columns:
            raise InputError(path, f"the studies table has no column {col!r}",
                             f"add the column {col!r}", column=col)
    pid = patient_key(raw, source, normalize)
    study = to_number(raw["Study_index"], source, "Study_index", integer=True,
                      fix="Study_index must be the integer study number of DL_info.csv")
    day = to_number(raw["day"], source, "day", fix="give the study day as a number of days")
    fail_rows(source, day < 0, "day", "the day is negative",
              "day counts from the patient's first study, which is day 0")
    out = pd.DataFrame({"patient_id": pid.astype(str), "study_index": study, "day": day},
                       index=raw.index)
    fail_rows(source, out.duplicated(["patient_id", "study_index"], keep="first"),
              "Study_index", "this patient and study already appear on an earlier row",
              "give each study one row")
    return out, source


def read_extras(
    records: str | Path | None,
    outcomes: str | Path | None,
    normalize: Callable[[pd.Series, str], pd.Series],
    *,
    time_col: str,
    event_col: str,
) -> tuple[dict[str, pd.DataFrame], dict[str, Source]]:
    """Read the optional records and outcomes tables (absent ones are left out)."""
    tables: dict[str, pd.DataFrame] = {}
    sources: dict[str, Source] = {}
    for name, path in (("records", records), ("outcomes", outcomes)):
        if path is None:
            sources[name] = Source(f"<no {name} given>")
        elif name == "records":
            tables[name], sources[name] = read_records(path, normalize)
        else:
            tables[name], sources[name] = read_outcomes(
                path, normalize, time_col=time_col, event_col=event_col)
    return tables, sources


def input_hashes(paths: Mapping[str, str | Path | None]) -> dict[str, str]:
    """sha256 of each given input file, keyed by its role (missing roles are skipped)."""
    return {role: file_sha256(p) for role, p in paths.items() if p is not None}


def commit_cohort(stage: StageRun, tables: Mapping[str, pd.DataFrame],
                  sources: Mapping[str, Source]) -> dict[str, Any]:
    """Validate the five tables together, swap them into ``W/cohort`` atomically and record
    the ingest; returns its summary."""
    tables = dict(tables)
    for name in ("records", "outcomes"):
        if tables.get(name) is None:
            tables[name] = empty_table(name)
    valid = validate_cohort(tables, sources)
    workspace = stage.ws
    workspace.begin_stage(INGEST)
    with atomic_dir(workspace.path(COHORT_DIR)) as tmp:
        for name in TABLES:
            valid[name].reset_index(drop=True).to_parquet(tmp / f"{name}.parquet", index=False)
    return stage.finish([f"{COHORT_DIR}/{name}.parquet" for name in TABLES],
                        cohort_summary(valid))


def cohort_summary(tables: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    lesions = tables["lesions"]
    records = tables["records"]
    cov = records.drop(columns=["patient_id"])
    return {
        "patients": int(len(tables["patients"])),
        "studies": int(len(tables["studies"])),
        "lesions": int(len(lesions)),
        "typed_lesions": int(lesions["coarse_type"].notna().sum()),
        "record_fields": int(cov.shape[1]),
        "record_missing_fraction": float(cov.isna().to_numpy().mean()) if cov.size else 0.0,
        "outcomes": int(len(tables["outcomes"])),
        "events": int(tables["outcomes"]["event"].sum()) if len(tables["outcomes"]) else 0,
    }


__all__ = [
    "commit_cohort",
    "input_hashes",
    "read_outcomes",
    "read_records",
    "read_study_days",
    "read_table",
]
