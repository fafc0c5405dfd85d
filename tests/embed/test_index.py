"""The FAISS vector index: automatic choice, exact vs approximate, subsets, graph, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embed.index import VectorIndex, auto_factory, torch_knn
from patientgraph.errors import InputError


def _clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Unit vectors around 20 centres: low intrinsic dimension, like real embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    x = centres[rng.integers(20, size=n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _ids(n: int) -> list[str]:
    return [f"L{i:05d}" for i in range(n)]


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return _clustered(3000)


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact,
                                                                         strict=True)]))


def test_auto_factory_is_exact_when_small():
    assert auto_factory(5000) == "Flat"
    assert auto_factory(5_000_000) == "HNSW32"


@pytest.mark.parametrize("factory", ["HNSW32", "IVF32,Flat"])
def test_approximate_search_agrees_with_exact(vectors, factory):
    ids = _ids(len(vectors))
    exact = VectorIndex.build(ids, vectors, factory="Flat")
    approx = VectorIndex.build(ids, vectors, factory=factory)
    queries = _clustered(200, seed=1)
    truth, truth_scores = exact.search(queries, 10)
    found, scores = approx.search(queries, 10)
    assert _recall(found, truth) > 0.95
    # brute force in numpy is the reference for the exact index itself
    brute = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    assert (truth == np.asarray(ids, dtype=object)[brute]).mean() > 0.99
    assert truth_scores[:, 0] == pytest.approx((queries @ vectors.T).max(axis=1), abs=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_search_restricted_to_a_subset(vectors, factory):
    ids = _ids(len(vectors))
    index = VectorIndex.build(ids, vectors, factory=factory)
    among = ids[100:160]
    found, scores = index.search(vectors[:5], 5, among=among)
    assert set(found.ravel()) <= set(among)
    sub = vectors[100:160]
    best = np.asarray(among, dtype=object)[np.argsort(-(vectors[:5] @ sub.T), axis=1)[:, :5]]
    assert (found == best).all()


def test_subset_smaller_than_k_pads_with_none(vectors):
    index = VectorIndex.build(_ids(len(vectors)), vectors)
    found, scores = index.search(vectors[:1], 4, among=["L00007", "L00008"])
    assert found[0, 2] is None and np.isnan(scores[0, 3])


def test_search_ids_excludes_the_query_itself(vectors):
    index = VectorIndex.build(_ids(len(vectors)), vectors)
    edges = index.search_ids(["L00003", "L00004"], k=3)
    assert edges["rank"].tolist() == [1, 2, 3, 1, 2, 3]
    assert "L00003" not in set(edges.loc[edges["src"] == "L00003", "dst"])


def test_unknown_ids_suggest_only_a_formatting_variant(vectors):
    index = VectorIndex.build(_ids(len(vectors)), vectors)
    with pytest.raises(InputError, match=r"unknown lesion_id 'L0003'\. Did you mean "
                       r"'L00003'\?") as info:
        index.positions(["L0003"], what="lesion_id")
    assert [i for i in _ids(len(vectors)) if i in info.value.message] == ["L00003"]
    with pytest.raises(InputError, match=r"unknown lesion_id 'X00003'\. Fix") as info:
        index.positions(["X00003"], what="lesion_id")
    assert not [i for i in _ids(len(vectors)) if i in info.value.message]


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_knn_graph_in_batches_matches_exact(vectors, factory):
    ids = _ids(len(vectors))
    exact = VectorIndex.build(ids, vectors, factory="Flat")
    index = VectorIndex.build(ids, vectors, factory=factory)
    pos, scores = index.knn_positions(5, batch_size=700, device="cpu")
    truth, _ = exact.knn_positions(5, batch_size=3000, device="cpu")
    assert pos.shape == (len(vectors), 5)
    assert not (pos == np.arange(len(vectors))[:, None]).any()
    assert _recall(pos, truth) > 0.95
    graph = index.knn_graph(5, batch_size=700, device="cpu")
    assert list(graph.columns) == ["src", "dst", "score", "rank"]
    assert len(graph) == 5 * len(vectors) and graph["rank"].max() == 5


def test_knn_graph_with_weighted_queries():
    base = np.eye(3, dtype=np.float32)
    index = VectorIndex.build(["a", "b", "c"], base)
    queries = np.array([[1, 0.5, 0.2], [0.1, 1, 0.3], [0.1, 0.9, 1]], dtype=np.float32)
    graph = index.knn_graph(1, queries=queries, device="cpu")
    assert graph["dst"].tolist() == ["b", "c", "b"]
    assert graph["score"].tolist() == pytest.approx([0.5, 0.3, 0.9])


@pytest.mark.parametrize("half", [False, True])
def test_torch_knn_matches_faiss(vectors, half):
    index = VectorIndex.build(_ids(len(vectors)), vectors)
    scores, pos = torch_knn(vectors, vectors[:300], 6, device="cpu", half=half)
    found, ref_scores = index.search(vectors[:300], 6)
    # a half-precision shortlist re-ranked in float32 gives the float32 answer
    assert (np.asarray(_ids(len(vectors)), dtype=object)[pos] == found).mean() > 0.995
    assert scores == pytest.approx(ref_scores, abs=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_knn_graph_matches_cpu(vectors):
    index = VectorIndex.build(_ids(len(vectors)), vectors)
    gpu, gpu_scores = index.knn_positions(5, device="cuda")
    cpu, cpu_scores = index.knn_positions(5, device="cpu")
    assert _recall(gpu, cpu) > 0.99
    assert gpu_scores == pytest.approx(cpu_scores, abs=1e-4)


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF32,Flat"])
def test_save_and_load_round_trip(tmp_path, vectors, factory):
    index = VectorIndex.build(_ids(len(vectors)), vectors, factory=factory, ef_search=64)
    paths = index.save(tmp_path, "lesions")
    assert [p.name for p in paths] == ["lesions.faiss", "lesions.ids.parquet", "lesions.json"]
    loaded = VectorIndex.load(tmp_path, "lesions")
    assert loaded.factory == factory and loaded.ef_search == 64 and len(loaded) == len(index)
    a, _ = index.search(vectors[:20], 5)
    b, _ = loaded.search(vectors[:20], 5)
    assert (a == b).all()
    assert loaded.vectors(["L00002"]) == pytest.approx(vectors[2:3])


def test_bad_factory_and_bad_vectors():
    with pytest.raises(InputError, match="FAISS cannot build the index 'HNSWx'"):
        VectorIndex.build(["a"], np.ones((1, 4)), factory="HNSWx")
    with pytest.raises(ValueError, match="unique"):
        VectorIndex.build(["a", "a"], np.ones((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        VectorIndex.build(["a"], np.full((1, 4), np.nan))


def test_load_missing_index_says_how_to_build_it(tmp_path):
    with pytest.raises(InputError, match="run the index stage"):
        VectorIndex.load(tmp_path, "lesions")


def test_the_cpu_knn_graph_does_not_import_torch_where_no_nvidia_driver_is():
    # torch's import costs seconds of the index stage; without NVIDIA's device nodes on Linux
    # CUDA cannot be there, so the "auto" device does not ask torch
    import subprocess
    import sys

    from embed.index import _nvidia_device_possible

    script = ("import sys, numpy as np\n"
              "from embed.index import VectorIndex\n"
              "x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)\n"
              "x /= np.linalg.norm(x, axis=1, keepdims=True)\n"
              "index = VectorIndex.build([str(i) for i in range(50)], x)\n"
              "pos, _ = index.knn_positions(3)\n"
              "print(pos.shape, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, check=True)
    shape, imported = done.stdout.strip().rsplit(" ", 1)
    assert shape == "(50, 3)"
    assert imported == str(_nvidia_device_possible())


def test_nvidia_device_nodes_decide_only_on_linux(monkeypatch):
    import os
    import sys

    from embed import index

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os.path, "exists", lambda p: False)
    assert not index._nvidia_device_possible()
    monkeypatch.delitem(sys.modules, "torch")  # as in a process that has not loaded it
    assert not index._cuda_available()  # answered without torch
    assert "torch" not in sys.modules
    monkeypatch.setattr(os.path, "exists", lambda p: p == "/dev/nvidiactl")
    assert index._nvidia_device_possible()
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(os.path, "exists", lambda p: False)
    assert index._nvidia_device_possible()
