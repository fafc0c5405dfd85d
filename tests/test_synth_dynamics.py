"""Lesion growth dynamics of the synthetic cohort: the truth function, responders, rates by
type and look, new lesions, reader error and determinism."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from patientgraph import synth
from patientgraph.synth.params import (
    ECOG_RATE,
    NECROTIC_RATE,
    READER_LOG_SD,
    SPICULATED_RATE,
    TYPE_RATE,
)

OLD_LESION_KEYS = {"true_type", "site", "growth_rate", "long_mm_day0", "location_uvz"}
NEW_LESION_KEYS = {"onset_day", "rate", "response", "nadir_day", "shrink_rate", "regrow_rate",
                   "noise_sd"}
OLD_PATIENT_KEYS = {"primary_type", "growth_rate", "sex", "age", "split", "n_studies",
                    "traits", "covariates", "linear_predictor", "physical_lesions"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dynamics") / "cohort"
    synth.generate(root, n_patients=40, seed=5, image_size=64, images=False)
    return root


@pytest.fixture(scope="module")
def truth(cohort) -> dict:
    return json.loads((cohort / "truth.json").read_text())


@pytest.fixture(scope="module")
def days(cohort) -> dict[tuple[str, int], int]:
    with open(cohort / "studies.csv", newline="") as fh:
        return {(f"{int(r['Patient_index']):06d}", int(r["Study_index"])): int(r["day"])
                for r in csv.DictReader(fh)}


def _observations(cohort, truth, days):
    """(truth lesion entry, physical lesion entry, day, recorded long mm) of every row."""
    seen: dict[str, int] = defaultdict(int)
    with open(cohort / "DL_info.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        stem = row["File_name"][:-4]
        t = truth["lesions"][f"{stem}_{seen[stem]}"]
        seen[stem] += 1
        pid = t["physical_lesion"].split("_")[0]
        phys = truth["patients"][pid]["physical_lesions"][t["physical_lesion"]]
        spacing = float(row["Spacing_mm_px_"].split(", ")[0])
        recorded = float(row["Lesion_diameters_Pixel_"].split(", ")[0]) * spacing
        out.append((t, phys, days[(pid, int(row["Study_index"]))], recorded))
    return out


def test_every_old_truth_key_is_kept_and_the_new_ones_added(truth):
    assert {"growth_mean", "growth_sd", "growth_lesion_sd", "type_rate", "response_p",
            "new_lesion_p", "reader_log_sd"} <= set(truth["params"])
    for p in truth["patients"].values():
        assert OLD_PATIENT_KEYS <= set(p)
        assert p["covariates"]["growth_rate"] == p["growth_rate"]  # the planted covariate
        assert isinstance(p["base_growth_rate"], float)
        assert isinstance(p["traits"]["treatment_response"], bool)
        for les in p["physical_lesions"].values():
            assert OLD_LESION_KEYS | NEW_LESION_KEYS <= set(les)
            assert les["growth_rate"] == les["rate"]


def test_the_truth_function_gives_the_drawn_sizes(cohort, truth, days):
    obs = _observations(cohort, truth, days)
    assert len(obs) > 100
    for t, phys, day, _ in obs:
        assert synth.true_long_mm(phys, day) == pytest.approx(t["long_mm"], abs=1e-3)


def test_recorded_diameters_carry_the_reader_error(cohort, truth, days):
    obs = _observations(cohort, truth, days)
    err = np.log([rec / t["long_mm"] for t, _, _, rec in obs])
    # Clipping at the size range and the annotator's hand barely change the spread.
    assert abs(err.mean()) < 0.03
    assert err.std() == pytest.approx(READER_LOG_SD, rel=0.25)


def test_responders_shrink_then_regrow(truth):
    patients = list(truth["patients"].values())
    responders = [p for p in patients if p["traits"]["treatment_response"]]
    assert 0 < len(responders) < len(patients) / 2
    regrown = 0
    for p in responders:
        for les in p["physical_lesions"].values():
            if not les["response"]:
                assert les["onset_day"] > 0  # only new lesions of a responder do not respond
                continue
            nadir = les["nadir_day"]
            d0, low = synth.true_long_mm(les, 0), synth.true_long_mm(les, nadir)
            assert 60 <= nadir <= 120 and 0.3 <= low / d0 <= 0.9
            late = synth.true_long_mm(les, nadir + 300)
            assert les["regrow_rate"] > 0 and late > low
            regrown += 1
    assert regrown >= 5
    for p in patients:
        if not p["traits"]["treatment_response"]:
            assert not any(les["response"] for les in p["physical_lesions"].values())


def test_the_patient_growth_rate_is_the_mean_observed_slope(truth, days):
    # Least squares of the true log diameter over the study days that show each lesion.
    checked = 0
    for pid, p in truth["patients"].items():
        study_days = sorted(d for (q, _), d in days.items() if q == pid)
        if len(study_days) != p["n_studies"] or len(study_days) < 2:
            continue
        slopes = []
        for les in p["physical_lesions"].values():
            seen = [d for d in study_days if d >= les["onset_day"]]
            if len(seen) >= 2:
                log_d = np.log([synth.true_long_mm(les, d) for d in seen])
                slopes.append(np.polyfit(seen, log_d, 1)[0])
        assert p["growth_rate"] == pytest.approx(np.mean(slopes), rel=1e-6, abs=1e-12)
        checked += 1
    assert checked >= 20


def test_non_responders_are_log_linear(truth):
    for p in truth["patients"].values():
        for les in p["physical_lesions"].values():
            if les["response"]:
                continue
            on = les["onset_day"]
            a, b = synth.true_long_mm(les, on), synth.true_long_mm(les, on + 100)
            if b < 110.0:
                assert np.log(b / a) == pytest.approx(100 * les["rate"], abs=1e-9)


def test_rates_depend_on_type_and_look_with_the_planted_signs():
    # Plans only: 120 patients are enough for a least-squares fit of the rate model.
    planned = [synth._plan_patient(2, pid, 64) for pid in range(1, 121)]
    rows = [(les, p.truth) for p in planned for les in p.truth["physical_lesions"].values()]
    types = sorted(TYPE_RATE)
    x = np.array([[*(float(les["true_type"] == t) for t in types), p["base_growth_rate"],
                   p["covariates"]["ecog"], float(les["spiculated"]), float(les["necrotic"])]
                  for les, p in rows])
    y = np.array([les["rate"] for les, _ in rows])
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    fitted = dict(zip(types, coef[:len(types)], strict=True))
    assert coef[len(types)] == pytest.approx(1.0, abs=0.15)  # the patient's base rate
    assert coef[-3] == pytest.approx(ECOG_RATE, abs=0.0003)
    assert coef[-2] == pytest.approx(SPICULATED_RATE, abs=0.0006)
    assert coef[-1] == pytest.approx(NECROTIC_RATE, abs=0.0006)
    # Fast types (liver, lung) above slow ones (abdomen, kidney, nodes), as planted.
    assert min(fitted[4], fitted[5]) > max(fitted[2], fitted[3], fitted[6])


def test_new_lesions_are_absent_before_their_onset(cohort, truth, days):
    new = {k: les for p in truth["patients"].values()
           for k, les in p["physical_lesions"].items() if les["onset_day"] > 0}
    assert new
    eligible = [les for p in truth["patients"].values() if p["n_studies"] >= 2
                for les in p["physical_lesions"].values()]
    assert 0.03 <= len(new) / len(eligible) <= 0.35
    for t, phys, day, _ in _observations(cohort, truth, days):
        assert day >= phys["onset_day"]
        if t["physical_lesion"] in new:
            assert not phys["response"]
    assert all(synth.true_long_mm(les, les["onset_day"] - 1) == 0.0 for les in new.values())


def test_same_seed_same_bytes_serial_or_parallel(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    synth.generate(a, n_patients=6, seed=9, image_size=64, images=False)
    synth.generate(b, n_patients=6, seed=9, image_size=64, images=False, workers=2)
    for name in ("DL_info.csv", "records.csv", "outcomes.csv", "studies.csv", "truth.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
