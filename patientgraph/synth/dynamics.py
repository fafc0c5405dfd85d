"""Lesion growth dynamics: what each physical lesion's true long diameter is on any day, and
the reader error of its recorded RECIST diameters.

A growth forecast is only worth measuring on a cohort where "lesions that look like this one,
in patients like this one" tell something about where a lesion is heading, so the rate of a
lesion depends on what it is, on its patient and on chance:

``rate = growth_p + TYPE_RATE[type] + SPICULATED_RATE * spiculated + NECROTIC_RATE * necrotic
+ ECOG_RATE * (ecog - ECOG_CENTRE) + e``, per day, in log(long diameter), where ``growth_p``
is the patient's base rate (normal, GROWTH_MEAN, GROWTH_SD, drawn as before these dynamics),
``e`` the random lesion effect (normal, 0, GROWTH_LESION_SD),
``spiculated`` the look's spiculated margin and ``necrotic`` a necrotic or cavitated core (a
heterogeneous lesion). ECOG is the patient's true ECOG, also when records.csv misses it.
Spiculated and necrotic lesions grow faster (infiltrative growth, a tumour that outgrew its
blood supply); the type offsets are small next to GROWTH_SD so the patient stays the main
source of growth.

A share of patients respond to treatment (RESPONSE_P, lower with ECOG 2-3): each of their
lesions present at the first study shrinks by a lesion-specific depth (RESPONSE_DEPTH: 30-60%
for most) until the patient's nadir day (NADIR_DAYS, two to four months), then regrows at
``max(rate, 0) + REGROW_EXTRA`` (resistant disease). So for days ``t`` since the lesion's
onset, ``log d(t) = log d0 + shrink_rate * min(t, nadir) + regrow_rate * max(t - nadir, 0)``;
a non-responding lesion has ``nadir = 0`` and ``regrow_rate = rate``: log-linear growth (or
shrinkage, for a negative rate). The diameter never exceeds MAX_LONG_MM.

New lesions: in patients with two or more studies, each lesion after the first appears after
the first study with chance NEW_LESION_P (more often in progressing patients); its onset day
is uniform between the first and the last study, its size at onset is its drawn size, and it
does not respond (a new lesion is progression).

``truth.json`` gives each physical lesion these parameters: ``rate`` (the lesion's base rate,
also its ``growth_rate``), ``spiculated`` and ``necrotic``, ``onset_day``, ``response``,
``nadir_day`` (days after onset; 0 without response), ``shrink_rate``, ``regrow_rate`` and
``noise_sd``. A patient's ``growth_rate``, the planted survival covariate, is what tracking its
lesions measures: the mean over its lesions of the true slope across the studies that show
them (:func:`_observed_slope`), standardised by GROWTH_SLOPE_CENTRE and GROWTH_SLOPE_SD so that its
effect per sd is as strong as before; ``base_growth_rate`` is ``growth_p``, and ``traits``
say whether the patient responds (``treatment_response``).

The images show the true size; the recorded diameters in DL_info.csv are a reader's, the true
ones times ``exp(N(0, READER_LOG_SD))`` for each axis (about 8%: the inter-reader variation of
RECIST reported for CT), so a forecast is scored against :func:`true_long_mm`, not the table.
The planted ``lesion_burden`` sums the recorded diameters, as discovery reads them.

The dynamics and the reader draw from their own streams, keyed by (seed, patient, purpose[,
study, lesion]), so the output does not depend on the number of processes; the patient's
record is drawn before its studies (the rates need its ECOG), so a seed gives other images
and rows than before these dynamics, from the same distributions.
"""

from __future__ import annotations

import math

import numpy as np

from patientgraph.synth.params import (
    _DYNAMICS,
    _READER,
    ECOG_CENTRE,
    ECOG_RATE,
    GROWTH_MEAN,
    GROWTH_SD,
    MAX_LONG_MM,
    NADIR_DAYS,
    NECROTIC_RATE,
    NEW_LESION_P,
    READER_LOG_SD,
    REGROW_EXTRA,
    RESPONSE_DEPTH,
    RESPONSE_P,
    SPICULATED_RATE,
    TYPE_RATE,
    _rng,
)


def true_long_mm(params: dict, day: float) -> float:
    """The true long diameter (mm) of a lesion on ``day`` (days since the patient's first
    study), from its ``truth.json`` entry (``physical_lesions[...]``); 0.0 before its onset.

    Uses ``long_mm_day0`` (the size at onset, which is day 0 for most lesions),
    ``onset_day``, ``shrink_rate``, ``nadir_day`` (days after onset) and ``regrow_rate``;
    capped at MAX_LONG_MM as the images are.
    """
    t = float(day) - params["onset_day"]
    if t < 0:
        return 0.0
    nadir = params["nadir_day"]
    log_change = params["shrink_rate"] * min(t, nadir) + params["regrow_rate"] * max(t - nadir, 0.0)
    return min(params["long_mm_day0"] * math.exp(log_change), MAX_LONG_MM)  # exact at onset


def _sample_dynamics(seed: int, pid: int, lesions: list, days, growth: float,
                     ecog: int) -> bool:
    """Give every lesion its trajectory (``lesion.dynamics``); returns whether the patient
    responds. The lesion's ``growth`` already holds the base rate plus the random effect."""
    rng = _rng(seed, pid, _DYNAMICS)
    responder = bool(rng.random() < RESPONSE_P[0 if ecog <= 1 else 1])
    nadir = int(rng.integers(NADIR_DAYS[0], NADIR_DAYS[1], endpoint=True)) if responder else 0
    progressing = growth > GROWTH_MEAN + GROWTH_SD / 2
    last_day = int(days[-1])
    for les in lesions:
        look = les.look
        rate = (les.growth + TYPE_RATE[les.true_type]
                + SPICULATED_RATE * look["spiculated"] + NECROTIC_RATE * (look["core"] > 0)
                + ECOG_RATE * (ecog - ECOG_CENTRE))
        new = (les.index > 0 and last_day > 0
               and rng.random() < NEW_LESION_P[1 if progressing else 0])
        onset = int(rng.integers(1, last_day, endpoint=True)) if new else 0
        depth = float(np.clip(rng.normal(*RESPONSE_DEPTH[:2]), *RESPONSE_DEPTH[2:]))
        responds = responder and not new
        les.growth = float(rate)
        les.dynamics = {
            "spiculated": bool(look["spiculated"]), "necrotic": bool(look["core"] > 0),
            "onset_day": onset, "rate": float(rate), "response": responds,
            "nadir_day": nadir if responds else 0,
            "shrink_rate": math.log(1 - depth) / nadir if responds else 0.0,
            "regrow_rate": max(rate, 0.0) + REGROW_EXTRA if responds else float(rate),
            "noise_sd": READER_LOG_SD,
        }
    return responder


def _observed_slope(lesions: list, days) -> float:
    """The patient's growth rate as its studies can show it: the mean, over its lesions
    present at two or more of its studies, of the least-squares slope of the true
    log(long diameter) on those study days. Without such a lesion (one study, or only new
    lesions seen once), the mean slope of its lesions on their first day.

    This is the planted ``growth_rate``: what tracking the patient's lesions estimates from
    their measurements, whatever their dynamics."""
    slopes, first = [], []
    for les in lesions:
        params = {**les.dynamics, "long_mm_day0": les.long0_mm}
        onset = les.dynamics["onset_day"]
        seen = np.array([d for d in days if d >= onset], float)
        if len(seen) >= 2:
            log_d = np.log([true_long_mm(params, d) for d in seen])
            slopes.append(float(np.polyfit(seen, log_d, 1)[0]))
        first.append(math.log(true_long_mm(params, onset + 1) / true_long_mm(params, onset)))
    return float(np.mean(slopes if slopes else first))


def _params() -> dict:
    """The constants of the dynamics, for the parameter block of truth.json."""
    return {
        "type_rate": TYPE_RATE, "spiculated_rate": SPICULATED_RATE,
        "necrotic_rate": NECROTIC_RATE, "ecog_rate": ECOG_RATE, "ecog_centre": ECOG_CENTRE,
        "response_p": RESPONSE_P, "response_depth": RESPONSE_DEPTH, "nadir_days": NADIR_DAYS,
        "regrow_extra": REGROW_EXTRA, "new_lesion_p": NEW_LESION_P,
        "reader_log_sd": READER_LOG_SD,
    }


def _reader_factors(seed: int, pid: int, si: int, lesion: int) -> np.ndarray:
    """exp(reader error) of the (long, short) diameters of one lesion in one study."""
    return np.exp(_rng(seed, pid, _READER, si, lesion).normal(0.0, READER_LOG_SD, 2))
