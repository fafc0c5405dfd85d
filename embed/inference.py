"""Batched lesion-encoder inference: CUDA with mixed precision when present, else CPU.

:func:`embed_crops` runs crops already in memory (the training stage has them);
:func:`embed_lesions` streams a lesion table from its images with a DataLoader whose
workers read and resample crops while the network runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embed.crops import METADATA, crop_loader, lesion_metadata
from embed.encoder import LesionEncoder
from patientgraph.errors import InputError, did_you_mean

Progress = Callable[[int, int], None]
_DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; ``"cuda"`` without CUDA is an error."""
    if isinstance(device, torch.device):
        return device
    kind = device.split(":")[0]
    if kind not in _DEVICES:
        raise InputError(None, f"unknown device {device!r}.{did_you_mean(kind, _DEVICES)}",
                         "use auto, cpu or cuda")
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "device 'cuda' was asked for but PyTorch sees no CUDA GPU",
                         "use device auto or cpu, or install a CUDA build of PyTorch")
    return torch.device(device)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on ``device``: bfloat16 (or float16) on CUDA, none on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """Mixed precision on CUDA; full float32 on the CPU (reproducible bit for bit)."""
    dtype = amp_dtype(device)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        yield


def embed_crops(
    encoder: LesionEncoder,
    hu: np.ndarray,
    metadata: np.ndarray | None = None,
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    progress: Progress | None = None,
) -> np.ndarray:
    """Embeddings ``(n, embedding_dim)`` float32 of HU crops ``(n, S, px, px)`` in memory
    and their metadata ``(n, len(METADATA))`` (:func:`embed.crops.lesion_metadata`; NaN or
    None where unknown)."""
    device = resolve_device(device)
    encoder = _prepare(encoder, device)
    if metadata is None:
        metadata = np.full((len(hu), len(METADATA)), np.nan, np.float32)
    out = np.empty((len(hu), encoder.embedding_dim), np.float32)
    with torch.inference_mode(), autocast(device):
        for start in range(0, len(hu), batch_size):
            rows = slice(start, start + batch_size)
            batch = torch.from_numpy(np.asarray(hu[rows], np.float32))
            out[rows] = _forward(encoder, batch, torch.from_numpy(metadata[rows]), device)
            if progress:
                progress(start + len(batch), len(hu))
    return out


def embed_lesions(
    encoder: LesionEncoder,
    lesions: pd.DataFrame,
    image_root: str | Path | None,
    *,
    batch_size: int = 256,
    workers: int = 2,
    device: str | torch.device = "auto",
    progress: Progress | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Read and embed every lesion of a table, with the crop settings the encoder was
    trained with.

    Returns embeddings in table order (rows of lesions whose image could not be read are
    NaN) and the problem per failed row position.
    """
    device = resolve_device(device)
    encoder = _prepare(encoder, device)
    loader = crop_loader(lesions, image_root, encoder.crop_config, batch_size=batch_size,
                         workers=workers)
    metadata = torch.from_numpy(lesion_metadata(lesions))
    out = np.full((len(lesions), encoder.embedding_dim), np.nan, np.float32)
    problems: dict[int, str] = {}
    done = 0
    with torch.inference_mode(), autocast(device):
        for positions, batch, batch_problems in loader:
            ok = torch.tensor([not p for p in batch_problems])
            if ok.any():
                rows = positions[ok]
                out[rows.numpy()] = _forward(encoder, batch[ok], metadata[rows], device)
            problems.update({int(i): p for i, p in zip(positions, batch_problems, strict=True)
                             if p})
            done += len(positions)
            if progress:
                progress(done, len(lesions))
    return out, problems


def _prepare(encoder: LesionEncoder, device: torch.device) -> LesionEncoder:
    """The encoder in eval mode on ``device``, channels-last (faster convolutions)."""
    return encoder.to(device, memory_format=torch.channels_last).eval()


def _forward(encoder: LesionEncoder, batch: torch.Tensor, metadata: torch.Tensor,
             device: torch.device) -> np.ndarray:
    z = encoder(batch.to(device, non_blocking=True), metadata.to(device, non_blocking=True))
    return z.float().cpu().numpy()
