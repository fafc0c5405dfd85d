"""Compiled pixel loops for rendering slices: painting the phantom's shapes and vessels, and
the scanner's blur and correlated noise. A slice is some fifty small shapes, and painting
each with whole-array numpy operations costs more in per-operation overhead than in
arithmetic; the blur and the noise filter share one pass. The loops are compiled once with
numba (installed with umap-learn) and cached on disk."""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def paint_ellipses(hu, labels, ellipses, allowed):
    """Paint ellipses in order: rows (cx, cy, rx, ry, angle_rad, power, value, label,
    row of ``allowed``), as :func:`paint_ellipse` takes them."""
    for k in range(ellipses.shape[0]):
        cx, cy, rx, ry, angle_rad, power, value, label, row = ellipses[k]
        paint_ellipse(hu, labels, cx, cy, rx, ry, angle_rad, power, value, int(label),
                      allowed[int(row)])


@njit(cache=True, nogil=True)
def paint_ellipse(hu, labels, cx, cy, rx, ry, angle_rad, power, value, label, allowed):
    """Blend ``value`` into ``hu`` inside a (super)ellipse with a partial-volume edge.

    Centre (cx, cy) and radii in pixels; the edge's opacity falls from 1 to 0 over one pixel
    across the boundary. Pixels whose tissue label ``allowed`` marks 0 are left alone;
    those at least half covered take ``label`` (none if negative).
    """
    n_rows, n_cols = hu.shape
    reach_x = reach_y = max(rx, ry) + 2.0
    if angle_rad == 0.0:
        reach_x, reach_y = rx + 2.0, ry + 2.0
    c0, c1 = max(int(cx - reach_x), 0), min(int(cx + reach_x) + 2, n_cols)
    r0, r1 = max(int(cy - reach_y), 0), min(int(cy + reach_y) + 2, n_rows)
    cos_t, sin_t = math.cos(angle_rad), math.sin(angle_rad)
    m = min(rx, ry)
    # Opacity is 1 for rho <= inner and 0 for rho >= outer: compare rho ** power with those
    # and take the root only on the edge. Unrotated, rho ** power is a sum of row and column
    # terms, computed once each.
    inner = max(1.0 - 0.5 / m, 0.0) ** power
    outer = (1.0 + 0.5 / m) ** power
    col_term = np.empty(max(c1 - c0, 0))
    for j in range(c0, c1):
        col_term[j - c0] = _pow(abs((j - cx) / rx), power)
    for i in range(r0, r1):
        y = i - cy
        row_term = _pow(abs(y / ry), power)
        if angle_rad == 0.0 and row_term >= outer:
            continue
        for j in range(c0, c1):
            if angle_rad == 0.0:
                q = col_term[j - c0] + row_term
            else:
                x = j - cx
                q = (_pow(abs((x * cos_t + y * sin_t) / rx), power)
                     + _pow(abs((y * cos_t - x * sin_t) / ry), power))
            if q >= outer:
                continue
            if q <= inner:
                alpha = 1.0
            else:
                rho = math.sqrt(q) if power == 2.0 else q ** (1.0 / power)
                alpha = min(max(0.5 - (rho - 1.0) * m, 0.0), 1.0)
            alpha *= allowed[labels[i, j]]
            if alpha <= 0.0:
                continue
            hu[i, j] += (value - hu[i, j]) * alpha
            if label >= 0 and alpha >= 0.5:
                labels[i, j] = label


@njit(cache=True, nogil=True)
def paint_tubes(hu, labels, cx, cy, rx, ry, angle_rad, value, allowed):
    """Blend ``value`` into ``hu`` inside rotated ellipses (vessel cross-sections); where
    they overlap, the most opaque one sets the pixel. Opacity as in :func:`paint_ellipse`,
    with the edge scaled by the short radius ``ry``."""
    n_rows, n_cols = hu.shape
    cover = np.zeros((n_rows, n_cols), np.float32)
    for t in range(len(cx)):
        reach = int(math.ceil(rx[t])) + 2
        ci, cj = int(round(cy[t])), int(round(cx[t]))
        cos_t, sin_t = math.cos(angle_rad[t]), math.sin(angle_rad[t])
        for i in range(max(ci - reach, 0), min(ci + reach + 1, n_rows)):
            for j in range(max(cj - reach, 0), min(cj + reach + 1, n_cols)):
                x, y = j - cx[t], i - cy[t]
                along, across = x * cos_t + y * sin_t, y * cos_t - x * sin_t
                rho = math.sqrt((along / rx[t]) ** 2 + (across / ry[t]) ** 2)
                alpha = min(max(0.5 - (rho - 1.0) * ry[t], 0.0), 1.0)
                alpha *= allowed[labels[i, j]]
                if alpha > cover[i, j]:
                    cover[i, j] = alpha
    for i in range(n_rows):
        for j in range(n_cols):
            if cover[i, j] > 0.0:
                hu[i, j] += (value - hu[i, j]) * cover[i, j]


@njit(cache=True, inline="always")
def _pow(x, power):
    return x * x if power == 2.0 else x**power


def gaussian_weights(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The normalised taps of ``scipy.ndimage.gaussian_filter`` (radius
    ``int(truncate * sigma + 0.5)``), float32."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    return (weights / weights.sum()).astype(np.float32)


@njit(cache=True, nogil=True)
def blur_add_noise(hu, w_hu, white, w_noise, noise_scale, lo, hi):
    """``blur(hu, w_hu) + noise_scale * blur(white, w_noise)``, clipped to [lo, hi]: the
    scanner's blur and correlated noise in one compiled pass per axis (mirrored edges, as
    scipy's mode "reflect")."""
    n_rows, n_cols = hu.shape
    a = _rows_pass(_pad_mirror(hu, len(w_hu) // 2), w_hu)
    b = _rows_pass(_pad_mirror(white, len(w_noise) // 2), w_noise)
    out = np.empty((n_rows, n_cols), np.float32)
    acc = np.empty(n_cols, np.float32)
    noise = np.empty(n_cols, np.float32)
    for i in range(n_rows):
        acc[:] = 0.0
        noise[:] = 0.0
        for t in range(len(w_hu)):
            w = w_hu[t]
            for j in range(n_cols):
                acc[j] += w * a[i + t, j]
        for t in range(len(w_noise)):
            w = w_noise[t]
            for j in range(n_cols):
                noise[j] += w * b[i + t, j]
        for j in range(n_cols):
            out[i, j] = min(max(acc[j] + noise_scale * noise[j], lo), hi)
    return out


@njit(cache=True, nogil=True)
def _pad_mirror(image, r):
    n_rows, n_cols = image.shape
    out = np.empty((n_rows + 2 * r, n_cols + 2 * r), np.float32)
    for i in range(n_rows + 2 * r):
        src = _mirror(i - r, n_rows)
        for j in range(n_cols + 2 * r):
            out[i, j] = image[src, _mirror(j - r, n_cols)]
    return out


@njit(cache=True, nogil=True)
def _rows_pass(padded, weights):
    """Correlate the rows of a padded image with ``weights``: all rows, the inner columns."""
    k = len(weights)
    n_cols = padded.shape[1] - k + 1
    out = np.zeros((padded.shape[0], n_cols), np.float32)
    for i in range(padded.shape[0]):
        for t in range(k):
            w = weights[t]
            for j in range(n_cols):
                out[i, j] += w * padded[i, j + t]
    return out


@njit(cache=True, inline="always")
def _mirror(k, n):
    """Index k reflected into 0..n-1 about the edges (d c b a | a b c d | d c b a)."""
    while k < 0 or k >= n:
        k = -k - 1 if k < 0 else 2 * n - k - 1
    return k
