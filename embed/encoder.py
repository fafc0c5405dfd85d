"""The lesion encoder: HU crops in, 128-d L2-normalised embeddings out.

CT windows as input channels (:class:`~embed.crops.CTWindows`), a 2-D MONAI ResNet over the
neighbouring slices x windows, a two-layer projection. A checkpoint holds the weights and
the crop and network configs that rebuild the model, so :func:`load_encoder` needs no code
change and refuses, with a clear message, a checkpoint that does not fit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import ResNet
from torch import nn

from embed.config import CropConfig, EncoderConfig, crop_from_dict, encoder_from_dict
from embed.crops import METADATA, CTWindows
from patientgraph.atomic import atomic_path
from patientgraph.errors import InputError

CHECKPOINT_FORMAT = "patientgraph.lesion_encoder/1"
LOCATION_FREQUENCIES = (1.0, 2.0, 4.0, 8.0)
"""Fourier frequencies (cycles over the unit range) of the location features."""


class LocationFeatures(nn.Module):
    """Normalised locations ``(B, 3)`` (NaN rows unknown) to Fourier features and a
    missing flag ``(B, 3 * 2 * n_frequencies + 1)``."""

    def __init__(self, frequencies=LOCATION_FREQUENCIES):
        super().__init__()
        self.register_buffer("angular", torch.tensor(frequencies) * torch.pi, persistent=False)

    @property
    def width(self) -> int:
        return 3 * 2 * len(self.angular) + 1

    def forward(self, location: torch.Tensor) -> torch.Tensor:
        known = torch.isfinite(location).all(dim=1, keepdim=True)
        angles = torch.where(known, location, 0.0)[:, :, None] * self.angular
        waves = torch.cat([angles.sin(), angles.cos()], dim=2).flatten(1) * known
        return torch.cat([waves, (~known).float()], dim=1)


class ReadingWindowFeatures(nn.Module):
    """The display window a reader marked the lesion in, ``(B, 2)`` low and high HU (NaN
    rows unknown), to its centre and width in thousands of HU and a missing flag ``(B, 3)``.

    Readers choose the window for the anatomy they look at (lung, bone, soft tissue), so it
    is a weak cue to the lesion's site that an archive records with every DeepLesion row.
    """

    width = 3

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        known = torch.isfinite(window).all(dim=1, keepdim=True)
        low, high = torch.where(known, window, 0.0).unbind(dim=1)
        shape = torch.stack([(low + high) / 2000.0, (high - low) / 1000.0], dim=1) * known
        return torch.cat([shape, (~known).float()], dim=1)


class ContextSignature(nn.Module):
    """The tissue around the lesion: for concentric rings about the crop centre and a ladder
    of HU thresholds, the share of the ring's pixels (over all slices) at or above each
    threshold, ``(B, n_rings * n_thresholds)``.

    A fixed, radiomics-like descriptor: the organ a lesion sits in (lung, liver, kidney,
    bone, fat) shows as the HU make-up of its surroundings, which a network trained from
    scratch on a few hundred labelled lesions does not learn reliably.
    """

    RINGS_MM = (0.0, 4.0, 8.0, 12.0, 18.0, 26.0, 36.0)
    """Inner ring radii (mm) at ``ring_scale`` 1; the last ring reaches the crop's corners."""
    THRESHOLDS_HU = (-600.0, -200.0, -30.0, 30.0, 80.0, 200.0, 500.0)

    def __init__(self, size_mm: float, out_px: int, ring_scale: float = 1.0):
        super().__init__()
        px = size_mm / out_px
        centre = (out_px - 1) / 2
        yy, xx = torch.meshgrid(torch.arange(out_px), torch.arange(out_px), indexing="ij")
        radius = torch.hypot(yy - centre, xx - centre).flatten() * px
        edges = torch.tensor([*self.RINGS_MM, float("inf")]) * ring_scale
        rings = (radius[None] >= edges[:-1, None]) & (radius[None] < edges[1:, None])
        rings = rings[rings.any(dim=1)]  # each pixel lies in exactly one ring
        self.register_buffer("ring_of", rings.float().argmax(dim=0), persistent=False)
        self.register_buffer("ring_size", rings.sum(dim=1).float(), persistent=False)
        self.register_buffer("thresholds", torch.tensor(self.THRESHOLDS_HU), persistent=False)

    @property
    def width(self) -> int:
        return len(self.ring_size) * len(self.thresholds)

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        # Each pixel's level (how many thresholds it reaches) is counted per ring in one
        # histogram; "at or above threshold t" is then the count of levels above t. A
        # comparison with every threshold would build a B x S x P x T tensor.
        b, s = hu.shape[:2]
        n_rings, n_levels = len(self.ring_size), len(self.thresholds) + 1
        level = torch.bucketize(hu.float().flatten(2).contiguous(), self.thresholds, right=True)
        offset = torch.arange(b, device=hu.device)[:, None, None] * (n_rings * n_levels)
        cells = (offset + self.ring_of * n_levels + level).flatten()
        counts = torch.bincount(cells, minlength=b * n_rings * n_levels)
        above = counts.view(b, n_rings, n_levels).flip(-1).cumsum(-1).flip(-1)[..., 1:]
        return (above.float() / (self.ring_size[:, None] * s)).flatten(1)


class LesionEncoder(nn.Module):
    """HU crops ``(B, depth, px, px)`` (and each lesion's location and reading window,
    when the config says so) to unit vectors ``(B, embedding_dim)``."""

    def __init__(self, encoder: EncoderConfig, crop: CropConfig):
        super().__init__()
        if len(encoder.widths) != len(encoder.blocks):
            raise ValueError(f"encoder widths {encoder.widths} and blocks {encoder.blocks} "
                             "must have the same length (one of each per ResNet stage)")
        self.encoder_config = encoder
        self.crop_config = crop
        self.windows = CTWindows(crop.windows)
        self.backbone = ResNet(
            "basic", list(encoder.blocks), list(encoder.widths), spatial_dims=2,
            n_input_channels=crop.channels, conv1_t_size=encoder.stem_kernel,
            conv1_t_stride=encoder.stem_stride, no_max_pool=True, feed_forward=False,
        )
        self.location = LocationFeatures() if encoder.location_input else None
        self.reading_window = ReadingWindowFeatures() if encoder.window_input else None
        signature = encoder.context_signature
        self.context = ContextSignature(crop.size_mm, crop.out_px) if signature else None
        self.wide_context = (
            ContextSignature(crop.context_mm, crop.out_px, crop.context_mm / crop.size_mm)
            if signature and crop.context_mm else None)
        extra = sum(m.width for m in (self.location, self.reading_window, self.context,
                                      self.wide_context) if m is not None)
        self.projection = nn.Sequential(
            nn.Linear(encoder.widths[-1] + extra, encoder.projection_dim),
            nn.ReLU(inplace=True),
            nn.Linear(encoder.projection_dim, encoder.embedding_dim),
        )
        if encoder.centre:  # zeros (no change) until training sets it: set_centre
            self.register_buffer("mean_embedding", torch.zeros(encoder.embedding_dim))
        else:
            self.mean_embedding = None

    @property
    def embedding_dim(self) -> int:
        return self.encoder_config.embedding_dim

    def forward(self, hu: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        """``metadata`` ``(B, len(METADATA))``: each lesion's normalised location and reading
        window (:data:`embed.crops.METADATA`, NaN where unknown; None: all unknown), used as
        far as ``location_input`` and ``window_input`` say."""
        features = self.backbone(self.windows(hu))
        slices = self.crop_config.n_slices
        if metadata is None:
            metadata = torch.full((len(hu), len(METADATA)), float("nan"), device=hu.device)
        elif metadata.shape != (len(hu), len(METADATA)):
            raise ValueError(f"metadata must be (batch, {len(METADATA)}) for {METADATA}, "
                             f"not {tuple(metadata.shape)}")
        parts = [features]
        if self.context is not None:
            parts.append(self.context(hu[:, :slices]))
        if self.wide_context is not None:
            parts.append(self.wide_context(hu[:, slices:]))
        if self.location is not None:
            parts.append(self.location(metadata[:, :3]))
        if self.reading_window is not None:
            parts.append(self.reading_window(metadata[:, 3:]))
        features = torch.cat([parts[0], *(x.to(features.dtype) for x in parts[1:])], 1)
        z = F.normalize(self.projection(features).float(), dim=1)
        return z if self.mean_embedding is None else F.normalize(z - self.mean_embedding, dim=1)

    @torch.no_grad()
    def set_centre(self, embeddings: torch.Tensor) -> None:
        """Centre future embeddings on the mean of ``embeddings`` ``(n, embedding_dim)``,
        this model's uncentred output for its training lesions (needs ``centre``)."""
        if self.mean_embedding is None:
            raise ValueError("this encoder was built without centre")
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_dim or not len(embeddings):
            raise ValueError(f"centre needs (n > 0, {self.embedding_dim}) embeddings, not "
                             f"{tuple(embeddings.shape)}")
        self.mean_embedding.copy_(embeddings.float().mean(dim=0))

    def configs(self) -> dict[str, Any]:
        """The configs that rebuild this model (plain JSON values)."""
        return {
            "encoder": _plain(dataclasses.asdict(self.encoder_config)),
            "crop": _plain(dataclasses.asdict(self.crop_config)),
        }


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def save_encoder(
    model: LesionEncoder, path: str | Path, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write weights + rebuilding configs + ``metadata`` (training summary) atomically."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        **model.configs(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict (weights only: no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "the encoder checkpoint does not exist",
                         "check the path, or leave encoder_checkpoint unset to train one")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(path, f"cannot be read as an encoder checkpoint ({type(exc).__name__})",
                         "point at a lesion_encoder.pt written by the embed stage") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(path, "is not a PatientGraph lesion-encoder checkpoint "
                         f"(expected format {CHECKPOINT_FORMAT})",
                         "point at a lesion_encoder.pt written by the embed stage")
    return payload


def load_encoder(
    path: str | Path,
    *,
    expect_crop: CropConfig | None = None,
    expect_encoder: EncoderConfig | None = None,
) -> LesionEncoder:
    """Rebuild a :class:`LesionEncoder` from a checkpoint, in eval mode on the CPU.

    With ``expect_crop`` / ``expect_encoder``, a checkpoint trained with other settings is
    an :class:`InputError` naming the settings that differ.
    """
    payload = read_checkpoint(path)
    try:
        crop = crop_from_dict(payload["crop"])
        # checkpoints from before window_input and centre were options were built without
        encoder = encoder_from_dict({"window_input": False, "centre": False,
                                     **payload["encoder"]})
    except (InputError, KeyError, TypeError) as exc:
        raise InputError(path, f"its model config cannot be read ({exc})",
                         "retrain the encoder with this version (rerun the embed stage "
                         "with --force)") from None
    _check_same(path, "crop", crop, expect_crop)
    _check_same(path, "encoder", encoder, expect_encoder)
    model = LesionEncoder(encoder, crop)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise InputError(path, "its weights do not fit the network its config describes "
                         f"({str(exc).splitlines()[0]})",
                         "the file is damaged or was written by another version: retrain "
                         "the encoder (rerun the embed stage with --force)") from None
    return model.eval()


def _check_same(path: str | Path, section: str, found: Any, expected: Any | None) -> None:
    if expected is None or found == expected:
        return
    diffs = [
        f"{section}.{f.name} is {getattr(found, f.name)!r}, not {getattr(expected, f.name)!r}"
        for f in dataclasses.fields(found)
        if getattr(found, f.name) != getattr(expected, f.name)
    ]
    raise InputError(path, "the encoder checkpoint was trained with another configuration: "
                     + "; ".join(diffs),
                     f"set the embed config's {section} options to the checkpoint's values, "
                     "or retrain (leave encoder_checkpoint unset)")
