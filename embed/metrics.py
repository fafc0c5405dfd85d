"""Retrieval and probe metrics for embeddings (validation during training, benchmarks).

Retrieval never counts a query's own patient: a patient's lesions across studies are
mostly one lesion seen again, which would make any embedding look good.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def precision_at_k(
    vectors: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int = 10
) -> float:
    """Mean share of each query's ``k`` nearest (cosine) items that share its label.

    Every item is a query; items of the query's own group (patient) are excluded from its
    neighbours. Items whose label is negative are neither queries nor neighbours.
    """
    keep = labels >= 0
    vectors, labels, groups = _unit(vectors[keep]), labels[keep], groups[keep]
    if len(vectors) < 2:
        return float("nan")
    sims = vectors @ vectors.T
    sims[groups[:, None] == groups[None, :]] = -np.inf
    k = min(k, len(vectors) - 1)
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    valid = np.isfinite(np.take_along_axis(sims, top, axis=1))
    hits = (labels[top] == labels[:, None]) & valid
    n_valid = valid.sum(axis=1)
    has = n_valid > 0
    return float((hits.sum(axis=1)[has] / n_valid[has]).mean()) if has.any() else float("nan")


def gallery_precision_at_k(
    queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray,
    gallery_labels: np.ndarray, k: int = 10,
) -> float:
    """Mean share of each query's ``k`` nearest gallery items (cosine) with its label.

    For queries and a gallery from different patients (validation against training
    patients): a steadier score than retrieval among a few validation patients.
    """
    if len(queries) == 0 or len(gallery) == 0:
        return float("nan")
    sims = _unit(queries) @ _unit(gallery).T
    k = min(k, len(gallery))
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return float((gallery_labels[top] == query_labels[:, None]).mean())


def same_lesion_top1(
    vectors: np.ndarray, query: np.ndarray, candidates: list[np.ndarray], answer: np.ndarray
) -> float:
    """Share of queries whose nearest candidate (cosine) is the right one.

    ``query[i]`` is a row of ``vectors``; ``candidates[i]`` the rows it is matched among
    (the lesions of the patient's next study); ``answer[i]`` the right row.
    """
    if len(query) == 0:
        return float("nan")
    vectors = _unit(vectors)
    hits = [
        cand[np.argmax(vectors[cand] @ vectors[q])] == a
        for q, cand, a in zip(query, candidates, answer, strict=True)
    ]
    return float(np.mean(hits))


def linear_probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    weight_decay: float = 1e-3,
    max_iter: int = 200,
) -> float:
    """Accuracy of a multinomial logistic regression fitted on ``train`` (L-BFGS).

    Features are standardised with the training mean and sd first.
    """
    mean, sd = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    x = torch.as_tensor((train_x - mean) / sd, dtype=torch.float64)
    xt = torch.as_tensor((test_x - mean) / sd, dtype=torch.float64)
    classes, y = np.unique(train_y, return_inverse=True)
    y = torch.as_tensor(y)
    weight = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        predicted = classes[(xt @ weight + bias).argmax(dim=1).numpy()]
    return float(np.mean(predicted == test_y))


def knn_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
    k: int = 15,
) -> float:
    """Accuracy of a ``k``-nearest-neighbour majority vote (Euclidean, standardised)."""
    mean, sd = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    a, b = (train_x - mean) / sd, (test_x - mean) / sd
    dist = ((b[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    k = min(k, len(a))
    nearest = np.argpartition(dist, k - 1, axis=1)[:, :k]
    votes = train_y[nearest]
    predicted = np.array([np.bincount(v).argmax() for v in votes])
    return float(np.mean(predicted == test_y))


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norm = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norm, 1e-12)
