"""Retrieval and probe metrics on hand-built embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from embed.metrics import (
    gallery_precision_at_k,
    knn_accuracy,
    linear_probe_accuracy,
    precision_at_k,
    same_lesion_top1,
)


def test_precision_at_k_excludes_the_query_patient():
    vectors = np.array([[1, 0], [1, 0.01], [0.9, 0.1], [0, 1]], dtype=np.float32)
    labels = np.array([1, 1, 2, 2])
    # items 0 and 1 are one patient: each one's nearest other-patient item is item 2 (label 2)
    groups = np.array(["a", "a", "b", "c"])
    assert precision_at_k(vectors, labels, groups, k=1) == pytest.approx((0 + 0 + 0 + 1) / 4)
    # with every item its own patient, 0 and 1 find each other (2 still finds a label 1)
    assert precision_at_k(vectors, labels, np.arange(4), k=1) == pytest.approx(3 / 4)


def test_precision_at_k_skips_unlabelled_items():
    vectors = np.eye(3, dtype=np.float32)
    assert np.isnan(precision_at_k(vectors, np.array([-1, -1, 1]), np.arange(3)))


def test_gallery_precision_at_k():
    gallery = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)
    labels = np.array([1, 1, 2])
    queries = np.array([[1, 0.05], [0.1, 1]], dtype=np.float32)
    assert gallery_precision_at_k(queries, np.array([1, 2]), gallery, labels, k=1) == 1.0
    assert gallery_precision_at_k(queries, np.array([1, 2]), gallery, labels, k=2) == 0.75
    assert np.isnan(gallery_precision_at_k(queries[:0], labels[:0], gallery, labels))


def test_same_lesion_top1():
    vectors = np.array([[1, 0], [0, 1], [0.9, 0.1], [0.1, 0.9]], dtype=np.float32)
    candidates = [np.array([2, 3]), np.array([2, 3])]
    assert same_lesion_top1(vectors, np.array([0, 1]), candidates, np.array([2, 3])) == 1.0
    assert same_lesion_top1(vectors, np.array([0, 1]), candidates, np.array([3, 2])) == 0.0


def test_probes_separate_separable_classes():
    rng = np.random.default_rng(0)
    y = np.repeat([1, 2, 3], 30)
    x = rng.normal(size=(90, 4)) + np.eye(4)[y] * 4
    assert linear_probe_accuracy(x[::2], y[::2], x[1::2], y[1::2]) > 0.95
    assert knn_accuracy(x[::2], y[::2], x[1::2], y[1::2], k=5) > 0.95
    noise = rng.normal(size=(90, 4))
    assert linear_probe_accuracy(noise[::2], y[::2], noise[1::2], y[1::2]) < 0.7
