"""The population model of growth: a linear mixed model on log diameter (random intercept and
slope per track), fitted by EM in numpy and predicted from each track's BLUP."""

from __future__ import annotations

import numpy as np
import pandas as pd

from discovery.forecast_data import SLOPE_SCALE as _SLOPE_SCALE


# -- the mixed model -------------------------------------------------------------------------------
class _MixedLM:
    """log size = X b + (u0 + u1 t) per track + noise, by EM; t = days since the first / 100."""

    def fit(self, rows: pd.DataFrame, design: pd.DataFrame, iters: int = 60) -> _MixedLM:
        codes, tracks = pd.factorize(rows["track_id"])
        t = (rows["day"].to_numpy() - rows.groupby("track_id")["day"].transform("min")
             .to_numpy()) / _SLOPE_SCALE
        z = design.reindex(tracks).to_numpy(float)[codes]
        x = np.column_stack([np.ones(len(t)), t, z, z * t[:, None]])
        y = rows["y"].to_numpy(float)
        self.columns_ = list(design.columns)
        pinv = np.linalg.pinv(x.T @ x + 1e-6 * np.eye(x.shape[1])) @ x.T
        m = len(tracks)
        n, st, stt = (np.bincount(codes, w, m) for w in (np.ones_like(t), t, t * t))
        beta = pinv @ y
        g = np.diag([0.1, 0.01])
        s2 = 0.01
        for _ in range(iters):
            r = y - x @ beta
            mean, cov = _posterior(g, s2, n, st, stt, np.bincount(codes, r, m),
                                   np.bincount(codes, r * t, m))
            beta = pinv @ (y - mean[codes, 0] - mean[codes, 1] * t)
            g = (np.einsum("ti,tj->ij", mean, mean) + cov.sum(0)) / m
            e = y - x @ beta - mean[codes, 0] - mean[codes, 1] * t
            trace = cov[:, 0, 0] * n + 2 * cov[:, 0, 1] * st + cov[:, 1, 1] * stt
            s2 = max(float((e @ e + trace.sum()) / len(y)), 1e-6)
        self.beta_, self.g_, self.s2_ = beta, g, s2
        return self

    def predict(self, rows: pd.DataFrame, design: pd.DataFrame, first_day: pd.Series,
                targets: pd.DataFrame) -> np.ndarray:
        """log size at ``targets`` (track_id, target_day) given each track's ``rows``."""
        codes, tracks = pd.factorize(rows["track_id"])
        t0 = first_day.reindex(tracks).to_numpy()
        t = (rows["day"].to_numpy() - t0[codes]) / _SLOPE_SCALE
        z = design.reindex(tracks)[self.columns_].to_numpy(float)
        zr = z[codes]
        x = np.column_stack([np.ones(len(t)), t, zr, zr * t[:, None]])
        r = rows["y"].to_numpy(float) - x @ self.beta_
        m = len(tracks)
        sums = (np.bincount(codes, w, m) for w in (np.ones_like(t), t, t * t, r, r * t))
        mean, _ = _posterior(self.g_, self.s2_, *sums)
        pos = pd.Index(tracks).get_indexer(targets["track_id"])
        tt = (targets["target_day"].to_numpy(float) - t0[pos]) / _SLOPE_SCALE
        zt = z[pos]
        xt = np.column_stack([np.ones(len(tt)), tt, zt, zt * tt[:, None]])
        return xt @ self.beta_ + mean[pos, 0] + mean[pos, 1] * tt


def _posterior(g, s2, n, st, stt, sr, srt):
    """Per track: posterior mean (m, 2) and covariance (m, 2, 2) of its random effects."""
    ginv = np.linalg.inv(g + 1e-9 * np.eye(2))
    prec = np.empty((len(n), 2, 2))
    prec[:, 0, 0], prec[:, 0, 1], prec[:, 1, 1] = n / s2, st / s2, stt / s2
    prec[:, 1, 0] = prec[:, 0, 1]
    cov = np.linalg.inv(prec + ginv)
    mean = np.einsum("tij,tj->ti", cov, np.column_stack([sr, srt]) / s2)
    return mean, cov


def track_design(stats: pd.DataFrame, lesions: pd.DataFrame | None,
                 records: pd.DataFrame | None) -> pd.DataFrame:
    """Per-track fixed-effect covariates: coarse type, first size, location, record fields.

    Each column is centred and scaled on the given tracks; a missing value is 0 (the mean),
    so a covariate no track has drops out. Columns with no spread are left out.
    """
    cols: dict[str, np.ndarray] = {"first_size": stats["first_y"].to_numpy(float)}
    if lesions is not None:
        lz = lesions.set_index(lesions["lesion_id"].astype(str))
        last = stats["lesion_id"]
        for c in ("loc_x", "loc_y", "loc_z"):
            if c in lz.columns:
                cols[c] = pd.to_numeric(lz[c], errors="coerce").reindex(last).to_numpy(float)
        if "coarse_type" in lz.columns:
            kind = pd.to_numeric(lz["coarse_type"], errors="coerce").reindex(last).to_numpy()
            for value in np.unique(kind[np.isfinite(kind)]):
                cols[f"type_{int(value)}"] = (kind == value).astype(float)
    if records is not None and "patient_id" in records.columns:
        rec = records.set_index(records["patient_id"].astype(str))
        for c in rec.columns:
            values = pd.to_numeric(rec[c], errors="coerce")
            if c != "patient_id" and values.notna().any():
                cols[f"rec_{c}"] = values.reindex(stats["patient_id"]).to_numpy(float)
    out = {}
    for name, v in cols.items():
        mu, sd = np.nanmean(v) if np.isfinite(v).any() else 0.0, np.nanstd(v)
        if np.isfinite(sd) and sd > 1e-9:
            out[name] = np.nan_to_num((v - mu) / sd)
    return pd.DataFrame(out, index=stats.index)


