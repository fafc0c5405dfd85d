"""Growth forecasts in the explorer, on the test workspace: the patient's growth plot
(forecasts, intervals, similar lesions' trajectories), the forecast category line and the
cohorts' split by forecast category; a workspace without forecasts still works."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboards.app import create_app
from dashboards.cohorts import CohortDefinition, apply_cohort
from dashboards.context import Explorer
from dashboards.data import FORECAST_CATEGORIES, ExplorerData, horizon_forecasts
from dashboards.pages.patient import growth_view
from dashboards.protocol import CallbackClient
from discovery.results import load_forecaster, load_results
from tests.dashboards.conftest import ARTIFACTS, free_port
from tests.dashboards.test_app import text_of


@pytest.fixture(scope="module")
def results(workspace):
    return load_results(workspace)


@pytest.fixture(scope="module")
def client(workspace) -> CallbackClient:
    app = create_app(workspace.root)
    return CallbackClient(app, app.server.test_client().post)


@pytest.fixture(scope="module")
def patient(results) -> str:
    """A patient whose forecast comes from two or more measured days."""
    f = results.forecasts
    many = f[f["last_day"] > 0]
    return str(sorted(many["patient_id"])[0])


def growth(client, patient_id: str, similar: bool = False) -> tuple[list[dict], str]:
    out = client.call("patient-growth.figure", {"patient-select.value": patient_id,
                                                "patient-similar-tracks.value":
                                                    ["show"] if similar else []})
    return out["patient-growth"]["figure"]["data"], text_of(out["patient-forecast"]["children"])


def test_the_growth_plot_shows_each_tracks_forecast_and_the_category(client, results, patient):
    traces, text = growth(client, patient)
    metas = [t["meta"] for t in traces]
    mine = results.forecasts[results.forecasts["patient_id"] == patient]
    n_tracks = mine["track_id"].nunique()
    assert metas.count("band") == metas.count("forecast") == n_tracks
    assert "similar" not in metas
    # each dashed line ends at the track's forecasts, in target-day order
    line = next(t for t in traces if t["meta"] == "forecast")
    days = line["x"][1:]
    assert days == sorted(days) and set(days) <= set(mine["target_day"])
    pf = results.patient_forecasts.set_index("patient_id").loc[[patient]]
    row = pf[np.isclose(pf["target_day"], mine["last_day"].max() + 180)].iloc[0]
    assert (f"sum of long diameters {row['sum_long_mm']:.0f} mm "
            f"({row['sum_lo']:.0f}-{row['sum_hi']:.0f}), "
            f"{row['category'].replace('_', ' ')}") in text


def test_similar_trajectories_come_from_other_training_patients_aligned_on_the_match(
        client, workspace, patient):
    traces, text = growth(client, patient, similar=True)
    grey = [t for t in traces if t["meta"] == "similar"]
    n_tracks = sum(t["meta"] == "forecast" for t in traces)
    assert len(grey) == 5 * n_tracks
    assert "most similar lesions of other patients" in text
    data = ExplorerData.load(workspace)
    mine = data.discovery["forecasts"]
    mine = mine[mine["patient_id"] == patient].drop_duplicates("track_id")
    queries = mine[["track_id", "lesion_id", "patient_id", "last_day"]].rename(
        columns={"last_day": "day"})
    similar = data.similar_tracks.of(queries)
    model = load_forecaster(workspace)
    assert patient not in set(similar["patient_id"])
    assert set(similar["patient_id"]) <= set(model.train_patients_)
    # the reference: exact cosine search over the embed stage's lesion vectors
    emb = workspace.read_parquet("embeddings/lesions.parquet", writer="embed")
    vec = np.stack(emb["embedding"].to_numpy()).astype(float)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    lookup = pd.Series(np.arange(len(emb)), index=emb["lesion_id"].astype(str))
    hist = model.history_
    pool = hist[hist["patient_id"].isin(model.train_patients_)
                & (hist["patient_id"] != patient)
                & (hist.groupby("track_id")["day"].transform("nunique") >= 2)
                & hist["lesion_id"].isin(lookup.index)]
    for q in queries.itertuples():
        score = vec[lookup[pool["lesion_id"]].to_numpy()] @ vec[lookup[q.lesion_id]]
        best = (pool.assign(score=score).sort_values("score", ascending=False)
                .drop_duplicates("track_id").head(5))
        got = similar[similar["query_track"] == q.track_id]
        assert list(pd.unique(got["track_id"])) == best["track_id"].tolist()
        # each neighbour's matched lesion sits on the query's last day, at its own size
        for track, match in best.set_index("track_id").iterrows():
            rows = got[got["track_id"] == track]
            at = rows[np.isclose(rows["day"], q.day)]
            assert len(at) >= 1 and match["long_mm"] in set(at["long_mm"])


def test_forecast_category_splits_the_cohorts(client, workspace, results):
    data = ExplorerData.load(workspace)
    categories = horizon_forecasts(results.forecasts, results.patient_forecasts)["category"]
    assert set(categories) <= set(FORECAST_CATEGORIES)
    pd.testing.assert_series_equal(
        data.patient_table["forecast_category"].dropna().sort_index(),
        categories.sort_index(), check_names=False, check_dtype=False)
    growing = CohortDefinition(name="growing", filters={"forecast_category": ["progression"]})
    rest = CohortDefinition(name="not growing",
                            filters={"forecast_category": ["stable", "partial_response"]})
    ids = apply_cohort(growing, data.patient_table, data.lesion_table)
    assert ids == sorted(categories.index[categories == "progression"])
    out = client.call("cohort-km.figure", {"cohort-a.data": rest.to_dict(),
                                           "cohort-b.data": growing.to_dict()})
    stats = text_of(out["cohort-stats"]["children"])
    assert f"B: {len(ids)} patients" in stats
    built = client.call("cohort-a.data", {"cohort-a-name.value": "A",
                                          "cohort-a-forecast.value": ["progression"]})
    assert built["cohort-a-count"]["children"].startswith(f"{len(ids):,} patients")
    bad = client.call("cohort-a.data", {"cohort-a-name.value": "A",
                                        "cohort-a-forecast.value": ["doomed"]})
    assert "'doomed' is not a forecast category" in json.dumps(bad["cohort-a-count"])


@pytest.fixture(scope="module")
def without_forecasts(workspace, tmp_path_factory):
    """A copy of the workspace as an older discover stage left it: no forecasts, no model."""
    import shutil

    root = tmp_path_factory.mktemp("old") / "ws"
    shutil.copytree(workspace.root, root)
    for name in ("discovery/forecasts.parquet", "discovery/patient_forecasts.parquet",
                 "models/forecaster.pkl"):
        (root / name).unlink()
    return root


def test_a_workspace_without_forecasts_shows_measurements_and_a_note(without_forecasts,
                                                                      patient):
    explorer = Explorer(ExplorerData.load(without_forecasts))
    assert "forecast_category" not in explorer.data.patient_table
    for similar in (False, True):
        fig, text = growth_view(explorer, patient, similar)
        assert {t["meta"] for t in fig["data"]} == {"measured"}
        assert "no growth forecast" in fig["layout"]["annotations"][0]["text"]
        assert "No growth forecast" in text_of(json.loads(json.dumps(
            text.to_plotly_json(), default=lambda c: c.to_plotly_json())))
    app = create_app(without_forecasts)
    client = CallbackClient(app, app.server.test_client().post)
    out = client.call("cohort-a.data", {"cohort-a-name.value": "A",
                                        "cohort-a-forecast.value": ["stable"]})
    assert "no growth forecasts" in json.dumps(out["cohort-a-count"])


def test_the_browser_draws_the_band_and_the_similar_trajectories(dash_duo, workspace, patient):
    from selenium.webdriver.common.keys import Keys

    dash_duo.start_server(create_app(workspace.root), port=free_port())
    dash_duo.driver.get(dash_duo.server_url.rstrip("/") + "/patient")
    dash_duo.wait_for_element_by_id("patient-page", timeout=20)
    dash_duo.find_element("#patient-select").click()
    field = dash_duo.driver.switch_to.active_element
    field.send_keys(patient)
    field.send_keys(Keys.ENTER)
    dash_duo.wait_for_contains_text("#patient-forecast-category", "Forecast at +180 d",
                                    timeout=20)
    category = dash_duo.find_element("#patient-forecast-category").text
    assert any(c.replace("_", " ") in category for c in FORECAST_CATEGORIES)

    def metas() -> list[str]:
        return dash_duo.driver.execute_script(
            "const gd = document.querySelector('#patient-growth .js-plotly-plot');"
            "return gd && gd.data ? gd.data.map(t => t.meta) : [];")

    deadline = time.time() + 20
    while "band" not in metas() and time.time() < deadline:
        time.sleep(0.2)
    before = metas()
    assert "band" in before and "forecast" in before and "similar" not in before
    # the shaded band is drawn: a filled path in the plot
    assert dash_duo.find_elements("#patient-growth .scatterlayer .js-fill")
    dash_duo.find_element("#patient-similar-tracks input").click()
    deadline = time.time() + 20
    while "similar" not in metas() and time.time() < deadline:
        time.sleep(0.2)
    after = metas()
    assert after.count("similar") == 5 * before.count("forecast")
    assert len(after) > len(before)
    assert [e for e in dash_duo.get_logs() if e.get("level") == "SEVERE"] == []
    Path(ARTIFACTS).mkdir(parents=True, exist_ok=True)
    dash_duo.find_element("#patient-growth").find_element("xpath", "..").screenshot(
        str(ARTIFACTS / "patient_forecast.png"))
