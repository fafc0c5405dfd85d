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
    hu: torch.Tensor,
    generator: torch.Generator,
    config: ViewConfig = ViewConfig(),
    n_slices: int | None = None,
) -> torch.Tensor:
    """A random view of every crop of ``hu`` ``(B, S, H, W)`` (float32 HU).

    The slice order is reversed over the first ``n_slices`` views only (default: all), so
    that a crop's context view (:class:`~embed.config.CropConfig`) stays last.

    Random numbers are drawn on the generator's device: keep it on ``hu``'s device (a CUDA
    generator for CUDA training) so that no noise crosses the bus.
    """
    b, device = hu.shape[0], hu.device
    hu = hu.float()

    def draw(*shape: int, normal: bool = False) -> torch.Tensor:
        sample = torch.randn if normal else torch.rand
        return sample(*shape, generator=generator, device=generator.device).to(device)

    def uniform(half_width: float) -> torch.Tensor:
        return (draw(b) * 2 - 1) * half_width

    angle = uniform(math.radians(config.max_rotation_deg))
    scale = 1 + uniform(config.max_scale)
    mirror = torch.where(draw(b) < config.flip_p, -1.0, 1.0)
    shift = (draw(b, 2) * 2 - 1) * config.max_shift * 2
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([
        torch.stack([cos * mirror, -sin, shift[:, 0]], dim=1),
        torch.stack([sin * mirror, cos, shift[:, 1]], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(hu.shape), align_corners=False)
    out = F.grid_sample(hu, grid, mode="bilinear", padding_mode="border", align_corners=False)
    flip = draw(b) < config.slice_flip_p
    s = out.shape[1] if n_slices is None else n_slices
    flipped = torch.cat([out[:, :s].flip(1), out[:, s:]], dim=1)
    out = torch.where(flip.view(b, 1, 1, 1), flipped, out)
    gain = (1 + uniform(config.hu_gain)).view(b, 1, 1, 1)
    offset = uniform(config.hu_offset).view(b, 1, 1, 1)
    return out * gain + offset + draw(*out.shape, normal=True) * config.noise_hu


def paired_views(
    hu: torch.Tensor, generator: torch.Generator, n_slices: int | None = None
) -> torch.Tensor:
    """Two random views of every crop (:func:`random_view`), stacked ``(2B, S, H, W)``: all
    first views, then all second views (row ``i`` and ``B + i`` are one lesion)."""
    return torch.cat([random_view(hu, generator, n_slices=n_slices),
                      random_view(hu, generator, n_slices=n_slices)])
