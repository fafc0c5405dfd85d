"""Lesion crops for the encoder: Hounsfield-unit patches read from the images in parallel.

A crop is ``(depth, out_px, out_px)`` HU at a fixed physical size around the lesion
centre (:func:`patientgraph.imaging.lesion_crop`): the neighbouring slices, then (with
``context_mm``) a wider view of the key slice. Crops stay in HU until the network's
first layer (:class:`CTWindows`) maps them to CT-window channels, so augmentations can act
on HU and a checkpoint carries its own windows. A lesion whose image cannot be read is
reported, not fatal (unless asked): :class:`CropSet` keeps the reason per lesion.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from embed.config import CropConfig
from patientgraph.atomic import atomic_path, make_private_dirs
from patientgraph.errors import InputError, did_you_mean
from patientgraph.imaging import WINDOWS, lesion_crop
from patientgraph.workspace import fingerprint

Progress = Callable[[int, int], None]

PAD_HU = -1024.0
"""What lies outside the image (air)."""


LOCATION = ("loc_x", "loc_y", "loc_z")


READING_WINDOW = ("window_lo", "window_hi")
METADATA = (*LOCATION, *READING_WINDOW)
"""What the encoder sees of a lesion besides its pixels: the normalised location and the
display window the reader marked it in (DeepLesion's DICOM_windows)."""


def lesion_locations(lesions: pd.DataFrame) -> np.ndarray:
    """Normalised locations ``(n, 3)`` float32, NaN where the table has none."""
    return _columns(lesions, LOCATION)


def lesion_metadata(lesions: pd.DataFrame) -> np.ndarray:
    """The encoder's non-image inputs ``(n, len(METADATA))`` float32, NaN where unknown."""
    return _columns(lesions, METADATA)


def _columns(lesions: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    out = np.full((len(lesions), len(names)), np.nan, np.float32)
    for j, name in enumerate(names):
        if name in lesions.columns:
            out[:, j] = lesions[name].to_numpy(dtype=np.float32, na_value=np.nan)
    return out


class LesionCrops(Dataset):
    """HU crops of the rows of a lesion table, read on demand.

    Item ``i`` is ``(i, crop, problem)``: a float32 tensor ``(depth, out_px, out_px)`` and
    an empty string, or an air-filled crop and the reason the image could not be read.
    """

    def __init__(self, lesions: pd.DataFrame, image_root: str | Path | None, crop: CropConfig):
        self.rows = lesions.reset_index(drop=True).to_dict("records")
        self.image_root = image_root
        self.crop = crop

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        c = self.crop
        try:
            hu = lesion_crop(self.rows[i], self.image_root, size_mm=c.size_mm, out_px=c.out_px,
                             n_slices=c.n_slices, slice_step_mm=c.slice_step_mm, pad_hu=PAD_HU)
            if c.context_mm:
                wide = lesion_crop(self.rows[i], self.image_root, size_mm=c.context_mm,
                                   out_px=c.out_px, n_slices=1, pad_hu=PAD_HU)
                hu = np.concatenate([hu, wide])
        except InputError as exc:
            hu = np.full((c.depth, c.out_px, c.out_px), PAD_HU, np.float32)
            return i, torch.from_numpy(hu), exc.problem  # no image path: it names the patient
        return i, torch.from_numpy(hu), ""


def crop_loader(
    lesions: pd.DataFrame,
    image_root: str | Path | None,
    crop: CropConfig,
    *,
    batch_size: int = 64,
    workers: int = 2,
) -> DataLoader:
    """Batches of ``(positions, crops, problems)``, read by ``workers`` processes.

    Lesions are read grouped by series (a worker keeps its last few series open, and
    DeepLesion puts several lesions on one slice); ``positions`` index the rows of
    ``lesions`` as given.
    """
    order = series_order(lesions)
    dataset = LesionCrops(lesions.iloc[order], image_root, crop)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=_Collate(order),
    )


def series_order(lesions: pd.DataFrame) -> np.ndarray:
    """Row positions of ``lesions`` sorted by series, then key slice."""
    keys = pd.DataFrame({"series": lesions["series_ref"].astype(str).to_numpy(),
                         "slice": lesions["key_slice"].to_numpy()})
    return keys.sort_values(["series", "slice"], kind="stable").index.to_numpy()


class _Collate:
    """Stack a batch and map its dataset positions back to rows of the caller's table."""

    def __init__(self, order: np.ndarray):
        self.order = torch.from_numpy(order)

    def __call__(self, items):
        positions, crops, problems = zip(*items, strict=True)
        return self.order[list(positions)], torch.stack(crops), list(problems)


@dataclass
class CropSet:
    """All crops of a lesion table in memory (float16 HU) and the lesions that failed."""

    hu: np.ndarray
    problems: dict[int, str]

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the lesions whose crop was read."""
        mask = np.ones(len(self.hu), bool)
        mask[list(self.problems)] = False
        return mask

    def failures(self, lesions: pd.DataFrame) -> pd.DataFrame:
        """The failed lesions: lesion_id, source_row, problem (for the failure report)."""
        rows = sorted(self.problems)
        table = lesions.reset_index(drop=True)
        return pd.DataFrame({
            "lesion_id": table.loc[rows, "lesion_id"].astype(str).to_numpy(),
            "source_row": table.loc[rows, "source_row"].to_numpy(dtype="int64"),
            "problem": [self.problems[r] for r in rows],
        })


def read_crops(
    lesions: pd.DataFrame,
    image_root: str | Path | None,
    crop: CropConfig,
    *,
    workers: int = 2,
    progress: Progress | None = None,
) -> CropSet:
    """Read every lesion's crop (float16 HU, in table order) with ``workers`` processes."""
    n = len(lesions)
    hu = np.empty((n, crop.depth, crop.out_px, crop.out_px), np.float16)
    problems: dict[int, str] = {}
    done = 0
    for positions, batch, batch_problems in crop_loader(lesions, image_root, crop,
                                                        workers=workers):
        hu[positions.numpy()] = batch.numpy().astype(np.float16)
        problems.update({int(p): m for p, m in zip(positions, batch_problems, strict=True) if m})
        done += len(positions)
        if progress:
            progress(done, n)
    return CropSet(hu, problems)


CACHE_FORMAT = 1
"""Bumped when a crop file's layout or what :func:`lesion_crop` computes changes."""
CACHE_KEEP = 2
"""Crop files kept per cache folder (the newest used): about 1 GB each at DeepLesion scale
with the default crop, so the current crop settings and one other."""


def cached_crops(
    lesions: pd.DataFrame,
    image_root: str | Path | None,
    crop: CropConfig,
    folder: str | Path,
    inputs: Mapping[str, str],
    *,
    workers: int = 2,
    progress: Progress | None = None,
) -> tuple[CropSet, bool]:
    """:func:`read_crops`, kept in ``folder`` for the next run with the same crop settings,
    lesion table and images: reading and resampling the slices is most of an embed run
    with a given encoder, and trainings with other options, reruns and later rounds need
    the same crops. ``inputs`` identify the lesion table and the images (the stage's
    fingerprints of them: the images' is the ingest's hash of every image file).

    Returns the crops and whether they came from the cache. A file that does not match
    what it should hold (other lesion count or shape, unreadable) is read afresh and
    replaced. Files are written atomically, 0600, in a 0700 folder; the :data:`CACHE_KEEP`
    most recently used are kept.
    """
    folder = make_private_dirs(folder)
    key = fingerprint({"format": CACHE_FORMAT, "crop": dataclasses.asdict(crop),
                       "image_root": str(image_root), "rows": len(lesions)}, dict(inputs))
    path = Path(folder) / f"crops-{key[:20]}.npz"
    shape = (len(lesions), crop.depth, crop.out_px, crop.out_px)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as npz:
                hu, rows, messages = npz["hu"], npz["problem_rows"], npz["problems"]
            if hu.shape == shape and hu.dtype == np.float16 and len(rows) == len(messages):
                os.utime(path)  # most recently used
                if progress:
                    progress(len(lesions), len(lesions))
                return CropSet(hu, {int(r): str(m) for r, m in
                                    zip(rows, messages, strict=True)}), True
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # damaged or of another layout: read afresh and replace it below
    crops = read_crops(lesions, image_root, crop, workers=workers, progress=progress)
    rows = np.array(sorted(crops.problems), np.int64)
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, hu=crops.hu, problem_rows=rows,
                 problems=np.array([crops.problems[r] for r in rows], dtype=str))
    for old in sorted(Path(folder).glob("crops-*.npz"), key=lambda f: f.stat().st_mtime,
                      reverse=True)[CACHE_KEEP:]:
        old.unlink(missing_ok=True)
    return crops, False


def window_bounds(windows: Sequence[str | tuple[float, float]]) -> np.ndarray:
    """``(n_windows, 2)`` (lo, hi) HU of named (:data:`patientgraph.imaging.WINDOWS`) or
    explicit windows."""
    bounds = []
    for window in windows:
        if isinstance(window, str):
            if window not in WINDOWS:
                raise ValueError(f"unknown CT window {window!r} (known: {', '.join(WINDOWS)})."
                                 f"{did_you_mean(window, WINDOWS)}")
            bounds.append(WINDOWS[window])
        else:
            lo, hi = (float(v) for v in window)
            if not lo < hi:
                raise ValueError(f"a CT window needs lo < hi, got ({lo}, {hi})")
            bounds.append((lo, hi))
    return np.asarray(bounds, dtype=np.float32)


class CTWindows(nn.Module):
    """HU ``(B, S, H, W)`` to window channels ``(B, S * n_windows, H, W)`` in [0, 1].

    Channel ``s * n_windows + w`` is slice ``s`` under window ``w``, as
    :func:`patientgraph.imaging.apply_windows` maps each slice.
    """

    def __init__(self, windows: Sequence[str | tuple[float, float]]):
        super().__init__()
        bounds = torch.from_numpy(window_bounds(windows))
        self.register_buffer("lo", bounds[:, 0], persistent=False)
        self.register_buffer("width", bounds[:, 1] - bounds[:, 0], persistent=False)

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        b, s, h, w = hu.shape
        lo, width = self.lo.view(1, 1, -1, 1, 1), self.width.view(1, 1, -1, 1, 1)
        x = ((hu.float().unsqueeze(2) - lo) / width).clamp_(0.0, 1.0)
        return x.reshape(b, s * len(self.lo), h, w)
