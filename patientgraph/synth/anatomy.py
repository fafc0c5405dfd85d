"""The body phantom: one patient's anatomy along the body and the painting of its
tissues (HU and tissue labels) into an axial slice."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from patientgraph.synth.params import (
    _INTERIOR,
    BLADDER,
    BONE,
    BOWEL,
    CAVITY,
    FAT,
    FOV_MM,
    HEART,
    KIDNEY,
    LIVER,
    LUNG,
    MEDIAST,
    MUSCLE,
    OTHER,
    PANCREAS,
    SPLEEN,
)
from patientgraph.synth.raster import paint_ellipses, paint_tubes

# Body shape along z (0 = lower neck, 1 = pelvic floor): core semi-axes (mm) and fat profile.
_Z_KNOTS = (0.0, 0.12, 0.30, 0.45, 0.60, 0.75, 0.90, 1.0)
_CORE_A = (148, 158, 156, 150, 142, 146, 156, 158)
_CORE_B = (92, 102, 108, 106, 100, 96, 98, 94)
_FAT_PROFILE = (0.5, 0.6, 0.7, 0.9, 1.1, 1.2, 1.2, 1.0)



def _prof(z: float, z0: float, z1: float) -> float:
    """Ellipsoid cross-section factor of an organ spanning [z0, z1] at z (0 outside)."""
    t = (2 * z - z0 - z1) / max(z1 - z0, 1e-6)
    return math.sqrt(1 - t * t) if abs(t) < 1 else 0.0



@dataclass
class _Body:
    """One patient's anatomy: sizes, organ levels and the 3-D vessel and bowel objects.

    In-plane positions are in body units (u, v): the trunk's core ellipse (inside the
    subcutaneous fat) has semi-axes 1; u grows to the image right (patient left), v posterior.
    Organs are laid out along an anatomical level; a scan position z (what DL_info reports)
    maps to the level ``z_shift + z * z_scale``, so scans cover the body a little differently.
    """

    length_mm: float
    z_shift: float
    z_scale: float
    scale: float
    fat_mm: float
    dia_r: float
    dia_l: float
    liver_end: float
    kidney_z: float
    bladder: float
    liver_hu: float
    spleen_hu: float
    rib_phase: float
    shift: dict[str, tuple[float, float]]
    lung_vessels: np.ndarray
    liver_vessels: np.ndarray
    bowel: np.ndarray

    def level(self, z: float) -> float:
        """Anatomical level of scan position z."""
        return self.z_shift + z * self.z_scale

    def position(self, level: float) -> float:
        """Scan position of an anatomical level."""
        return (level - self.z_shift) / self.z_scale

    def semi_axes(self, z: float) -> tuple[float, float]:
        """Core semi-axes (mm) at z."""
        return (float(np.interp(z, _Z_KNOTS, _CORE_A)) * self.scale,
                float(np.interp(z, _Z_KNOTS, _CORE_B)) * self.scale)

    def fat(self, z: float) -> float:
        return float(np.interp(z, _Z_KNOTS, _FAT_PROFILE)) * self.fat_mm

    def max_width_mm(self) -> float:
        return max(2 * (self.semi_axes(z)[0] + self.fat(z)) for z in _Z_KNOTS)


def _tubes(rng, n, u_range, v_range, z_range, hub, radius) -> np.ndarray:
    """Vessel segments radiating from ``hub`` (u, v, z): rows u, v, z, du/dz, dv/dz, half, r."""
    u = rng.uniform(*u_range, n)
    v = rng.uniform(*v_range, n)
    z = rng.uniform(*z_range, n)
    du, dv, dz = u - hub[0], v - hub[1], z - hub[2]
    dist = np.sqrt(du**2 + dv**2 + (3 * dz) ** 2)
    slope = rng.uniform(1.0, 6.0, n)
    half = rng.uniform(0.01, 0.04, n)
    r_mm = np.clip(radius * (1.1 - dist), 0.7, radius)
    return np.column_stack([u, v, z, du * slope, dv * slope, half, r_mm])


def _sample_body(rng: np.random.Generator, bmi: float, male: bool) -> _Body:
    """Draw a patient's anatomy; subcutaneous fat follows the BMI."""
    lung_vessels = np.vstack([
        _tubes(rng, 260, sorted((0.12 * s, 0.85 * s)), (-0.7, 0.7), (0.02, 0.45),
               (0.18 * s, 0.0, 0.22), 3.5)
        for s in (-1, 1)
    ])
    liver_vessels = _tubes(rng, 24, (-0.8, -0.1), (-0.6, 0.5), (0.34, 0.6), (-0.25, 0.1, 0.47),
                           5.0)
    n_bowel = 150
    bowel = np.column_stack([
        rng.uniform(-0.75, 0.75, n_bowel), rng.uniform(-0.75, 0.35, n_bowel),
        rng.uniform(0.5, 0.95, n_bowel), rng.uniform(6, 14, n_bowel),
        rng.choice(3, n_bowel, p=[0.76, 0.12, 0.12]),
    ])
    organs = ("liver", "spleen", "kidney", "heart", "stomach", "bladder")
    dia_r = rng.uniform(0.38, 0.44)
    body = _Body(
        length_mm=rng.uniform(560, 700) * (1.04 if male else 0.96),
        z_shift=rng.normal(0, 0.05), z_scale=rng.uniform(0.9, 1.1),
        scale=rng.uniform(0.86, 1.06) * (1.04 if male else 0.96),
        fat_mm=float(np.clip(4 + (bmi - 18) * 1.6 + rng.normal(0, 3), 3, 40)),
        dia_r=dia_r, dia_l=dia_r + rng.uniform(0.01, 0.04), liver_end=rng.uniform(0.58, 0.66),
        kidney_z=rng.uniform(-0.03, 0.03), bladder=rng.uniform(0.16, 0.32),
        liver_hu=rng.normal(60, 6), spleen_hu=rng.normal(50, 5), rib_phase=rng.uniform(0, 12),
        shift={o: (rng.normal(0, 0.03), rng.normal(0, 0.03)) for o in organs},
        lung_vessels=lung_vessels, liver_vessels=liver_vessels, bowel=bowel,
    )
    widest = 0.95 * FOV_MM[1]
    if body.max_width_mm() > widest:
        body.scale *= widest / body.max_width_mm()
    return body


@dataclass
class _Frame:
    """Where the body sits in one study's images: slice size, pixel spacing, body centre."""

    size: int
    spacing: float
    cx: float
    cy: float

    def resized(self, size: int) -> _Frame:
        f = size / self.size
        return _Frame(size, self.spacing / f, self.cx * f, self.cy * f)


class _Canvas:
    """An axial slice being painted: HU and tissue labels on the pixel grid of a frame.

    Ellipses are queued and painted in order by one compiled call when ``hu`` or ``label``
    is next read: a slice has some fifty of them, and one call each costs more than the
    painting of most.
    """

    def __init__(self, frame: _Frame, body: _Body, level: float):
        self.frame, self.sp = frame, frame.spacing
        self._hu = np.full((frame.size, frame.size), -1000.0, np.float32)
        self._label = np.zeros((frame.size, frame.size), np.uint8)
        self._queue: list[tuple[float, ...]] = []
        self.a, self.b = body.semi_axes(level)

    @property
    def hu(self) -> np.ndarray:
        self._paint_queue()
        return self._hu

    @property
    def label(self) -> np.ndarray:
        self._paint_queue()
        return self._label

    def _paint_queue(self) -> None:
        if self._queue:
            paint_ellipses(self._hu, self._label, np.array(self._queue), _label_table())
            self._queue.clear()

    def px(self, u: float, v: float) -> tuple[float, float]:
        """Body units to pixel (column, row)."""
        return self.frame.cx + u * self.a / self.sp, self.frame.cy + v * self.b / self.sp

    def ellipse(self, u, v, ru, rv, hu, label=None, *, angle=0.0, power=2.0, within=None,
                mm=False) -> None:
        """Paint an ellipse (a superellipse when power != 2) with a partial-volume edge.

        Centre in body units; radii in body units, or in mm when ``mm``; ``angle`` in degrees.
        ``within`` restricts the paint to pixels whose label is one of those given.
        """
        cx, cy = self.px(u, v)
        rx = ru / self.sp if mm else ru * self.a / self.sp
        ry = rv / self.sp if mm else rv * self.b / self.sp
        if rx <= 0.05 or ry <= 0.05:
            return
        self._queue.append((cx, cy, rx, ry, math.radians(angle), power, hu,
                            -1 if label is None else label, _label_row(within)))


@functools.lru_cache(maxsize=64)
def _label_set(labels: tuple[int, ...]) -> np.ndarray:
    """A lookup table that is 1 at the given tissue labels."""
    table = np.zeros(256, np.float32)
    table[list(labels)] = 1
    return table


_LABEL_ROWS: dict[tuple[int, ...] | None, int] = {}


def _label_row(within: tuple[int, ...] | None) -> int:
    """The row of :func:`_label_table` for a ``within`` restriction (None: any label)."""
    row = _LABEL_ROWS.get(within)
    if row is None:
        row = _LABEL_ROWS[within] = len(_LABEL_ROWS)
        _label_table.cache_clear()
    return row


@functools.lru_cache(maxsize=1)
def _label_table() -> np.ndarray:
    """One lookup row per ``within`` restriction seen so far, in :func:`_label_row` order."""
    return np.stack([np.ones(256, np.float32) if within is None else _label_set(within)
                     for within in _LABEL_ROWS])


def _paint_anatomy(cv: _Canvas, body: _Body, z: float) -> None:
    """Paint the body at level z: trunk wall, organs of the level, skeleton, vessels."""
    _paint_table(cv, body, z)
    _paint_trunk(cv, body, z)
    if z < body.dia_l + 0.03:
        _paint_chest(cv, body, z)
    if z > body.dia_r - 0.09:
        _paint_abdomen(cv, body, z)
    if z > 0.7:
        _paint_pelvis(cv, body, z)
    _paint_skeleton(cv, body, z)
    _paint_tubes(cv, body, body.lung_vessels, z, 40.0, (LUNG,))
    _paint_tubes(cv, body, body.liver_vessels, z, body.liver_hu + 45, (LIVER,))


def _paint_table(cv: _Canvas, body: _Body, z: float) -> None:
    """The curved CT table top, 3 mm thick, a little below the patient's back."""
    n, sp = cv.frame.size, cv.sp
    apex = cv.frame.cy + (cv.b + body.fat(z) + 6) / sp
    if apex >= n:
        return
    radius = 2.5 * cv.b / sp
    x = (np.arange(n, dtype=np.float32) - cv.frame.cx) / radius
    top = apex + radius * (1 - np.sqrt(np.clip(1 - x * x / 1.1, 0, None)))
    rows = np.arange(int(apex), n, dtype=np.float32)[:, None]
    depth = rows - top[None, :]
    band = np.clip(np.minimum(depth + 0.5, 3 / sp + 0.5 - depth), 0, 1)
    cv.hu[int(apex):] += (150.0 - cv.hu[int(apex):]) * band
    cv.label[int(apex):][band >= 0.5] = OTHER


def _paint_trunk(cv: _Canvas, body: _Body, z: float) -> None:
    """Skin, subcutaneous fat, muscle wall, the body cavity and the back muscles."""
    fat = body.fat(z)
    ant = fat * (1.3 if 0.45 < z < 0.9 else 1.0)
    centre = (fat - ant) / (2 * cv.b)
    cv.ellipse(0, centre, cv.a + fat, cv.b + (fat + ant) / 2, 20.0, FAT, power=2.4, mm=True)
    cv.ellipse(0, centre, cv.a + fat - 1.5, cv.b + (fat + ant) / 2 - 1.5, -105.0, FAT,
               power=2.4, mm=True)
    cv.ellipse(0, 0, 1, 1, 50.0, MUSCLE, power=2.3)
    chest = z < body.dia_r - 0.02
    cv.ellipse(0, 0, 0.9, 0.9, -80.0 if chest else -95.0, MEDIAST if chest else CAVITY,
               power=2.3)
    for s in (-1, 1):
        cv.ellipse(0.16 * s, 0.76, 0.14, 0.2, 52.0, MUSCLE, angle=10 * s)


def _paint_chest(cv: _Canvas, body: _Body, z: float) -> None:
    """Lungs, heart, great vessels, airways and oesophagus."""
    for s, dia in ((-1, body.dia_r), (1, body.dia_l)):
        f = float(np.interp(z, (0.0, 0.05, 0.2, dia - 0.06, dia), (0.15, 0.55, 1.0, 0.85, 0.0)))
        if f <= 0:
            continue
        low = max(0.0, z - 0.22) / max(dia - 0.22, 0.05)
        cv.ellipse(0.47 * s, -0.02 + 0.3 * low * (1 - f), 0.38 * math.sqrt(f), 0.8 * f,
                   -860.0, LUNG, angle=8 * s, within=_INTERIOR)
    du, dv = body.shift["heart"]
    h = _prof(z, 0.17, body.dia_l + 0.02)
    if h > 0:
        hx, hy = 0.1 + du, -0.3 + dv
        cv.ellipse(hx, hy, 0.46 * h, 0.54 * h, -90.0, MEDIAST, angle=-25, within=_INTERIOR)
        cv.ellipse(hx, hy, 0.41 * h, 0.49 * h, 45.0, HEART, angle=-25, within=_INTERIOR)
        cv.ellipse(hx + 0.12, hy + 0.06, 0.16 * h, 0.2 * h, 140.0, HEART, angle=-25)
        cv.ellipse(hx - 0.14, hy - 0.14, 0.18 * h, 0.13 * h, 120.0, HEART, angle=-25)
    vessels = [  # (z0, z1, u, v, radius mm, HU)
        (0.10, 0.24, -0.06, -0.30, 15, 150), (0.14, 0.20, 0.06, -0.28, 13, 140),
        (0.03, 0.21, -0.18, -0.26, 10, 125), (0.09, body.dia_l + 0.1, 0.12, 0.27, 12, 150),
        (0.0, body.dia_l, 0.05, 0.18, 7, 40),
    ]
    for z0, z1, u, v, r, hu in vessels:
        if z0 <= z <= z1:
            cv.ellipse(u, v, r, r, hu, OTHER, mm=True)
    if 0.07 <= z <= 0.11:  # the arch joins the ascending and descending aorta
        dx, dy = 0.18 * cv.a, 0.57 * cv.b
        cv.ellipse(0.03, -0.015, 0.5 * math.hypot(dx, dy) + 12, 12, 150.0, OTHER, mm=True,
                   angle=math.degrees(math.atan2(dy, dx)), within=_INTERIOR)
    if z < 0.15:
        cv.ellipse(0, -0.1, 10, 10, 40.0, OTHER, mm=True)
        cv.ellipse(0, -0.1, 8, 8, -1000.0, OTHER, mm=True)
    elif z < 0.22:
        for s in (-1, 1):
            cv.ellipse(0.13 * s, -0.05, 6, 6, -1000.0, OTHER, mm=True)


def _paint_abdomen(cv: _Canvas, body: _Body, z: float) -> None:
    """Liver, gallbladder, spleen, stomach, pancreas, kidneys, IVC, aorta, psoas, bowel."""
    top = body.dia_r - 0.07
    f = float(np.interp(z, (top, top + 0.07, 0.52, body.liver_end), (0.35, 1.0, 0.85, 0.0)))
    du, dv = body.shift["liver"]
    if top <= z <= body.liver_end and f > 0:
        cv.ellipse(-0.42 + du, 0.0 + dv, 0.5 * math.sqrt(f), 0.78 * f, body.liver_hu, LIVER,
                   angle=-10, within=_INTERIOR)
        fl = _prof(z, top + 0.02, 0.53)
        cv.ellipse(-0.02 + du, -0.45 + dv, 0.36 * fl, 0.3 * fl, body.liver_hu, LIVER,
                   within=_INTERIOR)
    for s, dia in ((-1, body.dia_r), (1, body.dia_l)):
        recess = _prof(z, dia - 0.1, dia + 0.06)
        cv.ellipse(0.55 * s, 0.62, 0.3 * recess, 0.22 * recess, -860.0, LUNG,
                   within=(LIVER, SPLEEN, CAVITY, MEDIAST, LUNG))
    if 0.52 <= z <= 0.58:
        cv.ellipse(-0.28 + du, -0.35 + dv, 14, 12, 10.0, OTHER, mm=True)
    du, dv = body.shift["spleen"]
    fs = _prof(z, body.dia_l - 0.03, 0.56)
    cv.ellipse(0.6 + du, 0.3 + dv, 0.2 * fs, 0.36 * fs, body.spleen_hu, SPLEEN, angle=35,
               within=_INTERIOR)
    du, dv = body.shift["stomach"]
    fg = _prof(z, body.dia_l - 0.03, 0.53)
    if fg > 0:
        cv.ellipse(0.33 + du, -0.3 + dv, 0.32 * fg, 0.28 * fg, 45.0, OTHER, within=_INTERIOR)
        cv.ellipse(0.33 + du, -0.3 + dv, 0.28 * fg, 0.24 * fg, 15.0, OTHER)
        cv.ellipse(0.33 + du, -0.45 + dv, 0.2 * fg, 0.08 * fg, -1000.0, OTHER, within=(OTHER,))
    fp = _prof(z, 0.47, 0.56)
    cv.ellipse(0.1, 0.02, 0.38 * fp, 0.08 * fp, 45.0, PANCREAS, angle=-12, within=_INTERIOR)
    du, dv = body.shift["kidney"]
    for s in (-1, 1):
        z0 = 0.48 + body.kidney_z + (0.02 if s < 0 else 0.0)
        fk = _prof(z, z0, z0 + 0.16)
        cv.ellipse(0.36 * s + du, 0.42 + dv, 0.15 * math.sqrt(fk), 0.24 * fk, 150.0, KIDNEY,
                   angle=-25 * s, within=_INTERIOR)
        cv.ellipse(0.31 * s + du, 0.38 + dv, 0.05 * fk, 0.09 * fk, -60.0, KIDNEY,
                   angle=-25 * s, within=(KIDNEY,))
    if body.dia_r - 0.03 <= z <= 0.68:
        cv.ellipse(-0.12, 0.2, 11, 11, 110.0, OTHER, mm=True)
    if body.dia_l + 0.1 < z <= 0.68:
        u = float(np.interp(z, (0.45, 0.68), (0.08, 0.03)))
        cv.ellipse(u, 0.24, 11, 11, 150.0, OTHER, mm=True)
    elif 0.68 < z <= 0.88:
        for s in (-1, 1):
            cv.ellipse(s * float(np.interp(z, (0.68, 0.88), (0.08, 0.3))), 0.25, 7, 7, 150.0,
                       OTHER, mm=True)
    if 0.56 <= z <= 0.92:
        r = float(np.interp(z, (0.56, 0.7, 0.85, 0.92), (8, 18, 25, 22)))
        for s in (-1, 1):
            u = float(np.interp(z, (0.56, 0.92), (0.15, 0.45)))
            cv.ellipse(u * s, float(np.interp(z, (0.56, 0.92), (0.38, 0.28))), r, r * 1.2,
                       52.0, MUSCLE, mm=True, within=_INTERIOR)
    _paint_bowel(cv, body, z)


def _paint_bowel(cv: _Canvas, body: _Body, z: float) -> None:
    """Colon (gas and stool) and small-bowel loops (fluid, gas or stool) in the cavity."""
    colon = [(0.56, 0.8, -0.6, -0.05, 20), (0.52, 0.8, 0.62, 0.05, 17),
             (0.85, 1.0, 0.0, 0.48, 16)]
    for z0, z1, u, v, r in colon:
        if z0 <= z <= z1:
            cv.ellipse(u, v, r, r, 40.0, BOWEL, mm=True, within=(CAVITY, BOWEL))
            cv.ellipse(u, v, r - 2.5, r - 2.5, -700.0, BOWEL, mm=True, within=(BOWEL,))
    if 0.52 <= z <= 0.57:
        cv.ellipse(0, -0.6, 0.5, 0.1, 40.0, BOWEL, within=(CAVITY,))
    contents = (25.0, -900.0, -250.0)
    for u, v, zc, r_mm, kind in body.bowel:
        dz = abs(z - zc) * body.length_mm
        if dz >= r_mm:
            continue
        r = math.sqrt(r_mm * r_mm - dz * dz)
        cv.ellipse(u, v, r, r, 45.0, BOWEL, mm=True, within=(CAVITY, BOWEL))
        cv.ellipse(u, v, r - 1.8, r - 1.8, contents[int(kind)], BOWEL, mm=True, within=(BOWEL,))


def _paint_pelvis(cv: _Canvas, body: _Body, z: float) -> None:
    """Gluteal muscles, bladder, uterus or prostate (the bones come with the skeleton)."""
    for s in (-1, 1):
        fgl = _prof(z, 0.74, 1.1)
        cv.ellipse(0.52 * s, 0.66, 0.4 * fgl, 0.28 * fgl, 52.0, MUSCLE, angle=20 * s,
                   within=(CAVITY, MUSCLE, FAT, BOWEL))
    du, dv = body.shift["bladder"]
    fb = _prof(z, 0.85, 1.08)
    cv.ellipse(0 + du, -0.35 + dv, body.bladder * fb, 0.8 * body.bladder * fb, 10.0, BLADDER,
               within=(CAVITY, BOWEL))
    if z > 0.9:
        cv.ellipse(0, 0.1, 20, 18, 50.0, OTHER, mm=True, within=(CAVITY, BOWEL))


def _paint_bone(cv: _Canvas, u, v, ru, rv, *, angle=0.0, cortex_mm=2.5, marrow=240.0,
                mm=True) -> None:
    """A bone cross-section: dense cortex around cancellous marrow."""
    cv.ellipse(u, v, ru, rv, 750.0, BONE, angle=angle, mm=mm)
    if mm:
        cv.ellipse(u, v, ru - cortex_mm, rv - cortex_mm, marrow, BONE, angle=angle, mm=True)
    else:
        cv.ellipse(u, v, ru * 0.85, rv * 0.85, marrow, BONE, angle=angle)


def _paint_skeleton(cv: _Canvas, body: _Body, z: float) -> None:
    """Spine, ribs, sternum, scapulae, pelvic bones and femoral heads."""
    if z < 0.8:
        r = float(np.interp(z, (0.0, 0.45, 0.75), (13, 18, 22)))
        vb = 0.42 + r / cv.b
        _paint_bone(cv, 0, vb - r / cv.b * 0.2, r * 1.05, r * 0.9)
        canal = vb + (r * 0.9 + 8) / cv.b
        cv.ellipse(0, canal, 7.5, 7.5, 25.0, OTHER, mm=True)
        cv.ellipse(0, canal + 16 / cv.b, 4, 11, 600.0, BONE, mm=True)
        for s in (-1, 1):
            cv.ellipse(9 * s / cv.a, canal + 4 / cv.b, 4, 9, 600.0, BONE, angle=-40 * s, mm=True)
            cv.ellipse((r + 8) * s / cv.a, vb, 12, 3.5, 550.0, BONE, angle=-20 * s, mm=True)
    elif z < 0.94:
        w = float(np.interp(z, (0.8, 0.94), (48, 26)))
        _paint_bone(cv, 0, 0.62, w, 14)
    if 0.05 <= z <= 0.38:
        _paint_bone(cv, 0, -0.95, 16, 6, cortex_mm=1.5)
    if z < 0.2:
        for s in (-1, 1):
            cv.ellipse(0.74 * s, 0.62, 42, 4.5, 600.0, BONE, angle=-40 * s, mm=True)
    if z < body.liver_end - 0.03:
        _paint_ribs(cv, body, z)
    if 0.72 <= z <= 0.88:
        f = _prof(z, 0.7, 0.92)
        for s in (-1, 1):
            u = float(np.interp(z, (0.72, 0.88), (0.62, 0.5)))
            _paint_bone(cv, u * s, 0.35, 7 + 5 * f, 0.34 * f * cv.b, angle=-30 * s,
                        cortex_mm=2.0, marrow=220.0)
    if z > 0.9:
        for s in (-1, 1):
            _paint_bone(cv, 0.58 * s, 0.14, 24, 24, cortex_mm=3, marrow=300.0)


def _paint_ribs(cv: _Canvas, body: _Body, z: float) -> None:
    """Oblique rib cuts around the chest wall; only anterior ones below the diaphragm."""
    lo, hi = (30.0, 160.0) if z < body.dia_r else (40.0, 110.0)
    for s in (-1, 1):
        for k in range(6):
            theta = lo + k * 24.0 + (body.rib_phase + 60 * z * (k % 3 + 1)) % 24.0
            if theta > hi:
                continue
            t = math.radians(theta)
            u, v = 0.95 * math.sin(t) * s, -0.95 * math.cos(t)
            tangent = math.degrees(math.atan2(math.sin(t) * cv.b, math.cos(t) * cv.a * s))
            _paint_bone(cv, u, v, 9, 4.5, angle=tangent, cortex_mm=1.5)


def _paint_tubes(cv: _Canvas, body: _Body, tubes: np.ndarray, z: float, hu: float,
                 within: tuple[int, ...]) -> None:
    """Cross-sections of vessel segments at level z, painted only inside ``within``.

    An oblique segment cuts the slice in an ellipse stretched along its in-plane direction.
    Where segments overlap, the most opaque one sets the pixel.
    """
    u, v, z0, du, dv, half, r_mm = tubes[np.abs(z - tubes[:, 2]) < tubes[:, 5]].T
    if not len(u):
        return
    cx, cy = cv.px(u + du * (z - z0), v + dv * (z - z0))
    dx_mm, dy_mm = du * cv.a, dv * cv.b
    stretch = np.minimum(np.sqrt(1 + (dx_mm**2 + dy_mm**2) / body.length_mm**2), 3.0)
    angle = np.arctan2(dy_mm, dx_mm)
    rx, ry = r_mm * stretch / cv.sp, r_mm / cv.sp
    paint_tubes(cv.hu, cv.label, cx, cy, rx, ry, angle, hu, _label_set(within))


def _slice_labels(body: _Body, frame: _Frame, level: float) -> np.ndarray:
    cv = _Canvas(frame, body, level)
    _paint_anatomy(cv, body, level)
    return cv.label
