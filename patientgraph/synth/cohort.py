"""The cohort and clinical model: each patient's studies and measured rows (DL_info.csv),
given labels, record and outcome, and the truth behind them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from patientgraph.synth.anatomy import _Body, _Frame, _sample_body
from patientgraph.synth.dynamics import (
    _observed_slope,
    _reader_factors,
    _sample_dynamics,
    true_long_mm,
)
from patientgraph.synth.lesions import _Lesion, _LesionView, _sample_lesions
from patientgraph.synth.params import (
    _ANATOMY,
    _PLAN,
    _TEXTURE,
    AGE_MISSING,
    ANNOTATE_P,
    BBOX_PAD_PX,
    CEA_TYPES,
    EFFECTS,
    FOV_MM,
    GROWTH_MEAN,
    GROWTH_SD,
    LABEL_ERROR_RATE,
    LESION_COUNT_P,
    MAX_LONG_MM,
    NOISY_FLAG_P,
    READER_LOG_SD,
    RECORD_MISSING,
    SIZE_RANGE_MM,
    SLICE_INTERVAL_P,
    SLICE_INTERVALS_MM,
    SMOKING_TYPES,
    SPLIT_P,
    STUDY_COUNT_P,
    STUDY_GAP_DAYS,
    SURVIVAL,
    TYPE_PRIOR,
    WINDOWS,
    _rng,
)


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
    # The record comes before the studies: the lesions' rates depend on the true ECOG.
    covariates, record, traits = _records(rng, primary, lesions, bmi, male, age)
    traits["treatment_response"] = _sample_dynamics(seed, pid, lesions, days, growth,
                                                    int(covariates["ecog"]))
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
    first = [r["_recorded_long_mm"] for r in studies[0].rows]  # the burden as read
    covariates["lesion_burden"] = math.log(sum(first))
    covariates["growth_rate"] = _observed_slope(lesions, days)
    outcome, eta = _outcome(rng, covariates)
    truth = {
        "primary_type": primary, "growth_rate": covariates["growth_rate"],
        "base_growth_rate": growth, "sex": "M" if male else "F",
        "age": round(age, 1), "split": split, "n_studies": len(studies),
        "traits": traits, "covariates": covariates, "linear_predictor": eta,
        "physical_lesions": {
            f"{_pid(pid)}_L{les.index}": {
                "true_type": les.true_type, "site": les.site, "growth_rate": les.growth,
                "long_mm_day0": les.long0_mm, "location_uvz": [les.u, les.v, les.z],
                **les.dynamics,
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
        long_mm = true_long_mm({**les.dynamics, "long_mm_day0": les.long0_mm}, day)
        if long_mm < 3.0:  # not yet there, or shrunk out of sight
            continue
        z_key = (key - 1) * interval / body.length_mm
        a, b = body.semi_axes(body.level(z_key))
        scale_px = long_mm / les.long_unit / frame.spacing
        reach = (scale_px * (1 + np.abs(les.harmonics[:, 1]).sum()) * _READER_MAX
                 + BBOX_PAD_PX + 2)  # room for the reader's longest recorded axes
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
    rows = [_measure(rng, _reader_factors(seed, pid, si, c[0].lesion.index), pid, si, series,
                     interval, frame, *c) for c in chosen]
    rows.sort(key=lambda r: (r["Key_slice_index"], r["_lesion"]))
    return _Study(si, day, series, interval, frame, float(rng.uniform(10, 20)), views, rows)


def _measure(rng, reader, pid, si, series, interval, frame, view, key, z_key, long_mm) -> dict:
    """One DL_info row: the RECIST axes of the lesion on its key slice, 1-based pixels.

    ``reader``: the reader's (long, short) factors on the true diameters; each axis is
    stretched about its midpoint, so the coordinates and the diameters agree.
    """
    les = view.lesion
    t = math.radians(les.angle)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    ends = les.recist_unit @ rot.T * view.scale_px + [view.cx, view.cy]
    lo, hi = SIZE_RANGE_MM[0] / long_mm, MAX_LONG_MM / long_mm  # recorded sizes stay in range
    factors = np.clip(reader, 1 / _READER_MAX, _READER_MAX)
    factors[0] = min(max(factors[0], lo), hi)
    for axis, f in zip((slice(0, 2), slice(2, 4)), factors, strict=True):
        mid = ends[axis].mean(0)
        ends[axis] = mid + (ends[axis] - mid) * f
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
        "_recorded_long_mm": long_px * frame.spacing,
        "_short_mm": long_mm * les.short_unit / les.long_unit,
    }


_READER_MAX = math.exp(3 * READER_LOG_SD)
"""The reader's error is clipped at three sd, so recorded axes stay inside the image."""


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
