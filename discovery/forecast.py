"""Growth forecasting: each lesion track's long diameter at a later day, with an interval.

Four methods side by side, all on ``log(long_mm)`` against the day:

* ``carry_forward``: the last measured diameter;
* ``own_trend``: the least-squares line through the track's own history (carry-forward
  below two measured days);
* ``mixed``: a linear mixed model with a random intercept and slope per track and fixed
  effects (their level and their change per day) for the coarse type, the first size, the
  location and the numeric record fields (:mod:`discovery.forecast_mixed`); fitted by EM in
  numpy (vectorised over tracks, seconds at DeepLesion scale, where statsmodels' MixedLM
  loops over 30k groups) and predicted from the BLUP of the track's random effects given its
  history;
* ``similarity``: an empirical prior over the growth rate from the lesion's nearest training
  lesions (one FAISS search for all queries), the patient's most similar training patients
  and the patient's other tracks, stacked by a ridge fit on pseudo-forecasts of training
  patients; combined with the track's own slope by precision weighting (the prior's variance
  from its residual spread, the own slope's from the measurement noise and the time span).

Neighbours come only from training patients, and never from the patient being forecast.
Intervals are split conformal on held-out calibration patients (each of their studies
forecast from the ones before it), per horizon bucket and history class (1, 2, >= 3 measured
days; a cell with under 30 residuals takes its bucket's), on absolute log residuals scaled by
sqrt(c0 + c1 * horizon^2) (fitted on the training patients), so that a pooled quantile still
widens with the horizon.

The track checks, history statistics, pseudo-forecasts and the conformal quantile are in
:mod:`discovery.forecast_data`; patient sums and RECIST-style categories in
:mod:`discovery.recist`. Their public names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from discovery.forecast_data import (
    BUCKETS,
    _check,
    _embedding_lookup,
    _numeric,
    check_tracks,
    conformal_quantile,
    history_stats,
    horizon_bucket,
    noise_variance,
    pseudo_origins,
)
from discovery.forecast_data import SLOPE_SCALE as _SLOPE_SCALE
from discovery.forecast_mixed import _MixedLM, track_design
from discovery.recist import (
    CATEGORIES,
    FORECAST_COLUMNS,
    SUMMARY_COLUMNS,
    patient_summary,
    recist_category,
    study_sums,
)
from patientgraph.errors import InputError

METHODS = ("carry_forward", "own_trend", "mixed", "similarity")
NEIGHBOURS = ("knn", "none", "random")
MIN_FOLLOWED = 4
"""Patients with more than one study day that a forecaster needs (training and calibration)."""
_MIN_BUCKET = 30
"""Calibration residuals a bucket needs for its own quantile (else the horizon's pooled)."""


# -- the estimator ---------------------------------------------------------------------------------
@dataclass
class _Pool:
    """Training vectors (unit rows) with a growth rate each, and their patients."""

    index: object  # embed.index.VectorIndex
    patient: np.ndarray
    slope: np.ndarray


class GrowthForecaster:
    """Forecast each track's long diameter at later days, with conformal intervals.

    Parameters
    ----------
    method:
        One of :data:`METHODS`.
    coverage:
        Nominal coverage of the intervals; 0.8 is what a reader compares with RECIST's 20%.
    neighbours:
        ``similarity`` only: ``"knn"`` (nearest training lesions and patients), ``"none"``
        (the population prior: an ablation) or ``"random"`` (random training lesions and
        patients: an ablation).
    siblings:
        ``similarity`` only: let the patient's other tracks (their own slopes over the same
        history) inform the prior; lesions of one patient tend to respond together.
    k_lesions, k_patients:
        Neighbours per query; 20 and 10 average out the measurement noise of single
        neighbours' slopes while staying local.
    temperature:
        Neighbour weights are exp((similarity - best) / temperature).
    calibration_fraction:
        Share of the patients with follow-up held out for the conformal calibration.
    buckets:
        Horizon bucket bounds (days ahead) of the calibration.
    size_power:
        ``similarity`` only: the prior's fit weighs each training forecast by (size x days
        ahead) ** size_power (1 would follow errors in mm, which grow with both; in our
        backtests on training patients 0 did as well).
    seed:
        The calibration split and the random-neighbour ablation.
    """

    def __init__(self, method: str = "similarity", *, coverage: float = 0.8,
                 neighbours: str = "knn", siblings: bool = True, k_lesions: int = 20,
                 k_patients: int = 10, temperature: float = 0.05,
                 calibration_fraction: float = 0.25, buckets: Sequence[float] = BUCKETS,
                 size_power: float = 0.0, seed: int = 0):
        if method not in METHODS:
            raise InputError(None, f"unknown forecast method {method!r}",
                             f"use one of {', '.join(METHODS)}")
        if neighbours not in NEIGHBOURS:
            raise InputError(None, f"unknown neighbours option {neighbours!r}",
                             f"use one of {', '.join(NEIGHBOURS)}")
        if not 0 < coverage < 1:
            raise InputError(None, f"coverage must be between 0 and 1, got {coverage}",
                             "give e.g. 0.8")
        if not 0 < calibration_fraction < 1:
            raise InputError(None, "calibration_fraction must be between 0 and 1",
                             "give e.g. 0.25")
        self.method, self.coverage, self.neighbours = method, float(coverage), neighbours
        self.siblings, self.k_lesions, self.k_patients = bool(siblings), k_lesions, k_patients
        self.temperature, self.seed = float(temperature), int(seed)
        self.calibration_fraction = float(calibration_fraction)
        self.size_power = float(size_power)
        self.buckets = tuple(float(b) for b in buckets)

    def __repr__(self) -> str:
        return (f"GrowthForecaster(method={self.method!r}, neighbours={self.neighbours!r}, "
                f"coverage={self.coverage})")

    @property
    def label(self) -> str:
        """The method's name, with the ablation when not the default."""
        if self.method != "similarity" or (self.neighbours == "knn" and self.siblings):
            return self.method
        return f"similarity[{self.neighbours}{'' if self.siblings else ',no_siblings'}]"

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, tracks: pd.DataFrame, lesions: pd.DataFrame | None = None,
            lesion_embeddings: pd.DataFrame | None = None,
            patient_embeddings: pd.DataFrame | None = None,
            records: pd.DataFrame | None = None) -> GrowthForecaster:
        """Fit on the tracks of the patients with follow-up, calibrating on some of them.

        Sets ``history_`` (the checked tracks), ``train_patients_``,
        ``calibration_patients_``, ``noise_var_``, ``quantiles_`` and the method's state.
        """
        rows = check_tracks(tracks)
        self.history_ = rows
        self.patient_rows_ = rows.groupby("patient_id").indices
        self.lesions_ = None if lesions is None else _check(
            lesions, "cohort/lesions.parquet", ("lesion_id",), "give the cohort's lesions table")
        self.records_ = None if records is None else _check(
            records, "cohort/records.parquet", ("patient_id",), "give the cohort's records")
        self.lesion_vectors_ = _embedding_lookup(lesion_embeddings,
                                                 "embeddings/lesions.parquet", "lesion_id")
        self.patient_vectors_ = _embedding_lookup(patient_embeddings,
                                                  "embeddings/patients.parquet", "patient_id")
        days = rows.groupby("patient_id")["day"].nunique()
        followed = np.sort(days.index[days >= 2].to_numpy())
        if len(followed) < MIN_FOLLOWED:
            raise InputError("discovery/tracks.parquet", f"only {len(followed)} patients have "
                             "more than one study day", "forecast a cohort where at least 4 "
                             "patients have follow-up")
        rng = np.random.default_rng(self.seed)
        n_cal = max(1, round(self.calibration_fraction * len(followed)))
        cal = set(rng.choice(followed, n_cal, replace=False).tolist())
        self.calibration_patients_ = np.array(sorted(cal))
        train = rows[~rows["patient_id"].isin(cal)]
        self.train_patients_ = np.array(sorted(set(train["patient_id"])))
        self._fit_core(train)
        self.scale_ = self._fit_scale(train)
        # the calibration forecasts: every study of each calibration patient forecast from
        # the studies before it. The stage and the backtest forecast from a patient's full
        # history; conditional on the horizon bucket and the history class (how many days
        # were measured), earlier origins are drawn from the same process, and using all of
        # them gives two to three times the residuals (with only the last study, most
        # bucket x history cells had too few and the quantile's sampling error dominated).
        hist, targets = pseudo_origins(rows[rows["patient_id"].isin(cal)], every=True)
        pred = self._predict_core(hist, pd.DataFrame({"track_id": targets["case"],
                                                      "target_day": targets["day"]}))
        self.quantiles_ = self._calibrate(pred, targets["y"].to_numpy())
        return self

    def _fit_core(self, train: pd.DataFrame) -> None:
        stats = history_stats(train)
        # lesions stop growing somewhere: no forecast beyond what the training cohort shows
        self.max_y_ = float(np.quantile(train["y"], 0.999))
        self.noise_var_ = noise_variance(stats)
        if self.method == "mixed":
            design = track_design(stats, self.lesions_, self.records_)
            self.mixed_ = _MixedLM().fit(train, design)
        if self.method != "similarity":
            return
        self._build_pools(train, stats)
        hist, targets = pseudo_origins(train, every=True)
        hstats = history_stats(hist)
        feats = self._features(hstats, hist)
        tpos = hstats.index.get_indexer(targets["case"])
        dt = (targets["day"].to_numpy() - hstats["last_day"].to_numpy()[tpos]) / _SLOPE_SCALE
        slope = (targets["y"].to_numpy() - hstats["last_y"].to_numpy()[tpos]) / dt
        x = feats.to_numpy()[tpos]
        noise = 2 * self.noise_var_ / dt ** 2
        # an error in mm grows with the size: larger lesions count for more in the fit
        size = np.exp(hstats["last_y"].to_numpy()[tpos]) * dt
        w = 1.0 / (np.var(slope) + noise)
        for _ in range(3):  # weights from the prior variance, which the fit gives
            coef = _ridge(x, slope, w * size ** self.size_power)
            resid = slope - x @ coef
            tau2 = max(float(np.average(resid ** 2 - noise, weights=w)), 1e-4)
            w = 1.0 / (tau2 + noise)
        self.coef_, self.prior_var_, self.feature_names_ = coef, tau2, list(feats.columns)
        # How far the own slope is trusted beyond its noise: chosen on training forecasts.
        prior = feats.to_numpy() @ coef
        mask = hstats["n_days"].to_numpy()[tpos] >= 2
        best = None
        for kappa in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0):
            self.kappa_ = kappa
            yhat = _line(hstats, self._combine(hstats, prior), tpos, targets["day"])
            err = float(np.mean(np.abs(np.exp(yhat) - targets["long_mm"].to_numpy())[mask])
                        ) if mask.any() else 0.0
            if best is None or err < best[0]:
                best = (err, kappa)
        self.kappa_ = best[1]

    def _combine(self, hstats: pd.DataFrame, prior: np.ndarray) -> np.ndarray:
        """Per track: the precision-weighted slope (per 100 days) of prior and own history."""
        sxx = hstats["sxx"].to_numpy(float) / _SLOPE_SCALE ** 2
        own = hstats["slope"].to_numpy(float) * _SLOPE_SCALE
        has = np.isfinite(own) & (sxx > 0)
        v_own = np.where(has, self.kappa_ * self.noise_var_ / np.where(has, sxx, 1.0), np.inf)
        w_own = np.where(has, self.prior_var_ / (self.prior_var_ + v_own), 0.0)
        return w_own * np.nan_to_num(own) + (1 - w_own) * prior

    def _build_pools(self, train: pd.DataFrame, stats: pd.DataFrame) -> None:
        from embed.index import VectorIndex

        self.lesion_pool_ = self.patient_pool_ = None
        self.pool_mean_ = float(np.nanmean(stats["slope"])) * _SLOPE_SCALE \
            if stats["slope"].notna().any() else 0.0
        sloped = stats[stats["slope"].notna()]
        if self.lesion_vectors_ is not None and len(sloped):
            vec, ok = self._track_vectors(train, sloped.index)
            if ok.any():
                self.lesion_pool_ = _Pool(
                    VectorIndex.build(np.arange(ok.sum()).astype(str), vec[ok], factory="Flat"),
                    sloped["patient_id"].to_numpy()[ok],
                    sloped["slope"].to_numpy()[ok] * _SLOPE_SCALE)
        if self.patient_vectors_ is not None and len(sloped):
            rate = sloped.groupby("patient_id")["slope"].mean() * _SLOPE_SCALE
            ids, vectors = self.patient_vectors_
            pos = ids.get_indexer(rate.index)
            ok = pos >= 0
            if ok.any():
                self.patient_pool_ = _Pool(
                    VectorIndex.build(np.arange(ok.sum()).astype(str), vectors[pos[ok]],
                                      factory="Flat"),
                    rate.index.to_numpy()[ok], rate.to_numpy()[ok])

    def _track_vectors(self, rows: pd.DataFrame, track_ids: pd.Index):
        """Unit mean embedding of each track's lesions; ok False where none has one."""
        ids, vectors = self.lesion_vectors_
        pos = ids.get_indexer(rows["lesion_id"])
        known = pos >= 0
        codes = pd.Index(track_ids).get_indexer(rows["track_id"])
        keep = known & (codes >= 0)
        out = np.zeros((len(track_ids), vectors.shape[1]), np.float32)
        np.add.at(out, codes[keep], vectors[pos[keep]])
        norms = np.linalg.norm(out, axis=1)
        ok = norms > 0
        out[ok] /= norms[ok, None]
        return out, ok

    def _features(self, hstats: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
        """The prior's regressors per track (slopes per 100 days; 0 where unknown)."""
        feats = pd.DataFrame({"const": np.ones(len(hstats))}, index=hstats.index)
        patient = hstats["patient_id"].to_numpy()
        if self.neighbours != "none":
            if self.lesion_pool_ is not None:
                vec, ok = self._track_vectors(rows, hstats.index)
                feats["lesion_nb"] = self._neighbour_mean(self.lesion_pool_, vec, ok, patient,
                                                          self.k_lesions)
            if self.patient_pool_ is not None:
                ids, vectors = self.patient_vectors_
                pos = ids.get_indexer(hstats["patient_id"])
                vec = vectors[np.maximum(pos, 0)]
                feats["patient_nb"] = self._neighbour_mean(self.patient_pool_, vec, pos >= 0,
                                                           patient, self.k_patients)
        seg = hstats["seg_slope"].to_numpy(float) * _SLOPE_SCALE
        has = np.isfinite(seg)
        # how long the patient has been followed (a responder's shrinkage ends) and the size
        day = hstats["last_day"].to_numpy(float) / _SLOPE_SCALE
        feats["day"] = day
        feats["size"] = hstats["last_y"].to_numpy(float) - 3.0
        if self.siblings:
            # the patient's other tracks' last segments (the track's own stays out of the
            # prior: it enters through the shrinkage); their shrinkage may turn to regrowth
            by = pd.DataFrame({"p": hstats["group"].to_numpy(), "s": np.where(has, seg, 0.0),
                               "n": has * 1.0})
            tot = by.groupby("p")[["s", "n"]].transform("sum").to_numpy()
            n_other = tot[:, 1] - has
            sib = np.where(n_other > 0, (tot[:, 0] - np.where(has, seg, 0.0))
                           / np.maximum(n_other, 1), 0.0)
            feats["siblings_up"], feats["siblings_down"] = np.maximum(sib, 0), np.minimum(sib, 0)
            feats["siblings_down_day"] = feats["siblings_down"] * day
            feats["has_siblings"] = (n_other > 0) * 1.0
        return feats

    def _neighbour_mean(self, pool: _Pool, vec: np.ndarray, ok: np.ndarray,
                        patient: np.ndarray, k: int) -> np.ndarray:
        """Similarity-weighted mean growth rate of each query's k neighbours (other patients)."""
        n_pool = len(pool.slope)
        if self.neighbours == "random":
            rng = np.random.default_rng(self.seed + 1)
            pos = rng.integers(0, n_pool, (len(vec), k))
            score = np.zeros(pos.shape)
        else:
            per_patient = int(pd.Series(pool.patient).value_counts().max())
            ids, score = pool.index.search(vec, min(n_pool, k + per_patient))
            pos = np.array([-1 if i is None else int(i) for i in ids.ravel()]).reshape(ids.shape)
        valid = (pos >= 0) & (pool.patient[np.maximum(pos, 0)] != patient[:, None])
        valid &= np.cumsum(valid, axis=1) <= k
        score = np.where(valid, np.nan_to_num(score, nan=-np.inf), -np.inf)
        best = score.max(axis=1, keepdims=True)
        w = np.where(valid, np.exp((score - np.where(np.isfinite(best), best, 0.0))
                                   / self.temperature), 0.0)
        total = w.sum(axis=1)
        mean = (w * pool.slope[np.maximum(pos, 0)]).sum(axis=1) / np.where(total > 0, total, 1)
        return np.where(ok & (total > 0), mean, self.pool_mean_)

    # -- prediction -------------------------------------------------------------------------------
    def _predict_core(self, rows: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
        """Point forecasts (log size ``yhat``) of ``targets`` (track_id, target_day)."""
        hstats = history_stats(rows)
        tpos = hstats.index.get_indexer(targets["track_id"])
        day = targets["target_day"].to_numpy(float)
        if self.method == "carry_forward":
            yhat = hstats["last_y"].to_numpy()[tpos]
        elif self.method == "own_trend":
            slope = np.nan_to_num(hstats["slope"].to_numpy(float)) * _SLOPE_SCALE
            yhat = _line(hstats, slope, tpos, day)
        elif self.method == "mixed":
            design = track_design(hstats, self.lesions_, self.records_)
            for c in self.mixed_.columns_:
                if c not in design.columns:
                    design[c] = 0.0
            yhat = self.mixed_.predict(rows, design, hstats["first_day"],
                                       targets.assign(target_day=day))
        else:
            prior = self._features(hstats, rows)[self.feature_names_].to_numpy() @ self.coef_
            yhat = _line(hstats, self._combine(hstats, prior), tpos, day)
        yhat = np.minimum(yhat, np.maximum(self.max_y_, hstats["last_y"].to_numpy()[tpos]))
        return pd.DataFrame({
            "track_id": targets["track_id"].to_numpy(),
            "lesion_id": hstats["lesion_id"].to_numpy()[tpos],
            "patient_id": hstats["patient_id"].to_numpy()[tpos],
            "last_day": hstats["last_day"].to_numpy()[tpos], "target_day": day,
            "yhat": yhat, "n_days": hstats["n_days"].to_numpy()[tpos]})

    def _fit_scale(self, train: pd.DataFrame) -> tuple[float, float]:
        """(c0, c1) of the residual scale sqrt(c0 + c1 * (days ahead / 100)^2): noise plus
        slope error growing with the horizon, fitted (non-negative least squares on squared
        log residuals) to the method's forecasts of the training patients' own studies."""
        from scipy.optimize import nnls

        hist, targets = pseudo_origins(train, every=True)
        if targets.empty:
            return 1.0, 0.0
        pred = self._predict_core(hist, pd.DataFrame({"track_id": targets["case"],
                                                      "target_day": targets["day"]}))
        r2 = (targets["y"].to_numpy() - pred["yhat"].to_numpy()) ** 2
        h2 = ((pred["target_day"] - pred["last_day"]).to_numpy() / _SLOPE_SCALE) ** 2
        coef, _ = nnls(np.column_stack([np.ones_like(h2), h2]), r2)
        return max(float(coef[0]), 1e-4), float(coef[1])

    def _scale(self, pred: pd.DataFrame) -> np.ndarray:
        h = (pred["target_day"] - pred["last_day"]).to_numpy(float) / _SLOPE_SCALE
        return np.sqrt(self.scale_[0] + self.scale_[1] * h ** 2)

    def _calibrate(self, pred: pd.DataFrame, y: np.ndarray) -> pd.DataFrame:
        """Conformal quantiles of the scaled absolute log residual per horizon bucket and
        history class; a cell with too few residuals takes its horizon bucket's (coverage is
        promised per bucket), or failing that all residuals'."""
        score = np.abs(y - pred["yhat"].to_numpy()) / self._scale(pred)
        bucket = horizon_bucket(pred["target_day"] - pred["last_day"], self.buckets)
        hist = _history_class(pred["n_days"].to_numpy())
        rows = []
        overall = conformal_quantile(score, self.coverage)
        for h in (1, 2, 3):
            for b in range(len(self.buckets) + 1):
                pooled = conformal_quantile(score[bucket == b], self.coverage) \
                    if (bucket == b).sum() >= _MIN_BUCKET else overall
                sel = (bucket == b) & (hist == h)
                q = conformal_quantile(score[sel], self.coverage) \
                    if sel.sum() >= _MIN_BUCKET else pooled
                rows.append({"bucket": b, "history": h, "n": int(sel.sum()), "q": q})
        return pd.DataFrame(rows)

    def predict(self, targets: pd.DataFrame, tracks: pd.DataFrame | None = None) -> pd.DataFrame:
        """Forecasts of ``targets`` (track_id, target_day) from ``tracks`` (default: the
        tracks given to :meth:`fit`): :data:`FORECAST_COLUMNS` plus ``n_days`` (measured days
        of history)."""
        if not hasattr(self, "quantiles_"):
            raise InputError(None, "the forecaster is not fitted", "call fit(...) first")
        rows = self.history_ if tracks is None else check_tracks(tracks)
        _check(targets, "targets", ("track_id", "target_day"),
               "give one row per forecast: track_id, target_day")
        targets = pd.DataFrame({"track_id": targets["track_id"].astype(str).to_numpy(),
                                "target_day": _numeric(targets, "targets", "target_day")})
        unknown = ~targets["track_id"].isin(set(rows["track_id"]))
        if unknown.any():
            raise InputError("targets", "names a track that is not in the tracks",
                             "forecast only tracks of the tracks table",
                             row=int(np.flatnonzero(unknown)[0]), column="track_id",
                             more=int(unknown.sum()) - 1)
        pred = self._predict_core(rows, targets)
        bucket = horizon_bucket(pred["target_day"] - pred["last_day"], self.buckets)
        q = self.quantiles_.set_index(["bucket", "history"])["q"]
        half = q.reindex(pd.MultiIndex.from_arrays(
            [bucket, _history_class(pred["n_days"].to_numpy())])).to_numpy() * self._scale(pred)
        y = pred.pop("yhat").to_numpy()
        pred["long_mm"] = np.exp(y)
        pred["long_mm_lo"] = np.exp(y - half)
        pred["long_mm_hi"] = np.exp(y + half)
        pred["method"] = self.label
        return pred[FORECAST_COLUMNS + ["n_days"]]


def _history_class(n_days: np.ndarray) -> np.ndarray:
    """1, 2 or 3 (three or more) measured days of history: the calibration's classes."""
    return np.minimum(np.asarray(n_days, int), 3)


def _line(hstats: pd.DataFrame, slope: np.ndarray, tpos: np.ndarray, day) -> np.ndarray:
    """log size at ``day`` on the line through each track's centroid with ``slope``/100 days."""
    tbar = hstats["tbar"].to_numpy(float)[tpos]
    return (hstats["ybar"].to_numpy(float)[tpos]
            + slope[tpos] * (np.asarray(day, float) - tbar) / _SLOPE_SCALE)


def _ridge(x: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float = 1e-3) -> np.ndarray:
    """Weighted ridge (intercept in column 0 unpenalised)."""
    xw = x * w[:, None]
    pen = alpha * w.sum() * np.eye(x.shape[1])
    pen[0, 0] = 0.0
    return np.linalg.solve(x.T @ xw + pen + 1e-12 * np.eye(x.shape[1]), xw.T @ y)


# -- the discover stage's and the explorer's entry points --------------------------------------
def forecast_tracks(tracks: pd.DataFrame, lesions: pd.DataFrame | None,
                    lesion_embeddings: pd.DataFrame | None,
                    patient_embeddings: pd.DataFrame | None,
                    records: pd.DataFrame | None = None, *,
                    horizons: Sequence[float] = (90, 180), next_days=None,
                    method: str = "similarity", coverage: float = 0.8,
                    seed: int = 0) -> pd.DataFrame:
    """Every track forecast from its full history: :data:`FORECAST_COLUMNS`, one row per
    track and target day (the patient's next study day where ``next_days`` gives one, a
    mapping patient_id -> day or a studies table with patient_id and day, and last_day +
    each of ``horizons``). Fitted on all patients with follow-up (calibration inside)."""
    model = GrowthForecaster(method, coverage=coverage, seed=seed).fit(
        tracks, lesions, lesion_embeddings, patient_embeddings, records)
    out = model.predict(_targets(model.history_, horizons, next_days))
    out = out[FORECAST_COLUMNS].reset_index(drop=True)
    out.attrs["sums"] = _sums_attr(model.history_)
    return out


def _sums_attr(rows: pd.DataFrame) -> dict:
    """study_sums as plain dicts: pandas compares attrs, which a DataFrame cannot be."""
    return {k: v for k, v in study_sums(rows)[["baseline_sum", "nadir_sum"]].to_dict().items()}


def _targets(rows: pd.DataFrame, horizons: Sequence[float], next_days) -> pd.DataFrame:
    last = rows.groupby("track_id").agg(patient_id=("patient_id", "first"),
                                        last_day=("day", "max"))
    parts = [pd.DataFrame({"track_id": last.index, "target_day": last["last_day"] + h})
             for h in horizons]
    if next_days is not None:
        if isinstance(next_days, pd.DataFrame):
            _check(next_days, "studies", ("patient_id", "day"), "give patient_id and day")
            nd = next_days.assign(day=_numeric(next_days, "studies", "day"))
            nd = nd.groupby(nd["patient_id"].astype(str))["day"].apply(np.sort)
        else:
            nd = pd.Series({str(k): np.atleast_1d(np.asarray(v, float))
                            for k, v in dict(next_days).items()}, dtype=object)
        nxt = [next((d for d in nd.get(p, ()) if d > day), np.nan)
               for p, day in zip(last["patient_id"], last["last_day"], strict=True)]
        parts.insert(0, pd.DataFrame({"track_id": last.index, "target_day": nxt}).dropna())
    targets = pd.concat(parts, ignore_index=True).drop_duplicates()
    return targets.sort_values(["track_id", "target_day"], ignore_index=True)


@dataclass
class PatientForecast:
    """One patient's tracks forecast at one day, their sum and its RECIST-style category."""

    tracks: pd.DataFrame
    day: float
    sum_long_mm: float
    sum_lo: float
    sum_hi: float
    baseline_sum: float
    nadir_sum: float
    category: str


def forecast_on_day(model: GrowthForecaster, patient_id: str, day: float) -> PatientForecast:
    """Every track of ``patient_id`` forecast at ``day`` from its full history (fitted
    ``model``); ``day`` must come after the patient's last study."""
    if not hasattr(model, "quantiles_"):
        raise InputError(None, "the forecaster is not fitted", "call fit(...) first")
    at = model.patient_rows_.get(str(patient_id))
    rows = model.history_.iloc[at if at is not None else []]
    if rows.empty:
        raise InputError("discovery/tracks.parquet", "the patient has no lesion tracks",
                         "choose a patient with measured lesions", column="patient_id")
    try:
        day = float(day)
    except (TypeError, ValueError):
        raise InputError(None, "the day is not a number", "give the day as a number of days "
                         "since the patient's first study") from None
    last = float(rows["day"].max())
    if not day > last:
        raise InputError(None, f"day {day:g} is not after the patient's last study (day "
                         f"{last:g})", "forecast a day after the last study; earlier days "
                         "are measured, not forecast")
    targets = pd.DataFrame({"track_id": pd.unique(rows["track_id"]), "target_day": day})
    f = model.predict(targets, tracks=rows)
    sums = study_sums(rows).iloc[0]
    s = patient_summary(f, tracks=rows).iloc[0]
    return PatientForecast(f[FORECAST_COLUMNS], day, float(s["sum_long_mm"]),
                           float(s["sum_lo"]), float(s["sum_hi"]), float(sums["baseline_sum"]),
                           float(sums["nadir_sum"]), str(s["category"]))



# -- backtest ------------------------------------------------------------------------------------
BACKTEST_METHODS: dict[str, dict] = {
    "carry_forward": {"method": "carry_forward"},
    "own_trend": {"method": "own_trend"},
    "mixed": {"method": "mixed"},
    "similarity": {"method": "similarity"},
    "similarity[none]": {"method": "similarity", "neighbours": "none"},
    "similarity[random]": {"method": "similarity", "neighbours": "random"},
    "similarity[none,no_siblings]": {"method": "similarity", "neighbours": "none",
                                     "siblings": False},
}
"""The methods and ablations :func:`backtest` compares by default (label -> arguments)."""


def backtest(tracks: pd.DataFrame, lesions: pd.DataFrame | None,
             lesion_embeddings: pd.DataFrame | None,
             patient_embeddings: pd.DataFrame | None, records: pd.DataFrame | None = None, *,
             methods: Mapping[str, Mapping] | None = None, test_fraction: float = 0.3,
             coverage: float = 0.8, seed: int = 0,
             truth: pd.Series | None = None) -> dict[str, pd.DataFrame]:
    """Hide each held-out patient's last study and forecast it from the earlier ones.

    A share ``test_fraction`` of the patients with follow-up is held out; each method is
    fitted (and calibrated) on the other patients. ``truth`` (lesion_id -> noise-free long
    diameter at that lesion's study) adds the error against it. Returns ``errors`` (one row
    per method and forecast track), ``mae`` (per method and history: "1" or ">=2" earlier
    measured days), ``coverage`` (per method and horizon bucket) and ``categories`` (per
    method: accuracy and macro-F1 of the patients' RECIST-style categories).
    """
    from sklearn.metrics import f1_score

    rows = check_tracks(tracks)
    days = rows.groupby("patient_id")["day"].nunique()
    followed = np.sort(days.index[days >= 2].to_numpy())
    rng = np.random.default_rng(seed + 7919)  # a stream apart from the calibration split's
    test = set(rng.choice(followed, max(1, round(test_fraction * len(followed))),
                          replace=False).tolist())
    train = rows[~rows["patient_id"].isin(test)]
    hist, targ = pseudo_origins(rows[rows["patient_id"].isin(test)], every=False)
    query = pd.DataFrame({"track_id": targ["case"], "target_day": targ["day"]})
    sums = study_sums(hist)
    errors, cats = [], []
    for label, kwargs in (methods or BACKTEST_METHODS).items():
        model = GrowthForecaster(**{"coverage": coverage, "seed": seed, **kwargs}).fit(
            train, lesions, lesion_embeddings, patient_embeddings, records)
        p = model.predict(query, tracks=hist)
        actual = targ["long_mm"].to_numpy()
        e = pd.DataFrame({
            "method": label, "track_id": targ["track_id"], "patient_id": targ["patient_id"],
            "n_days": p["n_days"].to_numpy(),
            "days_ahead": p["target_day"].to_numpy() - p["last_day"].to_numpy(),
            "actual": actual, "long_mm": p["long_mm"].to_numpy(),
            "lo": p["long_mm_lo"].to_numpy(), "hi": p["long_mm_hi"].to_numpy()})
        e["lesion_id"] = rows.set_index(["track_id", "day"])["lesion_id"].reindex(
            pd.MultiIndex.from_arrays([targ["track_id"], targ["day"]])).to_numpy()
        e["history"] = np.where(e["n_days"] >= 2, ">=2", "1")
        e["bucket"] = horizon_bucket(e["days_ahead"], model.buckets)
        e["abs_err"] = np.abs(e["long_mm"] - e["actual"])
        e["covered"] = (e["actual"] >= e["lo"]) & (e["actual"] <= e["hi"])
        if truth is not None:
            e["true_mm"] = truth.reindex(e["lesion_id"]).to_numpy(float)
            e["abs_err_true"] = np.abs(e["long_mm"] - e["true_mm"])
        errors.append(e)
        by = e.groupby("patient_id")[["long_mm", "actual"]].sum()
        base = sums.reindex(by.index)
        pred = [recist_category(b, s, n) for b, s, n in
                zip(base["baseline_sum"], by["long_mm"], base["nadir_sum"], strict=True)]
        true = [recist_category(b, s, n) for b, s, n in
                zip(base["baseline_sum"], by["actual"], base["nadir_sum"], strict=True)]
        cats.append({"method": label, "n": len(by),
                     "accuracy": float(np.mean(np.array(pred) == np.array(true))),
                     "macro_f1": float(f1_score(true, pred, labels=list(CATEGORIES),
                                                average="macro", zero_division=0))})
    errors = pd.concat(errors, ignore_index=True)
    agg = {"n": ("abs_err", "size"), "mae": ("abs_err", "mean")}
    if truth is not None:
        agg["mae_true"] = ("abs_err_true", "mean")
    mae = errors.groupby(["method", "history"], sort=False).agg(**agg).reset_index()
    cov = errors.groupby(["method", "bucket"], sort=False).agg(
        n=("covered", "size"), coverage=("covered", "mean")).reset_index()
    return {"errors": errors, "mae": mae, "coverage": cov, "categories": pd.DataFrame(cats)}


def forecast_targets(tracks: pd.DataFrame, horizons: Sequence[float] = (90, 180),
                     next_days=None) -> pd.DataFrame:
    """The (track_id, target_day) pairs :func:`forecast_tracks` forecasts: each track at its
    patient's next study day after the track's last (where ``next_days`` gives one) and at
    last_day + each horizon. For a fitted model's ``predict``."""
    return _targets(check_tracks(tracks), horizons, next_days)


__all__ = [
    "BACKTEST_METHODS", "BUCKETS", "CATEGORIES", "FORECAST_COLUMNS", "METHODS", "MIN_FOLLOWED",
    "NEIGHBOURS", "SUMMARY_COLUMNS", "GrowthForecaster", "PatientForecast", "backtest",
    "check_tracks", "conformal_quantile", "forecast_on_day", "forecast_targets", "forecast_tracks",
    "history_stats", "horizon_bucket", "noise_variance", "patient_summary", "pseudo_origins",
    "recist_category", "study_sums",
]
