"""Survival summaries against the textbook: the Freireich 6-MP / placebo leukaemia trial."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboards.survival import compare, split_by_values, usable
from patientgraph.errors import InputError

# Freireich et al. (1963), remission times in weeks (Kleinbaum & Klein, Survival Analysis,
# 3rd ed., chapter 2). 6-MP arm: 9 relapses, 12 censored; placebo arm: 21 relapses.
MP_TIME = [6, 6, 6, 6, 7, 9, 10, 10, 11, 13, 16, 17, 19, 20, 22, 23, 25, 32, 32, 34, 35]
MP_EVENT = [1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
PLACEBO_TIME = [1, 1, 2, 2, 3, 4, 4, 5, 5, 8, 8, 8, 8, 11, 11, 12, 12, 15, 17, 22, 23]
# The 6-MP Kaplan-Meier estimate after each relapse time (the book's table).
MP_KM = {6: 0.857, 7: 0.807, 10: 0.753, 13: 0.690, 16: 0.627, 22: 0.538, 23: 0.448}


def group(times, events, prefix: str) -> pd.DataFrame:
    return pd.DataFrame({"patient_id": [f"{prefix}{i}" for i in range(len(times))],
                         "time_days": times, "event": events})


@pytest.fixture
def trial():
    return group(MP_TIME, MP_EVENT, "m"), group(PLACEBO_TIME, [1] * 21, "p")


def test_kaplan_meier_matches_the_textbook(trial):
    curves, _ = compare(*trial, "6-MP", "placebo")
    mp = curves[0]
    for t, expected in MP_KM.items():
        at = np.searchsorted(mp.time, t, side="right") - 1
        assert mp.survival[at] == pytest.approx(expected, abs=5e-4)
    assert (mp.ci_low <= mp.survival + 1e-12).all() and (mp.survival <= mp.ci_high + 1e-12).all()
    assert (mp.n, mp.events) == (21, 9)


def test_comparison_matches_the_textbook(trial):
    _, comparison = compare(*trial, "6-MP", "placebo")
    # Log-rank chi-square 16.79 on 1 df (Kleinbaum & Klein): p = 4.2e-5.
    assert comparison.logrank_p == pytest.approx(4.17e-5, rel=0.02)
    # R: coxph(Surv(time, status) ~ placebo) (Efron ties): exp(coef) 4.82, 95% CI 2.15-10.8.
    assert comparison.hr == pytest.approx(4.82, abs=0.02)
    assert comparison.hr_low == pytest.approx(2.15, abs=0.02)
    assert comparison.hr_high == pytest.approx(10.8, abs=0.1)
    assert (comparison.n_a, comparison.events_a, comparison.n_b, comparison.events_b) == \
        (21, 9, 21, 21)


def test_number_at_risk_counts_those_still_followed(trial):
    curves, _ = compare(*trial, "6-MP", "placebo")
    assert curves[0].at_risk([0, 6, 6.5, 10, 35, 36]) == [21, 21, 17, 15, 1, 0]
    assert curves[1].at_risk([0, 8, 23.5]) == [21, 12, 0]


def test_rows_without_usable_follow_up_are_counted_not_used(trial):
    a, b = trial
    bad = pd.DataFrame({"patient_id": ["x1", "x2", "x3"], "time_days": [0.0, np.nan, 5.0],
                        "event": [1, 1, np.nan]})
    assert len(usable(pd.concat([a, bad]))) == len(a)
    curves, comparison = compare(pd.concat([a, bad]), b, "6-MP", "placebo")
    assert comparison.dropped == 3
    assert curves[0].n == 21


def test_patients_in_both_groups_are_refused(trial):
    a, b = trial
    with pytest.raises(InputError, match="2 patients are in both groups"):
        compare(a, pd.concat([b, a.head(2)]))


def test_a_group_too_small_gives_curves_but_no_comparison(trial):
    a, _ = trial
    curves, comparison = compare(a, group([5], [1], "z"))
    assert comparison is None
    assert [c.label for c in curves] == ["A"]


def test_same_labels_are_told_apart(trial):
    curves, comparison = compare(*trial, "men", "men")
    assert [c.label for c in curves] == ["men (A)", "men (B)"]
    assert comparison.label_b == "men (B)"


def test_groups_by_index_when_there_is_no_id_column(trial):
    a, b = (t.set_index("patient_id") for t in trial)
    _, comparison = compare(a, b)
    assert comparison.n_a == 21


@pytest.mark.parametrize("values, expected_b, labels", [
    (pd.Series([0.0, 1.0, 1.0, 0.0], name="flag"), [False, True, True, False],
     ("flag = 0", "flag = 1")),
    (pd.Series([1.0, 2.0, 3.0, 4.0, 5.0], name="ldh"), [False, False, False, True, True],
     ("ldh <= 3", "ldh > 3")),
])
def test_split_by_values(values, expected_b, labels):
    in_b, label_a, label_b = split_by_values(values)
    assert in_b.tolist() == expected_b
    assert (label_a, label_b) == labels


def test_split_by_a_level_against_its_reference():
    values = pd.Series(["I", "II", "IV", "IV", None], name="stage",
                       index=["a", "b", "c", "d", "e"])
    in_b, label_a, label_b = split_by_values(values, level="IV", reference="I")
    assert in_b.to_dict() == {"a": False, "c": True, "d": True}
    assert (label_a, label_b) == ("stage = I", "stage = IV")


def test_a_constant_does_not_split():
    assert split_by_values(pd.Series([3.0, 3.0, np.nan], name="x")) is None
