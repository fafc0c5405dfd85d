"""Survival association scan of candidate biomarkers, with Kaplan-Meier and group comparisons.

:class:`BiomarkerScan` tests every column of a patients x candidates table against survival:
a Cox model of the candidate adjusted for age and sex (hazard ratio per standard deviation for
measurements, per level against a reference for categories), the log-rank test for categories,
the proportional-hazards check and Benjamini-Hochberg q-values across all tests. A fit that did
not converge, whose answer moves when the optimiser's settings change, or that separates the
data is flagged and never reported as a finding. Cox models are fitted by a vectorised
Newton-Raphson on the Efron partial likelihood (:func:`cox_fit`, checked against lifelines to
1e-6 by the tests); ``engine="lifelines"`` fits each model with ``CoxPHFitter`` instead.

The scan is here; the Cox engine and the log-rank test are :mod:`discovery.cox`, the curves
and group comparisons :mod:`discovery.curves`, the C-index :mod:`discovery.concordance`. This
module re-exports their public names, so ``from discovery.survival import kaplan_meier``
keeps working.

Rules (documented here because they decide what is reported):

* Outcomes: patients with a missing time or event, or a follow-up time <= 0, are left out of
  every model and counted in ``excluded_``. Events must be coded 0/1.
* Missing values: each candidate's model uses the patients with the candidate and every
  adjustment covariate present (``n``; ``n_missing`` counts the others).
* Kinds: a bool column or a numeric one with exactly two values is ``binary``; other numeric
  columns are ``numeric``; anything else is ``categorical``. ``kinds=`` overrides.
* Transform of a numeric candidate: ``log`` when every observed value is > 0, the sample
  skewness (bias-corrected, as ``pandas.Series.skew``, over every patient with a usable
  outcome and the value) exceeds ``skew_threshold`` (0.5) and the log makes the values more
  symmetric (|skew of log| < skew); otherwise ``none`` (the rule is in
  :mod:`patientgraph.encoding`). Typical labs (LDH, CRP, creatinine) get a log, a sum of
  lesion diameters often does not. The transformed value is standardised
  (mean 0, SD 1 with ddof=1 over the model's patients), so ``hr`` is the hazard ratio per SD
  of the transformed candidate (the SD is in ``scale``). ``transforms=`` overrides.
* Levels: one row per non-reference level, hazard ratio against the reference level (the
  first in sorted order, or the first category of an ordered/categorical dtype, or
  ``references=``). Levels with fewer than ``min_level_size`` patients or no events are left
  out of the model (their row is flagged ``sparse level`` / ``separation``) and their patients
  are not counted in ``n``. ``lr_p`` is the likelihood-ratio test of the whole candidate (all
  its levels) against the covariates-only model on the same patients; ``logrank_p`` is the
  unadjusted (multivariate) log-rank test across the levels on the same patients.
* Rows: ``candidate`` is the column of the table; ``biomarker`` names the row uniquely (the
  candidate, or ``candidate=level`` for a candidate with several rows).
* Multiple testing: BH q-values over every unflagged row's Wald ``p`` (so a k-level candidate
  contributes k - 1 tests). ``significant`` = q < ``alpha``.
* Proportional hazards: the Grambsch-Therneau test on scaled Schoenfeld residuals with rank-
  transformed time (lifelines' ``proportional_hazard_test(..., time_transform="rank")``);
  ``ph_violated`` = ``ph_p`` < ``ph_alpha``. A caveat, not a flag.
* Flags (hr, CI, p and q set to NaN; the note says what was seen): ``no variance``,
  ``too many levels``, ``not numeric``, ``not finite``, ``not positive`` (a log asked for
  values <= 0), ``too few events``, ``sparse level``, ``separation``,
  ``not converged``, ``singular`` (collinear design), ``unstable`` (the log hazard ratio moves
  by more than ``stability_tol`` x max(1, |log HR|) when the model is refitted with a small
  ridge penalty, ``stability_penalizer``).
"""

from __future__ import annotations

import time as _time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from discovery.concordance import c_index
from discovery.cox import CoxResult, _Efron, _lifelines_fit, _newton, cox_fit, logrank_p_value
from discovery.curves import at_risk_table, compare_groups, kaplan_meier, level_name
from patientgraph.encoding import SURVIVAL_SCAN_SKEW, wants_log
from patientgraph.errors import InputError, did_you_mean

__all__ = [
    "RESULT_COLUMNS", "EXTRA_COLUMNS", "KINDS", "TRANSFORMS", "ENGINES", "SurvivalDataWarning",
    "BiomarkerScan", "benjamini_hochberg", "choose_transform", "infer_kind", "CoxResult",
    "cox_fit", "logrank_p_value", "kaplan_meier", "at_risk_table", "compare_groups",
]

RESULT_COLUMNS = ["candidate", "family", "hr", "ci_low", "ci_high", "p", "q", "n", "events"]
"""The contract columns of ``W/discovery/biomarkers.parquet``; first in ``results_``."""
EXTRA_COLUMNS = [
    "biomarker", "level", "reference", "kind", "transform", "scale", "n_missing", "lr_p",
    "logrank_p", "concordance", "ph_p", "ph_violated", "converged", "significant", "flag", "note",
]
KINDS = ("numeric", "binary", "categorical")
TRANSFORMS = ("none", "log")
ENGINES = ("numpy", "lifelines")


class SurvivalDataWarning(UserWarning):
    """Legal but doubtful survival input: patients left out of every model."""


def benjamini_hochberg(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """BH q-values; NaN p-values stay NaN and do not count as tests."""
    p = np.asarray(p, dtype=float)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(p[ok], method="bh")
    return q


def choose_transform(values: pd.Series, skew_threshold: float = SURVIVAL_SCAN_SKEW) -> str:
    """``log`` for a strictly positive, right-skewed measurement that the log makes more
    symmetric; ``none`` otherwise (see the module docstring, and :mod:`patientgraph.encoding`
    for why the record encoder and the graph features use other thresholds)."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return "log" if wants_log(v, skew_threshold, more_symmetric=True) else "none"


def infer_kind(values: pd.Series) -> str:
    """``binary``, ``numeric`` or ``categorical`` (see the module docstring)."""
    if pd.api.types.is_bool_dtype(values):
        return "binary"
    if pd.api.types.is_numeric_dtype(values):
        return "binary" if values.dropna().nunique() == 2 else "numeric"
    return "categorical"


# --------------------------------------------------------------------------- the scan


class BiomarkerScan:
    """Cox / log-rank association scan of candidate biomarkers with BH FDR control.

    Parameters
    ----------
    covariates:
        Columns every model is adjusted for (categorical ones dummy-coded). A covariate that is
        itself the candidate is left out of its own model.
    alpha:
        FDR level for ``significant``.
    penalizer:
        Ridge penalty of every model (lifelines' convention; 0 = plain maximum likelihood).
    ci_level:
        Confidence level of ``ci_low``/``ci_high``.
    skew_threshold, transforms:
        The log rule for numeric candidates, and per-candidate overrides ("none"/"log").
    references:
        Reference level per categorical candidate or covariate.
    min_events:
        Fewest events a model needs; fewer in the whole table raises :class:`InputError`,
        fewer for one candidate flags it.
    min_level_size:
        Levels with fewer patients are left out of the candidate's model and flagged.
    max_levels:
        Categorical candidates with more levels are flagged, not fitted (identifiers, free text).
    ph_alpha:
        Threshold of ``ph_violated``.
    stability_penalizer, stability_tol:
        The refit that checks the answer does not depend on the optimiser's settings.
    engine:
        "numpy" (vectorised Efron Newton-Raphson) or "lifelines" (``CoxPHFitter`` per model).
    concordance:
        Compute each model's Harrell C (:func:`discovery.concordance.c_index`).
    id_col:
        A patient identifier column, never a candidate.
    """

    def __init__(
        self,
        covariates: Sequence[str] = ("age", "sex"),
        *,
        alpha: float = 0.05,
        penalizer: float = 0.0,
        ci_level: float = 0.95,
        skew_threshold: float = SURVIVAL_SCAN_SKEW,
        transforms: Mapping[str, str] | None = None,
        references: Mapping[str, Any] | None = None,
        min_events: int = 10,
        min_level_size: int = 5,
        max_levels: int = 20,
        ph_alpha: float = 0.05,
        stability_penalizer: float = 1e-4,
        stability_tol: float = 0.01,
        max_iter: int = 50,
        engine: str = "numpy",
        concordance: bool = True,
        id_col: str = "patient_id",
    ):
        if isinstance(covariates, str):
            covariates = (covariates,)
        if not 0 < alpha < 1 or not 0 < ci_level < 1 or not 0 < ph_alpha < 1:
            raise ValueError("alpha, ci_level and ph_alpha must lie strictly between 0 and 1")
        if penalizer < 0 or stability_penalizer <= 0:
            raise ValueError("penalizer must be >= 0 and stability_penalizer > 0")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}."
                             + did_you_mean(engine, ENGINES))
        for name, t in (transforms or {}).items():
            if t not in TRANSFORMS:
                raise ValueError(f"transform of {name!r} must be one of {TRANSFORMS}, not {t!r}")
        self.covariates = tuple(covariates)
        self.alpha = alpha
        self.penalizer = penalizer
        self.ci_level = ci_level
        self.skew_threshold = skew_threshold
        self.transforms = dict(transforms or {})
        self.references = dict(references or {})
        self.min_events = min_events
        self.min_level_size = min_level_size
        self.max_levels = max_levels
        self.ph_alpha = ph_alpha
        self.stability_penalizer = stability_penalizer
        self.stability_tol = stability_tol
        self.max_iter = max_iter
        self.engine = engine
        self.concordance = concordance
        self.id_col = id_col

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        table: pd.DataFrame,
        duration_col: str = "time_days",
        event_col: str = "event",
        candidates: Iterable[str] | None = None,
        families: Mapping[str, str] | None = None,
        kinds: Mapping[str, str] | None = None,
        *,
        source: str | None = None,
    ) -> BiomarkerScan:
        """Scan ``candidates`` (default: every column but the outcome and id) of ``table``.

        ``families`` names each candidate's family (default "record"); ``kinds`` overrides
        the inferred kind. ``source`` names the table in error messages.
        """
        started = _time.perf_counter()
        for col in (duration_col, event_col, *self.covariates):
            if col not in table.columns:
                role = "covariate" if col in self.covariates else "outcome"
                raise InputError(
                    source, f"the table has no {role} column {col!r}."
                    + did_you_mean(col, map(str, table.columns)),
                    "name an existing column" + (
                        ", or pass covariates=() for unadjusted models" if role == "covariate"
                        else ""), column=col)
        reserved = {duration_col, event_col, self.id_col}
        if candidates is None:
            candidates = [c for c in table.columns if c not in reserved]
        candidates = list(dict.fromkeys(candidates))
        for c in candidates:
            if c not in table.columns or c in reserved:
                raise InputError(source, f"candidate {c!r} is not a column of the table "
                                 "(or is the outcome)." + did_you_mean(c, map(str, table.columns)),
                                 "name candidate columns of the table", column=str(c))
        kinds = dict(kinds or {})
        for c, k in kinds.items():
            if k not in KINDS:
                raise ValueError(f"kind of {c!r} must be one of {KINDS}, not {k!r}")
        families = dict(families or {})

        data, self.excluded_ = self._usable_outcomes(table, duration_col, event_col, source)
        self.n_patients_ = len(data)
        self.n_events_ = int(data["_event"].sum())
        if self.n_events_ < self.min_events:
            raise InputError(
                source, f"only {self.n_events_} events among the {self.n_patients_} patients "
                f"with a usable outcome; a Cox model needs at least {self.min_events}",
                "scan a larger cohort, or check that the event column codes events as 1",
                column=event_col)

        self._reduced_cache: dict[Any, CoxResult] = {}
        rows, self.notes_ = [], {}
        for c in candidates:
            kind = kinds.get(c) or infer_kind(data[c])
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = self._scan_one(data, c, kind, families.get(c, "record"))
            msgs = [str(w.message).strip().splitlines()[0] for w in caught]
            if msgs:
                self.notes_[c] = msgs
            rows.extend(out)
        self.results_ = self._finish(rows)
        self.seconds_ = _time.perf_counter() - started
        del self._reduced_cache
        return self

    def _usable_outcomes(self, table, duration_col, event_col, source):
        time = pd.to_numeric(table[duration_col], errors="coerce")
        event = pd.to_numeric(table[event_col], errors="coerce")
        bad_text = time.isna() & table[duration_col].notna()
        if bad_text.any():
            i = int(np.flatnonzero(bad_text.to_numpy())[0])
            raise InputError(source, f"follow-up time {table[duration_col].iloc[i]!r} is not a "
                             "number", "give follow-up time as a number of days", row=i,
                             column=duration_col, more=int(bad_text.sum()) - 1)
        bad_event = event.notna() & ~event.isin([0, 1])
        if bad_event.any():
            i = int(np.flatnonzero(bad_event.to_numpy())[0])
            raise InputError(source, f"event {table[event_col].iloc[i]!r} is not 0 or 1",
                             "code the event as 1 (event observed) or 0 (censored)", row=i,
                             column=event_col, more=int(bad_event.sum()) - 1)
        missing_time, missing_event = time.isna(), event.isna()
        nonpositive = ~missing_time & (time <= 0)
        keep = ~(missing_time | missing_event | nonpositive)
        excluded = {
            "missing_time": int(missing_time.sum()),
            "missing_event": int((missing_event & ~missing_time).sum()),
            "nonpositive_time": int((nonpositive & ~missing_event).sum()),
        }
        excluded["total"] = int((~keep).sum())
        if excluded["total"]:
            warnings.warn(
                f"{excluded['total']} of {len(table)} patients left out of every model "
                f"({excluded['missing_time']} without follow-up time, "
                f"{excluded['missing_event']} without event status, "
                f"{excluded['nonpositive_time']} with follow-up time <= 0)",
                SurvivalDataWarning, stacklevel=3)
        data = table.loc[keep.to_numpy()].reset_index(drop=True).copy()
        data["_time"] = time[keep].to_numpy(dtype=float)
        data["_event"] = event[keep].to_numpy(dtype=int)
        return data, excluded

    # ------------------------------------------------------------------ one candidate

    def _levels(self, values: pd.Series, name: str) -> tuple[list, Any]:
        present = values.dropna()
        if isinstance(values.dtype, pd.CategoricalDtype):
            levels = [lv for lv in values.cat.categories if (present == lv).any()]
        else:
            levels = sorted(present.unique(), key=lambda v: (str(type(v)), v))
        ref = self.references.get(name, levels[0] if levels else None)
        if ref is not None and ref not in levels:
            match = [lv for lv in levels if level_name(lv) == level_name(ref)]
            ref = match[0] if match else levels[0]
        return levels, ref

    def _covariate_block(self, data: pd.DataFrame, covs: Sequence[str]):
        """Numeric covariates as they are, categorical ones as dummies (reference dropped)."""
        blocks, names = [], []
        for cov in covs:
            v = data[cov]
            if pd.api.types.is_numeric_dtype(v) or pd.api.types.is_bool_dtype(v):
                blocks.append(v.to_numpy(dtype=float)[:, None])
                names.append(cov)
                continue
            levels, ref = self._levels(v, cov)
            for lv in levels:
                if lv != ref:
                    blocks.append((v == lv).to_numpy(dtype=float)[:, None])
                    names.append(f"{cov}[{level_name(lv)}]")
        X = np.hstack(blocks) if blocks else np.empty((len(data), 0))
        keep = X.std(0) > 0 if len(X) else np.ones(X.shape[1], bool)
        return X[:, keep], [n for n, k in zip(names, keep, strict=True) if k]

    def _scan_one(self, data: pd.DataFrame, name: str, kind: str, family: str) -> list[dict]:
        covs = [c for c in self.covariates if c != name]
        ok = data[name].notna().to_numpy() & data[covs].notna().all(axis=1).to_numpy()
        base = {"candidate": name, "family": family, "kind": kind, "transform": "none",
                "level": None, "reference": None, "n_missing": int((~ok).sum()),
                "flag": "", "note": ""}
        sub = data.loc[ok, [name, *covs, "_time", "_event"]].reset_index(drop=True)
        if kind == "numeric":
            design = self._numeric_design(sub, name, data[name], base)
        else:
            design = self._level_design(sub, name, base)
        if isinstance(design, list):  # flagged before any model
            return design
        cand, labels, sub, flagged = design
        n, events = len(sub), int(sub["_event"].sum())
        base.update(n=n, events=events)
        if events < self.min_events:
            return [{**base, "level": lb, "flag": "too few events",
                     "note": f"{events} events (fewer than {self.min_events})"}
                    for lb in labels] + flagged
        cov_X, _ = self._covariate_block(sub, covs)
        X = np.hstack([cand, cov_X])
        T, E = sub["_time"].to_numpy(float), sub["_event"].to_numpy(int)
        return self._model_rows(base, X, T, E, labels, covs, sub) + flagged

    def _numeric_design(self, sub, name, all_values, base):
        """The standardised (transformed) candidate column, or the flagged row."""
        x = pd.to_numeric(sub[name], errors="coerce")
        counts = {"n": len(sub), "events": int(sub["_event"].sum())}
        if x.isna().any():
            return [{**base, **counts, "flag": "not numeric",
                     "note": "values that are not numbers; declare the kind 'categorical'"}]
        if not np.isfinite(x.to_numpy(float)).all():
            return [{**base, **counts, "flag": "not finite",
                     "note": "infinite values; replace them with a number or leave them empty"}]
        transform = self.transforms.get(name) or choose_transform(
            pd.to_numeric(all_values, errors="coerce"), self.skew_threshold)
        base["transform"] = transform
        if transform == "log" and (x <= 0).any():
            return [{**base, **counts, "flag": "not positive",
                     "note": "a log transform of values <= 0"}]
        xt = np.log(x.to_numpy(float)) if transform == "log" else x.to_numpy(float)
        sd = float(xt.std(ddof=1)) if len(xt) > 1 else 0.0
        if not sd > 0:
            return [{**base, **counts, "flag": "no variance", "note": "the candidate is constant"}]
        base["scale"] = sd
        return ((xt - xt.mean()) / sd)[:, None], [None], sub, []

    def _level_design(self, sub, name, base):
        """Dummies of the non-reference levels; sparse or event-free levels left out."""
        v = sub[name]
        levels, ref = self._levels(v, name)
        if len(levels) > self.max_levels:
            return [{**base, "n": len(sub), "events": int(sub["_event"].sum()),
                     "flag": "too many levels",
                     "note": f"{len(levels)} levels (more than {self.max_levels})"}]
        event = sub["_event"].to_numpy()
        drop, kept, flagged = np.zeros(len(sub), bool), [], []
        for lv in levels:
            at = (v == lv).to_numpy()
            n_lv, e_lv = int(at.sum()), int(event[at].sum())
            problem = ("sparse level" if n_lv < self.min_level_size else
                       "separation" if e_lv == 0 else "")
            if problem:
                drop |= at
                flagged.append({**base, "level": level_name(lv), "n": n_lv, "events": e_lv,
                                "flag": problem, "note": f"level left out of the model: "
                                f"{n_lv} patients, {e_lv} events"})
            else:
                kept.append(lv)
        if ref not in kept and kept:
            ref = kept[0]
        base["reference"] = None if ref is None else level_name(ref)
        for row in flagged:
            row["reference"] = base["reference"]
        sub = sub.loc[~drop].reset_index(drop=True)
        others = [lv for lv in kept if lv != ref]
        if not others:
            return flagged or [{**base, "n": len(sub), "events": int(sub["_event"].sum()),
                                "flag": "no variance", "note": "fewer than two levels"}]
        v = sub[name]
        cand = np.column_stack([(v == lv).to_numpy(float) for lv in others])
        return cand, [level_name(lv) for lv in others], sub, flagged

    def _fit(self, X, T, E, penalizer, ph_test=True) -> CoxResult:
        if self.engine == "lifelines":
            return _lifelines_fit(X, T, E, penalizer=penalizer, ph_test=ph_test)
        return cox_fit(X, T, E, penalizer=penalizer, max_iter=self.max_iter, ph_test=ph_test)

    def _fit_and_check(self, X, T, E) -> tuple[CoxResult, CoxResult]:
        """The model, and its refit with a small ridge penalty (the stability check)."""
        check_penalizer = self.penalizer + self.stability_penalizer
        if self.engine == "lifelines":
            return (self._fit(X, T, E, self.penalizer),
                    self._fit(X, T, E, check_penalizer, ph_test=False))
        model = _Efron(X, T, E)
        fit = _newton(model, penalizer=self.penalizer, max_iter=self.max_iter)
        # The penalised likelihood is strictly concave, so a warm start finds its one maximum.
        check = _newton(model, penalizer=check_penalizer, max_iter=self.max_iter,
                        ph_test=False, init=fit.beta_std if fit.converged else None)
        return fit, check

    def _model_rows(self, base, X, T, E, labels, covs, sub) -> list[dict]:
        n_cand = len(labels)
        try:
            fit, check = self._fit_and_check(X, T, E)
        except (np.linalg.LinAlgError, ValueError) as e:
            return [{**base, "level": lb, "flag": "singular",
                     "note": f"the model could not be fitted ({str(e)[:80]})"} for lb in labels]
        z = stats.norm.ppf(0.5 + self.ci_level / 2)
        reduced = self._reduced_loglik(X[:, n_cand:], T, E, fit)
        lr_p = float(stats.chi2.sf(2 * max(fit.loglik - reduced, 0.0), n_cand))
        logrank_p = np.nan
        if base["kind"] != "numeric":
            logrank_p = logrank_p_value(T, sub[base["candidate"]].map(level_name).to_numpy(), E)
        conc = c_index(T, E, fit.risk) if self.concordance else np.nan
        rows = []
        for j, lb in enumerate(labels):
            b, se = float(fit.beta[j]), float(fit.se[j])
            flag, note = "", "; ".join(fit.notes)
            if not fit.converged:
                flag = "not converged"
                note = (note or "no convergence (separation?)") + f"; last log HR {b:.3g}"
            elif not np.isfinite(b) or abs(b - float(check.beta[j])) > self.stability_tol * max(
                    1.0, abs(b)):
                flag = "unstable"
                note = (f"log HR {b:.3g} becomes {float(check.beta[j]):.3g} with a ridge "
                        f"penalty of {self.stability_penalizer:g} (separation or flat likelihood)")
            p = float(2 * stats.norm.sf(abs(b / se))) if se > 0 else np.nan
            ph_p = float(fit.ph_p[j]) if fit.ph_p is not None else np.nan
            rows.append({
                **base, "level": lb, "hr": float(np.exp(b)),
                "ci_low": float(np.exp(b - z * se)), "ci_high": float(np.exp(b + z * se)),
                "p": np.nan if flag else p, "lr_p": np.nan if flag else lr_p,
                "logrank_p": logrank_p, "concordance": conc, "ph_p": ph_p,
                "ph_violated": bool(ph_p < self.ph_alpha), "converged": fit.converged,
                "flag": flag, "note": note,
            })
        return rows

    def _reduced_loglik(self, cov_X, T, E, fit) -> float:
        """Log-likelihood of the covariates-only model on the same patients (cached)."""
        if cov_X.shape[1] == 0:
            return fit.loglik_null
        key = (cov_X.tobytes(), T.tobytes(), E.tobytes())
        if key not in self._reduced_cache:
            self._reduced_cache[key] = self._fit(cov_X, T, E, self.penalizer, ph_test=False)
        return self._reduced_cache[key].loglik

    def _finish(self, rows: list[dict]) -> pd.DataFrame:
        df = pd.DataFrame(rows)
        for col in RESULT_COLUMNS + EXTRA_COLUMNS:
            if col not in df.columns:
                df[col] = np.nan
        flagged = df["flag"].fillna("") != ""
        # A flagged row's numbers are not an answer; what was seen is in its note.
        df.loc[flagged, ["hr", "ci_low", "ci_high", "p", "lr_p"]] = np.nan
        df["q"] = benjamini_hochberg(df["p"].to_numpy(float))
        df["significant"] = (df["q"] < self.alpha).to_numpy(bool)
        df["ph_violated"] = (df["ph_p"].astype(float) < self.ph_alpha).to_numpy(bool)
        df["converged"] = df["converged"].astype("boolean")
        for col in ("n", "events", "n_missing"):
            df[col] = df[col].astype("Int64")
        for col in ("level", "reference"):
            df[col] = df[col].astype(object).where(df[col].notna(), None)
        # One name per row: the candidate, or candidate=level where a candidate has several.
        several = df.groupby("candidate")["candidate"].transform("size") > 1
        df["biomarker"] = np.where(several, df["candidate"].astype(str) + "="
                                   + df["level"].astype(str), df["candidate"].astype(str))
        df = df[RESULT_COLUMNS + EXTRA_COLUMNS]
        df = df.sort_values(["q", "p", "candidate"], na_position="last", kind="mergesort")
        return df.reset_index(drop=True)

    def findings(self) -> pd.DataFrame:
        """The rows with q < alpha (never a flagged row)."""
        return self.results_[self.results_["significant"]].reset_index(drop=True)
