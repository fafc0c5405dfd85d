"""Tests of patientgraph/encoding.py: the one log rule and its three thresholds."""

from __future__ import annotations

import numpy as np

from patientgraph.encoding import (
    GRAPH_FEATURE_SKEW,
    RECORD_EMBEDDING_SKEW,
    SURVIVAL_SCAN_SKEW,
    wants_log,
)


def test_the_thresholds_differ_as_documented():
    rng = np.random.default_rng(0)
    lab = np.exp(rng.normal(size=500))  # log-normal: every model but the graph logs it
    mild = rng.gamma(9.0, size=500)  # skew ~0.67: only the survival scan logs it
    assert wants_log(lab, RECORD_EMBEDDING_SKEW) and wants_log(lab, SURVIVAL_SCAN_SKEW,
                                                               more_symmetric=True)
    assert not wants_log(mild, RECORD_EMBEDDING_SKEW)
    assert wants_log(mild, SURVIVAL_SCAN_SKEW, more_symmetric=True)
    assert not wants_log(lab, GRAPH_FEATURE_SKEW)


def test_non_positive_few_or_two_valued_fields_are_not_logged():
    assert not wants_log([0.0, 1.0, 50.0, 2.0], 0.5)
    assert not wants_log([1.0, 100.0], 0.5)
    two_values = [1.0] * 9 + [100.0]
    assert wants_log(two_values, 1.0)
    assert not wants_log(two_values, 0.5, more_symmetric=True)
