"""Random views of HU crops for self-supervised and metric learning.

Changes a lesion can show between scans or readers without becoming another lesion: a
small rotation, rescaling and shift of the field of view, the slice order reversed, a
scanner's HU calibration offset and gain, and noise. Sizes change by at most ``max_scale``
so that size stays learnable. No left-right mirror by default: laterality tells organs
apart (liver and spleen look alike; the spleen is on the patient's left). All draws come
from the caller's ``torch.Generator``, so training is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ViewConfig:
    """Ranges of the random view (degrees, fractions of the field of view, HU)."""

    max_rotation_deg: float = 20.0
    max_scale: float = 0.1
    max_shift: float = 0.06
    flip_p: float = 0.0
    slice_flip_p: float = 0.5
    hu_offset: float = 20.0
    hu_gain: float = 0.05
    noise_hu: float = 10.0


def random_view(
    hu: torch.Tensor, generator: torch.Generator, config: ViewConfig = ViewConfig()
) -> torch.Tensor:
    """A random view of every crop of ``hu`` ``(B, S, H, W)`` (float32 HU)."""
    b = hu.shape[0]
    hu = hu.float()

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=generator)

    angle = uniform(-1, 1) * math.radians(config.max_rotation_deg)
    scale = 1 + uniform(-1, 1) * config.max_scale
    mirror = torch.where(torch.rand(b, generator=generator) < config.flip_p, -1.0, 1.0)
    shift = (torch.rand(b, 2, generator=generator) * 2 - 1) * config.max_shift * 2
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([
        torch.stack([cos * mirror, -sin, shift[:, 0]], dim=1),
        torch.stack([sin * mirror, cos, shift[:, 1]], dim=1),
    ], dim=1).to(hu.device)
    grid = F.affine_grid(theta, list(hu.shape), align_corners=False)
    out = F.grid_sample(hu, grid, mode="bilinear", padding_mode="border", align_corners=False)
    flip = (torch.rand(b, generator=generator) < config.slice_flip_p).to(hu.device)
    out = torch.where(flip.view(b, 1, 1, 1), out.flip(1), out)
    gain = (1 + uniform(-1, 1) * config.hu_gain).to(hu.device).view(b, 1, 1, 1)
    offset = (uniform(-1, 1) * config.hu_offset).to(hu.device).view(b, 1, 1, 1)
    noise = torch.randn(out.shape, generator=generator).to(hu.device) * config.noise_hu
    return out * gain + offset + noise
