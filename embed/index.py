"""A FAISS vector index over string ids: exact when small, HNSW when large.

The index is described by one FAISS factory string (``"Flat"``, ``"HNSW32"``,
``"IVF1024,Flat"``), chosen by :func:`auto_factory` unless given. Scores are inner products
(cosine for unit vectors). Searches go by vector or by id, optionally restricted to a subset
of ids (a cohort); the all-points k-nearest-neighbour graph is built in batches, exactly on a
CUDA GPU when one is present (:func:`torch_knn`). An index saves to three files:
``NAME.faiss``, ``NAME.ids.parquet`` (position -> id) and ``NAME.json`` (factory, search
settings).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from patientgraph.atomic import atomic_path, write_json, write_parquet
from patientgraph.errors import InputError
from patientgraph.schema import unknown_id

Progress = Callable[[int, int], None]

EXACT_MAX = 100_000
"""Up to this many vectors an exact (``Flat``) index answers a query in a few ms on 2 cores."""
AUTO_APPROXIMATE = "HNSW32"
EXACT_SUBSET_MAX = 200_000
"""A search restricted to at most this many ids is done exactly over their vectors."""


def auto_factory(n: int) -> str:
    """``"Flat"`` (exact) up to :data:`EXACT_MAX` vectors, else ``"HNSW32"``."""
    return "Flat" if n <= EXACT_MAX else AUTO_APPROXIMATE


class VectorIndex:
    """String ids and their vectors in a FAISS index (inner-product metric)."""

    def __init__(self, index: faiss.Index, ids: Sequence[str], factory: str, *,
                 ef_search: int = 128, nprobe: int = 16):
        self.index = index
        self.ids = np.asarray(ids, dtype=object)
        self.factory = factory
        self.ef_search = ef_search
        self.nprobe = nprobe
        self._position = pd.Index(self.ids)
        self._apply_search_settings()

    def __len__(self) -> int:
        return self.index.ntotal

    def __repr__(self) -> str:
        return f"VectorIndex({self.factory!r}, n={len(self)}, dim={self.dim})"

    @property
    def dim(self) -> int:
        return self.index.d

    @property
    def exact(self) -> bool:
        return self.factory == "Flat"

    @classmethod
    def build(
        cls,
        ids: Sequence[str],
        vectors: np.ndarray,
        *,
        factory: str | None = None,
        ef_construction: int = 80,
        ef_search: int = 128,
        nprobe: int = 16,
        batch_size: int = 65_536,
        progress: Progress | None = None,
    ) -> VectorIndex:
        """Index ``vectors`` ``(n, d)`` under ``ids``; ``factory`` None chooses by size."""
        vectors = _check_vectors(ids, vectors)
        factory = factory or auto_factory(len(vectors))
        index = _new_index(factory, vectors.shape[1])
        hnsw = _hnsw(index)
        if hnsw is not None:
            hnsw.efConstruction = ef_construction
        if not index.is_trained:
            sample = np.random.default_rng(0).permutation(len(vectors))[:256 * 1024]
            index.train(vectors[np.sort(sample)])
        for start in range(0, len(vectors), batch_size):
            index.add(vectors[start:start + batch_size])
            if progress:
                progress(min(start + batch_size, len(vectors)), len(vectors))
        _enable_reconstruct(index)
        return cls(index, ids, factory, ef_search=ef_search, nprobe=nprobe)

    def _apply_search_settings(self) -> None:
        hnsw = _hnsw(self.index)
        if hnsw is not None:
            hnsw.efSearch = self.ef_search
        ivf = _ivf(self.index)
        if ivf is not None:
            ivf.nprobe = self.nprobe

    # -- lookups ---------------------------------------------------------------------------
    def positions(self, ids: Sequence[str], what: str = "id") -> np.ndarray:
        """Positions of ``ids``; an unknown one is an :class:`InputError` (``what`` names the
        kind of id; it suggests a known id only when one differs from the unknown one by
        formatting alone, see :func:`patientgraph.schema.unknown_id`)."""
        ids = [str(i) for i in ids]
        pos = self._position.get_indexer(ids)
        if (pos < 0).any():
            missing = ids[int(np.flatnonzero(pos < 0)[0])]
            raise unknown_id(missing, self.ids, what, more=int((pos < 0).sum()) - 1)
        return pos.astype(np.int64)

    def vectors(self, ids: Sequence[str] | None = None) -> np.ndarray:
        """The stored vectors of ``ids`` (all, in position order, when None)."""
        if ids is None:
            return self.index.reconstruct_n(0, len(self))
        return self.index.reconstruct_batch(self.positions(ids))

    # -- search ----------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int = 10, *,
               among: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best ids and scores for each query row, best first.

        ``among`` restricts results to those ids. Where fewer than ``k`` results exist, ids
        are ``None`` and scores NaN.
        """
        scores, pos = self._search_positions(_as_queries(queries, self.dim), k, among)
        return self._ids_of(pos), scores

    def search_ids(self, ids: Sequence[str], k: int = 10, *,
                   among: Sequence[str] | None = None) -> pd.DataFrame:
        """Neighbours of stored items (themselves excluded): src, dst, score, rank."""
        pos = self.positions(ids)
        scores, found = self._search_positions(self.index.reconstruct_batch(pos), k + 1, among)
        scores, found = _drop_self(scores, found, pos, k)
        return self._edges(pos, found, scores)

    def _search_positions(self, queries: np.ndarray, k: int,
                          among: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
        if among is None:
            scores, pos = self.index.search(queries, k)
        else:
            scores, pos = self._search_among(queries, k, self.positions(among))
        return np.where(pos >= 0, scores, np.nan).astype(np.float32), pos

    def _search_among(self, queries: np.ndarray, k: int,
                      allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        allowed = np.unique(allowed)
        if self.exact or len(allowed) <= EXACT_SUBSET_MAX:
            base = self.index.reconstruct_batch(allowed)
            scores, local = faiss.knn(queries, base, min(k, len(allowed)),
                                      metric=faiss.METRIC_INNER_PRODUCT)
            pos = np.where(local >= 0, allowed[np.maximum(local, 0)], -1)
            return _pad_cols(scores, k, np.nan), _pad_cols(pos, k, -1)
        selector = faiss.IDSelectorBatch(allowed)
        if _hnsw(self.index) is not None:
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.ef_search, 2 * k))
        else:
            params = faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe)
        return self.index.search(queries, k, params=params)

    def knn_positions(self, k: int = 10, *, queries: np.ndarray | None = None,
                      batch_size: int = 16_384, device: str = "auto",
                      progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The all-points kNN graph as positions ``(n, k)`` and scores ``(n, k)``.

        Item ``i``'s own entry is excluded. ``queries`` (default: the stored vectors) lets a
        weighted query stand for each item (:func:`embed.fusion.weighted_query`). On a
        CUDA device the graph is exact (brute force in half precision); on the CPU it comes
        from the index in batches.
        """
        n = len(self)
        queries = self.vectors() if queries is None else _as_queries(queries, self.dim)
        if len(queries) != n:
            raise ValueError(f"queries has {len(queries)} rows, the index {n} items")
        use_cuda = device != "cpu" and _cuda_available(asked=device != "auto")
        if use_cuda:
            scores, pos = torch_knn(self.vectors(), queries, k + 1, batch_size=batch_size,
                                    progress=progress)
        else:
            scores = np.empty((n, k + 1), np.float32)
            pos = np.empty((n, k + 1), np.int64)
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                scores[start:stop], pos[start:stop] = self.index.search(queries[start:stop],
                                                                        k + 1)
                if progress:
                    progress(stop, n)
        scores, pos = _drop_self(scores, pos, np.arange(n), k)
        return pos, scores

    def knn_graph(self, k: int = 10, **kw) -> pd.DataFrame:
        """:meth:`knn_positions` as edges with ids: src, dst, score, rank (1..k)."""
        pos, scores = self.knn_positions(k, **kw)
        return self._edges(np.arange(len(self)), pos, scores)

    def _ids_of(self, pos: np.ndarray) -> np.ndarray:
        out = np.full(pos.shape, None, dtype=object)
        out[pos >= 0] = self.ids[pos[pos >= 0]]
        return out

    def _edges(self, src: np.ndarray, pos: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
        k = pos.shape[1]
        valid = (pos >= 0).ravel()
        return pd.DataFrame({
            "src": self.ids[np.repeat(src, k)[valid]],
            "dst": self.ids[pos.ravel()[valid]],
            "score": scores.ravel()[valid].astype(np.float32),
            "rank": np.tile(np.arange(1, k + 1), len(src))[valid].astype(np.int32),
        })

    # -- files -----------------------------------------------------------------------------
    def save(self, folder: str | Path, name: str) -> list[Path]:
        """Write ``NAME.faiss``, ``NAME.ids.parquet`` and ``NAME.json`` (each atomically)."""
        folder = Path(folder)
        with atomic_path(folder / f"{name}.faiss", suffix=".faiss") as tmp:
            faiss.write_index(self.index, str(tmp))
        write_parquet(pd.DataFrame({"id": self.ids.astype(str)}), folder / f"{name}.ids.parquet")
        meta = {"factory": self.factory, "metric": "inner_product", "dim": self.dim,
                "n": len(self), "ef_search": self.ef_search, "nprobe": self.nprobe,
                "faiss": faiss.__version__}
        write_json(meta, folder / f"{name}.json")
        return [folder / f"{name}{s}" for s in (".faiss", ".ids.parquet", ".json")]

    @classmethod
    def load(cls, folder: str | Path, name: str) -> VectorIndex:
        """Read an index written by :meth:`save`."""
        folder = Path(folder)
        paths = [folder / f"{name}{s}" for s in (".faiss", ".ids.parquet", ".json")]
        for path in paths:
            if not path.exists():
                raise InputError(path, "the vector index file does not exist",
                                 "run the index stage: `patientgraph run --workspace W "
                                 "--stages index`")
        meta = json.loads(paths[2].read_text())
        index = faiss.read_index(str(paths[0]))
        _enable_reconstruct(index)
        ids = pd.read_parquet(paths[1])["id"].to_numpy(dtype=object)
        if len(ids) != index.ntotal:
            raise InputError(paths[1], f"lists {len(ids)} ids for {index.ntotal} vectors",
                             "rebuild the index (`patientgraph run --stages index --force`)")
        return cls(index, ids, meta["factory"], ef_search=meta["ef_search"],
                   nprobe=meta["nprobe"])


def _cuda_available(asked: bool = False) -> bool:
    """Whether torch sees a CUDA GPU (torch imported only here: reading an index or
    searching it on the CPU does not pay torch's import time).

    Unless CUDA was ``asked`` for by name or torch is loaded already, a Linux machine
    without NVIDIA's device nodes is answered without importing torch, which costs
    seconds: CUDA cannot be there.
    """
    if not asked and "torch" not in sys.modules and not _nvidia_device_possible():
        return False
    import torch

    return torch.cuda.is_available()


NVIDIA_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/dxg")
"""What NVIDIA's driver makes (``/dev/dxg``: WSL 2's GPU); a container given a GPU has
them too."""


def _nvidia_device_possible() -> bool:
    if not sys.platform.startswith("linux"):
        return True  # no such check elsewhere: ask torch
    return any(os.path.exists(node) for node in NVIDIA_DEVICE_NODES)


def torch_knn(base: np.ndarray, queries: np.ndarray, k: int, *, batch_size: int = 16_384,
              device: str = "cuda", half: bool | None = None,
              progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products of ``queries`` against ``base`` with torch.

    ``half`` (default: on CUDA) shortlists ``k + max(k, 16)`` candidates in half precision,
    then ranks them by float32 scores, so near-ties are ordered as in float32. Returns
    ``(scores, positions)`` like ``faiss.Index.search``.
    """
    import torch

    dev = torch.device(device)
    half = dev.type == "cuda" if half is None else half
    b = torch.from_numpy(np.ascontiguousarray(base)).to(dev)
    b_search = b.half() if half else b
    shortlist = min(len(base), k + max(k, 16) if half else k)
    scores = np.empty((len(queries), k), np.float32)
    pos = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), batch_size):
        q = torch.from_numpy(np.ascontiguousarray(queries[start:start + batch_size])).to(dev)
        idx = ((q.half() if half else q) @ b_search.T).topk(shortlist, dim=1).indices
        exact, order = (b[idx] * q[:, None, :]).sum(-1).topk(min(k, shortlist), dim=1)
        stop = start + len(q)
        scores[start:stop] = _pad_cols(exact.cpu().numpy(), k, np.nan)
        pos[start:stop] = _pad_cols(idx.gather(1, order).cpu().numpy(), k, -1)
        if progress:
            progress(stop, len(queries))
    return scores, pos


def _pad_cols(a: np.ndarray, k: int, fill) -> np.ndarray:
    if a.shape[1] == k:
        return a
    out = np.full((a.shape[0], k), fill, dtype=a.dtype)
    out[:, :a.shape[1]] = a
    return out


def _drop_self(scores: np.ndarray, pos: np.ndarray, own: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own position (or its last entry, if absent); keep ``k``."""
    is_self = pos == own[:, None]
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    keep = ~is_self
    return (scores[keep].reshape(len(pos), -1)[:, :k],
            pos[keep].reshape(len(pos), -1)[:, :k])


def _check_vectors(ids: Sequence[str], vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(f"need one vector per id: {len(ids)} ids, vectors {vectors.shape}")
    if len(set(map(str, ids))) != len(ids):
        raise ValueError("ids must be unique")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or infinite values")
    return vectors


def _as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] != dim:
        raise ValueError(f"queries have {queries.shape[1]} dimensions, the index {dim}")
    return queries


def _new_index(factory: str, dim: int) -> faiss.Index:
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise InputError(None, f"FAISS cannot build the index {factory!r} "
                         f"({str(exc).strip().splitlines()[-1]})",
                         "use a FAISS factory string such as Flat, HNSW32 or IVF1024,Flat") \
            from None


def _hnsw(index: faiss.Index):
    try:
        return faiss.downcast_index(index).hnsw
    except AttributeError:
        return None


def _ivf(index: faiss.Index):
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _enable_reconstruct(index: faiss.Index) -> None:
    ivf = _ivf(index)
    if ivf is not None:
        ivf.make_direct_map()
