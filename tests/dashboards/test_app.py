"""The app's callbacks called over HTTP in-process (Flask test client), without a browser."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest

from dashboards.app import PAGES, create_app
from dashboards.cohorts import CohortDefinition
from dashboards.protocol import CallbackClient


@pytest.fixture(scope="module")
def app(workspace):
    return create_app(workspace.root)


@pytest.fixture(scope="module")
def client(app) -> CallbackClient:
    return CallbackClient(app, app.server.test_client().post)


@pytest.fixture(scope="module")
def patients(workspace) -> list[str]:
    return sorted(workspace.table("patients")["patient_id"])


def text_of(component) -> str:
    """All the text in a rendered component tree (as Dash serialises it)."""
    if component is None:
        return ""
    if isinstance(component, (str, int, float)):
        return str(component)
    if isinstance(component, list):
        return " ".join(text_of(c) for c in component)
    return text_of(component.get("props", {}).get("children"))


@pytest.mark.parametrize("path", list(PAGES))
def test_each_page_renders(client, path):
    page = client.call("page.children", {"url.pathname": path})["page"]["children"]
    assert page["props"]["id"].endswith("-page")
    assert "pg-error" not in json.dumps(page)


def test_an_unknown_path_says_so(client):
    page = client.call("page.children", {"url.pathname": "/nowhere"})["page"]["children"]
    assert "No such page" in text_of(page)


def test_select_patient_gives_similar_patients_and_survival(client, patients):
    chosen = {"patient-select.value": patients[0], "patient-k.value": 6,
              "patient-weight.value": 0.7}
    out = client.call("patient-similar.data", chosen)
    rows = pd.DataFrame(out["patient-similar"]["data"])
    assert len(rows) == 6 and patients[0] not in set(rows["patient_id"])
    np.testing.assert_allclose(rows["imaging"] + rows["records"], rows["score"], atol=1e-9)
    assert rows["score"].is_monotonic_decreasing
    assert out["patient-store"]["data"] == patients[0]
    km = client.call("patient-km.figure", chosen)["patient-km"]["figure"]
    assert "Similar patients against everyone else" in km["layout"]["title"]["text"]
    assert any("similar patients (n=" in (t.get("name") or "") for t in km["data"])


def test_imaging_weight_one_ranks_by_imaging_alone(client, patients):
    out = client.call("patient-similar.data", {"patient-select.value": patients[1],
                                               "patient-k.value": 5,
                                               "patient-weight.value": 1.0})
    rows = pd.DataFrame(out["patient-similar"]["data"])
    assert (rows["records"] == 0).all()
    assert rows["imaging"].tolist() == rows["score"].tolist()


def test_patient_images_graph_and_risk(client, patients, workspace):
    chosen = {"patient-select.value": patients[2]}
    images = client.call("patient-crops.children", chosen)
    n_lesions = int((workspace.table("lesions")["patient_id"] == patients[2]).sum())
    assert json.dumps(images).count("data:image/png;base64,") == n_lesions
    elements = client.call("patient-graph.elements", chosen)["patient-graph"]["elements"]
    lesions = [e for e in elements if e["data"].get("kind") == "lesion"]
    assert len(lesions) == n_lesions
    assert any(e["classes"] == "similar" for e in elements if "classes" in e)
    risk = client.call("patient-risk.children", chosen)["patient-risk"]["children"]
    assert "GNN risk" in text_of(risk)


def test_following_a_similar_patient_selects_it(client):
    rows = [{"patient_id": "000003"}, {"patient_id": "000009"}]
    out = client.call("patient-select.value", {"patient-similar.active_cell": {"row": 1},
                                               "patient-similar.data": rows})
    assert out["patient-select"]["value"] == "000009"


def cohort_values(letter: str, **controls) -> dict:
    names = ("name", "types", "clusters", "age-min", "age-max", "sex", "field", "field-min",
             "field-max", "similar", "similar-k")
    values = {f"cohort-{letter}-{n}.value": None for n in names}
    values.update({f"cohort-{letter}-{k.replace('_', '-')}.value": v
                   for k, v in controls.items()})
    return values


def test_cohort_builder_and_comparison(client, workspace):
    a = client.call("cohort-a.data", cohort_values("a", name="women", sex=["F"]))
    b = client.call("cohort-b.data", cohort_values("b", name="men", sex=["M"]))
    sexes = workspace.table("patients")["sex"].value_counts()
    assert a["cohort-a-count"]["children"].startswith(f"{sexes['F']} patients")
    assert b["cohort-b-count"]["children"].startswith(f"{sexes['M']} patients")
    out = client.call("cohort-km.figure", {"cohort-a.data": a["cohort-a"]["data"],
                                           "cohort-b.data": b["cohort-b"]["data"]})
    stats = text_of(out["cohort-stats"]["children"])
    assert "log-rank p" in stats and "HR (men vs women)" in stats
    names = [t.get("name") or "" for t in out["cohort-km"]["figure"]["data"]]
    assert any(n.startswith(f"women (n={sexes['F']}") for n in names)


def test_overlapping_cohorts_are_not_compared(client):
    everyone = CohortDefinition(name="all").to_dict()
    women = CohortDefinition(name="women", filters={"sex": "F"}).to_dict()
    out = client.call("cohort-km.figure", {"cohort-a.data": everyone,
                                           "cohort-b.data": women})
    assert "in both groups" in text_of(out["cohort-stats"]["children"])


def test_cohort_definition_saves_and_loads(client):
    stored = CohortDefinition(name="older women", filters={
        "sex": ["F"], "age": {"min": 50.0}, "long_mm": {"min": 10.0}}).to_dict()
    saved = client.call("cohort-a-json-download.data", {"cohort-a-json.n_clicks": 1,
                                                        "cohort-a.data": stored})
    download = saved["cohort-a-json-download"]["data"]
    assert download["filename"] == "older_women.json"
    contents = "data:application/json;base64," + base64.b64encode(
        download["content"].encode()).decode()
    loaded = client.call("cohort-a-name.value", {"cohort-a-upload.contents": contents,
                                                 "cohort-a-upload.filename": "x.json"})
    assert loaded["cohort-a-name"]["value"] == "older women"
    assert loaded["cohort-a-sex"]["value"] == ["F"]
    assert loaded["cohort-a-age-min"]["value"] == 50.0
    assert loaded["cohort-a"]["data"]["filters"]["long_mm"] == {"min": 10.0}
    # the builder keeps the filter it has no control for, and says so
    again = client.call("cohort-a.data", {**cohort_values("a", name="older women", sex=["F"],
                                                          age_min=50.0),
                                          "cohort-a.data": loaded["cohort-a"]["data"]})
    assert again["cohort-a"]["data"]["filters"]["long_mm"] == {"min": 10.0}
    assert "long_mm" in again["cohort-a-extra"]["children"]


def test_a_bad_definition_file_is_explained(client):
    contents = "data:application/json;base64," + base64.b64encode(b"{oops").decode()
    out = client.call("cohort-a-name.value", {"cohort-a-upload.contents": contents,
                                              "cohort-a-upload.filename": "bad.json"})
    assert "bad.json" in text_of(out["cohort-a-message"]["children"])


def test_cohort_exports_as_csv(client, workspace):
    stored = CohortDefinition(name="women", filters={"sex": "F"}).to_dict()
    out = client.call("cohort-a-csv-download.data", {"cohort-a-csv.n_clicks": 1,
                                                     "cohort-a.data": stored})
    lines = out["cohort-a-csv-download"]["data"]["content"].splitlines()
    assert lines[0].startswith("patient_id,sex,age")
    assert len(lines) - 1 == int((workspace.table("patients")["sex"] == "F").sum())


def test_query_refuses_writes_and_answers_reads(client):
    refused = client.call("query-status.children", {
        "query-run.n_clicks": 1, "query-text.value": "MATCH (p:Patient) DETACH DELETE p"})
    assert "refused" in text_of(refused["query-status"]["children"])
    answer = client.call("query-status.children", {
        "query-run.n_clicks": 2,
        "query-text.value": "MATCH (p:Patient) RETURN p.patient_id AS id ORDER BY id"})
    assert text_of(answer["query-status"]["children"]).startswith("24 rows")


def test_map_hover_shows_the_crop_and_a_selection_becomes_a_cohort(client, app):
    hover = client.call("map-tooltip.children", {"map-graph.hoverData": {
        "points": [{"customdata": 0, "bbox": {"x0": 1, "x1": 2, "y0": 1, "y1": 2}}]}})
    assert hover["map-tooltip"]["show"] is True
    assert "data:image/png;base64," in json.dumps(hover["map-tooltip"]["children"])
    selected = client.call("map-selection.data", {"map-graph.selectedData": {
        "points": [{"customdata": i} for i in range(5)]}})
    ids = selected["map-selection"]["data"]
    assert ids and ids == sorted(set(ids))
    cohort = client.call("map-cohort-text.children", {"map-to-b.n_clicks": 1,
                                                      "map-selection.data": ids},
                         changed=["map-to-b.n_clicks"])
    assert cohort["cohort-b"]["data"]["patient_ids"] == ids


def test_clicking_a_biomarker_splits_the_patients(client, workspace):
    from dashboards.pages.biomarkers import ranked

    table = ranked(pd.read_parquet(workspace.path("discovery", "biomarkers.parquet")))
    rows = json.loads(table.to_json(orient="records"))
    out = client.call("biomarker-km.figure", {"biomarker-table.active_cell": {"row": 0},
                                              "biomarker-table.derived_viewport_data": rows})
    assert out["biomarker-km"]["figure"]["layout"]["title"]["text"].startswith(
        f"Split by {rows[0]['candidate']}")


def test_no_patient_id_reaches_a_url(app):
    paths = {str(rule) for rule in app.server.url_map.iter_rules()}
    assert all("patient" not in p.lower() for p in paths)
    assert all(not path.startswith("/patient/") for path in PAGES)


def test_pages_without_discover_results_say_how_to_get_them(workspace, tmp_path):
    import shutil

    shutil.copytree(workspace.root, tmp_path / "ws")
    shutil.rmtree(tmp_path / "ws" / "discovery", ignore_errors=True)
    bare = create_app(tmp_path / "ws")
    client = CallbackClient(bare, bare.server.test_client().post)
    for path in ("/", "/map", "/biomarkers"):
        page = client.call("page.children", {"url.pathname": path})["page"]["children"]
        assert "--stages discover" in text_of(page), path
    patient_id = sorted(workspace.table("patients")["patient_id"])[0]
    risk = client.call("patient-risk.children", {"patient-select.value": patient_id})
    assert "--stages discover" in text_of(risk["patient-risk"]["children"])
    similar = client.call("patient-similar.data", {"patient-select.value": patient_id,
                                                   "patient-k.value": 3,
                                                   "patient-weight.value": 0.5})
    assert len(similar["patient-similar"]["data"]) == 3
    bare.server.config["explorer"].data.graph.close()
