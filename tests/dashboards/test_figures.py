"""Figure builders on small hand-built tables (no browser, no workspace).

Each figure is checked against Plotly's schema by building a ``go.Figure`` from it (which
raises on any unknown property), then read through it.
"""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from dashboards import figures
from dashboards.survival import compare

DTYPES = {"f4": np.float32, "f8": np.float64, "i1": np.int8, "i2": np.int16, "i4": np.int32,
          "u1": np.uint8}


def checked(fig: dict) -> go.Figure:
    """The figure validated against Plotly's schema."""
    assert set(fig) == {"data", "layout"}
    return go.Figure(fig)


def values(array) -> np.ndarray:
    """A trace array, decoded when it is a Plotly typed array."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), DTYPES[array["dtype"]])
    return np.asarray(array)


@pytest.fixture
def points() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 12
    return pd.DataFrame({
        "x": rng.normal(size=n), "y": rng.normal(size=n),
        "cluster": [0, 0, 1, 1, 2, 2, -1, -1, 0, 1, 2, 0],
        "type": ["liver", "lung", None, "liver", "lung", "bone", "liver", None, "lung",
                 "bone", "liver", "lung"],
        "long_mm": np.linspace(5, 60, n),
    })


def _positions(fig) -> list[int]:
    return sorted(int(v) for trace in fig.data for v in values(trace.customdata))


def test_lesion_map_by_category_has_a_trace_per_level_and_keeps_every_point(points):
    fig = checked(figures.lesion_map(points, "type"))
    names = [t.name for t in fig.data]
    assert names == ["bone", "liver", "lung", "missing"]
    assert all(t.type == "scattergl" for t in fig.data)
    assert _positions(fig) == list(range(len(points)))
    missing = fig.data[-1]
    assert sorted(values(missing.customdata)) == [2, 7]
    assert fig.layout.dragmode == "lasso"


def test_lesion_map_by_cluster_calls_minus_one_noise(points):
    fig = checked(figures.lesion_map(points, "cluster"))
    assert [t.name for t in fig.data] == ["noise", "0", "1", "2"]
    assert fig.data[0].marker.color == figures.MISSING_COLOUR
    assert sorted(values(fig.data[0].customdata)) == [6, 7]


def test_lesion_map_by_a_measurement_uses_a_colour_scale(points):
    fig = checked(figures.lesion_map(points, "long_mm"))
    assert len(fig.data) == 1
    assert fig.data[0].marker.showscale
    np.testing.assert_allclose(values(fig.data[0].marker.color), points["long_mm"], rtol=1e-6)


def test_km_figure_draws_curves_and_the_number_at_risk():
    a = pd.DataFrame({"patient_id": list("abcdef"), "time_days": [5, 8, 12, 20, 30, 40],
                      "event": [1, 0, 1, 1, 0, 0]})
    b = pd.DataFrame({"patient_id": list("ghijkl"), "time_days": [2, 3, 4, 9, 10, 15],
                      "event": [1, 1, 1, 1, 0, 1]})
    curves, comparison = compare(a, b, "slow", "fast")
    fig = checked(figures.km_figure(curves, comparison, title="T"))
    risk_rows = [t for t in fig.data if t.mode == "text"]
    assert [r.y[0] for r in risk_rows] == ["slow", "fast"]
    for row, curve in zip(risk_rows, curves, strict=True):
        assert [int(v) for v in row.text] == curve.at_risk(list(row.x))
    assert risk_rows[0].text[0] == "6"
    lines = [t for t in fig.data if t.name and "n=" in t.name]
    assert [t.name for t in lines] == ["slow (n=6, events=3)", "fast (n=6, events=5)"]
    assert "log-rank p" in fig.layout.title.text
    assert "HR (fast vs slow)" in fig.layout.title.text


def test_km_figure_without_curves_says_why():
    fig = checked(figures.km_figure([]))
    assert "Too few patients" in fig.layout.annotations[0].text


def test_forest_figure_points_back_at_rows_and_greys_flagged_ones():
    scan = pd.DataFrame({
        "candidate": ["ldh", "stage", "albumin", "broken"],
        "level": [None, "IV", None, None],
        "hr": [1.8, 2.5, 0.6, 3.0], "ci_low": [1.2, 1.1, 0.4, 0.01],
        "ci_high": [2.7, 5.6, 0.9, 900.0], "q": [0.01, 0.2, 0.04, np.nan],
        "flag": ["", "", "", "unstable"],
    }, index=[10, 11, 12, 13])
    fig = checked(figures.forest_figure(scan))
    trace = fig.data[0]
    assert list(trace.y) == ["broken", "albumin", "stage: IV", "ldh"]
    assert list(trace.customdata) == [13, 12, 11, 10]
    assert list(trace.marker.color) == [figures.MISSING_COLOUR, figures.PALETTE[3],
                                        figures.PALETTE[0], figures.PALETTE[3]]
    low, high = fig.layout.xaxis.range
    assert 10 ** low >= figures.FOREST_LIMITS[0] * 0.8
    assert 10 ** high <= figures.FOREST_LIMITS[1] * 1.2


def test_growth_figure_has_a_line_per_track():
    lesions = pd.DataFrame({"track_id": ["t1", "t1", "t2", "t2", "t2"],
                            "lesion_id": list("abcde"), "day": [0, 50, 0, 50, 100],
                            "long_mm": [10, 12, 20, 18, 15], "type": ["liver"] * 5})
    fig = checked(figures.growth_figure(lesions))
    assert len(fig.data) == 2
    assert list(fig.data[1].y) == [20, 18, 15]


def test_contributions_stack_to_the_score():
    similar = pd.DataFrame({"patient_id": ["p1", "p2"], "score": [0.9, 0.7],
                            "imaging": [0.5, 0.2], "records": [0.4, 0.5]})
    fig = checked(figures.contributions_figure(similar, ("imaging", "records")))
    assert fig.layout.barmode == "relative"
    total = np.sum([values(t.x) for t in fig.data], axis=0)
    np.testing.assert_allclose(total, similar["score"].iloc[::-1])


def test_neighbourhood_elements_join_only_existing_nodes():
    structure = pd.DataFrame({"study_id": ["s1", "s1", "s2"], "day": [0.0, 0.0, 40.0],
                              "lesion_id": ["l1", "l2", "l3"], "type": ["liver"] * 3})
    similar = pd.DataFrame({"patient_id": ["q1", "q2"], "score": [0.9, 0.8]})
    elements = figures.neighbourhood_elements("p0", structure, similar)
    nodes = {e["data"]["id"] for e in elements if "source" not in e["data"]}
    edges = [e["data"] for e in elements if "source" in e["data"]]
    assert nodes == {"P:p0", "S:s1", "S:s2", "L:l1", "L:l2", "L:l3", "P:q1", "P:q2"}
    assert all(e["source"] in nodes and e["target"] in nodes for e in edges)
    assert len(edges) == 2 + 3 + 2
    assert {e["label"] for e in edges if e["source"] == "P:p0" and "label" in e} == \
        {"0.90", "0.80"}


def test_missing_bar_reports_shares_of_missing_values():
    fig = checked(figures.missing_bar({"records": pd.DataFrame({
        "patient_id": ["a", "b", "c", "d"], "ldh": [1.0, None, None, 2.0],
        "ecog": [1, 2, 3, None], "sodium": [1, 2, 3, 4]})}))
    assert list(fig.data[0].y) == ["records.ecog", "records.ldh"]
    assert list(fig.data[0].x) == [25.0, 50.0]


def test_cohort_counts():
    patients = pd.DataFrame({"n_studies": [1, 3], "time_days": [10.0, 30.0], "event": [1, 0]})
    lesions = pd.DataFrame({"coarse_type": [4, None, 5]})
    assert figures.cohort_counts(patients, lesions) == {
        "patients": 2, "studies": 4, "lesions": 3, "labelled lesions": 2, "events": 1,
        "median follow-up (days)": 20.0}


@pytest.mark.parametrize("p, text", [(0.0312, "0.031"), (2.3e-7, "2.3e-07"),
                                     (float("nan"), "n/a")])
def test_format_p(p, text):
    assert figures.format_p(p) == text


def test_overview_and_risk_figures_are_valid():
    lesions = pd.DataFrame({"type": ["liver", "lung", "unlabelled", "liver"]})
    bars = checked(figures.type_bar(lesions))
    assert dict(zip(bars.data[0].x, bars.data[0].y, strict=True)) == \
        {"liver": 2, "lung": 1, "unlabelled": 1}
    studies = checked(figures.studies_histogram(pd.DataFrame({"n_studies": [1, 3, 3]})))
    assert list(studies.data[0].x) == [1, 3] and list(studies.data[0].y) == [1, 2]
    explain = pd.DataFrame({"kind": ["feature", "feature", "neighbour"],
                            "name": ["ldh", "age", "000004"],
                            "contribution": [0.5, -0.1, -0.9]})
    risk = checked(figures.risk_figure(explain, top=2))
    assert list(risk.data[0].y) == ["feature: ldh", "neighbour: 000004"]
    assert "Nothing" in checked(figures.empty_figure("Nothing")).layout.annotations[0].text


GROWTH_LESIONS = pd.DataFrame({"track_id": ["t1", "t1", "t2", "t2", "t2"],
                               "lesion_id": list("abcde"), "day": [0, 50, 0, 50, 100],
                               "long_mm": [10, 12, 20, 18, 15], "type": ["liver"] * 5})
GROWTH_FORECASTS = pd.DataFrame({
    "track_id": ["t1", "t1", "t2", "t2"], "lesion_id": ["b", "b", "e", "e"],
    "patient_id": "p", "last_day": [50.0, 50.0, 100.0, 100.0],
    "target_day": [140.0, 230.0, 190.0, 280.0], "long_mm": [13.0, 14.0, 13.0, 12.0],
    "long_mm_lo": [10.0, 9.0, 10.0, 8.0], "long_mm_hi": [17.0, 21.0, 16.0, 18.0],
    "method": "similarity"})


def by_meta(fig: go.Figure, meta: str) -> list:
    return [t for t in fig.data if t.meta == meta]


def test_growth_figure_draws_each_forecast_dashed_from_the_last_measurement_over_its_band():
    fig = checked(figures.growth_figure(GROWTH_LESIONS, GROWTH_FORECASTS))
    measured, forecast, band = (by_meta(fig, m) for m in ("measured", "forecast", "band"))
    assert len(measured) == len(forecast) == len(band) == 2
    t2 = forecast[1]
    assert t2.line.dash == "dash" and measured[1].line.dash is None
    assert t2.line.color == measured[1].line.color
    assert list(t2.x) == [100.0, 190.0, 280.0] and list(t2.y) == [15.0, 13.0, 12.0]
    # the band runs out along the upper bounds and back along the lower ones, closed
    assert band[1].fill == "toself"
    assert list(band[1].x) == [100.0, 190.0, 280.0, 280.0, 190.0, 100.0]
    assert list(band[1].y) == [15.0, 16.0, 18.0, 8.0, 10.0, 15.0]
    assert band[1].fillcolor.startswith("rgba(")
    # measurements are drawn last, on top of the bands and the dashed lines
    assert [t.meta for t in fig.data][-2:] == ["measured", "measured"]


def test_growth_figure_without_forecasts_shows_measurements_and_the_note():
    fig = checked(figures.growth_figure(GROWTH_LESIONS, None, note="no growth forecast"))
    assert {t.meta for t in fig.data} == {"measured"}
    assert [a.text for a in fig.layout.annotations] == ["no growth forecast"]
    empty = checked(figures.growth_figure(GROWTH_LESIONS, GROWTH_FORECASTS.iloc[:0]))
    assert {t.meta for t in empty.data} == {"measured"}


def test_growth_figure_forecasts_only_tracks_it_has_and_draws_similar_ones_thin_and_grey():
    similar = pd.DataFrame({"query_track": ["t2"] * 4, "track_id": ["x", "x", "y", "y"],
                            "patient_id": ["q1", "q1", "q2", "q2"],
                            "day": [40.0, 100.0, 100.0, 160.0], "long_mm": [9, 10, 30, 33]})
    fig = checked(figures.growth_figure(GROWTH_LESIONS, GROWTH_FORECASTS.iloc[2:], similar))
    assert len(by_meta(fig, "forecast")) == 1
    grey = by_meta(fig, "similar")
    assert [list(t.y) for t in grey] == [[9, 10], [30, 33]]
    assert all(t.line.color == figures.SIMILAR_COLOUR and t.line.width == 1 for t in grey)
    assert [t.showlegend for t in grey] == [True, False]
    assert fig.data[0].meta == "similar"  # beneath everything else
