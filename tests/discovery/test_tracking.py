"""Lesion tracking: a hand-built case, invariants, growth, input errors, and quality against
the truth of a small synthetic cohort."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from benchmarks.bench_discovery import growth_quality, tracking_quality
from discovery.tracking import (
    PAIR_COLUMNS,
    TRACK_COLUMNS,
    LesionTracker,
    lesion_growth,
    patient_growth,
    track_lesions,
    with_days,
)
from patientgraph.errors import InputError

# -- a hand-built cohort -----------------------------------------------------------------------
# Patient A: three studies (days 0, 100, 250), lesions a (lung, top), b (liver, middle) and
# c (pelvis, bottom). b is not measured in study 2; the rows of each study are listed in a
# different order. a grows at 0.002/day, c shrinks at 0.001/day, b stays. Patient B: one
# lesion in study 1, and in study 2 a new lesion somewhere else entirely (no match).
A_PLACES = {"a": (0.30, 0.40, 0.20), "b": (0.60, 0.50, 0.50), "c": (0.50, 0.55, 0.90)}
A_RATES = {"a": 0.002, "b": 0.0, "c": -0.001}
A_STUDIES = {"A_01": (0, "abc"), "A_02": (100, "ca"), "A_03": (250, "bca")}


def _direction(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=16)
    return v / np.linalg.norm(v)


def _hand_built() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rows, emb, studies = [], [], []
    shift = {"A_01": 0.0, "A_02": 0.02, "A_03": -0.015}  # the patient lies a little elsewhere
    for sid, (day, order) in A_STUDIES.items():
        studies.append({"study_id": sid, "patient_id": "A", "day": float(day)})
        for name in order:
            x, y, z = A_PLACES[name]
            rows.append({"lesion_id": f"{sid}_{name}", "patient_id": "A", "study_id": sid,
                         "long_mm": 20.0 * math.exp(A_RATES[name] * day),
                         "loc_x": x + shift[sid], "loc_y": y + shift[sid], "loc_z": z})
            emb.append(_direction(ord(name)))
    for sid, day, name, place in (("B_01", 0, "d", (0.4, 0.4, 0.3)),
                                  ("B_02", 90, "e", (0.7, 0.6, 0.8))):
        studies.append({"study_id": sid, "patient_id": "B", "day": float(day)})
        rows.append({"lesion_id": f"{sid}_{name}", "patient_id": "B", "study_id": sid,
                     "long_mm": 15.0, "loc_x": place[0], "loc_y": place[1], "loc_z": place[2]})
        emb.append(_direction(ord(name)))
    lesions = pd.DataFrame(rows)
    embeddings = pd.DataFrame({"lesion_id": lesions["lesion_id"], "embedding": emb})
    return lesions, pd.DataFrame(studies), embeddings


def _linked(pairs: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(pairs["src"], pairs["dst"], strict=True))


EXPECTED_PAIRS = {("A_01_a", "A_02_a"), ("A_02_a", "A_03_a"), ("A_01_c", "A_02_c"),
                  ("A_02_c", "A_03_c"), ("A_01_b", "A_03_b")}


@pytest.mark.parametrize("use_embeddings", [True, False])
def test_hand_built_matches(use_embeddings):
    lesions, studies, embeddings = _hand_built()
    tracks, pairs, growth = track_lesions(lesions, studies,
                                          embeddings if use_embeddings else None)
    assert list(tracks.columns) == TRACK_COLUMNS
    assert list(pairs.columns) == PAIR_COLUMNS
    assert _linked(pairs) == EXPECTED_PAIRS
    days = dict(zip(zip(pairs["src"], pairs["dst"], strict=True), pairs["days"], strict=True))
    assert days[("A_01_b", "A_03_b")] == 250 and days[("A_01_a", "A_02_a")] == 100
    members = tracks.groupby("track_id")["lesion_id"].apply(lambda s: "".join(x[-1] for x in s))
    assert sorted(members) == ["aaa", "bb", "ccc", "d", "e"]
    assert (tracks["track_id"].str.rsplit("_T", n=1).str[0] == tracks["patient_id"]).all()

    slopes = lesion_growth(tracks).set_index("track_id")["slope"]
    by_lesion = tracks.drop_duplicates("track_id").set_index("track_id")["lesion_id"].str[-1]
    for tid, name in by_lesion.items():
        if name in A_RATES:
            assert slopes[tid] == pytest.approx(A_RATES[name], abs=1e-9)
        else:
            assert math.isnan(slopes[tid])
    growth = growth.set_index("patient_id")
    assert growth.loc["A", "growth_rate"] == pytest.approx(np.mean(list(A_RATES.values())))
    assert growth.loc["A", "n_tracks"] == 3
    assert math.isnan(growth.loc["B", "growth_rate"]) and growth.loc["B", "n_tracks"] == 0


def test_no_gap_links_when_max_gap_is_zero():
    lesions, studies, embeddings = _hand_built()
    _, pairs, _ = track_lesions(lesions, studies, embeddings, {"max_gap": 0})
    assert _linked(pairs) == EXPECTED_PAIRS - {("A_01_b", "A_03_b")}


def test_gate_leaves_a_far_lesion_unmatched():
    lesions, studies, embeddings = _hand_built()
    moved = lesions.copy()
    moved.loc[moved["lesion_id"] == "A_02_a", ["loc_x", "loc_y", "loc_z"]] = (0.9, 0.9, 0.95)
    _, pairs, _ = track_lesions(moved, studies, embeddings)
    linked = set(pairs["src"]) | set(pairs["dst"])
    assert "A_02_a" not in linked
    assert ("A_01_a", "A_03_a") in _linked(pairs)  # the gap link


def test_input_row_order_does_not_matter():
    lesions, studies, embeddings = _hand_built()
    shuffled = lesions.sample(frac=1.0, random_state=3)
    a = track_lesions(lesions, studies, embeddings)[1]
    b = track_lesions(shuffled, studies, embeddings)[1]
    pd.testing.assert_frame_equal(a, b)


def test_tracking_quality_by_hand():
    truth = {"1_01_a": {"physical_lesion": "1_L0"}, "1_02_a": {"physical_lesion": "1_L0"},
             "1_03_a": {"physical_lesion": "1_L0"}, "1_01_b": {"physical_lesion": "1_L1"},
             "1_02_b": {"physical_lesion": "1_L1"}}
    # True pairs: (1_01_a, 1_02_a), (1_02_a, 1_03_a), (1_01_b, 1_02_b).
    pairs = pd.DataFrame({"src": ["1_01_a", "1_01_a", "1_01_b"],
                          "dst": ["1_02_a", "1_03_a", "1_02_a"]})
    q = tracking_quality(pairs, truth)
    assert q == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(1 / 3),
                 "n_pred": 3, "n_true": 3}


def test_growth_quality_is_the_correlation():
    est = pd.DataFrame({"patient_id": ["1", "2", "3", "4"],
                        "growth_rate": [0.001, 0.002, np.nan, 0.004]})
    truth = {"1": {"growth_rate": 1.0}, "2": {"growth_rate": 2.0}, "3": {"growth_rate": 9.0},
             "4": {"growth_rate": 4.0}}
    q = growth_quality(est, truth)
    assert q["n"] == 3 and q["pearson"] == pytest.approx(1.0) and q["spearman"] == 1.0


def test_patient_growth_lists_every_patient():
    growth = pd.DataFrame({"track_id": ["x", "y", "z"], "patient_id": ["1", "1", "2"],
                           "n_points": [2, 3, 1], "slope": [0.01, 0.03, np.nan]})
    out = patient_growth(growth, patients=["1", "2", "3"]).set_index("patient_id")
    assert out.loc["1", "growth_rate"] == pytest.approx(0.02) and out.loc["1", "n_tracks"] == 2
    assert out.loc[["2", "3"], "growth_rate"].isna().all()
    assert (out.loc[["2", "3"], "n_tracks"] == 0).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"gate": 0}, "gate"), ({"max_gap": -1}, "max_gap"), ({"max_gap": 1.5}, "max_gap"),
    ({"scales": {"loc_q": 1.0}}, "unknown scales term 'loc_q'"),
    ({"scales": {"size": 0.0}}, "> 0"), ({"weights": {"embedding": -1}}, ">= 0"),
])
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LesionTracker(**kwargs)


def test_input_errors():
    lesions, studies, embeddings = _hand_built()
    with pytest.raises(InputError, match="Did you mean 'max_gap'"):
        track_lesions(lesions, studies, embeddings, {"max_gapp": 2})
    with pytest.raises(InputError, match="study is not in cohort/studies.parquet") as err:
        track_lesions(lesions, studies[studies["study_id"] != "A_02"], embeddings)
    assert err.value.row == 3 and err.value.column == "study_id" and err.value.more == 1
    with pytest.raises(InputError, match="no embedding for 1 lesions"):
        track_lesions(lesions, studies, embeddings.iloc[1:])
    bad = lesions.copy()
    bad.loc[4, "long_mm"] = 0.0
    with pytest.raises(InputError, match="not positive") as err:
        track_lesions(bad, studies, embeddings)
    assert err.value.row == 4 and err.value.column == "long_mm"
    with pytest.raises(InputError, match="has no column 'loc_z'"):
        LesionTracker().fit(with_days(lesions, studies).drop(columns="loc_z"))
    with pytest.raises(InputError, match="lesion_id twice"):
        LesionTracker().fit(with_days(pd.concat([lesions, lesions.iloc[:1]]), studies))


# -- a small synthetic cohort ------------------------------------------------------------------
@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """16 synthetic patients ingested and embedded (fast preset): (workspace, truth)."""
    from embed import stage
    from patientgraph import Workspace, ingest_deeplesion
    from patientgraph.synth import generate

    root = tmp_path_factory.mktemp("tracking")
    generate(root / "cohort", n_patients=16, seed=4, image_size=128)
    c = root / "cohort"
    ingest_deeplesion(c / "DL_info.csv", c / "Images_png", root / "ws",
                      studies=c / "studies.csv")
    ws = Workspace(root / "ws")
    stage.run(ws, config={"preset": "fast"})
    return ws, json.loads((c / "truth.json").read_text())


@pytest.fixture(scope="module")
def tracked(cohort):
    ws, _ = cohort
    lesions = ws.table("lesions")
    embeddings = pd.read_parquet(ws.path("embeddings/lesions.parquet"))
    frame = with_days(lesions, ws.table("studies"))
    return frame, LesionTracker().fit(frame, embeddings)


def test_tracks_are_consistent(tracked):
    frame, tracker = tracked
    tracks, pairs = tracker.tracks_, tracker.pairs_
    # Every lesion is in exactly one track, with its own patient, study, day and size.
    assert sorted(tracks["lesion_id"]) == sorted(frame["lesion_id"])
    merged = tracks.merge(frame, on="lesion_id", suffixes=("", "_in"))
    for col in ("patient_id", "study_id", "day", "long_mm"):
        assert (merged[col] == merged[f"{col}_in"]).all(), col
    assert (tracks.groupby("track_id")["patient_id"].nunique() == 1).all()
    assert not tracks.duplicated(["track_id", "study_id"]).any()
    assert (tracks.groupby("track_id")["day"].diff().dropna() > 0).all()
    # The pairs are exactly the consecutive members of the tracks.
    nxt = tracks.groupby("track_id")["lesion_id"].shift(-1)
    consecutive = set(zip(tracks["lesion_id"][nxt.notna()], nxt.dropna(), strict=True))
    assert _linked(pairs) == consecutive
    assert (pairs["days"] > 0).all()
    assert pairs["src"].is_unique and pairs["dst"].is_unique
    growth = tracker.lesion_growth_
    assert growth.set_index("track_id")["n_points"].to_dict() == (
        tracks.groupby("track_id").size().to_dict())


def test_tracking_recovers_the_physical_lesions(cohort, tracked):
    _, truth = cohort
    _, tracker = tracked
    q = tracking_quality(tracker.pairs_, truth["lesions"])
    assert q["n_true"] >= 30
    assert q["precision"] >= 0.95 and q["recall"] >= 0.9, q
    g = growth_quality(tracker.patient_growth_, truth["patients"])
    assert g["n"] >= 8 and g["pearson"] >= 0.8, g
