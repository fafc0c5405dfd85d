"""The constants that define the synthetic cohort (all reported in ``truth.json``) and
the keyed random streams every draw comes from."""

from __future__ import annotations

import math

import numpy as np

from patientgraph.deeplesion import COLUMNS

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
"""Random lesion effect on the rate: lesions of one patient differ beyond type and look."""

# Lesion dynamics (patientgraph.synth.dynamics documents the model and why these values).
TYPE_RATE = {1: -0.0004, 2: -0.0005, 3: -0.0003, 4: 0.0006, 5: 0.0004, 6: -0.0006, 7: 0.0,
             8: 0.0002}
"""Offset of each true type's log-diameter rate per day (bone, nodes and kidney slower, liver
and lung faster); nearly centred under TYPE_PRIOR, so types move lesions around the patient's
base rate rather than shift every patient."""
SPICULATED_RATE = 0.0015
"""Extra rate of a spiculated (infiltrative) lesion."""
NECROTIC_RATE = 0.0010
"""Extra rate of a heterogeneous lesion (necrotic or cavitated core: it outgrew its blood
supply)."""
ECOG_RATE = 0.0003
"""Extra rate per ECOG point above the cohort mean (ECOG_CENTRE)."""
ECOG_CENTRE = 1.03
RESPONSE_P = (0.25, 0.12)
"""P(a patient's treatment works for a while) for ECOG 0-1 and for ECOG 2-3."""
RESPONSE_DEPTH = (0.45, 0.12, 0.15, 0.65)
"""A responding lesion's fractional shrink at nadir: normal (mean, sd) clipped to (lo, hi)."""
NADIR_DAYS = (60, 120)
"""Uniform range of a responder's nadir day, after which resistant disease regrows."""
REGROW_EXTRA = 0.001
"""A responding lesion regrows at max(its rate, 0) + this (resistance)."""
NEW_LESION_P = (0.15, 0.30)
"""Share of lesions (after the first) that appear after the first study, in patients with two
or more studies: for the others and for progressing patients (base rate above
GROWTH_MEAN + GROWTH_SD / 2)."""
READER_LOG_SD = 0.08
"""Reader (RECIST) error: the recorded diameters are the true ones times exp(N(0, sd))."""
GROWTH_SLOPE_CENTRE, GROWTH_SLOPE_SD = 0.0003, 0.0032
"""Mean and sd of the patients' mean observed slope (the ``growth_rate`` covariate) under
these dynamics, so that its survival effect keeps its strength per sd: the type, look and
ECOG terms move it up, responders add a tail of shrinking patients."""

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
     "the first study, as recorded)", 0.55, 4.07, 0.62),
    ("growth_rate", "imaging", "per-patient mean slope of log(long diameter) per day (true "
     "sizes, least squares over the studies that show each lesion)", 0.55, GROWTH_SLOPE_CENTRE,
     GROWTH_SLOPE_SD),
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



def _rng(*key: int) -> np.random.Generator:
    """A random stream keyed by non-negative integers (seed, patient, purpose, ...)."""
    return np.random.default_rng([int(k) for k in key])


_PLAN, _TEXTURE, _NOISE, _ANATOMY, _DYNAMICS, _READER = 1, 2, 3, 4, 5, 6
