"""Harrell's concordance index (C-index), once: for one model and for bootstrap resamples.

One rule, the pairs and ties of ``lifelines.utils.concordance_index`` (the tests check both
functions against it): a death is comparable with everyone who left later and with those
censored at its own time; a pair is concordant when the death has the higher risk; tied
risks count one half. A resample is given by row counts, and a pair of rows counts the
product of their two counts, which is the C-index of the resampled rows themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C-index of a log-risk (higher risk = shorter survival).

    Equals ``lifelines.utils.concordance_index(time, -risk, event)``; like it, raises
    ``ValueError`` for NaN inputs and ``ZeroDivisionError`` when no pair is comparable.
    """
    time, event, risk = _arrays(time, event, risk)
    correct, pairs = _concordant_pairs(time, event, risk, np.ones((1, len(time))))
    if pairs[0] == 0:
        raise ZeroDivisionError("No admissable pairs in the dataset.")
    return float(correct[0] / pairs[0])


def bootstrap_c_index(time: np.ndarray, event: np.ndarray, risks: Sequence[np.ndarray],
                      counts: np.ndarray) -> np.ndarray:
    """:func:`c_index` of each risk on each resample given by row counts (B x n).

    Returns a (B x len(risks)) array, NaN where a resample has no comparable pair.
    """
    counts = np.asarray(counts, float)
    out = np.full((len(counts), len(risks)), np.nan)
    for m, risk in enumerate(risks):
        t, e, r = _arrays(time, event, risk)
        correct, pairs = _concordant_pairs(t, e, r, counts)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, m] = np.where(pairs > 0, correct / pairs, np.nan)
    return out


def _arrays(time, event, risk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    time, event = np.asarray(time, float).ravel(), np.asarray(event, float).ravel()
    risk = np.asarray(risk, float).ravel()
    if not len(time) == len(event) == len(risk):
        raise ValueError("time, event and risk must have the same length")
    if np.isnan(time).any() or np.isnan(event).any() or np.isnan(risk).any():
        raise ValueError("NaNs detected in inputs, please correct or drop.")
    return time, event, risk


def _concordant_pairs(time: np.ndarray, event: np.ndarray, risk: np.ndarray,
                      weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted (concordant + tied / 2) and comparable pair totals, one per row of weights.

    Each subject is compared with the deaths before it (strictly earlier for a death, at or
    before its time for a censored subject). Deaths are taken in blocks of ~sqrt(deaths) in
    time order: a subject's whole blocks are counted by binary search in the sorted
    predictions of the deaths before them (weights summed cumulatively), its own block by a
    small comparison matrix, O(n sqrt(n)) work per row of weights instead of O(n^2).
    """
    pred = -risk  # a predicted survival time: the death with the shorter one is concordant
    died = event > 0
    order = np.argsort(time[died], kind="stable")
    dt, dp = time[died][order], pred[died][order]
    dw = weights[:, died][:, order]
    n_d = len(dt)
    correct = np.zeros(weights.shape)
    if n_d == 0:
        return correct.sum(1), np.zeros(len(weights))
    m = np.where(died, np.searchsorted(dt, time, "left"), np.searchsorted(dt, time, "right"))
    before = np.concatenate([np.zeros((len(weights), 1)), np.cumsum(dw, axis=1)], axis=1)
    pairs = (before[:, m] * weights).sum(1)
    size = max(32, int(np.sqrt(n_d)))
    full = m // size
    for b in np.unique(full):
        sel = np.flatnonzero(full == b)
        by_pred = np.argsort(dp[: b * size], kind="stable")
        prefix = dp[: b * size][by_pred]
        cumulative = np.concatenate([np.zeros((len(weights), 1)),
                                     np.cumsum(dw[:, : b * size][:, by_pred], axis=1)], axis=1)
        lo = np.searchsorted(prefix, pred[sel], "left")
        hi = np.searchsorted(prefix, pred[sel], "right")
        correct[:, sel] += cumulative[:, lo] + 0.5 * (cumulative[:, hi] - cumulative[:, lo])
        rest = dp[b * size:(b + 1) * size]
        mask = np.arange(len(rest))[None, :] < (m[sel] - b * size)[:, None]
        score = ((rest[None, :] < pred[sel][:, None]) & mask) + 0.5 * (
            (rest[None, :] == pred[sel][:, None]) & mask)
        correct[:, sel] += dw[:, b * size:(b + 1) * size] @ score.T
    return (correct * weights).sum(1), pairs
