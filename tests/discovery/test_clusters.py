"""Lesion clusters: UMAP + HDBSCAN on blobs of unit vectors with known groups, the kNN reuse,
assignment of new lesions, the description, bootstrap stability and the quality scores."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from benchmarks.bench_discovery import cluster_quality
from discovery.clusters import (
    CLUSTER_COLUMNS,
    LesionClusters,
    _umap_knn,
    best_jaccard,
    cluster_lesions,
    default_min_cluster_size,
    default_min_samples,
    knn_from_frame,
)
from patientgraph.errors import InputError

N_GROUPS, PER_GROUP, DIM = 4, 60, 24


def _blobs(seed: int, per_group: int = PER_GROUP, spread: float = 0.25, draw: int = 0):
    """Unit vectors around four random directions (``seed``): (vectors, group 0..3).
    ``draw`` picks other points around the same directions."""
    centres = np.random.default_rng(seed).normal(size=(N_GROUPS, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng([seed, draw])
    group = np.repeat(np.arange(N_GROUPS), per_group)
    x = centres[group] + rng.normal(scale=spread / np.sqrt(DIM), size=(len(group), DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), group


def _exact_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force kNN without the point itself: (positions, cosine similarities)."""
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    pos = np.argsort(-sim, axis=1)[:, :k]
    return pos, np.take_along_axis(sim, pos, axis=1)


def _lesions(group: np.ndarray) -> pd.DataFrame:
    """A lesions table for the blobs: group g has coarse type g + 1 (every 5th untyped, every
    10th mislabelled as type 8), lives at loc_z = g / 4 and measures 10 (g + 1) mm."""
    n = len(group)
    types = pd.array(group + 1, dtype="Int64")
    types[np.arange(n) % 10 == 3] = 8
    types[np.arange(n) % 5 == 0] = pd.NA
    return pd.DataFrame({
        "lesion_id": [f"L{i:03d}" for i in range(n)], "coarse_type": types,
        "loc_x": 0.5, "loc_y": 0.25 + 0.0 * group, "loc_z": group / 4.0,
        "long_mm": 10.0 * (group + 1) + np.arange(n) % 3,
    })


@pytest.fixture(scope="module")
def blobs():
    return _blobs(0)


@pytest.fixture(scope="module")
def fitted(blobs):
    x, _ = blobs
    return LesionClusters(min_cluster_size=15).fit(x, _exact_knn(x, 32))


def _majority(labels: np.ndarray, group: np.ndarray) -> dict[int, int]:
    return {g: int(np.bincount(labels[(group == g) & (labels >= 0)]).argmax())
            for g in range(N_GROUPS)}


def test_fit_finds_the_groups(blobs, fitted):
    x, group = blobs
    n = len(x)
    assert fitted.knn_reused_
    assert fitted.n_clusters_ == N_GROUPS
    assert fitted.labels_.shape == (n,) and fitted.probabilities_.shape == (n,)
    assert fitted.embedding_.shape == (n, 8) and fitted.map_.shape == (n, 2)
    assert np.isfinite(fitted.map_).all()
    q = cluster_quality(fitted.labels_, group)
    assert q["nmi"] > 0.9 and q["purity"] > 0.97 and q["noise_fraction"] < 0.1, q
    assert len(set(_majority(fitted.labels_, group).values())) == N_GROUPS


def test_fit_is_deterministic_and_computes_its_own_knn(blobs, fitted):
    x, group = blobs
    again = LesionClusters(min_cluster_size=15).fit(x, _exact_knn(x, 32))
    np.testing.assert_array_equal(again.labels_, fitted.labels_)
    np.testing.assert_array_equal(again.embedding_, fitted.embedding_)
    own = LesionClusters(min_cluster_size=15, compute_map=False).fit(x, _exact_knn(x, 5))
    assert not own.knn_reused_  # 5 neighbours < n_neighbors - 1: an exact graph of its own
    assert np.isnan(own.map_).all()
    # The same clusters; their numbering follows the UMAP layout, which float-level
    # differences between the two kNN graphs change (with umap-learn 0.5.12, numba 0.68).
    assert adjusted_rand_score(own.labels_, fitted.labels_) == 1.0


def test_precomputed_knn_is_in_umaps_layout():
    x, _ = _blobs(1, per_group=10)
    pos, scores = _exact_knn(x, 12)
    indices, dists = _umap_knn((pos, scores), len(x), n_neighbors=10)
    assert indices.shape == dists.shape == (len(x), 10)
    np.testing.assert_array_equal(indices[:, 0], np.arange(len(x)))
    np.testing.assert_array_equal(dists[:, 0], 0.0)
    np.testing.assert_array_equal(indices[:, 1:], pos[:, :9])
    np.testing.assert_allclose(dists[:, 1:], 1.0 - scores[:, :9], atol=1e-6)
    assert (np.diff(dists, axis=1) >= -1e-6).all()
    assert _umap_knn((pos[:, :8], scores[:, :8]), len(x), n_neighbors=10) is None
    assert _umap_knn((pos, scores), len(x) + 1, n_neighbors=10) is None


def test_knn_from_frame_orders_by_the_given_ids():
    ids = ["a", "b", "c"]
    frame = pd.DataFrame({"src": ["c", "a", "b", "a", "c", "b"],
                          "dst": ["a", "c", "a", "b", "b", "c"],
                          "score": [0.5, 0.7, 0.9, 0.9, 0.6, 0.8],
                          "rank": [2, 2, 1, 1, 1, 2]})
    pos, scores = knn_from_frame(frame, ids)
    np.testing.assert_array_equal(pos, [[1, 2], [0, 2], [1, 0]])
    np.testing.assert_allclose(scores, [[0.9, 0.7], [0.9, 0.8], [0.6, 0.5]])
    assert knn_from_frame(frame.iloc[1:], ids) is None  # c has one neighbour, the others two


def test_assign_new_lesions(blobs, fitted):
    x, group = blobs
    new, new_group = _blobs(0, per_group=20, draw=1)  # unseen lesions of the same groups
    labels, strengths = fitted.assign(new)
    majority = _majority(fitted.labels_, group)
    expected = np.array([majority[g] for g in new_group])
    assert (labels == expected).mean() >= 0.95
    assert labels.shape == strengths.shape == (len(new),)
    assert ((strengths >= 0) & (strengths <= 1)).all()
    own_labels, _ = fitted.assign(x)
    clustered = fitted.labels_ >= 0
    assert (own_labels[clustered] == fitted.labels_[clustered]).mean() >= 0.95
    xy = fitted.map_points(new)
    assert xy.shape == (len(new), 2) and np.isfinite(xy).all()
    with pytest.raises(ValueError, match="dimensions"):
        fitted.assign(new[:, :5])


def test_a_pickled_model_assigns_the_same(blobs, fitted):
    import pickle

    x, _ = blobs
    again = pickle.loads(pickle.dumps(fitted))
    for a, b in zip(again.assign(x[:20]), fitted.assign(x[:20]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_describe(blobs, fitted):
    x, group = blobs
    lesions = _lesions(group)
    summary = fitted.describe(lesions)
    assert list(summary["cluster"]) == list(range(fitted.n_clusters_))
    assert summary["size"].sum() == (fitted.labels_ >= 0).sum()
    majority = _majority(fitted.labels_, group)
    for g, c in majority.items():
        row = summary.set_index("cluster").loc[c]
        member = fitted.labels_ == c
        typed = lesions["coarse_type"][member].dropna().astype(int)
        assert row["n_typed"] == len(typed)
        assert row["dominant_type"] == g + 1
        assert row["dominant_share"] == pytest.approx((typed == g + 1).mean())
        shares = row[[f"share_{t}" for t in range(1, 9)]].to_numpy(float)
        assert shares.sum() == pytest.approx(1.0)
        assert row["loc_z"] == pytest.approx(lesions["loc_z"][member].mean())
        assert row["long_mm"] == pytest.approx(lesions["long_mm"][member].median())
        exemplars = row["exemplars"]
        assert 1 <= len(exemplars) <= 5
        pos = lesions.index[lesions["lesion_id"].isin(exemplars)]
        assert (fitted.labels_[pos] == c).all()
        assert fitted.probabilities_[pos].min() >= np.sort(fitted.probabilities_[member])[-5]
    with pytest.raises(ValueError, match="one row per fitted lesion"):
        fitted.describe(lesions.iloc[1:])


def test_stability_separates_real_from_forced_clusters(blobs, fitted):
    x, _ = blobs
    stable = fitted.stability(x, n_boot=3)
    assert list(stable.columns) == ["cluster", "size", "stability", "jaccard_min"]
    assert (stable["stability"] > 0.85).all(), stable
    # One broad blob that HDBSCAN is made to split (leaf clusters of size 10).
    noise = _blobs(5, per_group=60, spread=3.0)[0]
    forced = LesionClusters(min_cluster_size=10, cluster_selection_method="leaf",
                            compute_map=False).fit(noise)
    assert forced.n_clusters_ >= 2
    assert forced.stability(noise, n_boot=3)["stability"].mean() < 0.6


def test_best_jaccard_by_hand():
    reference = np.array([0, 0, 0, 1, 1, -1])
    other = np.array([5, 5, 6, 6, 6, 5])
    # cluster 0 = {0,1,2}: vs 5 = {0,1,5} -> 2/4; vs 6 = {2,3,4} -> 1/5.
    # cluster 1 = {3,4}:   vs 6 -> 2/3.  cluster 2 is absent -> 0.
    np.testing.assert_allclose(best_jaccard(reference, other, 3), [0.5, 2 / 3, 0.0])


def test_cluster_quality_by_hand():
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels = np.array([0, 0, 1, 1, -1, 1])
    truth = np.array([1, 1, 2, 3, 2, 2])
    q = cluster_quality(labels, truth)
    assert q["purity"] == pytest.approx(4 / 5)  # cluster 0: 2 of 2; cluster 1: 2 of 3
    assert q["noise_fraction"] == pytest.approx(1 / 6)
    assert q["nmi"] == pytest.approx(normalized_mutual_info_score(truth, labels))
    assert q["ari"] == pytest.approx(adjusted_rand_score(truth, labels))
    assert q["n_clusters"] == 2
    perfect = cluster_quality([3, 3, 0, 0], ["a", "a", "b", "b"])
    assert perfect["nmi"] == perfect["ari"] == perfect["purity"] == 1.0


def test_default_min_cluster_size_scales_with_the_cohort():
    assert default_min_cluster_size(80) == 5
    assert default_min_cluster_size(2368) == 30
    assert default_min_cluster_size(32735) == 409
    assert default_min_samples(5) == 5 and default_min_samples(409) == 20


@pytest.mark.parametrize("kwargs, match", [
    ({"n_components": 0}, "n_components"), ({"n_neighbors": 1}, "n_neighbors"),
    ({"min_cluster_size": 1}, "min_cluster_size"), ({"cluster_selection_method": "x"}, "eom"),
    ({"min_dist": 2.0}, "min_dist"), ({"init": "tsne"}, "init"), ({"n_epochs": 2.5}, "n_epochs"),
])
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LesionClusters(**kwargs)


def test_cluster_lesions_frames(blobs):
    x, group = blobs
    lesions = _lesions(group).sample(frac=1.0, random_state=1).reset_index(drop=True)
    embeddings = pd.DataFrame({"lesion_id": _lesions(group)["lesion_id"], "embedding": list(x)})
    k = 29  # n_neighbors - 1: just enough to be reused
    pos, scores = _exact_knn(x, k)
    ids = embeddings["lesion_id"].to_numpy()
    knn = pd.DataFrame({"src": np.repeat(ids, k), "dst": ids[pos.ravel()],
                        "score": scores.ravel(), "rank": np.tile(np.arange(1, k + 1), len(ids))})
    clusters, summary, model = cluster_lesions(embeddings, lesions, knn,
                                               {"min_cluster_size": 15})
    assert list(clusters.columns[:5]) == CLUSTER_COLUMNS
    assert list(clusters["lesion_id"]) == list(lesions["lesion_id"])
    assert clusters["cluster"].dtype == np.int64 and model.knn_reused_
    by_id = dict(zip(_lesions(group)["lesion_id"], group, strict=True))
    q = cluster_quality(clusters["cluster"], clusters["lesion_id"].map(by_id))
    assert q["nmi"] > 0.9
    assert len(summary) == model.n_clusters_ == clusters["cluster"].max() + 1


def test_cluster_lesions_input_errors(blobs):
    x, group = blobs
    lesions = _lesions(group)
    embeddings = pd.DataFrame({"lesion_id": lesions["lesion_id"], "embedding": list(x)})
    with pytest.raises(InputError, match="no embedding for 2 of the 240 lesions"):
        cluster_lesions(embeddings.iloc[2:], lesions, None, {})
    with pytest.raises(InputError, match="too few to cluster"):
        cluster_lesions(embeddings, lesions.iloc[:10], None, {})
    with pytest.raises(InputError, match="Did you mean 'min_cluster_size'"):
        cluster_lesions(embeddings, lesions, None, {"min_clustre_size": 10})


# -- the map fitted beside the clustering reduction (a thread, umap's kernel without the GIL) --

_FIT_SCRIPT = """
import sys, numpy as np
from discovery import clusters
if sys.argv[1] == "one-after-the-other":
    clusters._layout_releases_the_gil = lambda: False   # umap's own kernel, holding the GIL
rng = np.random.default_rng(5)
x = rng.normal(size=(300, 16)).astype(np.float32)
x[:150] += 2.0
m = clusters.LesionClusters(min_cluster_size=15, n_epochs=60, map_epochs=40).fit(x)
np.save(sys.argv[2], np.concatenate([m.embedding_, m.map_, m.labels_[:, None]], axis=1))
"""


def test_the_map_fitted_beside_the_reduction_is_the_one_fitted_after_it(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "fit.py"
    script.write_text(_FIT_SCRIPT)
    out = {}
    for how in ("one-after-the-other", "beside"):
        out[how] = tmp_path / f"{how}.npy"
        done = subprocess.run([sys.executable, str(script), how, str(out[how])],
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")})
        assert done.returncode == 0, done.stderr[-2000:]
    before, now = np.load(out["one-after-the-other"]), np.load(out["beside"])
    assert np.isfinite(now).all() and now[:, -1].max() >= 1  # a real fit, two clusters
    np.testing.assert_array_equal(now, before)


def test_the_map_is_fitted_in_a_second_thread_where_there_is_a_second_core(monkeypatch):
    import threading

    from discovery import clusters

    seen = []

    class Model:
        def fit_transform(self, x):
            seen.append(threading.current_thread() is threading.main_thread())
            return x

    monkeypatch.setattr(clusters.os, "sched_getaffinity", lambda pid: {0, 1})
    with clusters._beside(Model(), np.zeros((2, 2))) as fit:
        assert fit.result().shape == (2, 2)
    monkeypatch.setattr(clusters.os, "sched_getaffinity", lambda pid: {0})
    with clusters._beside(Model(), np.zeros((2, 2))) as fit:
        assert fit.result().shape == (2, 2)
    assert seen == [not clusters._layout_releases_the_gil(), True]


def test_umap_kernels_cached_on_disk_leave_the_twice_compiled_ones_alone():
    import umap  # noqa: F401
    from numba.core.registry import CPUDispatcher
    from umap import layouts, umap_

    from discovery import clusters

    clusters._enable_numba_cache()
    kernels = [k for m in (layouts, umap_) for k in vars(m).values()
               if isinstance(k, CPUDispatcher)]
    cached = {k.py_func.__name__ for k in kernels if type(k._cache).__name__ != "NullCache"}
    assert {"smooth_knn_dist", "compute_membership_strengths", "clip"} <= cached
    assert "_optimize_layout_euclidean_single_epoch" not in cached  # serial and parallel share it
