"""Lesions: their type-dependent look, shape, size and site, and their painting into a
slice."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

from patientgraph.synth.anatomy import _Body, _Canvas, _Frame, _label_set, _slice_labels
from patientgraph.synth.params import (
    _BODY,
    AIR,
    BONE,
    COMPANION_P,
    GROWTH_LESION_SD,
    LOOKS,
    PRIMARY_SHARE,
    SITES,
    SIZE_LOG_SD,
    SIZE_MEDIAN_MM,
    SIZE_RANGE_MM,
    TYPE_PRIOR,
    TYPE_SITES,
    _rng,
)


@dataclass
class _Lesion:
    """One physical lesion, followed across a patient's studies."""

    index: int
    true_type: int
    site: str
    u: float
    v: float
    z: float
    long0_mm: float
    growth: float
    angle: float
    aspect: float
    z_ratio: float
    harmonics: np.ndarray
    spikes: np.ndarray
    look: dict
    companion: int | None = None
    dynamics: dict = field(default_factory=dict)
    """The true trajectory (:mod:`~patientgraph.synth.dynamics`), as truth.json reports it."""
    recist_unit: np.ndarray = field(init=False)
    long_unit: float = field(init=False)
    short_unit: float = field(init=False)

    def __post_init__(self):
        # RECIST axes of the shape at unit scale; a study scales them to the lesion's size.
        self.recist_unit, self.long_unit, self.short_unit = _recist(self.outline())

    def radius(self, theta: np.ndarray, spikes: bool = True) -> np.ndarray:
        """Boundary radius at polar angle theta, in units of the lesion's ellipse."""
        k, amp, phase = self.harmonics.T
        r = 1 + (amp * np.cos(k * theta[..., None] + phase)).sum(-1)
        if spikes and len(self.spikes):
            at, height, width = self.spikes.T
            d = (theta[..., None] - at + np.pi) % (2 * np.pi) - np.pi  # wrapped to [-pi, pi)
            r = r + (height * np.exp(-((d / width) ** 2))).sum(-1)
        return r

    def outline(self, n: int = 128) -> np.ndarray:
        """Boundary points (x, y) in the unit frame (long axis of the ellipse along x)."""
        theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
        r = self.radius(theta, spikes=False)
        return np.column_stack([r * np.cos(theta), self.aspect * r * np.sin(theta)])


def _recist(points: np.ndarray) -> tuple[np.ndarray, float, float]:
    """RECIST axes of a closed outline: the longest chord and the longest chord
    perpendicular to it. Returns the 4 end points (long, long, short, short) and both lengths.
    """
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    i, j = np.unravel_index(np.argmax(d), d.shape)
    p, q = points[i], points[j]
    axis = (q - p) / d[i, j]
    normal = np.array([-axis[1], axis[0]])
    along, across = (points - p) @ axis, (points - p) @ normal
    a0, a1 = along, np.roll(along, -1)
    c0, c1 = across, np.roll(across, -1)
    # Chords across the long axis at 49 positions t along it, all at once: where each
    # outline segment crosses t, and the widest span of crossings.
    t = (np.linspace(0.02, 0.98, 49) * d[i, j])[:, None]
    hit = ((a0 - t) * (a1 - t) <= 0) & (a0 != a1)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = c0 + (t - a0) * (c1 - c0) / (a1 - a0)
    low = np.where(hit, c, np.inf).min(1)
    high = np.where(hit, c, -np.inf).max(1)
    width = np.where(hit.sum(1) >= 2, high - low, -np.inf)
    k = int(np.argmax(width))
    at = p + t[k, 0] * axis
    ends = (at + low[k] * normal, at + high[k] * normal)
    return np.array([p, q, ends[0], ends[1]]), float(d[i, j]), float(width[k])


def _sample_look(rng: np.random.Generator, true_type: int, liver_hu: float) -> dict:
    """Draw one lesion's appearance from its type's mixture of profiles."""
    variants = LOOKS[true_type]
    w = np.array([v["weight"] for v in variants])
    prof = variants[rng.choice(len(variants), p=w / w.sum())]
    hu = rng.normal(*prof["hu"]) + (liver_hu if prof["relative"] else 0.0)
    necrotic = rng.random() < prof["necrosis"]
    cavity = rng.random() < prof["cavitation"]
    n_calc = rng.integers(1, 5) if rng.random() < prof["calcification"] else 0
    calcs = np.column_stack([
        rng.uniform(-0.5, 0.5, n_calc), rng.uniform(-0.5, 0.5, n_calc),
        rng.uniform(0.06, 0.15, n_calc), rng.uniform(300, 700, n_calc),
    ])
    return {
        "hu": float(hu),
        "texture": float(rng.uniform(*prof["texture"])),
        "grain_mm": float(rng.uniform(*prof["grain"])),
        "margin_mm": float(rng.uniform(*prof["margin"])),
        "rim_hu": float(rng.uniform(*prof["rim_hu"])) if rng.random() < prof["rim"] else 0.0,
        "core": float(rng.uniform(0.3, 0.6)) if (necrotic or cavity) else 0.0,
        "core_hu": -900.0 if cavity else float(rng.uniform(5, 25)),
        "calcs": calcs,
        "aspect": float(rng.uniform(*prof["aspect"])),
        "lobulation": float(rng.uniform(*prof["lobulation"])),
        "spiculated": bool(rng.random() < prof["spiculation"]),
        "confined": prof["confined"],
    }


def _sample_shape(rng: np.random.Generator, look: dict) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(2, 6, dtype=float)
    amp = look["lobulation"] * rng.uniform(0, 1, 4) / (k - 1)
    harmonics = np.column_stack([k, amp, rng.uniform(0, 2 * np.pi, 4)])
    n = int(rng.integers(6, 15)) if look["spiculated"] else 0
    spikes = np.column_stack([
        rng.uniform(0, 2 * np.pi, n), rng.uniform(0.25, 0.7, n), rng.uniform(0.03, 0.07, n),
    ])
    return harmonics, spikes


_REGIONS = {
    "mediastinal": lambda u, v: (np.abs(u) < 0.35) & (v < 0.45),
    "central": lambda u, v: np.abs(u) < 0.4,
    "hilar": lambda u, v: (np.abs(u) > 0.12) & (np.abs(u) < 0.45) & (np.abs(v) < 0.4),
    "lateral": lambda u, v: np.abs(u) > 0.68,
    "posterolateral": lambda u, v: (np.abs(u) > 0.12) & (v > 0.1),
    "right": lambda u, v: u < -0.05,
}
"""In-plane restrictions of SITES, in body units."""


def _place(rng, body: _Body, frame: _Frame, site: str, depth_mm: float,
           z: float | None = None) -> tuple[float, float, float] | None:
    """Sample (u, v, z) for a lesion centre at a site, at least ``depth_mm`` under the skin.

    Site z ranges are anatomical levels; the z returned is the scan position. With ``z``
    given, only that position is tried. None if the site is absent there.
    """
    labels, (z0, z1), region = SITES[site]
    small = frame.resized(128)
    for _ in range(1 if z is not None else 6):
        level = float(rng.uniform(z0, z1)) if z is None else body.level(z)
        zz = body.position(level)
        if not (z0 <= level <= z1 and 0.01 <= zz <= 0.99):
            continue
        lab = _slice_labels(body, small, level)
        a, b = body.semi_axes(level)
        rows, cols = np.indices(lab.shape)
        u = (cols - small.cx) * small.spacing / a
        v = (rows - small.cy) * small.spacing / b
        mask = np.isin(lab, labels)
        mask &= distance_transform_edt(lab != AIR) * small.spacing >= depth_mm
        if region is not None:
            mask &= _REGIONS[region](u, v)
        idx = np.flatnonzero(mask)
        if len(idx):
            pick = idx[rng.integers(len(idx))]
            jitter = rng.uniform(-0.5, 0.5, 2) * small.spacing
            return (float(u.flat[pick] + jitter[0] / a), float(v.flat[pick] + jitter[1] / b), zz)
    return None


def _sample_lesions(rng, body: _Body, frame: _Frame, primary: int, n: int,
                    growth: float) -> list[_Lesion]:
    """Draw a patient's physical lesions: type, place, size, growth and appearance.

    A lesion may be a companion of an earlier one: same level, so the two share key slices.
    """
    types = list(TYPE_PRIOR)
    prior = np.array(list(TYPE_PRIOR.values()))
    lesions: list[_Lesion] = []
    while len(lesions) < n:
        t = primary if rng.random() < PRIMARY_SHARE else int(rng.choice(types, p=prior))
        sites = TYPE_SITES[t]
        site = str(rng.choice(list(sites), p=np.array(list(sites.values()))))
        long0 = float(np.clip(rng.lognormal(math.log(SIZE_MEDIAN_MM[t]), SIZE_LOG_SD),
                              *SIZE_RANGE_MM))
        depth = min(0.4 * long0, 15.0)
        companion, where = None, None
        if lesions and rng.random() < COMPANION_P:
            companion = int(rng.integers(len(lesions)))
            where = _place(rng, body, frame, site, depth, z=lesions[companion].z)
            companion = None if where is None else companion
        where = where or _place(rng, body, frame, site, depth)
        if where is None:
            continue
        look = _sample_look(rng, t, body.liver_hu)
        harmonics, spikes = _sample_shape(rng, look)
        lesions.append(_Lesion(
            index=len(lesions), true_type=t, site=site, u=where[0], v=where[1], z=where[2],
            long0_mm=long0, growth=float(growth + rng.normal(0, GROWTH_LESION_SD)),
            angle=float(rng.uniform(0, 180)), aspect=look["aspect"],
            z_ratio=float(rng.uniform(0.6, 1.0)), harmonics=harmonics, spikes=spikes,
            look=look, companion=companion,
        ))
    return lesions


@dataclass
class _LesionView:
    """A physical lesion as it appears in one study: pixel centre, size and z extent."""

    lesion: _Lesion
    cx: float
    cy: float
    z_mm: float
    scale_px: float
    z_semi_mm: float
    texture_key: tuple[int, ...]


def _paint_lesion(cv: _Canvas, view: _LesionView, dz_mm: float) -> None:
    """Blend the lesion's cross-section at distance dz_mm from its centre into the slice.

    Nothing is painted outside the body; a lesion confined to bone (sclerotic) only in bone.
    """
    hu, spacing = cv.hu, cv.sp
    les, look = view.lesion, view.lesion.look
    s = math.sqrt(max(0.0, 1 - (dz_mm / view.z_semi_mm) ** 2))
    if s < 0.15:
        return
    spike = les.spikes[:, 1].max() if len(les.spikes) else 0.0
    margin_px = max(look["margin_mm"] / spacing, 0.35)
    reach = int(math.ceil(view.scale_px * (1 + np.abs(les.harmonics[:, 1]).sum() + spike)
                          + 3 * margin_px + 2))
    n = hu.shape[0]
    ci, cj = int(round(view.cy)), int(round(view.cx))
    r0, r1 = max(ci - reach, 0), min(ci + reach + 1, n)
    c0, c1 = max(cj - reach, 0), min(cj + reach + 1, n)
    if r0 >= r1 or c0 >= c1:
        return
    dy = np.arange(r0, r1)[:, None] - view.cy
    dx = np.arange(c0, c1)[None, :] - view.cx
    t = math.radians(les.angle)
    x = (dx * math.cos(t) + dy * math.sin(t)) / (view.scale_px * s)
    y = (dy * math.cos(t) - dx * math.sin(t)) / (view.scale_px * s * les.aspect)
    d = np.hypot(x, y) / les.radius(np.arctan2(y, x))
    alpha = 0.5 * (1 - np.tanh((d - 1) * view.scale_px * s / margin_px))
    tex = _texture(view, dz_mm, 2 * reach + 1, spacing)
    tex = tex[r0 - ci + reach:r1 - ci + reach, c0 - cj + reach:c1 - cj + reach]
    value = look["hu"] + look["texture"] * tex
    if look["rim_hu"]:
        value = value + look["rim_hu"] * np.exp(-(((d - 0.85) / 0.1) ** 2))
    if look["core"]:
        core = 0.5 * (1 - np.tanh((d - look["core"]) / 0.06))
        value = value + (look["core_hu"] - value) * core
    for cx, cy, r, extra in look["calcs"]:
        value = value + extra * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    alpha *= _label_set((BONE,) if look["confined"] else _BODY)[cv.label[r0:r1, c0:c1]]
    patch = hu[r0:r1, c0:c1]
    patch += (value - patch) * alpha


def _texture(view: _LesionView, dz_mm: float, size: int, spacing: float) -> np.ndarray:
    """Smooth unit-variance noise on the lesion's patch, coherent between nearby slices."""
    grain = view.lesion.look["grain_mm"]
    near, far = _texture_fields(view.texture_key, size, max(grain / spacing, 0.6))
    phi = min(abs(dz_mm) / (4 * grain), 1.0) * math.pi / 2
    noise = math.cos(phi) * near + math.sin(phi) * far
    return noise / (noise.std() + 1e-9)


@functools.lru_cache(maxsize=16)
def _texture_fields(key: tuple[int, ...], size: int, sigma: float) -> tuple[np.ndarray, ...]:
    """The two smooth noise fields a lesion's texture blends, drawn from its own stream; kept
    for the lesion's neighbouring slices, which blend the same two."""
    rng = _rng(*key)
    return tuple(gaussian_filter(rng.standard_normal((size, size)), sigma) for _ in range(2))
