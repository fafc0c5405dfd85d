"""Tests of discovery/concordance.py: the one C-index, against lifelines' concordance_index."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.utils import concordance_index

from discovery.concordance import bootstrap_c_index, c_index


def test_c_index_equals_lifelines_with_tied_times_and_risks():
    rng = np.random.default_rng(1)
    for n in (5, 60, 700):
        t = rng.integers(1, 40, n).astype(float)  # tied times
        e = rng.integers(0, 2, n)
        e[0] = 1
        for risk in (rng.normal(size=n), rng.integers(0, 3, n).astype(float)):  # tied risks
            assert c_index(t, e, risk) == concordance_index(t, -risk, e)


def test_c_index_refuses_what_lifelines_refuses():
    with pytest.raises(ZeroDivisionError):
        c_index([1.0, 2.0], [0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        c_index([1.0, 2.0], [1, 0], [np.nan, 0.2])


def test_bootstrap_c_index_equals_lifelines_on_each_resample():
    rng = np.random.default_rng(2)
    n = 50
    time = rng.integers(1, 15, n).astype(float)  # many tied times
    event = rng.integers(0, 2, n).astype(float)
    risks = [rng.integers(0, 4, n).astype(float), rng.normal(size=n)]  # tied risks too
    rows = rng.integers(0, n, (6, n))
    counts = np.zeros((6, n))
    np.add.at(counts, (np.arange(6)[:, None], rows), 1.0)
    got = bootstrap_c_index(time, event, risks, counts)
    for b in range(6):
        for m, risk in enumerate(risks):
            expected = concordance_index(time[rows[b]], -risk[rows[b]], event[rows[b]])
            assert got[b, m] == expected


def test_bootstrap_c_index_is_nan_without_a_comparable_pair():
    counts = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    got = bootstrap_c_index(np.array([1.0, 2.0, 3.0]), np.array([0, 1, 0]),
                            [np.array([0.0, 1.0, 2.0])], counts)
    assert np.isnan(got[0, 0]) and got[1, 0] == 0.0
