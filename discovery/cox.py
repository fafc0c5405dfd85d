"""The Cox engine: a vectorised Efron Newton-Raphson fit, lifelines' fit, the log-rank test.

:func:`cox_fit` fits a Cox proportional-hazards model (Efron ties) on a design matrix, with
lifelines' ridge convention and the Grambsch-Therneau proportional-hazards test; the tests
check it against ``CoxPHFitter`` to 1e-6. :func:`_lifelines_fit` is the same model fitted by
lifelines (the scan's ``engine="lifelines"``). :func:`logrank_p_value` is the multivariate
log-rank test. The biomarker scan (:mod:`discovery.survival`) builds on these.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import linalg, stats


@dataclass
class CoxResult:
    """A fitted Cox model on the columns of the design matrix it was given."""

    beta: np.ndarray
    se: np.ndarray
    cov: np.ndarray
    loglik: float
    loglik_null: float
    converged: bool
    n_iter: int
    risk: np.ndarray = field(repr=False)
    """Linear predictor X @ beta, in the input row order."""
    ph_p: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    beta_std: np.ndarray | None = field(default=None, repr=False)
    """beta on the engine's standardised columns (numpy engine; a warm start for refits)."""


class _Efron:
    """The Efron partial likelihood of one design, sorted once; evaluated at any beta."""

    def __init__(self, X: np.ndarray, time: np.ndarray, event: np.ndarray):
        # lifelines sorts by (time, event) with a stable sort; tied deaths keep row order,
        # which the rank-time PH test depends on.
        self.order = np.lexsort((event, time))
        self.mean = X.mean(0)
        sd = X.std(0, ddof=1) if len(X) > 1 else np.ones(X.shape[1])
        self.sd = np.where(sd > 0, sd, 1.0)
        self.X = (X[self.order] - self.mean) / self.sd
        t = time[self.order]
        e = event[self.order].astype(bool)
        self.n, self.p = self.X.shape
        uniq, start = np.unique(t, return_index=True)
        self.death = np.flatnonzero(e)
        self.n_deaths = len(self.death)
        group = np.searchsorted(uniq, t[self.death])
        _, self.first, counts = np.unique(group, return_index=True, return_counts=True)
        self.k = np.repeat(np.arange(len(counts)), counts)
        self.counts = counts.astype(float)
        self.frac = (np.arange(self.n_deaths) - self.first[self.k]) / self.counts[self.k]
        self.risk_start = start[group[self.first]]
        self.x_death_sum = self.X[self.death].sum(0)

    def evaluate(self, beta: np.ndarray, hessian: bool = True):
        X, k, frac = self.X, self.k, self.frac
        eta = X @ beta
        c = eta.max() if self.n else 0.0
        w = np.exp(eta - c)
        wx = w[:, None] * X
        s0 = np.cumsum(w[::-1])[::-1][self.risk_start]
        s1 = np.cumsum(wx[::-1], axis=0)[::-1][self.risk_start]
        t0 = np.add.reduceat(w[self.death], self.first)
        t1 = np.add.reduceat(wx[self.death], self.first, axis=0)
        phi0 = s0[k] - frac * t0[k]
        m1 = (s1[k] - frac[:, None] * t1[k]) / phi0[:, None]
        loglik = float(eta[self.death].sum() - (np.log(phi0) + c).sum())
        grad = self.x_death_sum - m1.sum(0)
        if not hessian:
            return loglik, grad, None, m1
        wxx = wx[:, :, None] * X[:, None, :]
        s2 = np.cumsum(wxx[::-1], axis=0)[::-1][self.risk_start]
        t2 = np.add.reduceat(wxx[self.death], self.first, axis=0)
        a = np.bincount(k, 1.0 / phi0, minlength=len(self.first))
        b = np.bincount(k, frac / phi0, minlength=len(self.first))
        hess = -(np.einsum("k,kab->ab", a, s2) - np.einsum("k,kab->ab", b, t2)) + m1.T @ m1
        return loglik, grad, hess, m1

    def ph_test(self, beta: np.ndarray, cov_std: np.ndarray) -> np.ndarray:
        """Grambsch-Therneau p per coefficient, rank time (as lifelines' default)."""
        _, _, _, m1 = self.evaluate(beta, hessian=False)
        mean = np.add.reduceat(m1, self.first, axis=0) / self.counts[:, None]
        resid = self.X[self.death] - mean[self.k]
        d = self.n_deaths
        scaled = d * resid @ cov_std
        ranks = np.arange(1, d + 1, dtype=float)
        ranks -= ranks.mean()
        stat = (ranks @ scaled) ** 2 / (d * np.diag(cov_std) * (ranks**2).sum())
        return stats.chi2.sf(stat, 1)


def cox_fit(
    X: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    *,
    penalizer: float = 0.0,
    max_iter: int = 50,
    tol: float = 1e-9,
    ph_test: bool = True,
) -> CoxResult:
    """Fit a Cox proportional-hazards model (Efron ties) by Newton-Raphson.

    ``penalizer`` is lifelines' ridge convention: ``0.5 * penalizer * n * sum(beta_std**2)``
    on standardised columns. Raises ``np.linalg.LinAlgError`` for a singular information
    matrix (collinear columns). ``converged`` is False when the step did not fall below
    ``tol`` within ``max_iter`` iterations (for example under separation).
    """
    X = np.asarray(X, dtype=float).reshape(len(time), -1)
    if not np.any(event):
        raise ValueError("no events: a Cox model needs at least one")
    model = _Efron(X, np.asarray(time, float), np.asarray(event))
    return _newton(model, penalizer=penalizer, max_iter=max_iter, tol=tol, ph_test=ph_test)


def _newton(model: _Efron, *, penalizer: float, max_iter: int = 50, tol: float = 1e-9,
            ph_test: bool = True, init: np.ndarray | None = None) -> CoxResult:
    """Newton-Raphson with step halving on a prepared likelihood (``init`` on the
    standardised scale)."""
    n, p = model.n, model.p
    ridge = penalizer * n

    def objective(b):
        ll, g, h, _ = model.evaluate(b)
        if ridge:
            ll, g, h = ll - 0.5 * ridge * b @ b, g - ridge * b, h - ridge * np.eye(p)
        return ll, g, h

    loglik_null = model.evaluate(np.zeros(p), hessian=False)[0]
    beta = np.zeros(p) if init is None else np.array(init, dtype=float)
    ll, g, h = objective(beta)
    converged, n_iter = p == 0, 0
    while not converged and n_iter < max_iter:
        n_iter += 1
        delta = linalg.solve(-h, g, assume_a="pos", check_finite=True)
        step = 1.0
        with np.errstate(all="ignore"):
            while True:
                candidate = beta + step * delta
                ll_new, g_new, h_new = objective(candidate)
                finite = np.isfinite(ll_new) and np.all(np.isfinite(h_new))
                if (finite and ll_new >= ll - 1e-12 * abs(ll)) or step < 1e-6:
                    break
                step /= 2
        if not finite:  # the likelihood ran off to infinity (separation): stop, unconverged
            break
        beta, ll, g, h = candidate, ll_new, g_new, h_new
        converged = bool(np.max(np.abs(step * delta)) < tol)
    cov_std = linalg.inv(-h) if p else np.zeros((0, 0))
    if not np.all(np.isfinite(cov_std)):
        raise np.linalg.LinAlgError("singular information matrix")
    scale = model.sd
    result = CoxResult(
        beta=beta / scale,
        se=np.sqrt(np.clip(np.diag(cov_std), 0, None)) / scale,
        cov=cov_std / np.outer(scale, scale),
        loglik=ll + (0.5 * ridge * beta @ beta if ridge else 0.0),
        loglik_null=loglik_null,
        converged=converged,
        n_iter=n_iter,
        risk=np.empty(model.n),
        beta_std=beta,
    )
    result.risk[model.order] = model.X @ beta
    if ph_test and p and model.n_deaths > 1:
        result.ph_p = model.ph_test(beta, cov_std)
    return result


def logrank_p_value(time: np.ndarray, groups: np.ndarray, event: np.ndarray) -> float:
    """The (multivariate) log-rank test p, as ``lifelines.statistics.multivariate_logrank_test``."""
    time = np.asarray(time, float)
    event = np.asarray(event).astype(float)
    labels, g = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    k = len(labels)
    if k < 2:
        return np.nan
    uniq, t_idx = np.unique(time, return_inverse=True)
    # Deaths and exits per (time, group); at risk = those exiting at or after the time.
    deaths = np.zeros((len(uniq), k))
    exits = np.zeros((len(uniq), k))
    np.add.at(deaths, (t_idx, g), event)
    np.add.at(exits, (t_idx, g), 1.0)
    at_risk = np.cumsum(exits[::-1], axis=0)[::-1]
    n_t = at_risk.sum(1)
    d_t = deaths.sum(1)
    keep = d_t > 0
    deaths, at_risk, n_t, d_t = deaths[keep], at_risk[keep], n_t[keep], d_t[keep]
    share = at_risk / n_t[:, None]
    observed_minus_expected = (deaths - d_t[:, None] * share).sum(0)
    factor = np.where(n_t > 1, d_t * (n_t - d_t) / np.maximum(n_t - 1, 1), 0.0)
    V = np.einsum("t,ti->i", factor, share)
    V = np.diag(V) - np.einsum("t,ti,tj->ij", factor, share, share)
    z = observed_minus_expected[:-1]
    stat = float(z @ linalg.solve(V[:-1, :-1], z))
    return float(stats.chi2.sf(stat, k - 1))


def _lifelines_fit(X: np.ndarray, time: np.ndarray, event: np.ndarray, *, penalizer: float,
                   ph_test: bool = True) -> CoxResult:
    """The same model fitted by lifelines' CoxPHFitter; its warnings become notes."""
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError, ConvergenceWarning
    from lifelines.statistics import proportional_hazard_test

    cols = [f"x{i}" for i in range(X.shape[1])]
    df = pd.DataFrame(X, columns=cols)
    df["_time"], df["_event"] = time, event
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cph = CoxPHFitter(penalizer=penalizer).fit(df, "_time", "_event")
        except ConvergenceError as e:
            raise np.linalg.LinAlgError(str(e).splitlines()[0]) from e
        ph = proportional_hazard_test(cph, df, time_transform="rank").p_value if ph_test else None
    notes = [str(w.message).strip().splitlines()[0] for w in caught
             if issubclass(w.category, ConvergenceWarning)]
    loglik = float(cph.log_likelihood_)
    # The likelihood-ratio statistic is 2 (loglik - loglik_null): the null log-likelihood
    # from the public API (exact whenever the two are within a factor 2, as fits are).
    loglik_null = loglik - float(cph.log_likelihood_ratio_test().test_statistic) / 2
    return CoxResult(
        beta=cph.params_.to_numpy(), se=cph.standard_errors_.to_numpy(),
        cov=cph.variance_matrix_.to_numpy(), loglik=loglik,
        loglik_null=loglik_null, converged=not notes, n_iter=-1,
        risk=(X - X.mean(0)) @ cph.params_.to_numpy(),
        ph_p=None if ph is None else np.atleast_1d(ph), notes=notes,
    )
