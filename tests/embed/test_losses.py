"""Metric-learning losses: positive weights from weak labels and the soft contrastive loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from embed.losses import masked_regression_loss, positive_weights, soft_contrastive_loss


def test_positive_weights_from_views_tracks_and_types():
    # four views: lesions 0, 1 (one physical lesion, track 5), lesion 2 typed like lesion 0
    lesion = torch.tensor([0, 0, 1, 2])
    track = torch.tensor([5, 5, 5, -1])
    coarse_type = torch.tensor([4, 4, -1, 4])
    w = positive_weights(lesion, track, coarse_type, same_lesion_weight=0.5, type_weight=1.0)
    assert torch.equal(w.diagonal(), torch.zeros(4))
    assert w[0, 1] == 1.0  # the other view of the same lesion
    assert w[0, 2] == 0.5  # the same lesion in another study
    assert w[0, 3] == 1.0  # the only other lesion of its type gets all the type weight
    assert w[3, 0] == w[3, 1] == 0.5  # two views share the type weight
    assert w[2, 3] == 0.0  # unlabelled lesion: no type positive


def test_same_patient_positives_share_their_weight_and_skip_known_pairs():
    # views of lesions 0, 1, 2 of patient 7 (0 and 1 one physical lesion), lesion 3 of patient 8
    lesion = torch.tensor([0, 1, 2, 3])
    track = torch.tensor([5, 5, -1, -1])
    coarse_type = torch.full((4,), -1)
    patient = torch.tensor([7, 7, 7, 8])
    w = positive_weights(lesion, track, coarse_type, same_lesion_weight=1.0,
                         patient=patient, same_patient_weight=0.4)
    assert w[0, 1] == 1.0  # same physical lesion: the track weight only
    assert w[0, 2] == pytest.approx(0.4)  # the patient's only other lesion
    assert w[2, 0] == w[2, 1] == pytest.approx(0.2)  # two lesions share the patient weight
    assert w[3, :3].sum() == 0.0 and w[:3, 3].sum() == 0.0  # another patient
    off = positive_weights(lesion, track, coarse_type, patient=patient)
    assert off[0, 2] == 0.0  # weight 0 (the default): no patient positives


def test_soft_contrastive_loss_prefers_embeddings_that_match_the_targets():
    weights = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=float)
    good = F.normalize(torch.tensor([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], dtype=float), dim=1)
    bad = good[[0, 2, 1, 3]]
    assert soft_contrastive_loss(good, weights, 0.1) < soft_contrastive_loss(bad, weights, 0.1)


def test_soft_contrastive_loss_is_cross_entropy_over_the_other_items():
    z = F.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    weights = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float32)
    loss = soft_contrastive_loss(z, weights, temperature=0.5)
    logits = z @ z.T / 0.5
    expected = -(torch.log_softmax(logits[0, [1, 2]], 0)[0]
                 + torch.log_softmax(logits[1, [0, 2]], 0)[0]) / 2  # row 2 has no positive
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_masked_regression_loss_ignores_unknown_targets():
    predicted = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[1.0, math.nan], [5.0, 4.0]])
    known = ~torch.isnan(target)
    assert masked_regression_loss(predicted, target, known).item() == pytest.approx(4 / 3)
    assert masked_regression_loss(predicted, target, torch.zeros_like(known)).item() == 0.0
