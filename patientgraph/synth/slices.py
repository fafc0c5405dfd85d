"""Rendering one axial slice of a study: anatomy, tissue mottle, lesions, blur and CT
noise."""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import ndtri

from patientgraph.synth.anatomy import _Body, _Canvas, _paint_anatomy
from patientgraph.synth.cohort import _Study
from patientgraph.synth.lesions import _paint_lesion
from patientgraph.synth.params import _NOISE, AIR, _rng
from patientgraph.synth.raster import blur_add_noise, gaussian_weights


def _render_slice(seed: int, pid: int, body: _Body, study: _Study, k: int,
                  mottle: np.ndarray) -> np.ndarray:
    """One axial slice (HU, float32) of a study: anatomy, tissue mottle, lesions, blur, noise."""
    frame = study.frame
    z_mm = (k - 1) * study.interval
    level = body.level(z_mm / body.length_mm)
    cv = _Canvas(frame, body, level)
    _paint_anatomy(cv, body, level)
    hu = cv.hu
    hu += mottle * (cv.label != AIR)
    for view in study.views:
        if abs(z_mm - view.z_mm) < view.z_semi_mm:
            _paint_lesion(cv, view, z_mm - view.z_mm)
    white = _white_noise(_rng(seed, pid, _NOISE, study.index, k), hu.shape[0])
    return blur_add_noise(hu, _BLUR_TAPS, white, _NOISE_TAPS,
                          np.float32(study.noise_sd * _noise_gain()), -1024.0, 3071.0)


def _mottle(rng, size: int, grain_px: float) -> np.ndarray:
    """Low-frequency tissue mottle: coarse white noise, bilinearly upsampled."""
    coarse = int(math.ceil(size / grain_px)) + 1
    noise = rng.standard_normal((coarse, coarse)).astype(np.float32)
    at = np.linspace(0, coarse - 1, size, dtype=np.float32)
    lo = np.minimum(at.astype(int), coarse - 2)
    w = at - lo
    rows = noise[lo] * (1 - w)[:, None] + noise[lo + 1] * w[:, None]
    return rows[:, lo] * (1 - w) + rows[:, lo + 1] * w


_NOISE_SIGMA_PX = 0.7
"""CT noise is slightly correlated between neighbouring pixels."""


_BLUR_TAPS = gaussian_weights(0.5)
"""The scanner's blur of the painted slice."""
_NOISE_TAPS = gaussian_weights(_NOISE_SIGMA_PX, truncate=3.0)


def _white_noise(rng, size: int) -> np.ndarray:
    """Unit-variance white noise, float32, before the filter that correlates it.

    Drawn as 16-bit integers mapped through the normal quantile function
    (:func:`_normal_quantiles`): several times cheaper than exact normal draws, and after the
    filter indistinguishable from them.
    """
    return _normal_quantiles()[rng.integers(0, 1 << 16, (size, size), dtype=np.uint16)]


@functools.lru_cache(maxsize=1)
def _normal_quantiles() -> np.ndarray:
    """The standard normal at the midpoints of 2**16 equal-probability bins, scaled to unit
    variance (float32); the tails are cut at 4.3 sd."""
    table = ndtri((np.arange(1 << 16) + 0.5) / (1 << 16))
    return (table / table.std()).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _noise_gain() -> float:
    """1 / the standard deviation of filtered unit white noise (from the filter's impulse)."""
    impulse = np.zeros((15, 15))
    impulse[7, 7] = 1
    return float(1 / np.sqrt((gaussian_filter(impulse, _NOISE_SIGMA_PX, truncate=3.0) ** 2).sum()))
