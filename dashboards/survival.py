"""Survival summaries the explorer draws: Kaplan-Meier curves and two-group comparisons.

Everything goes through :func:`compare`, which uses the discover stage's own
``discovery.survival.compare_groups`` (Kaplan-Meier, log-rank p, unadjusted Cox hazard
ratio of B against A) and ``kaplan_meier`` for a lone curve. Rows a
model cannot use (missing time or event, follow-up of zero days or less) are left out and
counted in ``dropped``; a patient in both groups is refused, since the tests assume
separate groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from patientgraph.errors import InputError

TIME, EVENT, ID = "time_days", "event", "patient_id"
MIN_GROUP = 2
"""Fewest patients with usable follow-up a group needs for a curve and a test."""


@dataclass(frozen=True)
class Curve:
    """A Kaplan-Meier estimate: step function ``survival`` over ``time`` with its 95% band."""

    label: str
    time: np.ndarray
    survival: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    n: int
    events: int
    durations: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def at_risk(self, ticks) -> list[int]:
        """How many patients are still followed (time >= tick) at each tick."""
        durations = np.sort(self.durations)
        return [int(len(durations) - np.searchsorted(durations, t, side="left"))
                for t in ticks]


@dataclass(frozen=True)
class Comparison:
    """Group B against group A: log-rank p and the Cox hazard ratio of B with its 95% CI."""

    label_a: str
    label_b: str
    n_a: int
    n_b: int
    events_a: int
    events_b: int
    logrank_p: float
    hr: float
    hr_low: float
    hr_high: float
    dropped: int = 0
    note: str = ""


def usable(table: pd.DataFrame) -> pd.DataFrame:
    """The rows a survival model can use: time > 0 and an event coded 0 or 1."""
    t = pd.to_numeric(table[TIME], errors="coerce")
    e = pd.to_numeric(table[EVENT], errors="coerce")
    return table[t.notna() & e.isin([0, 1]) & (t > 0)]


def compare(table_a: pd.DataFrame, table_b: pd.DataFrame, label_a: str = "A",
            label_b: str = "B") -> tuple[list[Curve], Comparison | None]:
    """Curves of both groups and B against A (None when a group has too few patients).

    The tables hold ``time_days`` and ``event`` (and ``patient_id``, or the ids as index).
    """
    a, b = (_with_ids(t) for t in (table_a, table_b))
    both = set(a[ID]) & set(b[ID])
    if both:
        raise InputError(None, f"{len(both)} patients are in both groups",
                         "compare groups that share no patients (narrow one of the filters)")
    if label_a == label_b:
        label_a, label_b = f"{label_a} (A)", f"{label_b} (B)"
    ua, ub = usable(a), usable(b)
    dropped = len(a) - len(ua) + len(b) - len(ub)
    if len(ua) < MIN_GROUP or len(ub) < MIN_GROUP:
        curves = [c for c in (_curve(ua, label_a), _curve(ub, label_b)) if c is not None]
        return curves, None
    curves, stats = _backend_compare(ua, ub, label_a, label_b)
    note = ""
    if ua[EVENT].sum() + ub[EVENT].sum() == 0:
        note = "no events in either group"
    elif not math.isfinite(stats["hr"]):
        note = "no hazard ratio (a group without events, or the fit did not converge)"
    comparison = Comparison(
        label_a=label_a, label_b=label_b, n_a=len(ua), n_b=len(ub),
        events_a=int(ua[EVENT].sum()), events_b=int(ub[EVENT].sum()),
        logrank_p=stats["logrank_p"], hr=stats["hr"], hr_low=stats["ci_low"],
        hr_high=stats["ci_high"], dropped=dropped, note=note)
    return curves, comparison


def split_by_values(values: pd.Series, level: Any = None,
                    reference: Any = None) -> tuple[pd.Series, str, str] | None:
    """Two groups from a candidate's per-patient values (index: patient_id).

    With ``level`` (a category of the scan) the groups are ``reference`` (or every other
    value) against ``level``; a value with two levels splits on them; a numeric one at its
    median. Returns ``(in_b, label_a, label_b)``, ``in_b`` a boolean Series over the patients
    that belong to a group, or None when the values cannot be split.
    """
    from discovery.curves import level_name  # scipy.stats: imported on first use

    values = values.dropna()
    name = values.name
    if level is not None and not _missing(level):
        text = values.map(level_name)
        if not _missing(reference):
            text = text[text.isin([level_name(level), level_name(reference)])]
            label_a = f"{name} = {reference}"
        else:
            label_a = f"{name} other than {level}"
        in_b = text == level_name(level)
        if in_b.all() or not in_b.any():
            return None
        return in_b, label_a, f"{name} = {level}"
    levels = pd.unique(values)
    if len(levels) < 2:
        return None
    if len(levels) == 2:
        low, high = sorted(levels, key=lambda v: (str(type(v)), v))
        return values == high, f"{name} = {_fmt(low)}", f"{name} = {_fmt(high)}"
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        median = float(numeric.median())
        above = numeric > median
        if above.all() or not above.any():
            return None
        return above, f"{name} <= {_fmt(median)}", f"{name} > {_fmt(median)}"
    top = values.value_counts().index[0]
    return values != top, f"{name} = {top}", f"{name} other than {top}"


def _with_ids(table: pd.DataFrame) -> pd.DataFrame:
    if ID in table.columns:
        return table.reset_index(drop=True)
    return table.rename_axis(ID).reset_index()


def _curve(table: pd.DataFrame, label: str) -> Curve | None:
    from discovery.survival import kaplan_meier

    if len(table) < MIN_GROUP:
        return None
    return _from_frame(kaplan_meier(table, duration_col=TIME, event_col=EVENT), table, label)


def _from_frame(frame: pd.DataFrame, table: pd.DataFrame, label: str) -> Curve:
    """A Curve from a long KM frame (timeline, survival, ci_low, ci_high) of one group."""
    frame = frame.sort_values("timeline", kind="stable")
    return Curve(label=label, time=frame["timeline"].to_numpy(float),
                 survival=frame["survival"].to_numpy(float),
                 ci_low=frame["ci_low"].to_numpy(float), ci_high=frame["ci_high"].to_numpy(float),
                 n=len(table), events=int(table[EVENT].sum()),
                 durations=table[TIME].to_numpy(float))


def _backend_compare(a: pd.DataFrame, b: pd.DataFrame, label_a: str,
                     label_b: str) -> tuple[list[Curve], dict[str, float]]:
    """Curves, log-rank p and Cox HR (B vs A) with its CI from discovery.survival."""
    from discovery.survival import compare_groups

    out = compare_groups(a[[ID, TIME, EVENT]], b[[ID, TIME, EVENT]], labels=(label_a, label_b),
                         times=[0.0])
    frames = dict(tuple(out["curves"].groupby("group", sort=False)))
    curves = [_from_frame(frames[label], table, label)
              for label, table in ((label_a, a), (label_b, b))]
    return curves, {k: float(out[k]) for k in ("logrank_p", "hr", "ci_low", "ci_high")}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}"
    return str(value)
