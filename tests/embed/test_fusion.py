"""Patient fusion: pooled lesions, weights, and scores that split into modality parts."""

from __future__ import annotations

import numpy as np
import pytest

from embed.fusion import (
    concat_parts,
    contributions,
    fuse,
    pool_lesions,
    resolve_weights,
    split_parts,
    weighted_query,
)
from patientgraph.errors import InputError


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_pool_lesions_is_the_unit_mean_and_zero_without_lesions():
    vectors = _unit([[1, 0], [0, 1], [1, 1]])
    pooled = pool_lesions(["p", "q", "r"], np.array(["p", "p", "q"]), vectors)
    assert pooled[0] == pytest.approx(_unit([1, 1]))
    assert pooled[1] == pytest.approx(_unit([1, 1]))
    assert pooled[2].tolist() == [0, 0]


def test_resolve_weights_normalises_and_checks():
    assert resolve_weights({"imaging": 3, "records": 1}, {}) == {"imaging": 0.75,
                                                                "records": 0.25}
    assert resolve_weights({"imaging": 1}, {}) == {"imaging": 1.0, "records": 0.0}
    assert resolve_weights(None, {"records": 2}) == {"imaging": 0.0, "records": 1.0}
    with pytest.raises(InputError, match="Did you mean 'imaging'"):
        resolve_weights({"imagin": 1}, {})
    with pytest.raises(InputError, match="every modality weight is 0"):
        resolve_weights({"imaging": 0}, {})
    with pytest.raises(InputError, match="weight of 'records'"):
        resolve_weights({"records": -1}, {})


def test_scores_split_exactly_into_modality_contributions():
    rng = np.random.default_rng(0)
    parts = {"imaging": _unit(rng.normal(size=(5, 4))), "records": _unit(rng.normal(size=(5, 3)))}
    parts["records"][4] = 0  # a patient without records
    w = resolve_weights({"imaging": 0.7, "records": 0.3}, {})
    fused = fuse(parts, w)
    assert np.linalg.norm(fused[:4], axis=1) == pytest.approx(np.ones(4), abs=1e-6)
    query = {m: parts[m][0] for m in parts}
    contrib = contributions(query, parts, w)
    assert contrib.sum(axis=1).to_numpy() == pytest.approx(fused @ fused[0], abs=1e-6)
    assert contrib["records"].iloc[4] == 0
    via_index = concat_parts(parts) @ weighted_query({m: parts[m][:1] for m in parts}, w)[0]
    assert via_index == pytest.approx(fused @ fused[0], abs=1e-6)
    back = split_parts(concat_parts(parts), {"imaging": 4, "records": 3})
    assert np.array_equal(back["records"], parts["records"])
