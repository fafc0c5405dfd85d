"""Lesion tracks as forecasting data: checks, per-track history statistics, the forecasts a
cohort's own follow-up poses (pseudo-origins) and the split-conformal quantile."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from patientgraph.errors import InputError

TRACK_COLUMNS = ("track_id", "lesion_id", "patient_id", "day", "long_mm")
BUCKETS = (60.0, 120.0, 240.0)
"""Upper bounds (days ahead) of the horizon buckets; a last bucket takes the rest."""
SLOPE_SCALE = 100.0  # slopes are fitted per 100 days: well-scaled numbers


# -- input checks -------------------------------------------------------------------------------
def _check(frame, name: str, columns: Sequence[str], fix: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise InputError(name, f"is not a table (got {type(frame).__name__})", fix)
    for col in columns:
        if col not in frame.columns:
            raise InputError(name, f"has no column {col!r}", fix, column=col)
    if frame.empty:
        raise InputError(name, "is empty", fix)
    return frame


def _numeric(frame: pd.DataFrame, name: str, col: str, positive: bool = False) -> np.ndarray:
    values = pd.to_numeric(frame[col], errors="coerce").to_numpy(float)
    bad = ~np.isfinite(values) | ((values <= 0) if positive else False)
    if bad.any():
        what = "is not a positive number" if positive else "is not a number"
        raise InputError(name, f"the value {what}", f"give every row a numeric {col}",
                         row=int(np.flatnonzero(bad)[0]), column=col, more=int(bad.sum()) - 1)
    return values


def check_tracks(tracks: pd.DataFrame, name: str = "discovery/tracks.parquet") -> pd.DataFrame:
    """The tracks as this module uses them (sorted by track and day), or an InputError."""
    if tracks.attrs.get("forecast_checked") if isinstance(tracks, pd.DataFrame) else False:
        return tracks  # already checked (rows of a checked table stay checked)
    _check(tracks, name, TRACK_COLUMNS, "give the tracks of discovery.tracking.track_lesions "
           "(track_id, lesion_id, patient_id, day, long_mm)")
    out = pd.DataFrame({c: tracks[c].astype(str).to_numpy() for c in TRACK_COLUMNS[:3]})
    out["day"] = _numeric(tracks, name, "day")
    out["long_mm"] = _numeric(tracks, name, "long_mm", positive=True)
    out["y"] = np.log(out["long_mm"].to_numpy())
    out = out.sort_values(["track_id", "day"], kind="stable", ignore_index=True)
    out.attrs["forecast_checked"] = True
    return out


def _embedding_lookup(frame, name: str, key: str) -> tuple[pd.Index, np.ndarray] | None:
    if frame is None:
        return None
    _check(frame, name, (key, "embedding"), "give the embed stage's table "
           f"({key}, embedding)")
    vectors = np.stack(frame["embedding"].to_numpy()).astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return pd.Index(frame[key].astype(str)), vectors / np.where(norms > 0, norms, 1.0)


# -- per-track history statistics --------------------------------------------------------------
def history_stats(tracks: pd.DataFrame) -> pd.DataFrame:
    """Per track (checked tracks): n, n_days, tbar, ybar, sxx, sxy, slope, last day/size/lesion."""
    g = tracks.groupby("track_id", sort=True)
    # one forecast's tracks: the patient's, or with pseudo-origins the patient's at one origin
    group = tracks["patient_id"] if "origin" not in tracks.columns else (
        tracks["patient_id"] + "@" + tracks["origin"].astype(str))
    out = pd.DataFrame({"patient_id": g["patient_id"].first(), "n": g.size(),
                        "group": group.groupby(tracks["track_id"], sort=True).first(),
                        "n_days": g["day"].nunique(), "tbar": g["day"].mean(),
                        "ybar": g["y"].mean(), "first_day": g["day"].min(),
                        "first_y": g["y"].first(), "last_day": g["day"].max(),
                        "last_y": g["y"].last(), "lesion_id": g["lesion_id"].last()})
    dt = tracks["day"].to_numpy() - tracks["track_id"].map(out["tbar"]).to_numpy()
    dy = tracks["y"].to_numpy() - tracks["track_id"].map(out["ybar"]).to_numpy()
    sums = pd.DataFrame({"sxx": dt * dt, "sxy": dt * dy, "syy": dy * dy,
                         "track_id": tracks["track_id"].to_numpy()}).groupby("track_id").sum()
    out = out.join(sums)
    ok = (out["n_days"] >= 2) & (out["sxx"] > 0)
    out["slope"] = (out["sxy"] / out["sxx"].where(ok)).astype(float)
    # the last segment: from the mean of the last-but-one measured day to that of the last
    per_day = tracks.groupby(["track_id", "day"], sort=True)["y"].mean().reset_index()
    last2 = per_day.groupby("track_id").tail(2)
    g2 = last2.groupby("track_id")
    rise = g2["y"].last() - g2["y"].first()
    run = g2["day"].last() - g2["day"].first()
    out["seg_slope"] = (rise / run.where(run > 0)).reindex(out.index).astype(float)
    return out


def noise_variance(stats: pd.DataFrame, default: float = 0.01) -> float:
    """Pooled residual variance of log size around each track's line (tracks with >= 3 days)."""
    s = stats[(stats["n_days"] >= 3) & (stats["sxx"] > 0)]
    if s.empty:
        return default
    rss = (s["syy"] - s["sxy"] ** 2 / s["sxx"]).clip(lower=0).sum()
    return max(float(rss / (s["n"] - 2).sum()), 1e-4)


def pseudo_origins(tracks: pd.DataFrame, every: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forecasts a patient's own later studies pose: (history rows, targets).

    For each patient and each study day k after the first (only the last when ``every`` is
    False), the history is every measurement before k (the rows get ``case`` = track_id@k as
    their track) and the targets are the tracks' measurements at k. Targets whose track has
    no history are left out (nothing to forecast from).
    """
    days = tracks[["patient_id", "day"]].drop_duplicates()
    days = days.assign(rank=days.groupby("patient_id")["day"].rank(method="dense"))
    days = days[days["rank"] > 1]
    if not every:
        days = days[days["day"] == days.groupby("patient_id")["day"].transform("max")]
    pairs = tracks.merge(days[["patient_id", "day"]].rename(columns={"day": "origin"}),
                         on="patient_id")
    hist = pairs[pairs["day"] < pairs["origin"]].copy()
    hist["case"] = hist["track_id"] + "@" + hist["origin"].astype(int).astype(str)
    targets = pairs[pairs["day"] == pairs["origin"]].copy()
    targets["case"] = targets["track_id"] + "@" + targets["origin"].astype(int).astype(str)
    targets = targets[targets["case"].isin(set(hist["case"]))]
    hist = hist.assign(track_id=hist["case"])
    targets = targets[["case", "track_id", "patient_id", "day", "y", "long_mm"]]
    return hist.drop(columns=["case"]), targets.reset_index(drop=True)


# -- conformal -------------------------------------------------------------------------------------
def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """Split-conformal quantile: the ceil((n+1) * coverage)-th smallest score (inf if n small)."""
    scores = np.sort(np.asarray(scores, float))
    n = len(scores)
    rank = math.ceil((n + 1) * coverage)
    return float("inf") if rank > n or n == 0 else float(scores[rank - 1])


def horizon_bucket(days_ahead: np.ndarray, buckets: Sequence[float] = BUCKETS) -> np.ndarray:
    """0 for <= buckets[0] days ahead, 1 for <= buckets[1], ..., len(buckets) beyond."""
    return np.searchsorted(np.asarray(buckets, float), np.asarray(days_ahead, float), "left")


