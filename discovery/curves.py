"""Kaplan-Meier curves, numbers at risk and the comparison of two groups of patients.

Used by the dashboards and notebooks through :mod:`discovery.survival`, which re-exports
:func:`kaplan_meier`, :func:`at_risk_table` and :func:`compare_groups`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from discovery.cox import cox_fit
from patientgraph.errors import InputError, did_you_mean


def level_name(value: Any) -> str:
    """A level or group value as text (True -> "1", 2.0 -> "2")."""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _outcome_frame(table, duration_col, event_col, extra=()):
    for col in (duration_col, event_col, *extra):
        if col not in table.columns:
            raise InputError(None, f"the table has no column {col!r}."
                             + did_you_mean(col, map(str, table.columns)),
                             "name an existing column", column=col)
    t = pd.to_numeric(table[duration_col], errors="coerce")
    e = pd.to_numeric(table[event_col], errors="coerce")
    ok = t.notna() & e.isin([0, 1]) & (t > 0)
    for col in extra:
        ok &= table[col].notna()
    return t[ok].to_numpy(float), e[ok].to_numpy(int), ok.to_numpy()


def kaplan_meier(
    table: pd.DataFrame,
    group_col: str | None = None,
    duration_col: str = "time_days",
    event_col: str = "event",
    *,
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Kaplan-Meier curves, one per group (or one for the whole table).

    Returns a long frame: group, timeline, survival, ci_low, ci_high (exponential Greenwood,
    lifelines' default), at_risk (at the start of that time), events, censored. The curve
    starts at time 0 with survival 1. Rows with a missing or non-positive time, or a missing
    group, are left out; their count is in ``frame.attrs["excluded"]``.
    """
    from lifelines import KaplanMeierFitter

    extra = (group_col,) if group_col is not None else ()
    T, E, ok = _outcome_frame(table, duration_col, event_col, extra)
    groups = (table.loc[ok, group_col].map(level_name).to_numpy() if group_col is not None
              else np.full(len(T), "all", dtype=object))
    frames = []
    for g in sorted(set(groups)):
        at = groups == g
        kmf = KaplanMeierFitter(alpha=1 - ci_level).fit(T[at], E[at])
        sf = kmf.survival_function_.iloc[:, 0]
        ci = kmf.confidence_interval_
        et = kmf.event_table
        frames.append(pd.DataFrame({
            "group": g, "timeline": sf.index.to_numpy(float), "survival": sf.to_numpy(),
            "ci_low": ci.iloc[:, 0].to_numpy(), "ci_high": ci.iloc[:, 1].to_numpy(),
            "at_risk": et["at_risk"].to_numpy(int), "events": et["observed"].to_numpy(int),
            "censored": et["censored"].to_numpy(int),
        }))
    cols = ["group", "timeline", "survival", "ci_low", "ci_high", "at_risk", "events",
            "censored"]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    out.attrs["excluded"] = int((~ok).sum())
    return out


def at_risk_table(curves: pd.DataFrame, times: Sequence[float]) -> pd.DataFrame:
    """Numbers at risk per group at the given times (the usual table under a KM plot)."""
    out = {}
    for g, c in curves.groupby("group", sort=True):
        c = c.sort_values("timeline")
        n0 = int(c["at_risk"].iloc[0])
        t = c["timeline"].to_numpy()
        # At risk at time s: those with follow-up >= s = at_risk of the first row at >= s.
        risk = np.append(c["at_risk"].to_numpy(), 0)
        idx = np.searchsorted(t, np.asarray(times, float), side="left")
        out[g] = [n0 if s <= 0 else int(risk[i]) for s, i in zip(times, idx, strict=True)]
    return pd.DataFrame(out, index=pd.Index(list(times), name="time")).T


def compare_groups(
    table_a: pd.DataFrame,
    table_b: pd.DataFrame,
    duration_col: str = "time_days",
    event_col: str = "event",
    *,
    labels: tuple[str, str] = ("A", "B"),
    times: Sequence[float] | None = None,
    ci_level: float = 0.95,
    id_col: str = "patient_id",
) -> dict[str, Any]:
    """Compare the survival of two groups of patients (say, a cohort and its neighbours).

    Returns ``curves`` (:func:`kaplan_meier` of both, group = label), ``logrank_p``, the
    unadjusted Cox hazard ratio of B against A (``hr``, ``ci_low``, ``ci_high``, ``p``), ``n``
    and ``events`` per group, and ``at_risk`` (numbers at risk at ``times``; default 0 and
    the quartiles of follow-up). Patients in both groups raise :class:`InputError`.
    """
    from lifelines.statistics import logrank_test

    if labels[0] == labels[1]:
        raise ValueError("the two labels must differ")
    if id_col in table_a.columns and id_col in table_b.columns:
        both = set(table_a[id_col]) & set(table_b[id_col])
        if both:
            raise InputError(None, f"{len(both)} patients are in both groups",
                             "compare disjoint groups of patients", column=id_col)
    group = "_group"
    parts = [t[[duration_col, event_col]].assign(**{group: lb})
             for t, lb in zip((table_a, table_b), labels, strict=True)
             if {duration_col, event_col} <= set(t.columns)]
    if len(parts) < 2:
        raise InputError(None, f"each group needs the columns {duration_col!r} and "
                         f"{event_col!r}", "pass tables with the outcome columns",
                         column=duration_col)
    both_tables = pd.concat(parts, ignore_index=True)
    curves = kaplan_meier(both_tables, group, duration_col, event_col, ci_level=ci_level)
    T, E, ok = _outcome_frame(both_tables, duration_col, event_col)
    g = (both_tables.loc[ok, group] == labels[1]).to_numpy()
    n = {lb: int((g == (i == 1)).sum()) for i, lb in enumerate(labels)}
    events = {lb: int(E[g == (i == 1)].sum()) for i, lb in enumerate(labels)}
    out: dict[str, Any] = {"curves": curves, "n": n, "events": events,
                           "logrank_p": np.nan, "hr": np.nan, "ci_low": np.nan,
                           "ci_high": np.nan, "p": np.nan}
    if min(n.values()) > 0 and E.sum() > 0:
        out["logrank_p"] = float(logrank_test(T[~g], T[g], E[~g], E[g]).p_value)
        if min(events.values()) > 0:
            fit = cox_fit(g.astype(float)[:, None], T, E, ph_test=False)
            b, se = float(fit.beta[0]), float(fit.se[0])
            z = stats.norm.ppf(0.5 + ci_level / 2)
            out.update(hr=float(np.exp(b)), ci_low=float(np.exp(b - z * se)),
                       ci_high=float(np.exp(b + z * se)),
                       p=float(2 * stats.norm.sf(abs(b / se))))
    if times is None:
        times = [0.0, *np.quantile(T, [0.25, 0.5, 0.75]).round().tolist()] if len(T) else [0.0]
    out["at_risk"] = at_risk_table(curves, times)
    return out
