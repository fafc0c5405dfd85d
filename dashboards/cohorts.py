"""Cohort definitions: what the filter builder makes, saves as JSON, loads and applies.

A definition holds ``filters`` in the language of :mod:`graphdb.filters` (so the same
object selects the same patients through ``GraphStore.cohort``), an optional
``similar_to`` (the ``k`` patients most similar to one patient) and an optional explicit
``patient_ids`` list (a lasso selection on the lesion map). A patient is in the cohort when
it passes every patient filter, one of its lesions passes every lesion filter, and it is in
the similar and explicit lists where those are given.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dashboards.data import FORECAST_HORIZON, LESION_FIELDS, forecast_categories
from patientgraph.errors import InputError, did_you_mean

VERSION = 1
MAX_SIMILAR_K = 10_000
"""The largest ``similar_to.k``; definitions come from uploaded files and crafted requests,
so the server checks every number in them (the browser's input limits are no limit)."""
FIX = ('save a definition from the explorer, or write {"version": 1, "name": "A", '
       '"filters": {"sex": "F", "age": {"min": 40}}}')

FORECAST_FIELD = "forecast_category"
"""The patient's forecast category at +180 days (progression / stable / partial_response)."""

SimilarFn = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class CohortDefinition:
    """A named cohort (see the module docstring); build with :meth:`from_dict`."""

    name: str = "cohort"
    filters: dict[str, Any] = field(default_factory=dict)
    similar_to: dict[str, Any] | None = None
    patient_ids: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": VERSION, "name": self.name, "filters": self.filters}
        if self.similar_to:
            out["similar_to"] = self.similar_to
        if self.patient_ids is not None:
            out["patient_ids"] = list(self.patient_ids)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, raw: Any, source: str | Path | None = None) -> CohortDefinition:
        """Check a definition (e.g. a loaded JSON file); InputError names what is wrong."""
        if not isinstance(raw, Mapping):
            raise InputError(source, "a cohort definition is a JSON object", FIX)
        unknown = set(raw) - {"version", "name", "filters", "similar_to", "patient_ids"}
        if unknown:
            key = sorted(unknown)[0]
            raise InputError(source, f"unknown key {key!r} in the cohort definition."
                             f"{did_you_mean(key, ['name', 'filters', 'similar_to'])}", FIX)
        if raw.get("version", VERSION) != VERSION:
            raise InputError(source, f"cohort definition version {raw.get('version')!r} is "
                             f"not {VERSION}", "save the cohort again with this explorer")
        filters = raw.get("filters") or {}
        if not isinstance(filters, Mapping):
            raise InputError(source, "'filters' must be an object of field conditions", FIX)
        for name, condition in filters.items():
            _check_condition(str(name), condition, source)
        similar = raw.get("similar_to")
        if similar is not None:
            if (not isinstance(similar, Mapping) or not similar.get("patient_id")
                    or not _is_int(similar.get("k", 10))
                    or not 1 <= int(similar.get("k", 10)) <= MAX_SIMILAR_K):
                raise InputError(source, "'similar_to' needs a patient_id and a whole number "
                                 f"k from 1 to {MAX_SIMILAR_K}",
                                 'write e.g. "similar_to": {"patient_id": "000001", "k": 50}')
            similar = {"patient_id": str(similar["patient_id"]), "k": int(similar.get("k", 10))}
        ids = raw.get("patient_ids")
        if ids is not None:
            if not isinstance(ids, list):
                raise InputError(source, "'patient_ids' must be a list of patient ids", FIX)
            ids = [str(i) for i in ids]
        return cls(name=str(raw.get("name") or "cohort"), filters=dict(filters),
                   similar_to=similar or None, patient_ids=ids)

    @classmethod
    def from_json(cls, text: str | bytes, source: str | Path | None = None) -> CohortDefinition:
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(source, f"the file is not valid JSON ({exc})", FIX) from None
        return cls.from_dict(raw, source)


def definition_from_controls(name: str, *, types: Iterable[int] | None = None,
                             clusters: Iterable[int] | None = None,
                             age: tuple[float | None, float | None] | None = None,
                             sex: Iterable[str] | None = None,
                             record_field: str | None = None,
                             record_min: float | None = None, record_max: float | None = None,
                             similar_patient: str | None = None, similar_k: int | None = None,
                             patient_ids: list[str] | None = None,
                             forecast: Iterable[str] | None = None) -> CohortDefinition:
    """A definition from the values of the filter builder's controls (empty ones skipped)."""
    filters: dict[str, Any] = {}
    if types:
        filters["coarse_type"] = _whole_numbers(types, "lesion types")
    if clusters:
        filters["cluster"] = _whole_numbers(clusters, "clusters")
    if age and any(v is not None for v in age):
        filters["age"] = _range(*age)
    if sex:
        filters["sex"] = sorted(str(s) for s in sex)
    if record_field and (record_min is not None or record_max is not None):
        filters[record_field] = _range(record_min, record_max)
    if forecast:
        chosen = list(forecast) if isinstance(forecast, (list, tuple, set)) else [forecast]
        filters[FORECAST_FIELD] = sorted(chosen, key=str)  # from_dict checks each
    similar = ({"patient_id": str(similar_patient), "k": 50 if similar_k is None else similar_k}
               if similar_patient else None)
    return CohortDefinition.from_dict({"name": name, "filters": filters, "similar_to": similar,
                                       "patient_ids": patient_ids})


def apply_cohort(definition: CohortDefinition, patients: pd.DataFrame, lesions: pd.DataFrame,
                 similar: SimilarFn | None = None) -> list[str]:
    """The sorted patient ids of the cohort.

    ``patients`` is indexed by patient_id (patient and record fields as columns);
    ``lesions`` has patient_id and the lesion fields; ``similar(patient_id, k)`` gives the
    ``k`` most similar patients (needed only when the definition has ``similar_to``).
    """
    keep = pd.Series(True, index=patients.index)
    lesion_keep = pd.Series(True, index=lesions.index)
    has_lesion_filter = False
    for name, condition in definition.filters.items():
        if name in LESION_FIELDS:
            if name not in lesions.columns:
                raise InputError(None, f"the lesions have no {name!r} values in this "
                                 "workspace", _missing_fix(name))
            lesion_keep &= _passes(lesions[name], condition)
            has_lesion_filter = True
        elif name in patients.columns:
            keep &= _passes(patients[name], condition)
        elif name == FORECAST_FIELD:
            raise InputError(None, "this workspace has no growth forecasts to filter by",
                             "run the discover stage again: patientgraph run --workspace W "
                             "--stages discover --force")
        else:
            known = sorted({*patients.columns, *LESION_FIELDS})
            raise InputError(None, f"unknown filter field {name!r}.{did_you_mean(name, known)}",
                             f"use one of: {', '.join(known)}")
    ids = set(patients.index[keep].astype(str))
    if has_lesion_filter:
        ids &= set(lesions.loc[lesion_keep, "patient_id"].astype(str))
    if definition.similar_to:
        if similar is None:
            raise InputError(None, "similarity filters need the vector index",
                             "run the index stage: patientgraph run --stages index")
        sim = definition.similar_to
        ids &= set(similar(sim["patient_id"], sim["k"])) | {sim["patient_id"]}
    if definition.patient_ids is not None:
        ids &= set(definition.patient_ids)
    return sorted(ids)


def cohort_csv(patient_ids: Iterable[str], patients: pd.DataFrame) -> str:
    """The cohort's rows of the patient table as CSV (patient_id first)."""
    rows = patients.loc[patients.index.intersection(list(patient_ids))].sort_index()
    return rows.rename_axis("patient_id").reset_index().to_csv(index=False)


def describe(definition: CohortDefinition) -> str:
    """A one-line summary of a definition for the page."""
    parts = []
    for name, cond in definition.filters.items():
        if isinstance(cond, Mapping):
            lo, hi = cond.get("min"), cond.get("max")
            parts.append(f"{name} in [{'' if lo is None else lo}, {'' if hi is None else hi}]")
        elif isinstance(cond, list):
            parts.append(f"{name} in {{{', '.join(map(str, cond))}}}")
        else:
            parts.append(f"{name} = {cond}")
    if definition.similar_to:
        parts.append(f"{definition.similar_to['k']} most similar to the chosen patient")
    if definition.patient_ids is not None:
        parts.append(f"{len(definition.patient_ids)} patients from a map selection")
    return "; ".join(parts) or "everyone"


def _passes(values: pd.Series, condition: Any) -> pd.Series:
    if isinstance(condition, Mapping):
        numbers_ = pd.to_numeric(values, errors="coerce")
        out = numbers_.notna()
        if condition.get("min") is not None:
            out &= numbers_ >= float(condition["min"])
        if condition.get("max") is not None:
            out &= numbers_ <= float(condition["max"])
        return out
    wanted = list(condition) if isinstance(condition, (list, tuple, set)) else [condition]
    if pd.api.types.is_numeric_dtype(values):
        numbers_ = pd.to_numeric(pd.Series(wanted, dtype=object), errors="coerce").dropna()
        return pd.to_numeric(values, errors="coerce").isin(numbers_.tolist())
    return values.astype("string").isin([str(v) for v in wanted]).fillna(False).astype(bool)


def _check_condition(name: str, condition: Any, source: str | Path | None) -> None:
    if name == FORECAST_FIELD:
        _check_categories(condition, source)
    elif isinstance(condition, Mapping):
        if set(condition) - {"min", "max"} or not condition:
            raise InputError(source, f"the range of {name!r} has keys {sorted(condition)}",
                             "give a range as {'min': lo, 'max': hi} (either may be left out)")
        for bound in condition.values():
            if bound is not None and not _is_number(bound):
                raise InputError(source, f"the range of {name!r} has a bound {bound!r} that "
                                 "is not a number", "give numbers as range bounds")
    elif isinstance(condition, list):
        if not condition:
            raise InputError(source, f"the list of values of {name!r} is empty", FIX)
        if not all(isinstance(v, str) or _is_number(v) for v in condition):
            raise InputError(source, f"the list of values of {name!r} holds something that "
                             "is neither text nor a finite number", FIX)
    elif not isinstance(condition, (str, numbers.Real)):
        raise InputError(source, f"the condition on {name!r} is {condition!r}", FIX)


def _check_categories(condition: Any, source: str | Path | None) -> None:
    """A forecast-category condition: one of :func:`forecast_categories`, or a list of them."""
    values = condition if isinstance(condition, list) else [condition]
    categories = forecast_categories()
    allowed = ", ".join(categories)
    if not values:
        raise InputError(source, f"the list of values of {FORECAST_FIELD!r} is empty",
                         f"pick forecast categories from: {allowed}")
    for value in values:
        if not isinstance(value, str) or value not in categories:
            shown = repr(value) if isinstance(value, str) and len(value) <= 40 else (
                f"a text of {len(value)} characters" if isinstance(value, str)
                else f"something of type {type(value).__name__}")
            hint = did_you_mean(value, categories) if isinstance(value, str) else ""
            raise InputError(source, f"{shown} is not a forecast category (at +"
                             f"{FORECAST_HORIZON:.0f} d).{hint}",
                             f"pick forecast categories from: {allowed}")


def _range(lo: Any, hi: Any) -> dict[str, Any]:
    """A range from two controls; bounds that are not numbers are kept for
    :meth:`CohortDefinition.from_dict` to refuse."""
    return {k: float(v) if _is_number(v) else v for k, v in (("min", lo), ("max", hi))
            if v is not None}


def _whole_numbers(values: Iterable[Any], what: str) -> list[int]:
    """Sorted whole numbers from a multi-select (a crafted request may send anything)."""
    values = list(values) if isinstance(values, (list, tuple, set)) else [values]
    if not all(_is_int(v) for v in values):
        raise InputError(None, f"the chosen {what} are not all whole numbers",
                         f"pick {what} from the list")
    return sorted(int(v) for v in values)


def _is_number(value: Any) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def _is_int(value: Any) -> bool:
    return _is_number(value) and float(value) == int(value)


def _missing_fix(name: str) -> str:
    if name == "cluster":
        return "run the discover stage: patientgraph run --workspace W --stages discover"
    return "re-ingest the cohort with that lesion column"
