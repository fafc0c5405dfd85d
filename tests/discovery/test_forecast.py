"""discovery.forecast: growth forecasts of lesion tracks, on small hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from discovery.forecast import (
    FORECAST_COLUMNS,
    SUMMARY_COLUMNS,
    GrowthForecaster,
    backtest,
    check_tracks,
    conformal_quantile,
    forecast_on_day,
    forecast_tracks,
    history_stats,
    patient_summary,
    recist_category,
)
from patientgraph.errors import InputError

DIM = 8


def cohort(n_patients: int = 80, noise: float = 0.1, seed: int = 0):
    """Tracks whose log size grows at a rate set by the lesion's kind (its embedding's
    direction) and the patient, measured with ``noise`` (sd of log size)."""
    rng = np.random.default_rng(seed)
    kinds = rng.normal(size=(3, DIM))
    kind_rate = np.array([-0.002, 0.0, 0.003])
    rows, lesion_vec, patient_vec = [], {}, {}
    for p in range(n_patients):
        pid = f"P{p:03d}"
        days = np.cumsum(np.r_[0, rng.integers(60, 200, rng.integers(0, 4))]).astype(float)
        p_rate = rng.normal(0, 0.0005)
        patient_vec[pid] = rng.normal(size=DIM)
        for t in range(rng.integers(1, 4)):
            kind = rng.integers(3)
            size0, rate = rng.uniform(10, 40), kind_rate[kind] + p_rate
            for j, day in enumerate(days):
                lid = f"{pid}_{j}_{t}"
                lesion_vec[lid] = kinds[kind] + 0.3 * rng.normal(size=DIM)
                rows.append({"track_id": f"{pid}_T{t}", "lesion_id": lid, "patient_id": pid,
                             "study_id": f"{pid}_{j}", "day": day,
                             "long_mm": size0 * np.exp(rate * day + noise * rng.normal())})
    tracks = pd.DataFrame(rows)
    le = pd.DataFrame({"lesion_id": list(lesion_vec), "embedding": list(lesion_vec.values())})
    pe = pd.DataFrame({"patient_id": list(patient_vec),
                       "embedding": list(patient_vec.values())})
    return tracks, le, pe


@pytest.fixture(scope="module")
def small():
    return cohort()


def line_track(pid: str, days, sizes, track: str = "T1") -> pd.DataFrame:
    return pd.DataFrame({"track_id": f"{pid}_{track}", "patient_id": pid,
                         "lesion_id": [f"{pid}_{track}_{i}" for i in range(len(days))],
                         "study_id": [f"{pid}_{i}" for i in range(len(days))],
                         "day": np.asarray(days, float), "long_mm": np.asarray(sizes, float)})


def test_carry_forward_and_own_trend_exact(small):
    tracks, le, pe = small
    new = line_track("Z", [0, 100, 200], 10 * np.exp(0.001 * np.array([0, 100, 200])))
    target = pd.DataFrame({"track_id": ["Z_T1"], "target_day": [300.0]})
    cf = GrowthForecaster("carry_forward").fit(tracks).predict(target, tracks=new)
    ot = GrowthForecaster("own_trend").fit(tracks).predict(target, tracks=new)
    assert cf["long_mm"].iloc[0] == pytest.approx(10 * np.exp(0.2))
    assert ot["long_mm"].iloc[0] == pytest.approx(10 * np.exp(0.3))
    # one measurement: own trend falls back to carry-forward
    one = GrowthForecaster("own_trend").fit(tracks).predict(target, tracks=new.iloc[:1])
    assert one["long_mm"].iloc[0] == pytest.approx(10.0)
    assert (cf["long_mm_lo"] < cf["long_mm"]).all() and (cf["long_mm"] < cf["long_mm_hi"]).all()


def test_own_trend_matches_least_squares():
    days, sizes = np.array([0.0, 50, 170, 260]), np.array([12.0, 14.5, 13.9, 19.0])
    stats = history_stats(check_tracks(line_track("A", days, sizes)))
    expected = np.polyfit(days, np.log(sizes), 1)[0]  # the reference: numpy's fit
    assert stats["slope"].iloc[0] == pytest.approx(expected)


def _early(tracks: pd.DataFrame, pid: str) -> pd.DataFrame:
    rows = tracks[tracks["patient_id"] == pid]
    return rows[rows["day"] == rows["day"].min()]


def test_similarity_never_uses_the_forecast_patients_future(small):
    tracks, le, pe = small
    model = GrowthForecaster().fit(tracks, None, le, pe)
    pid = next(p for p in model.train_patients_
               if tracks.loc[tracks["patient_id"] == p, "day"].nunique() >= 3)
    poisoned = tracks.copy()
    later = (poisoned["patient_id"] == pid) & (poisoned["day"] > 0)
    poisoned.loc[later, "long_mm"] *= np.exp(poisoned.loc[later, "day"] / 20)  # huge growth
    other = GrowthForecaster().fit(poisoned, None, le, pe)
    early = check_tracks(_early(tracks, pid))
    hs = history_stats(early)
    a = model._features(hs, early)
    b = other._features(hs, early)
    # the neighbour priors of the patient come from other patients only: same either way
    pd.testing.assert_series_equal(a["lesion_nb"], b["lesion_nb"])
    pd.testing.assert_series_equal(a["patient_nb"], b["patient_nb"])


def test_similarity_falls_back_without_other_patients_follow_up(small):
    tracks, le, pe = small
    train = GrowthForecaster().fit(tracks).train_patients_  # the split needs no embeddings
    days = tracks.groupby("patient_id")["day"].nunique()
    pid = next(p for p in train if days[p] >= 2)
    # only this patient's lesions have embeddings: the lesion pool holds its tracks alone
    only = le[le["lesion_id"].str.startswith(pid)]
    model = GrowthForecaster().fit(tracks, None, only, None)
    early = check_tracks(_early(tracks, pid))
    feats = model._features(history_stats(early), early)
    assert np.allclose(feats["lesion_nb"], model.pool_mean_)


def test_shrinkage_moves_toward_own_slope_with_more_history(small):
    tracks, le, pe = small
    model = GrowthForecaster(siblings=False).fit(tracks, None, le, pe)
    rate = 0.003  # far above any prior in the cohort
    gaps = []
    for n in (2, 3, 5, 8):
        days = np.arange(n) * 30.0
        new = line_track("Z", days, 20 * np.exp(rate * days))
        last = days[-1]
        p = model.predict(pd.DataFrame({"track_id": ["Z_T1"], "target_day": [last + 100]}),
                          tracks=new)
        ybar, tbar = np.log(20) + rate * days.mean(), days.mean()  # the line's centroid
        implied = (np.log(p["long_mm"].iloc[0]) - ybar) / (last + 100 - tbar)
        gaps.append(abs(implied - rate))
    assert all(b < a for a, b in zip(gaps, gaps[1:], strict=False)), gaps


def test_one_measurement_grows_at_the_prior_rate(small):
    tracks, le, pe = small
    model = GrowthForecaster(siblings=False).fit(tracks, None, le, pe)
    new = line_track("Z", [0.0], [20.0])
    p = model.predict(pd.DataFrame({"track_id": ["Z_T1"], "target_day": [100.0]}), tracks=new)
    rows = check_tracks(new)
    prior = model._features(history_stats(rows), rows).to_numpy() @ model.coef_  # per 100 days
    assert p["long_mm"].iloc[0] == pytest.approx(20 * np.exp(prior[0]), rel=1e-6)


def test_conformal_quantile_coverage_near_nominal():
    rng = np.random.default_rng(1)
    hits = []
    for _ in range(200):
        calib, fresh = np.abs(rng.normal(size=99)), np.abs(rng.normal(size=50))
        hits.append(np.mean(fresh <= conformal_quantile(calib, 0.8)))
    assert np.mean(hits) == pytest.approx(0.8, abs=0.02)
    assert conformal_quantile(np.ones(3), 0.8) == np.inf  # too few to promise 80%


def test_backtest_coverage_on_known_noise():
    tracks, le, pe = cohort(n_patients=800, noise=0.1, seed=3)
    res = backtest(tracks, None, le, pe, methods={"similarity": {"method": "similarity"},
                                                  "carry_forward": {"method": "carry_forward"}})
    errors = res["errors"]
    for method, e in errors.groupby("method"):
        assert e["covered"].mean() == pytest.approx(0.8, abs=0.07), method
    mae = res["mae"].set_index(["method", "history"])["mae"]
    assert mae[("similarity", ">=2")] < mae[("carry_forward", ">=2")]
    assert set(res["categories"].columns) == {"method", "n", "accuracy", "macro_f1"}


@pytest.mark.parametrize(("baseline", "forecast", "nadir", "expected"), [
    (100.0, 120.0, None, "progression"),        # exactly +20% and +20 mm
    (100.0, 119.99, None, "stable"),
    (25.0, 30.0, None, "progression"),          # exactly +20% and exactly +5 mm
    (20.0, 24.0, None, "stable"),               # +20% but only +4 mm
    (100.0, 70.0, None, "partial_response"),    # exactly -30%
    (100.0, 70.01, None, "stable"),
    (100.0, 72.0, 60.0, "progression"),         # +20% from the nadir, though below baseline
    (100.0, 65.0, 60.0, "partial_response"),
])
def test_recist_category_boundaries(baseline, forecast, nadir, expected):
    assert recist_category(baseline, forecast, nadir) == expected


def test_forecast_tracks_columns_and_targets(small):
    tracks, le, pe = small
    studies = pd.DataFrame({"patient_id": ["P000"], "day": [1000.0]})
    out = forecast_tracks(tracks, None, le, pe, next_days=studies)
    assert list(out.columns) == FORECAST_COLUMNS
    n_tracks = tracks["track_id"].nunique()
    p0 = tracks.loc[tracks["patient_id"] == "P000", "track_id"].nunique()
    assert len(out) == 2 * n_tracks + p0
    last = tracks.groupby("track_id")["day"].max()
    ahead = out["target_day"] - out["track_id"].map(last)
    assert set(np.round(ahead[out["patient_id"] != "P000"])) == {90.0, 180.0}
    summary = patient_summary(out)
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert set(summary["category"]) <= {"progression", "stable", "partial_response"}
    assert (summary["sum_lo"] <= summary["sum_long_mm"]).all()


def test_forecast_is_deterministic(small):
    tracks, le, pe = small
    a = forecast_tracks(tracks, None, le, pe, seed=4)
    b = forecast_tracks(tracks, None, le, pe, seed=4)
    pd.testing.assert_frame_equal(a, b)


def test_forecast_on_day(small):
    tracks, le, pe = small
    model = GrowthForecaster().fit(tracks, None, le, pe)
    pid = "P001"
    last = tracks.loc[tracks["patient_id"] == pid, "day"].max()
    pf = forecast_on_day(model, pid, last + 50)
    assert len(pf.tracks) == tracks.loc[tracks["patient_id"] == pid, "track_id"].nunique()
    assert pf.category in {"progression", "stable", "partial_response"}
    with pytest.raises(InputError, match="not after the patient's last study"):
        forecast_on_day(model, pid, last)
    with pytest.raises(InputError, match="no lesion tracks"):
        forecast_on_day(model, "nobody", last + 50)


@pytest.mark.parametrize("column", ["track_id", "patient_id", "day", "long_mm"])
def test_missing_column_is_named(small, column):
    tracks, le, pe = small
    with pytest.raises(InputError, match=f"column '{column}'"):
        forecast_tracks(tracks.drop(columns=column), None, le, pe)


def test_bad_tables(small):
    tracks, le, pe = small
    with pytest.raises(InputError, match="is empty"):
        forecast_tracks(tracks.iloc[:0], None, le, pe)
    bad = tracks.astype({"day": object})
    bad.loc[3, "day"] = "soon"
    with pytest.raises(InputError, match=r"row 3 .*column 'day'.*not a number"):
        forecast_tracks(bad, None, le, pe)
    with pytest.raises(InputError, match="column 'embedding'"):
        forecast_tracks(tracks, None, le.drop(columns="embedding"), pe)
    with pytest.raises(InputError, match="unknown forecast method 'psychic'"):
        GrowthForecaster("psychic")
    with pytest.raises(InputError, match="more than one study day"):
        forecast_tracks(tracks[tracks["day"] == 0], None, le, pe)
