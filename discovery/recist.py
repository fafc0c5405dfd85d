"""RECIST-style patient categories from sums of long diameters (progression from the nadir,
response from the baseline), and the patients' forecast sums."""

from __future__ import annotations

import numpy as np
import pandas as pd

from discovery.forecast_data import _check, check_tracks
from patientgraph.errors import InputError

SUMMARY_COLUMNS = ["patient_id", "target_day", "sum_long_mm", "sum_lo", "sum_hi", "category"]
FORECAST_COLUMNS = ["track_id", "lesion_id", "patient_id", "last_day", "target_day",
                    "long_mm", "long_mm_lo", "long_mm_hi", "method"]
"""A forecast table's columns (:func:`discovery.forecast.forecast_tracks`)."""

# -- patients: sums and RECIST-style categories -------------------------------------------------
CATEGORIES = ("partial_response", "stable", "progression")


def recist_category(baseline_sum: float, forecast_sum: float,
                    nadir_sum: float | None = None) -> str:
    """RECIST-style category of a sum of long diameters (mm).

    "progression" if the sum is >= 1.2 x the reference and >= reference + 5 mm, where the
    reference is the nadir (the smallest sum so far; ``baseline_sum`` when not given), as
    RECIST 1.1 measures progression from the nadir; "partial_response" if it is <= 0.7 x
    the baseline (RECIST measures response from the baseline); else "stable".
    """
    ref = baseline_sum if nadir_sum is None else nadir_sum
    if forecast_sum >= 1.2 * ref and forecast_sum >= ref + 5.0:
        return "progression"
    if forecast_sum <= 0.7 * baseline_sum:
        return "partial_response"
    return "stable"


def study_sums(tracks: pd.DataFrame) -> pd.DataFrame:
    """Per patient: baseline_sum (sum of long_mm at the first study day), nadir_sum (the
    smallest such sum over its study days) and last_day (its last study day)."""
    rows = check_tracks(tracks)
    per_day = rows.groupby(["patient_id", "day"])["long_mm"].sum().reset_index()
    g = per_day.groupby("patient_id")
    return pd.DataFrame({"baseline_sum": g["long_mm"].first(), "nadir_sum": g["long_mm"].min(),
                         "last_day": g["day"].max()})


def patient_summary(forecasts: pd.DataFrame, tracks: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per patient and target day: the forecast sum of long diameters and its category.

    The sum is over the patient's tracks measured at its last study (the lesions still
    seen); ``sum_lo``/``sum_hi`` add up the tracks' bounds (conservative: it assumes the
    errors of one patient's lesions move together). The category compares the sum with the
    baseline and nadir of ``study_sums(tracks)`` (default: ``forecasts.attrs["sums"]``, set
    by :func:`forecast_tracks`).
    """
    _check(forecasts, "forecasts", FORECAST_COLUMNS, "give the table of forecast_tracks")
    sums = study_sums(tracks) if tracks is not None else forecasts.attrs.get("sums")
    if isinstance(sums, dict):
        sums = pd.DataFrame(sums)
    if sums is None:
        raise InputError("forecasts", "carries no baseline sums", "pass tracks=, the tracks "
                         "the forecasts were made from")
    f = forecasts[forecasts["last_day"] == forecasts.groupby("patient_id")["last_day"]
                  .transform("max")]
    out = f.groupby(["patient_id", "target_day"], sort=True).agg(
        sum_long_mm=("long_mm", "sum"), sum_lo=("long_mm_lo", "sum"),
        sum_hi=("long_mm_hi", "sum")).reset_index()
    base = sums["baseline_sum"].reindex(out["patient_id"]).to_numpy()
    nadir = sums["nadir_sum"].reindex(out["patient_id"]).to_numpy()
    out["category"] = [recist_category(b, s, n) if np.isfinite(b) else "unknown"
                       for b, s, n in zip(base, out["sum_long_mm"], nadir, strict=True)]
    return out[SUMMARY_COLUMNS]


