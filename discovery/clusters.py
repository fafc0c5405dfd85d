"""Tumour-type clusters of lesion embeddings: UMAP to a few dimensions, then HDBSCAN.

As in Yan et al. (CVPR 2018), unsupervised clusters of archive lesions should match the
radiologists' coarse lesion types. :class:`LesionClusters` reduces the L2-normalised
embeddings with UMAP (cosine metric, on the index stage's kNN graph when it has enough
neighbours, else on an exact one computed here) and clusters the reduction with HDBSCAN
(``-1`` = noise); a second, 2-D UMAP is the explorer's map. New lesions are assigned
without refitting.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from patientgraph.errors import InputError
from patientgraph.options import merge_options, signature_defaults
from patientgraph.schema import COARSE_TYPES

CLUSTER_COLUMNS = ["lesion_id", "cluster", "probability", "x", "y"]
MIN_LESIONS = 20
"""Fewer lesions than this are too few to cluster."""
N_EXEMPLARS = 5


def default_min_cluster_size(n: int) -> int:
    """HDBSCAN's smallest cluster for ``n`` lesions: about 1.25% of them, at least 5.

    The rarest coarse types make up ~4% of DeepLesion, so a cluster of a third of that
    still counts, while a handful of one patient's repeat scans of a lesion does not.
    """
    return max(5, int(round(0.0125 * n)))


def default_min_samples(min_cluster_size: int) -> int:
    """HDBSCAN's density smoothing: ``min_cluster_size``, at most 20.

    HDBSCAN's own default (``min_samples = min_cluster_size``) smooths densities over
    hundreds of neighbours at archive scale, and then merges lesion types into 3-4 clusters.
    """
    return min(int(min_cluster_size), 20)


class LesionClusters:
    """UMAP + HDBSCAN clusters of lesion embeddings, with a 2-D map.

    Parameters
    ----------
    n_components:
        Dimensions of the UMAP reduction that HDBSCAN clusters.
    n_neighbors:
        UMAP's neighbourhood size (counting the point itself, as umap-learn does). A kNN
        graph given to :meth:`fit` with at least ``n_neighbors - 1`` neighbours is reused;
        otherwise an exact one is computed. 30 rather than the index's 10: a wider
        neighbourhood keeps a lesion type's sites (pancreas, spleen, porta, ...) in one
        cluster (on 9,052 lesions, NMI against the true types 0.61 against 0.58 at 10).
    min_dist:
        UMAP's ``min_dist`` for the clustering reduction (0: packed clusters).
    min_cluster_size, min_samples:
        HDBSCAN's; ``None`` -> :func:`default_min_cluster_size` and
        :func:`default_min_samples`.
    cluster_selection_method:
        ``"eom"`` (excess of mass: fewer, larger clusters) or ``"leaf"``.
    map_min_dist:
        ``min_dist`` of the 2-D map (a little spread reads better on screen).
    n_epochs:
        UMAP's optimisation epochs (``None``: umap-learn's default, 500 below 10,000 points,
        200 above; at 32,735 lesions on two cores each 100 epochs take ~15 s).
    map_epochs:
        Epochs of the 2-D map (``None``: umap-learn's default); a picture, so fewer.
    init:
        UMAP's starting layout: ``"pca"`` (default; cheap), ``"spectral"`` (umap-learn's
        default, which solves an eigenproblem per connected component of the kNN graph and
        takes minutes on a sparse 30,000-lesion graph) or ``"random"``.
    random_state:
        Seed; with it UMAP runs single-threaded and the fit is reproducible on a CPU.
    compute_map:
        Also fit the 2-D map (``map_`` is NaN otherwise).

    Fitted attributes: ``labels_`` (-1 noise), ``probabilities_``, ``embedding_``
    (n x n_components), ``map_`` (n x 2), ``n_clusters_``, ``min_cluster_size_``,
    ``min_samples_``,
    ``knn_reused_``, ``umap_``, ``map_umap_``, ``hdbscan_``.
    """

    def __init__(self, n_components: int = 8, n_neighbors: int = 30, min_dist: float = 0.0,
                 min_cluster_size: int | None = None, min_samples: int | None = None,
                 cluster_selection_method: str = "eom", map_min_dist: float = 0.1,
                 n_epochs: int | None = None, map_epochs: int | None = 100,
                 init: str = "pca", random_state: int = 0,
                 compute_map: bool = True):
        _check_int("n_components", n_components, 1)
        _check_int("n_neighbors", n_neighbors, 2)
        if min_cluster_size is not None:
            _check_int("min_cluster_size", min_cluster_size, 2)
        if min_samples is not None:
            _check_int("min_samples", min_samples, 1)
        for name, value in (("n_epochs", n_epochs), ("map_epochs", map_epochs)):
            if value is not None:
                _check_int(name, value, 1)
        if cluster_selection_method not in ("eom", "leaf"):
            raise ValueError(f"cluster_selection_method must be 'eom' or 'leaf', got "
                             f"{cluster_selection_method!r}")
        if init not in ("pca", "spectral", "random"):
            raise ValueError(f"init must be 'pca', 'spectral' or 'random', got {init!r}")
        for name, value in (("min_dist", min_dist), ("map_min_dist", map_min_dist)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.n_components = int(n_components)
        self.n_neighbors = int(n_neighbors)
        self.min_dist = float(min_dist)
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.cluster_selection_method = cluster_selection_method
        self.map_min_dist = float(map_min_dist)
        self.n_epochs = n_epochs
        self.map_epochs = map_epochs
        self.init = init
        self.random_state = int(random_state)
        self.compute_map = bool(compute_map)

    def get_params(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in DEFAULTS}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if v != DEFAULTS[k])
        return f"LesionClusters({args})"

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, embeddings: np.ndarray,
            knn: tuple[np.ndarray, np.ndarray] | None = None) -> LesionClusters:
        """Cluster ``embeddings`` (n x d, L2-normalised rows).

        ``knn`` is the all-points kNN graph as ``(positions, scores)``, each n x k, without
        the point itself and with cosine similarity scores (what
        :meth:`embed.index.VectorIndex.knn_positions` returns; :func:`knn_from_frame` reads
        ``index/lesion_knn.parquet``). It is used when ``k >= n_neighbors - 1``.
        """
        x = _unit_rows(embeddings)
        n = len(x)
        if n < MIN_LESIONS:
            raise ValueError(f"need at least {MIN_LESIONS} lesions to cluster, got {n}")
        n_neighbors = min(self.n_neighbors, n - 1)
        precomputed = _umap_knn(knn, n, n_neighbors)
        self.knn_reused_ = precomputed is not None
        if precomputed is None:
            precomputed = _umap_knn(_flat_knn(x, n_neighbors - 1), n, n_neighbors)
        self.umap_ = self._umap(self.n_components, self.min_dist, n_neighbors, precomputed,
                                self.n_epochs)
        self.map_umap_ = (self._umap(2, self.map_min_dist, n_neighbors, precomputed,
                                     self.map_epochs) if self.compute_map else None)
        with warnings.catch_warnings():
            # "n_jobs overridden by random_state" and "no search index" are expected here.
            warnings.filterwarnings("ignore", category=UserWarning, module="umap")
            with _beside(self.map_umap_, x) as map_fit:
                self.embedding_ = self.umap_.fit_transform(x).astype(float)
                self._cluster(self.embedding_)
                self.map_ = (map_fit.result().astype(float) if map_fit is not None
                             else np.full((n, 2), np.nan))
        self._train = x
        self._n_neighbors = n_neighbors
        return self

    def _cluster(self, reduced: np.ndarray) -> None:
        import hdbscan

        n = len(reduced)
        self.min_cluster_size_ = (default_min_cluster_size(n) if self.min_cluster_size is None
                                  else int(self.min_cluster_size))
        self.min_samples_ = (default_min_samples(self.min_cluster_size_)
                             if self.min_samples is None else int(self.min_samples))
        self.hdbscan_ = hdbscan.HDBSCAN(
            min_cluster_size=self.min_cluster_size_, min_samples=self.min_samples_,
            cluster_selection_method=self.cluster_selection_method, prediction_data=True,
        ).fit(reduced)
        self.labels_ = self.hdbscan_.labels_.astype(int)
        self.probabilities_ = self.hdbscan_.probabilities_.astype(float)
        self.n_clusters_ = int(self.labels_.max() + 1) if n else 0

    def _umap(self, n_components, min_dist, n_neighbors, precomputed, n_epochs):
        import umap

        _layout_releases_the_gil()
        _enable_numba_cache()

        return umap.UMAP(
            n_components=n_components, n_neighbors=n_neighbors, min_dist=min_dist,
            metric="cosine", n_epochs=n_epochs, init=self.init,
            random_state=self.random_state,
            precomputed_knn=precomputed or (None, None, None), low_memory=True,
        )

    # -- new lesions ---------------------------------------------------------------------------
    def assign(self, new_embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Clusters and membership strengths of new lesions, without refitting.

        A new lesion is placed in the reduction where UMAP's ``transform`` starts it, at
        the membership-weighted mean of its nearest fitted lesions (exact cosine kNN), and
        HDBSCAN's ``approximate_predict`` labels it there.
        """
        import hdbscan

        self._check_fitted()
        coords = self._place(new_embeddings, self.embedding_)
        labels, strengths = hdbscan.approximate_predict(self.hdbscan_, coords)
        return np.asarray(labels, int), np.asarray(strengths, float)

    def map_points(self, new_embeddings: np.ndarray) -> np.ndarray:
        """2-D map coordinates of new lesions (placed as in :meth:`assign`)."""
        self._check_fitted()
        return self._place(new_embeddings, self.map_)

    def _place(self, new_embeddings: np.ndarray, coords: np.ndarray) -> np.ndarray:
        from umap.umap_ import compute_membership_strengths, smooth_knn_dist

        q = _unit_rows(new_embeddings)
        if q.shape[1] != self._train.shape[1]:
            raise ValueError(f"new embeddings have {q.shape[1]} dimensions, the fitted "
                             f"{self._train.shape[1]}")
        k = self._n_neighbors
        idx, dist = _exact_knn(self._train, q, k)
        sigmas, rhos = smooth_knn_dist(dist, float(k), local_connectivity=0.0)
        _, _, vals, _ = compute_membership_strengths(idx, dist, sigmas, rhos, bipartite=True)
        w = vals.reshape(len(q), k).astype(float)  # row-major, one entry per neighbour
        w = np.where(w.sum(1, keepdims=True) > 0, w, 1.0)
        w /= w.sum(1, keepdims=True)
        return np.einsum("nk,nkd->nd", w, coords[idx])

    # -- description ---------------------------------------------------------------------------
    def describe(self, lesions: pd.DataFrame) -> pd.DataFrame:
        """One row per cluster: its size and type, location and size make-up, exemplars.

        ``lesions`` has one row per fitted lesion, in fit order, with lesion_id,
        coarse_type (1..8 or null), loc_x, loc_y, loc_z and long_mm. Columns: cluster,
        size, n_typed (lesions with a given type), share_<type> per coarse type (among the
        typed), dominant_type, dominant_name, dominant_share, loc_x, loc_y, loc_z (means),
        long_mm (median), exemplars (lesion_ids: highest membership probability, then
        closest to the cluster's centroid in the reduction).
        """
        self._check_fitted()
        if len(lesions) != len(self.labels_):
            raise ValueError(f"describe needs one row per fitted lesion ({len(self.labels_)}), "
                             f"got {len(lesions)}")
        frame = lesions.reset_index(drop=True)
        types = pd.to_numeric(frame["coarse_type"], errors="coerce")
        rows = []
        for c in range(self.n_clusters_):
            member = self.labels_ == c
            typed = types[member].dropna().astype(int)
            shares = {t: float((typed == t).mean()) if len(typed) else math.nan
                      for t in COARSE_TYPES}
            dominant = max(shares, key=lambda t: shares[t]) if len(typed) else None
            rows.append({
                "cluster": c, "size": int(member.sum()), "n_typed": len(typed),
                **{f"share_{t}": shares[t] for t in COARSE_TYPES},
                "dominant_type": dominant,
                "dominant_name": COARSE_TYPES.get(dominant),
                "dominant_share": shares[dominant] if dominant else math.nan,
                **{ax: float(frame.loc[member, ax].mean()) for ax in ("loc_x", "loc_y", "loc_z")},
                "long_mm": float(frame.loc[member, "long_mm"].median()),
                "exemplars": self._exemplars(member, frame["lesion_id"].astype(str)),
            })
        out = pd.DataFrame(rows, columns=_describe_columns())
        out["dominant_type"] = out["dominant_type"].astype("Int64")
        return out

    def _exemplars(self, member: np.ndarray, ids: pd.Series) -> list[str]:
        pos = np.flatnonzero(member)
        centroid = self.embedding_[pos].mean(axis=0)
        dist = np.linalg.norm(self.embedding_[pos] - centroid, axis=1)
        order = np.lexsort((dist, -self.probabilities_[pos]))
        return ids.to_numpy()[pos[order[:N_EXEMPLARS]]].tolist()

    # -- stability -----------------------------------------------------------------------------
    def stability(self, embeddings: np.ndarray, n_boot: int = 10, fraction: float = 0.8,
                  random_state: int = 0) -> pd.DataFrame:
        """Bootstrap stability of each fitted cluster (Hennig 2007, without replacement).

        ``n_boot`` times, refit with the same settings on a random ``fraction`` of the
        lesions (no map, kNN recomputed); for each original cluster take the best Jaccard
        overlap with a refitted cluster, both restricted to the subsample. A cluster's
        ``stability`` is the mean of those over the refits: above ~0.75 a cluster is
        stable, below ~0.5 it dissolves. Columns: cluster, size, stability, jaccard_min.
        ``embeddings`` are the ones :meth:`fit` was given.
        """
        self._check_fitted()
        x = _unit_rows(embeddings)
        if len(x) != len(self.labels_):
            raise ValueError("stability needs the embeddings that were fitted")
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        _check_int("n_boot", n_boot, 1)
        rng = np.random.default_rng(random_state)
        m = max(MIN_LESIONS, int(round(fraction * len(x))))
        scores = np.zeros((n_boot, self.n_clusters_))
        params = {**self.get_params(), "compute_map": False,
                  "min_cluster_size": self.min_cluster_size_, "min_samples": self.min_samples_}
        for b in range(n_boot):
            sub = np.sort(rng.choice(len(x), size=m, replace=False))
            params["random_state"] = self.random_state + b + 1
            refit = LesionClusters(**params).fit(x[sub])
            scores[b] = best_jaccard(self.labels_[sub], refit.labels_, self.n_clusters_)
        sizes = np.bincount(self.labels_[self.labels_ >= 0], minlength=self.n_clusters_)
        return pd.DataFrame({"cluster": np.arange(self.n_clusters_), "size": sizes,
                             "stability": scores.mean(0), "jaccard_min": scores.min(0)})

    def _check_fitted(self) -> None:
        if not hasattr(self, "labels_"):
            raise RuntimeError("LesionClusters is not fitted yet; call fit() first")


DEFAULTS: dict[str, Any] = signature_defaults(LesionClusters)
"""The ``config`` keys of :func:`cluster_lesions`: the :class:`LesionClusters` arguments
and their defaults (read from its signature)."""


def best_jaccard(reference: np.ndarray, other: np.ndarray, n_clusters: int) -> np.ndarray:
    """For each reference cluster 0..n_clusters-1, its best Jaccard overlap with a cluster of
    ``other`` (noise is no cluster; 0 if the reference cluster is empty here)."""
    out = np.zeros(n_clusters)
    for c in range(n_clusters):
        a = reference == c
        if not a.any():
            continue
        for d in np.unique(other[a & (other >= 0)]):
            b = other == d
            out[c] = max(out[c], (a & b).sum() / (a | b).sum())
    return out


def knn_from_frame(knn: pd.DataFrame, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """``index/lesion_knn.parquet`` (src, dst, score, rank) as ``(positions, scores)`` over
    ``ids``; None when it does not cover every lesion with the same number of neighbours
    among ``ids`` (then :meth:`LesionClusters.fit` computes its own)."""
    pos = pd.Index(pd.Series(ids, dtype=str))
    frame = knn.assign(s=pos.get_indexer(knn["src"].astype(str)),
                       d=pos.get_indexer(knn["dst"].astype(str)))
    frame = frame[(frame["s"] >= 0) & (frame["d"] >= 0)].sort_values(["s", "rank"])
    counts = np.bincount(frame["s"], minlength=len(pos))
    if len(frame) == 0 or counts.min() != counts.max():
        return None
    k = int(counts[0])
    return (frame["d"].to_numpy().reshape(-1, k), frame["score"].to_numpy(float).reshape(-1, k))


def cluster_lesions(embeddings: pd.DataFrame, lesions: pd.DataFrame,
                    knn: pd.DataFrame | None, config: Mapping[str, Any] | None = None,
                    ) -> tuple[pd.DataFrame, pd.DataFrame, LesionClusters]:
    """The discover stage's clustering: (clusters, cluster description, fitted model).

    ``embeddings`` is ``embeddings/lesions.parquet`` (lesion_id, embedding), ``lesions``
    ``cohort/lesions.parquet``, ``knn`` ``index/lesion_knn.parquet`` or None; ``config``
    takes the keys of ``DEFAULTS``. The clusters frame has lesion_id, cluster (-1 noise),
    probability, x, y (the 2-D map), in the lesions table's order.
    """
    cfg = merge_options(DEFAULTS, config, unknown="unknown clustering option {key!r}")
    ids = lesions["lesion_id"].astype(str).to_numpy()
    if len(ids) < MIN_LESIONS:
        raise InputError("cohort/lesions.parquet", f"has {len(ids)} lesions, too few to "
                         f"cluster (at least {MIN_LESIONS})", "add lesions, or leave the "
                         "clustering out of the discover stage")
    x = _embeddings_for(embeddings, ids)
    model = LesionClusters(**cfg).fit(x, None if knn is None else knn_from_frame(knn, ids))
    clusters = pd.DataFrame({
        "lesion_id": ids, "cluster": model.labels_.astype(np.int64),
        "probability": model.probabilities_, "x": model.map_[:, 0], "y": model.map_[:, 1],
    })
    return clusters, model.describe(lesions), model


# -- helpers -----------------------------------------------------------------------------------
UMAP_KERNEL_MODULES = ("umap.umap_", "umap.layouts", "umap.utils", "umap.spectral",
                       "umap.distances", "umap.sparse")


@functools.cache
def _enable_numba_cache() -> int:
    """Keep umap-learn's compiled numba kernels on disk between processes; returns how many
    kernels were switched.

    umap-learn asks numba to cache almost none of its kernels, so every process compiles
    them again on its first fit, and every discover run is a new process. This turns on
    numba's own on-disk cache (what ``cache=True`` would) for each of them: compiled code
    only, next to umap-learn's sources or in numba's user cache folder
    (``NUMBA_CACHE_DIR``), keyed by the source file and the argument types, so an upgraded
    umap-learn compiles afresh. Numba's cache key holds neither ``parallel`` nor the other
    compile options, so a kernel compiled twice from one Python function (umap-learn's
    serial and parallel layout epochs) is left uncached: one could be read back for the
    other. A kernel numba cannot cache is compiled as before.
    """
    import importlib
    from collections import Counter

    from numba.core.registry import CPUDispatcher

    kernels = list({id(k): k for name in UMAP_KERNEL_MODULES  # a kernel imported twice once
                    for k in vars(importlib.import_module(name)).values()
                    if isinstance(k, CPUDispatcher)}.values())
    compiled_from = Counter(k.py_func for k in kernels)
    switched = 0
    for kernel in kernels:
        if kernel.signatures or compiled_from[kernel.py_func] > 1:
            continue
        try:
            kernel.enable_caching()
        except RuntimeError:  # no writable cache folder: compile in each process
            continue
        switched += 1
    return switched


@functools.cache
def _layout_releases_the_gil() -> bool:
    """Whether umap-learn's layout epoch now runs without holding the GIL.

    That kernel is most of a fit, and umap-learn compiles it holding the GIL, so two fits
    in two threads would take turns. Here the same function is compiled again with the
    same options plus ``nogil`` (the same arithmetic: the GIL only decides which thread
    may run Python) and put where umap-learn looks it up on each fit. Where this
    umap-learn has no kernel under those names, nothing changes and the fits run one
    after the other.
    """
    try:
        from umap import layouts

        source = layouts._optimize_layout_euclidean_single_epoch
        layouts._nb_optimize_layout_euclidean_single_epoch  # noqa: B018 (the name umap reads)
    except (ImportError, AttributeError):
        return False
    import numba

    layouts._nb_optimize_layout_euclidean_single_epoch = numba.njit(
        source, fastmath=True, parallel=False, nogil=True)
    return True


class _Later:
    """A fit run when its result is asked for (where no second core or thread would help)."""

    def __init__(self, model, x):
        self.model, self.x = model, x

    def result(self) -> np.ndarray:
        return self.model.fit_transform(self.x)


@contextlib.contextmanager
def _beside(model, x: np.ndarray):
    """``model.fit_transform(x)`` (a UMAP; None: nothing) in a second thread while the
    caller works, where there is a second core and the layout kernel lets go of the GIL;
    otherwise when its result is asked for. Yields what gives the result (``.result()``).
    Each fit has its own seed, so the result is the same either way."""
    if model is None:
        yield None
        return
    if len(os.sched_getaffinity(0)) < 2 or not _layout_releases_the_gil():
        yield _Later(model, x)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="umap-map") as pool:
        yield pool.submit(model.fit_transform, x)


def _describe_columns() -> list[str]:
    return ["cluster", "size", "n_typed", *(f"share_{t}" for t in COARSE_TYPES),
            "dominant_type", "dominant_name", "dominant_share", "loc_x", "loc_y", "loc_z",
            "long_mm", "exemplars"]


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")


def _unit_rows(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"embeddings must be a finite 2-D array, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _umap_knn(knn, n: int, n_neighbors: int):
    """umap-learn's precomputed_knn from ``(positions, scores)``: the point itself in column
    0 at distance 0, then its neighbours at cosine distance ``1 - score``; None if unusable."""
    if knn is None:
        return None
    pos, scores = (np.asarray(a) for a in knn)
    if pos.ndim != 2 or pos.shape != scores.shape or len(pos) != n:
        return None
    if pos.shape[1] < n_neighbors - 1 or (pos < 0).any() or (pos >= n).any():
        return None
    k = n_neighbors - 1
    own = np.arange(n)[:, None]
    if (pos[:, :k] == own).any():
        return None
    indices = np.hstack([own, pos[:, :k]]).astype(np.int64)
    dists = np.hstack([np.zeros((n, 1)), np.clip(1.0 - scores[:, :k], 0.0, 2.0)])
    return indices, dists.astype(np.float32)


def _flat_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact kNN graph of unit rows ``x`` from a flat FAISS index, as ``(positions,
    scores)``: faster and exact where umap-learn's own search is approximate."""
    from embed.index import VectorIndex

    index = VectorIndex.build([str(i) for i in range(len(x))], x, factory="Flat")
    return index.knn_positions(k)


def _exact_knn(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine kNN of unit rows (FAISS brute force): (positions, distances), nearest
    first."""
    import faiss

    scores, idx = faiss.knn(np.ascontiguousarray(queries, np.float32),
                            np.ascontiguousarray(base, np.float32), k,
                            metric=faiss.METRIC_INNER_PRODUCT)
    return idx.astype(np.int64), np.clip(1.0 - scores, 0.0, 2.0).astype(np.float32)


def _embeddings_for(embeddings: pd.DataFrame, ids: np.ndarray) -> np.ndarray:
    name = "embeddings/lesions.parquet"
    for col in ("lesion_id", "embedding"):
        if col not in embeddings.columns:
            raise InputError(name, f"has no column {col!r}", "re-run the embed stage "
                             "(`patientgraph run --stages embed --force`)")
    pos = pd.Index(embeddings["lesion_id"].astype(str)).get_indexer(ids)
    if (pos < 0).any():
        raise InputError(name, f"has no embedding for {int((pos < 0).sum())} of the "
                         f"{len(ids)} lesions (e.g. {ids[pos < 0][0]})", "re-run the embed "
                         "stage (`patientgraph run --stages embed --force`)")
    return np.stack(embeddings["embedding"].to_numpy()[pos]).astype(np.float32)
