"""Synthetic DeepLesion-format cohort with records, outcomes and a hidden truth.

:func:`generate` writes a folder laid out like the public DeepLesion release (``DL_info.csv``
and ``Images_png/``) plus ``records.csv``, ``outcomes.csv``, ``studies.csv`` and ``truth.json``;
the pipeline never reads ``truth.json``, the quality tests score against it.

The cohort is built to be honest rather than easy (docs/design.md): lesions are
drawn into an analytic CT phantom whose anatomy follows the position along the body; the eight
lesion types have overlapping appearance, size and location distributions; about 3% of the
given labels are wrong; records miss values; lesions are followed over one to three studies as
they grow or shrink; survival follows a proportional-hazards model with planted imaging and
record effects beside decoys. Every random draw comes from a stream keyed by (seed, patient,
purpose, ...), so the output does not depend on the order or number of processes rendering it.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import distance_transform_edt, gaussian_filter

from patientgraph.atomic import atomic_dir
from patientgraph.deeplesion import COLUMNS
from patientgraph.imaging import HU_OFFSET

DL_COLUMNS = COLUMNS
"""The columns of DeepLesion's ``DL_info.csv``, in order (defined once, by the reader)."""

BBOX_PAD_PX = 5

# --------------------------------------------------------------------------- cohort parameters

TYPE_PRIOR = {1: 0.04, 2: 0.20, 3: 0.16, 4: 0.15, 5: 0.24, 6: 0.05, 7: 0.08, 8: 0.08}
"""Share of each coarse type among lesions and among patients' primary tumours."""
PRIMARY_SHARE = 0.7
"""Chance that a lesion is of its patient's primary type (else drawn from TYPE_PRIOR)."""

SIZE_MEDIAN_MM = {1: 22, 2: 21, 3: 17, 4: 23, 5: 14, 6: 24, 7: 24, 8: 26}
SIZE_LOG_SD = 0.5
SIZE_RANGE_MM = (5.0, 100.0)
MAX_LONG_MM = 110.0
"""Growth stops here (a lesion never outgrows the field of view)."""

STUDY_COUNT_P = (0.15, 0.30, 0.55)
"""P(1, 2, 3 studies) per patient: mean 2.4, as DeepLesion's 10,594 studies / 4,427 patients."""
STUDY_GAP_DAYS = (30, 200)
LESION_COUNT_P = (0.08, 0.17, 0.25, 0.25, 0.25)
"""P(1..5 physical lesions) per patient."""
ANNOTATE_P = 0.92
"""Chance that a present lesion is measured (gets a row) in a study."""
COMPANION_P = 0.06
"""Chance that a lesion sits on the key slice of an earlier lesion of the same patient."""
SPLIT_P = (0.70, 0.15, 0.15)
LABEL_ERROR_RATE = 0.03
NOISY_FLAG_P = (0.5, 0.01)
"""Possibly_noisy = 1 on this share of (wrong, right) labels."""
SLICE_INTERVALS_MM = (1.0, 1.25, 2.5, 5.0)
SLICE_INTERVAL_P = (0.1, 0.15, 0.25, 0.5)
FOV_MM = (300.0, 420.0)
WINDOWS = {"lung": "-1350, 150", "soft": "-175, 275", "soft2": "-160, 240", "bone": "-450, 1050"}

GROWTH_MEAN, GROWTH_SD = 0.0008, 0.0025
"""Per-patient growth rate of log(long diameter) per day: some lesions grow, some shrink."""
GROWTH_LESION_SD = 0.0012

# Tissue labels painted alongside HU; lesion sites are sampled from them.
AIR, FAT, MUSCLE, BONE, LUNG, MEDIAST, HEART, LIVER = range(8)
SPLEEN, KIDNEY, CAVITY, PANCREAS, BOWEL, BLADDER, OTHER = range(8, 15)
_INTERIOR = (MEDIAST, CAVITY, LUNG)
_BODY = tuple(range(1, 15))

SITES: dict[str, tuple[tuple[int, ...], tuple[float, float], str | None]] = {
    # name: (tissue labels, z range, in-plane restriction)
    "lung": ((LUNG,), (0.02, 0.45), None),
    "lung_central": ((LUNG,), (0.12, 0.40), "central"),
    "hilum": ((MEDIAST,), (0.14, 0.34), "hilar"),
    "mediastinum": ((MEDIAST,), (0.03, 0.42), "mediastinal"),
    "supraclavicular": ((MEDIAST, FAT, MUSCLE), (0.01, 0.07), "central"),
    "liver": ((LIVER,), (0.30, 0.66), None),
    "spleen": ((SPLEEN,), (0.36, 0.58), None),
    "pancreas": ((PANCREAS,), (0.45, 0.57), None),
    "kidney": ((KIDNEY,), (0.46, 0.68), None),
    "perirenal": ((CAVITY,), (0.44, 0.68), "posterolateral"),
    "porta": ((CAVITY,), (0.45, 0.6), "right"),
    "retrocrural": ((CAVITY, MEDIAST), (0.36, 0.5), "central"),
    "pelvic_wall": ((MUSCLE, FAT), (0.82, 0.98), None),
    "abdomen": ((CAVITY, BOWEL), (0.42, 0.78), None),
    "lower_abdomen": ((CAVITY, BOWEL), (0.7, 0.8), None),
    "pelvis": ((CAVITY, BOWEL), (0.78, 0.99), None),
    "subcutaneous": ((FAT,), (0.02, 0.98), None),
    "muscle": ((MUSCLE,), (0.02, 0.98), None),
    "axilla": ((FAT, MUSCLE, MEDIAST), (0.01, 0.22), "lateral"),
    "bone": ((BONE,), (0.02, 0.98), None),
}
TYPE_SITES = {
    1: {"bone": 1.0},
    2: {"abdomen": 0.52, "spleen": 0.1, "pancreas": 0.1, "perirenal": 0.1, "porta": 0.14,
        "pelvis": 0.04},
    3: {"mediastinum": 0.6, "hilum": 0.2, "supraclavicular": 0.08, "retrocrural": 0.12},
    4: {"liver": 1.0},
    5: {"lung": 0.8, "lung_central": 0.2},
    6: {"kidney": 0.95, "perirenal": 0.05},
    7: {"subcutaneous": 0.45, "muscle": 0.35, "axilla": 0.2},
    8: {"pelvis": 0.8, "lower_abdomen": 0.06, "pelvic_wall": 0.14},
}


def _look(weight, hu, texture, grain, margin, aspect, lobulation, *, relative=False,
          spiculation=0.0, rim=0.0, rim_hu=(25, 60), necrosis=0.0, calcification=0.0,
          cavitation=0.0, confined=False) -> dict:
    """An appearance profile: (mean, sd) of HU and (lo, hi) ranges of the rest.

    ``relative``: HU is relative to the patient's liver. ``confined``: drawn only inside bone.
    Probabilities: spiculation, rim (enhancing, or sclerotic for bone), necrosis, ...
    """
    return dict(weight=weight, hu=hu, relative=relative, texture=texture, grain=grain,
                margin=margin, aspect=aspect, lobulation=lobulation, spiculation=spiculation,
                rim=rim, rim_hu=rim_hu, necrosis=necrosis, calcification=calcification,
                cavitation=cavitation, confined=confined)


_SOLID = dict(texture=(6, 18), grain=(1.5, 5), margin=(0.5, 1.8), aspect=(0.5, 0.9))
_CYSTIC = dict(texture=(1, 5), grain=(2, 5), margin=(0.2, 0.7), aspect=(0.65, 0.97))
LOOKS: dict[int, list[dict]] = {
    # HU of liver lesions is relative to the patient's liver; others are absolute.
    1: [_look(0.6, (70, 35), (10, 35), (1.5, 4), (0.5, 1.5), (0.6, 0.95), (0, 0.12), rim=0.6,
              rim_hu=(250, 450), necrosis=0.1, calcification=0.2),
        _look(0.4, (620, 180), (30, 90), (1, 3), (0.8, 2.5), (0.55, 0.95), (0.05, 0.2),
              confined=True)],
    2: [_look(0.8, (48, 15), lobulation=(0, 0.18), spiculation=0.05, rim=0.2, necrosis=0.3,
              calcification=0.08, **_SOLID),
        _look(0.2, (14, 8), lobulation=(0, 0.08), rim=0.3, **_CYSTIC)],
    3: [_look(0.85, (42, 12), (4, 12), (1.5, 4), (0.4, 1.2), (0.45, 0.85), (0, 0.12),
              spiculation=0.02, rim=0.1, necrosis=0.15, calcification=0.15),
        _look(0.15, (45, 15), (8, 20), (1.5, 5), (0.6, 2), (0.6, 0.95), (0.05, 0.25),
              necrosis=0.35)],
    4: [_look(0.6, (-32, 14), (5, 16), (2, 5), (0.8, 2.5), (0.65, 0.95), (0, 0.15),
              relative=True, rim=0.4, necrosis=0.25, calcification=0.05),
        _look(0.25, (8, 6), lobulation=(0, 0.05), **_CYSTIC),
        _look(0.15, (25, 12), (6, 15), (2, 5), (0.8, 2), (0.7, 0.95), (0, 0.12),
              relative=True, rim=0.1)],
    5: [_look(0.78, (25, 22), (8, 25), (1, 3), (0.3, 1.2), (0.6, 0.95), (0.05, 0.3),
              spiculation=0.4, rim=0.05, necrosis=0.1, calcification=0.1, cavitation=0.08),
        _look(0.22, (-520, 120), (30, 80), (1, 3), (1, 3), (0.6, 0.95), (0.05, 0.25),
              spiculation=0.1)],
    6: [_look(0.4, (10, 7), lobulation=(0, 0.05), **_CYSTIC),
        _look(0.6, (75, 28), (12, 30), (1.5, 4), (0.6, 2), (0.65, 0.95), (0.05, 0.2), rim=0.2,
              necrosis=0.35, calcification=0.1)],
    7: [_look(0.88, (28, 18), (6, 18), (1.5, 5), (0.5, 2), (0.4, 0.85), (0, 0.22),
              spiculation=0.08, rim=0.3, necrosis=0.25, calcification=0.08),
        _look(0.12, (-70, 25), (5, 15), (2, 5), (0.3, 1), (0.5, 0.9), (0, 0.15))],
    8: [_look(0.8, (42, 15), lobulation=(0, 0.2), spiculation=0.05, rim=0.2, necrosis=0.3,
              calcification=0.1, **_SOLID),
        _look(0.2, (14, 8), lobulation=(0, 0.1), rim=0.3, **_CYSTIC)],
}

RECORD_MISSING = {
    "ldh": 0.12, "albumin": 0.10, "crp": 0.22, "hemoglobin": 0.05, "wbc": 0.05, "bmi": 0.08,
    "creatinine": 0.06, "sodium": 0.05, "smoking": 0.30, "ecog": 0.15, "stage": 0.18,
    "cea": 0.35, "decoy_a": 0.10, "decoy_b": 0.12,
}
"""records.csv fields and the share of patients missing each (MCAR)."""
AGE_MISSING = 0.02
CEA_TYPES = (2, 4, 8)
"""Primary types with an elevated tumour marker (``cea``) in most patients."""
SMOKING_TYPES = (3, 5)

SURVIVAL = {
    "baseline": "weibull", "shape": 1.2, "median_days_at_mean": 700.0,
    "censor_uniform_days": (200.0, 1800.0), "dropout_mean_days": 3000.0,
    "time_origin": "the patient's last study",
}
# (name, kind, definition, log HR per SD (or per unit for binaries), centre, sd)
EFFECTS = [
    ("lesion_burden", "imaging", "log(sum of long diameters, mm, of the lesions measured at "
     "the first study)", 0.55, 4.07, 0.62),
    ("growth_rate", "imaging", "per-patient mean slope of log(long diameter) per day",
     0.55, GROWTH_MEAN, GROWTH_SD),
    ("liver_primary", "imaging", "primary tumour type is liver (4): most of the patient's "
     "lesions are liver lesions (a lesion-type cluster)", math.log(2.5), 0.0, 1.0),
    ("ldh", "record", "log(ldh)", 0.5, math.log(220.0), 0.4),
    ("albumin", "record", "albumin", -0.5, 3.8, 0.5),
    ("ecog", "record", "ecog", 0.5, 1.03, 0.93),
    ("age", "record", "Patient_age at the first study", 0.3, 60.0, 12.0),
    ("sex_male", "record", "Patient_gender == 'M'", math.log(1.3), 0.0, 1.0),
]
DECOYS = ["sodium", "creatinine", "bmi", "hemoglobin", "wbc", "crp", "decoy_a", "decoy_b"]
INDIRECT = {
    "cea": "elevated in most patients with an abdomen, liver or pelvis primary; no own effect",
    "smoking": "more often current/former with a lung or mediastinum primary; no own effect",
    "stage": "more advanced with more lesions (burden); no own effect",
}

# Body shape along z (0 = lower neck, 1 = pelvic floor): core semi-axes (mm) and fat profile.
_Z_KNOTS = (0.0, 0.12, 0.30, 0.45, 0.60, 0.75, 0.90, 1.0)
_CORE_A = (148, 158, 156, 150, 142, 146, 156, 158)
_CORE_B = (92, 102, 108, 106, 100, 96, 98, 94)
_FAT_PROFILE = (0.5, 0.6, 0.7, 0.9, 1.1, 1.2, 1.2, 1.0)


def _rng(*key: int) -> np.random.Generator:
    """A random stream keyed by non-negative integers (seed, patient, purpose, ...)."""
    return np.random.default_rng([int(k) for k in key])


_PLAN, _TEXTURE, _NOISE, _ANATOMY = 1, 2, 3, 4


def _prof(z: float, z0: float, z1: float) -> float:
    """Ellipsoid cross-section factor of an organ spanning [z0, z1] at z (0 outside)."""
    t = (2 * z - z0 - z1) / max(z1 - z0, 1e-6)
    return math.sqrt(1 - t * t) if abs(t) < 1 else 0.0


# --------------------------------------------------------------------------- body phantom


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
    """An axial slice being painted: HU and tissue labels on the pixel grid of a frame."""

    def __init__(self, frame: _Frame, body: _Body, level: float):
        self.frame, self.sp = frame, frame.spacing
        self.hu = np.full((frame.size, frame.size), -1000.0, np.float32)
        self.label = np.zeros((frame.size, frame.size), np.uint8)
        self.a, self.b = body.semi_axes(level)

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
        reach = max(rx, ry) + 2
        n = self.frame.size
        c0, c1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, n)
        r0, r1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, n)
        if c0 >= c1 or r0 >= r1:
            return
        dx = np.arange(c0, c1, dtype=np.float32)[None, :] - np.float32(cx)
        dy = np.arange(r0, r1, dtype=np.float32)[:, None] - np.float32(cy)
        if angle:
            t = math.radians(angle)
            dx, dy = dx * math.cos(t) + dy * math.sin(t), dy * math.cos(t) - dx * math.sin(t)
        if power == 2.0:
            rho = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)
        else:
            rho = (np.abs(dx / rx) ** power + np.abs(dy / ry) ** power) ** (1 / power)
        alpha = np.clip(0.5 - (rho - 1) * min(rx, ry), 0, 1)
        labels = self.label[r0:r1, c0:c1]
        if within is not None:
            alpha *= _label_set(within)[labels]
        patch = self.hu[r0:r1, c0:c1]
        patch += (hu - patch) * alpha
        if label is not None:
            labels[alpha >= 0.5] = label


@functools.lru_cache(maxsize=64)
def _label_set(labels: tuple[int, ...]) -> np.ndarray:
    """A lookup table that is 1 at the given tissue labels."""
    table = np.zeros(256, np.float32)
    table[list(labels)] = 1
    return table


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
    All segments are painted in one vectorised pass over small patches.
    """
    u, v, z0, du, dv, half, r_mm = tubes[np.abs(z - tubes[:, 2]) < tubes[:, 5]].T
    if not len(u):
        return
    cx, cy = cv.px(u + du * (z - z0), v + dv * (z - z0))
    dx_mm, dy_mm = du * cv.a, dv * cv.b
    stretch = np.minimum(np.sqrt(1 + (dx_mm**2 + dy_mm**2) / body.length_mm**2), 3.0)
    angle = np.arctan2(dy_mm, dx_mm)
    rx, ry = r_mm * stretch / cv.sp, r_mm / cv.sp
    k = int(math.ceil(rx.max())) + 2
    off = np.arange(-k, k + 1)
    cols = np.round(cx)[:, None, None].astype(int) + off[None, None, :]
    rows = np.round(cy)[:, None, None].astype(int) + off[None, :, None]
    ddx, ddy = cols - cx[:, None, None], rows - cy[:, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    along, across = ddx * cos + ddy * sin, ddy * cos - ddx * sin
    rho = np.sqrt((along / rx[:, None, None]) ** 2 + (across / ry[:, None, None]) ** 2)
    alpha = np.clip(0.5 - (rho - 1) * ry[:, None, None], 0, 1)
    n = cv.frame.size
    inside = (rows >= 0) & (rows < n) & (cols >= 0) & (cols < n) & (alpha > 0)
    rows, cols, alpha = np.broadcast_arrays(rows, cols, alpha)
    rows, cols, alpha = rows[inside], cols[inside], alpha[inside]
    alpha = alpha * _label_set(within)[cv.label[rows, cols]]
    cover = np.zeros((n, n), np.float32)
    np.maximum.at(cover, (rows, cols), alpha)
    cv.hu += (hu - cv.hu) * cover


def _slice_labels(body: _Body, frame: _Frame, level: float) -> np.ndarray:
    cv = _Canvas(frame, body, level)
    _paint_anatomy(cv, body, level)
    return cv.label


# --------------------------------------------------------------------------- lesions


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
            d = np.angle(np.exp(1j * (theta[..., None] - at)))
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
    best, ends = 0.0, None
    for t in np.linspace(0.02, 0.98, 49) * d[i, j]:
        hit = (a0 - t) * (a1 - t) <= 0
        hit &= a0 != a1
        if hit.sum() < 2:
            continue
        c = c0[hit] + (t - a0[hit]) * (c1[hit] - c0[hit]) / (a1[hit] - a0[hit])
        if c.max() - c.min() > best:
            best = c.max() - c.min()
            ends = (p + t * axis + c.min() * normal, p + t * axis + c.max() * normal)
    return np.array([p, q, ends[0], ends[1]]), float(d[i, j]), best


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
    rng = _rng(*view.texture_key)
    grain = view.lesion.look["grain_mm"]
    sigma = max(grain / spacing, 0.6)
    near, far = (gaussian_filter(rng.standard_normal((size, size)), sigma) for _ in range(2))
    phi = min(abs(dz_mm) / (4 * grain), 1.0) * math.pi / 2
    noise = math.cos(phi) * near + math.sin(phi) * far
    return noise / (noise.std() + 1e-9)


# --------------------------------------------------------------------------- patients


@dataclass
class _Study:
    """One CT study: its geometry, the lesions present and the rows measured in it."""

    index: int
    day: int
    series: int
    interval: float
    frame: _Frame
    noise_sd: float
    views: list[_LesionView]
    rows: list[dict]


@dataclass
class _Patient:
    """Everything generated for one patient, before anything is written."""

    pid: int
    body: _Body
    studies: list[_Study]
    record: dict
    outcome: dict
    truth: dict
    lesion_truth: dict


def _pid(pid: int) -> str:
    return f"{pid:06d}"


def _fmt(values) -> str:
    """A DeepLesion list cell: comma+space separated numbers with 6 significant digits."""
    return ", ".join(f"{float(v):.6g}" for v in values)


def _plan_patient(seed: int, pid: int, image_size: int) -> _Patient:
    """Draw one patient: anatomy, lesions, studies, rows, labels, record and outcome."""
    rng = _rng(seed, pid, _PLAN)
    male = bool(rng.random() < 0.55)
    age = float(np.clip(rng.normal(60, 12), 20, 90))
    types = list(TYPE_PRIOR)
    primary = int(rng.choice(types, p=np.array(list(TYPE_PRIOR.values()))))
    bmi = float(np.clip(rng.normal(26, 4.5), 16, 48))
    body = _sample_body(_rng(seed, pid, _ANATOMY), bmi, male)
    growth = float(rng.normal(GROWTH_MEAN, GROWTH_SD))
    n_lesions = 1 + int(rng.choice(len(LESION_COUNT_P), p=LESION_COUNT_P))
    lesions = _sample_lesions(rng, body, _study_frame(rng, body, image_size), primary,
                              n_lesions, growth)
    split = 1 + int(rng.choice(3, p=SPLIT_P))
    n_studies = 1 + int(rng.choice(len(STUDY_COUNT_P), p=STUDY_COUNT_P))
    days = np.concatenate([[0], np.cumsum(rng.integers(*STUDY_GAP_DAYS, n_studies - 1,
                                                       endpoint=True))]).astype(int)
    age_missing = bool(rng.random() < AGE_MISSING)
    studies = []
    lesion_truth = {}
    for si, day in enumerate(days, start=1):
        study = _plan_study(seed, rng, pid, si, int(day), body, lesions, image_size)
        if not study.rows:  # every lesion shrank out of sight: nothing was measured
            continue
        for row in study.rows:
            row["Patient_gender"] = "M" if male else "F"
            row["Patient_age"] = "" if age_missing else str(int(round(age + day / 365.25)))
            row["Train_Val_Test"] = split
            _label_row(rng, row, split, lesion_truth)
        studies.append(study)
    first = [r["_long_mm"] for r in studies[0].rows]
    covariates, record, traits = _records(rng, primary, lesions, bmi, male, age)
    covariates["lesion_burden"] = math.log(sum(first))
    covariates["growth_rate"] = growth
    outcome, eta = _outcome(rng, covariates)
    truth = {
        "primary_type": primary, "growth_rate": growth, "sex": "M" if male else "F",
        "age": round(age, 1), "split": split, "n_studies": len(studies),
        "traits": traits, "covariates": covariates, "linear_predictor": eta,
        "physical_lesions": {
            f"{_pid(pid)}_L{les.index}": {
                "true_type": les.true_type, "site": les.site, "growth_rate": les.growth,
                "long_mm_day0": round(les.long0_mm, 2), "location_uvz": [les.u, les.v, les.z],
            }
            for les in lesions
        },
    }
    return _Patient(pid, body, studies, record, outcome, truth, lesion_truth)


def _study_frame(rng, body: _Body, image_size: int) -> _Frame:
    """A study's field of view (from the body's width) and where the body sits in it."""
    fov = float(np.clip(body.max_width_mm() * rng.uniform(1.04, 1.25), *FOV_MM))
    spacing = fov / image_size
    cx = image_size / 2 + rng.normal(0, 18) / spacing
    cy = image_size / 2 + rng.normal(-5, 15) / spacing
    return _Frame(image_size, spacing, cx, cy)


def _plan_study(seed, rng, pid, si, day, body, lesions, image_size) -> _Study:
    """Place every present lesion in one study's images and measure the annotated ones."""
    frame = _study_frame(rng, body, image_size)
    interval = float(rng.choice(SLICE_INTERVALS_MM, p=SLICE_INTERVAL_P))
    last = int(body.length_mm / interval) + 1
    z_jitter = rng.normal(0, 0.004, len(lesions))
    views, candidates = [], []
    for les in lesions:
        jitter = z_jitter[les.companion if les.companion is not None else les.index]
        z = float(np.clip(les.z + jitter, 0.01, 0.99))
        key = int(np.clip(1 + round(z * body.length_mm / interval), 2, last - 1))
        long_mm = min(les.long0_mm * math.exp(les.growth * day), MAX_LONG_MM)
        if long_mm < 3.0:
            continue
        z_key = (key - 1) * interval / body.length_mm
        a, b = body.semi_axes(body.level(z_key))
        scale_px = long_mm / les.long_unit / frame.spacing
        reach = scale_px * (1 + np.abs(les.harmonics[:, 1]).sum()) + BBOX_PAD_PX + 2
        cx = float(np.clip(frame.cx + les.u * a / frame.spacing, reach, image_size - 1 - reach))
        cy = float(np.clip(frame.cy + les.v * b / frame.spacing, reach, image_size - 1 - reach))
        view = _LesionView(les, cx, cy, (key - 1) * interval, scale_px,
                           0.5 * long_mm * les.z_ratio, (seed, pid, _TEXTURE, les.index))
        views.append(view)
        if long_mm >= SIZE_RANGE_MM[0]:
            candidates.append((view, key, z_key, long_mm))
    chosen = [c for c in candidates if rng.random() < ANNOTATE_P]
    if not chosen and candidates:
        chosen = [max(candidates, key=lambda c: c[3])]
    series = 2 if rng.random() < 0.1 else 1
    rows = [_measure(rng, pid, si, series, interval, frame, *c) for c in chosen]
    rows.sort(key=lambda r: (r["Key_slice_index"], r["_lesion"]))
    return _Study(si, day, series, interval, frame, float(rng.uniform(10, 20)), views, rows)


def _measure(rng, pid, si, series, interval, frame, view, key, z_key, long_mm) -> dict:
    """One DL_info row: the RECIST axes of the lesion on its key slice, 1-based pixels."""
    les = view.lesion
    t = math.radians(les.angle)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    ends = les.recist_unit @ rot.T * view.scale_px + [view.cx, view.cy]
    hand = min(0.25, 0.03 * les.long_unit * view.scale_px)  # the annotator's hand, in px
    ends = ends + rng.normal(0, hand, ends.shape) + 1.0
    ends = np.array([float(f"{v:.6g}") for v in ends.ravel()]).reshape(4, 2)  # as written
    long_px = float(np.linalg.norm(ends[0] - ends[1]))
    short_px = float(np.linalg.norm(ends[2] - ends[3]))
    if short_px > long_px:  # a near-round lesion: the longer measured axis is the long one
        ends, long_px, short_px = ends[[2, 3, 0, 1]], short_px, long_px
    size = frame.size
    box = np.concatenate([ends.min(0) - BBOX_PAD_PX, ends.max(0) + BBOX_PAD_PX])
    box = np.clip(box, 1, size)
    folder = f"{_pid(pid)}_{si:02d}_{series:02d}"
    return {
        "File_name": f"{folder}_{key:03d}.png",
        "Patient_index": pid, "Study_index": si, "Series_ID": series, "Key_slice_index": key,
        "Measurement_coordinates": _fmt(ends.ravel()),
        "Bounding_boxes": _fmt(box),
        "Lesion_diameters_Pixel_": _fmt([long_px, short_px]),
        "Normalized_lesion_location": _fmt([view.cx / size, view.cy / size, z_key]),
        "Coarse_lesion_type": -1, "Possibly_noisy": 0,
        "Slice_range": f"{key - 1}, {key + 1}",
        "Spacing_mm_px_": _fmt([frame.spacing, frame.spacing, interval]),
        "Image_size": f"{size}, {size}",
        "DICOM_windows": _window(rng, les),
        "_lesion": les.index, "_type": les.true_type, "_long_mm": long_mm,
        "_short_mm": long_mm * les.short_unit / les.long_unit,
    }


def _window(rng, les: _Lesion) -> str:
    """The display window the annotator used: mostly the lung window for lung lesions."""
    if les.site.startswith("lung"):
        return WINDOWS["lung" if rng.random() < 0.85 else "soft"]
    if les.z < 0.45 and rng.random() < 0.2:
        return WINDOWS["lung"]
    if les.true_type == 1 and rng.random() < 0.35:
        return WINDOWS["bone"]
    return WINDOWS["soft" if rng.random() < 0.75 else "soft2"]


def _label_row(rng, row: dict, split: int, lesion_truth: dict) -> None:
    """Give the row its (possibly wrong) coarse type and noisy flag; record the truth."""
    les_type = row["_type"]
    given, wrong = -1, False
    if split != 1:
        wrong = bool(rng.random() < LABEL_ERROR_RATE)
        others = [t for t in TYPE_PRIOR if t != les_type]
        given = int(rng.choice(others)) if wrong else les_type
    row["Coarse_lesion_type"] = given
    row["Possibly_noisy"] = int(rng.random() < NOISY_FLAG_P[0 if wrong else 1])
    stem = row["File_name"][:-4]
    k = sum(key.startswith(f"{stem}_") for key in lesion_truth)
    lesion_truth[f"{stem}_{k}"] = {
        "true_type": les_type, "given_type": given, "wrong_label": wrong,
        "physical_lesion": f"{_pid(row['Patient_index'])}_L{row['_lesion']}",
        "long_mm": round(row["_long_mm"], 3), "short_mm": round(row["_short_mm"], 3),
    }


def _records(rng, primary, lesions, bmi, male, age) -> tuple[dict, dict, dict]:
    """Draw the non-imaging record. Returns (effect covariates, record row, planted traits)."""
    log_ldh = rng.normal(math.log(220.0), 0.4)
    albumin = float(np.clip(rng.normal(3.8, 0.5), 1.8, 5.2))
    ecog = int(rng.choice(4, p=[0.35, 0.35, 0.22, 0.08]))
    cea_elevated = primary in CEA_TYPES and rng.random() < 0.7
    cea = rng.lognormal(math.log(25.0), 0.8) if cea_elevated else rng.lognormal(math.log(3), 0.6)
    smoking_p = [0.2, 0.35, 0.45] if primary in SMOKING_TYPES else [0.55, 0.3, 0.15]
    smoking = str(rng.choice(["never", "former", "current"], p=smoking_p))
    n = len(lesions)
    stage_p = np.array([0.3, 0.3, 0.25, 0.15]) * [1, 1, 1, 1 + n]
    stage = str(rng.choice(["I", "II", "III", "IV"], p=stage_p / stage_p.sum()))
    values = {
        "ldh": round(math.exp(log_ldh)),
        "albumin": round(albumin, 1),
        "crp": round(rng.lognormal(math.log(8.0), 1.1), 1),
        "hemoglobin": round(rng.normal(13.0, 1.6), 1),
        "wbc": round(rng.lognormal(math.log(7.0), 0.3), 1),
        "bmi": round(bmi, 1),
        "creatinine": round(rng.lognormal(math.log(0.95), 0.25), 2),
        "sodium": round(rng.normal(139, 3)),
        "smoking": smoking, "ecog": ecog, "stage": stage,
        "cea": round(cea, 1),
        "decoy_a": round(rng.normal(0, 1), 3),
        "decoy_b": str(rng.choice(["A", "B", "C"])),
    }
    record = {k: ("" if rng.random() < RECORD_MISSING[k] else v) for k, v in values.items()}
    covariates = {
        "liver_primary": float(primary == 4), "ldh": float(log_ldh), "albumin": albumin,
        "ecog": float(ecog), "age": age, "sex_male": float(male),
    }
    traits = {"cea_elevated": bool(cea_elevated), "smoking": smoking, "stage": stage,
              "bmi": round(bmi, 1), "n_physical_lesions": n}
    return covariates, record, traits


def _outcome(rng, covariates: dict) -> tuple[dict, float]:
    """Survival from a Weibull proportional-hazards model with independent censoring."""
    eta = sum(beta * (covariates[name] - centre) / sd
              for name, _, _, beta, centre, sd in EFFECTS)
    k = SURVIVAL["shape"]
    lam = math.log(2) / SURVIVAL["median_days_at_mean"] ** k
    death = (-math.log(rng.random()) / (lam * math.exp(eta))) ** (1 / k)
    censor = min(rng.uniform(*SURVIVAL["censor_uniform_days"]),
                 rng.exponential(SURVIVAL["dropout_mean_days"]))
    time_days = max(round(min(death, censor), 1), 1.0)
    return {"time_days": time_days, "event": int(death <= censor)}, float(eta)


# --------------------------------------------------------------------------- rendering


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
    hu = gaussian_filter(hu, 0.5)
    hu += study.noise_sd * _ct_noise(_rng(seed, pid, _NOISE, study.index, k), hu.shape[0])
    return np.clip(hu, -1024, 3071)


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


def _ct_noise(rng, size: int) -> np.ndarray:
    """Gaussian-filtered white noise with unit variance."""
    white = rng.standard_normal((size, size), dtype=np.float32)
    return gaussian_filter(white, _NOISE_SIGMA_PX, truncate=3.0) * _noise_gain()


@functools.lru_cache(maxsize=1)
def _noise_gain() -> float:
    """1 / the standard deviation of filtered unit white noise (from the filter's impulse)."""
    impulse = np.zeros((15, 15))
    impulse[7, 7] = 1
    return float(1 / np.sqrt((gaussian_filter(impulse, _NOISE_SIGMA_PX, truncate=3.0) ** 2).sum()))


def _write_patient(patient: _Patient, seed: int, images: Path) -> None:
    """Render and write every slice the patient's rows refer to (key slice and neighbours)."""
    for study in patient.studies:
        folder = images / f"{_pid(patient.pid)}_{study.index:02d}_{study.series:02d}"
        slices = sorted({r["Key_slice_index"] + d for r in study.rows for d in (-1, 0, 1)})
        if slices:
            folder.mkdir(parents=True, exist_ok=True)
        mottle = 6.0 * _mottle(_rng(seed, patient.pid, _NOISE, study.index),
                               study.frame.size, 4.0 / study.frame.spacing)
        for k in slices:
            hu = _render_slice(seed, patient.pid, patient.body, study, k, mottle)
            _write_png16(folder / f"{k:03d}.png", np.round(hu + HU_OFFSET).astype(np.uint16))


def _write_png16(path: Path, pixels: np.ndarray) -> None:
    """Write a 16-bit grayscale PNG (mode "I;16"); zlib level 1, as the slices are many."""
    Image.fromarray(pixels.astype(np.uint16)).save(path, compress_level=1)


def _build_patient(pid: int, seed: int, image_size: int, images: Path | None) -> _Patient:
    patient = _plan_patient(seed, pid, image_size)
    if images is not None:
        _write_patient(patient, seed, images)
    return patient


# --------------------------------------------------------------------------- writing


def generate(
    out_dir: str | Path,
    n_patients: int = 200,
    seed: int = 0,
    image_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
    *,
    workers: int | None = None,
    images: bool = True,
) -> dict:
    """Write a synthetic DeepLesion-format cohort into ``out_dir``.

    Writes ``DL_info.csv``, ``Images_png/`` (key slices and their neighbours, 16-bit PNG,
    HU + 32768), ``records.csv``, ``outcomes.csv`` and ``studies.csv`` (all keyed by
    ``Patient_index``) and ``truth.json``. The folder appears whole or not at all; an existing
    ``out_dir`` is replaced only if it is empty or an earlier synthetic cohort.

    ``workers`` processes render patients in parallel (default: up to 2 for cohorts of 50 or
    more patients); the output is byte-identical whatever their number. ``progress(done,
    total)`` is called after each patient. Returns a summary: counts and seconds.

    ``images=False`` skips rendering and writing the slices (no ``Images_png/``): the tables
    and ``truth.json`` are the same as with images, for analyses that need no pixels.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be at least 1, not {n_patients}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed}")
    if image_size < 64:
        raise ValueError(f"image_size must be at least 64 pixels, not {image_size}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "truth.json").exists():
        raise FileExistsError(f"{out} exists and is not an earlier synthetic cohort; "
                              "choose an empty or new folder")
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if n_patients >= 50 else 1
    started = time.perf_counter()
    with atomic_dir(out) as tmp:
        tmp.chmod(0o755)  # a private temporary folder becomes an ordinary one
        folder = tmp / "Images_png" if images else None
        if folder is not None:
            folder.mkdir()
        build = partial(_build_patient, seed=seed, image_size=image_size, images=folder)
        pids = range(1, n_patients + 1)
        patients = []
        with contextlib.ExitStack() as stack:
            mapper = map
            if workers > 1:
                pool = stack.enter_context(ProcessPoolExecutor(
                    workers, mp_context=multiprocessing.get_context("spawn")))
                mapper = partial(pool.map, chunksize=2)
            try:
                for patient in mapper(build, pids):
                    patients.append(patient)
                    if progress:
                        progress(len(patients), n_patients)
            except BrokenProcessPool:
                raise RuntimeError(
                    "the worker processes that render patients stopped before they could "
                    "start; in a script, call generate() under `if __name__ == \"__main__\":` "
                    "(worker processes import the script), or pass workers=1") from None
        summary = _write_tables(tmp, patients, seed)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


def _write_csv(path: Path, header, rows) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_tables(root: Path, patients: list[_Patient], seed: int) -> dict:
    """Write DL_info.csv, records.csv, outcomes.csv, studies.csv and truth.json."""
    rows = [r for p in patients for s in p.studies for r in s.rows]
    _write_csv(root / "DL_info.csv", DL_COLUMNS, ([r[c] for c in DL_COLUMNS] for r in rows))
    fields = list(RECORD_MISSING)
    _write_csv(root / "records.csv", ["Patient_index", *fields],
               ([p.pid, *(p.record[f] for f in fields)] for p in patients))
    _write_csv(root / "outcomes.csv", ["Patient_index", "time_days", "event"],
               ([p.pid, p.outcome["time_days"], p.outcome["event"]] for p in patients))
    _write_csv(root / "studies.csv", ["Patient_index", "Study_index", "day"],
               ([p.pid, s.index, s.day] for p in patients for s in p.studies))
    cells = [p.record[f] for p in patients for f in fields]
    missing = sum(c == "" for c in cells) / len(cells)
    truth = {
        "seed": seed,
        "n_patients": len(patients),
        "params": _params(),
        "lesions": {k: v for p in patients for k, v in p.lesion_truth.items()},
        "patients": {_pid(p.pid): p.truth for p in patients},
        "effects": [
            {"name": name, "kind": kind, "definition": definition,
             **({"column": name} if kind == "record" and name in RECORD_MISSING else {}),
             **({"hr": math.exp(beta)} if sd == 1.0 and centre == 0.0
                else {"log_hr_per_sd": beta, "centre": centre, "sd": sd}),
             "direction": 1 if beta > 0 else -1}
            for name, kind, definition, beta, centre, sd in EFFECTS
        ],
        "decoys": DECOYS,
        "indirect": INDIRECT,
        "missing_fraction": round(missing, 4),
    }
    (root / "truth.json").write_text(json.dumps(truth, indent=1, default=_json_default) + "\n")
    n_events = sum(p.outcome["event"] for p in patients)
    return {
        "patients": len(patients),
        "studies": sum(len(p.studies) for p in patients),
        "lesion_rows": len(rows),
        "physical_lesions": sum(len(p.truth["physical_lesions"]) for p in patients),
        "slices": (sum(1 for _ in (root / "Images_png").rglob("*.png"))
                   if (root / "Images_png").is_dir() else 0),
        "events": n_events,
        "censored_fraction": round(1 - n_events / len(patients), 3),
        "missing_fraction": truth["missing_fraction"],
    }


def _params() -> dict:
    """Every constant that defines the cohort, for truth.json."""
    return {
        "type_prior": TYPE_PRIOR, "primary_share": PRIMARY_SHARE, "type_sites": TYPE_SITES,
        "sites": {k: {"labels": v[0], "z_range": v[1], "region": v[2]} for k, v in SITES.items()},
        "looks": LOOKS, "size_median_mm": SIZE_MEDIAN_MM, "size_log_sd": SIZE_LOG_SD,
        "size_range_mm": SIZE_RANGE_MM, "study_count_p": STUDY_COUNT_P,
        "study_gap_days": STUDY_GAP_DAYS, "lesion_count_p": LESION_COUNT_P,
        "annotate_p": ANNOTATE_P, "companion_p": COMPANION_P, "split_p": SPLIT_P,
        "label_error_rate": LABEL_ERROR_RATE, "noisy_flag_p": NOISY_FLAG_P,
        "slice_intervals_mm": SLICE_INTERVALS_MM, "fov_mm": FOV_MM,
        "growth_mean": GROWTH_MEAN, "growth_sd": GROWTH_SD,
        "growth_lesion_sd": GROWTH_LESION_SD, "record_missing": RECORD_MISSING,
        "age_missing": AGE_MISSING, "survival": SURVIVAL,
    }


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to truth.json")
