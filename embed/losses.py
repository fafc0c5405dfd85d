"""Metric-learning losses over a batch of lesion views with weak, partial labels.

The batch holds two random views of each lesion. :func:`positive_weights` says how much
each pair should attract: the other view of the same lesion (self-supervision, every lesion),
the same lesion in another study (mined pairs), the same coarse type (labelled lesions
only). :func:`soft_contrastive_loss` is InfoNCE with those weights as a target
distribution (supervised contrastive learning when the weights come from classes).
:func:`masked_regression_loss` makes the embedding predict location and size where known.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def positive_weights(
    lesion: torch.Tensor,
    track: torch.Tensor,
    coarse_type: torch.Tensor,
    *,
    same_lesion_weight: float = 1.0,
    type_weight: float = 1.0,
    patient: torch.Tensor | None = None,
    same_patient_weight: float = 0.0,
) -> torch.Tensor:
    """Target weights ``(n, n)`` between the ``n`` views of a batch (diagonal zero).

    ``lesion`` identifies the lesion a view shows, ``track`` the physical lesion it belongs
    to across studies (-1 unknown), ``coarse_type`` its label (-1 unknown). Each row's type
    positives share ``type_weight`` between them, so a common type does not drown the rest.
    ``patient`` (optional) identifies the patient: the patient's other lesions share
    ``same_patient_weight`` (a weak positive: most of a patient's lesions are of one type,
    and it needs no reader's label).
    """
    n = lesion.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=lesion.device)
    same_view_lesion = (lesion[:, None] == lesion[None, :]) & ~eye
    same_track = (track[:, None] == track[None, :]) & (track[:, None] >= 0) & ~same_view_lesion
    same_track &= ~eye
    same_type = (coarse_type[:, None] == coarse_type[None, :]) & (coarse_type[:, None] >= 0)
    same_type &= ~eye & ~same_view_lesion
    weights = same_view_lesion.float() + same_lesion_weight * same_track.float()
    n_type = same_type.sum(dim=1, keepdim=True).clamp(min=1)
    weights = weights + type_weight * same_type.float() / n_type
    if patient is not None and same_patient_weight > 0:
        same_patient = (patient[:, None] == patient[None, :]) & ~same_view_lesion & ~eye
        same_patient &= ~same_track
        n_patient = same_patient.sum(dim=1, keepdim=True).clamp(min=1)
        weights = weights + same_patient_weight * same_patient.float() / n_patient
    return weights


def soft_contrastive_loss(
    embeddings: torch.Tensor, weights: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """Cross-entropy between the row-normalised ``weights`` and softmax similarities.

    ``embeddings`` are unit vectors ``(n, d)``; rows with no positive are skipped.
    """
    logits = embeddings @ embeddings.T / temperature
    eye = torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device)
    logits = logits.masked_fill(eye, float("-inf"))
    log_prob = F.log_softmax(logits, dim=1).masked_fill(eye, 0.0)
    total = weights.sum(dim=1)
    has_positive = total > 0
    target = weights[has_positive] / total[has_positive, None]
    return -(target * log_prob[has_positive]).sum(dim=1).mean()


def masked_regression_loss(
    predicted: torch.Tensor, target: torch.Tensor, known: torch.Tensor
) -> torch.Tensor:
    """Mean squared error over the ``known`` entries only (0 when none is known)."""
    known = known.float()
    squared = (predicted - torch.nan_to_num(target)) ** 2 * known
    return squared.sum() / known.sum().clamp(min=1.0)
