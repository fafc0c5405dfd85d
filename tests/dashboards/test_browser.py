"""The real explorer in headless Chromium (dash_duo): what a person sees and does.

Screenshots go to ``$PATIENTGRAPH_TEST_ARTIFACTS/patientgraph-explorer`` (default under
``/tmp/dash_artifacts``, where dash.testing puts its own).
"""

from __future__ import annotations

import time

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from dashboards.app import PAGES, create_app
from tests.dashboards.conftest import ARTIFACTS, free_port

PAGE_IDS = {"/": "overview-page", "/map": "map-page", "/patient": "patient-page",
            "/cohorts": "cohorts-page", "/biomarkers": "biomarkers-page",
            "/query": "query-page"}


@pytest.fixture
def explorer(dash_duo, workspace):
    """The app on the test workspace, served on a free port, in a headless browser."""
    dash_duo.start_server(create_app(workspace.root), port=free_port())
    return dash_duo


def shoot(duo, name: str, height: int | None = None) -> None:
    """Save a screenshot of the whole page (or its top ``height`` pixels)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # the page can grow once Plotly redraws at the new width
        full, chrome = duo.driver.execute_script(
            "return [document.documentElement.scrollHeight, "
            "window.outerHeight - window.innerHeight]")
        duo.driver.set_window_size(1400, (height or max(full, 900)) + chrome)
        time.sleep(0.5)
    duo.driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def severe_logs(duo) -> list[dict]:
    return [e for e in duo.get_logs() if e.get("level") == "SEVERE"]


def replace_text(element, text: str) -> None:
    """Type ``text`` over a React-controlled field's value (``clear()`` does not stick)."""
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text)


def open_page(duo, path: str) -> None:
    duo.driver.get(duo.server_url.rstrip("/") + path)
    duo.wait_for_element_by_id(PAGE_IDS[path], timeout=20)
    duo.wait_for_no_elements("._dash-loading", timeout=20)


def test_every_page_renders_without_console_errors(explorer, workspace):
    assert set(PAGE_IDS) == set(PAGES)
    for path in PAGES:
        open_page(explorer, path)
        time.sleep(1.0)
        assert severe_logs(explorer) == [], f"console errors on {path}"
        assert not explorer.find_elements(".pg-error"), f"error box on {path}"
        shoot(explorer, f"page_{path.strip('/') or 'overview'}")
        if path == "/":
            first = explorer.find_element("#overview-counts > div:first-child")
            assert first.text.split("\n") == [str(len(workspace.table("patients"))),
                                              "patients"]


def test_choosing_a_patient_shows_its_similar_patients(explorer, workspace):
    open_page(explorer, "/patient")
    patient_id = sorted(workspace.table("patients")["patient_id"])[0]
    search = explorer.find_element("#patient-select")
    search.click()
    field = explorer.driver.switch_to.active_element
    field.send_keys(patient_id)
    field.send_keys(Keys.ENTER)
    explorer.wait_for_element("#patient-similar tbody tr:nth-child(2) td", timeout=20)
    rows = explorer.find_elements("#patient-similar tbody tr")
    ids = [r.find_elements(By.CSS_SELECTOR, "td")[0].text for r in rows
           if r.find_elements(By.CSS_SELECTOR, "td")]
    assert len(ids) == 10
    assert patient_id not in ids
    scores = [float(r.find_elements(By.CSS_SELECTOR, "td")[1].text) for r in rows
              if r.find_elements(By.CSS_SELECTOR, "td")]
    assert scores == sorted(scores, reverse=True)
    explorer.wait_for_element("#patient-crops img", timeout=20)
    explorer.wait_for_contains_text("#patient-km .gtitle", "Similar patients", timeout=20)
    assert patient_id not in explorer.driver.current_url
    assert severe_logs(explorer) == []
    shoot(explorer, "patient_selected")


def test_two_cohorts_give_a_kaplan_meier_comparison(explorer):
    open_page(explorer, "/cohorts")
    explorer.find_element("#cohort-a-sex input[value='F']").click()
    explorer.find_element("#cohort-b-sex input[value='M']").click()
    explorer.wait_for_contains_text("#cohort-stats", "log-rank p", timeout=20)
    explorer.wait_for_contains_text("#cohort-stats", "HR (B vs A)", timeout=20)
    curves = explorer.find_elements("#cohort-km .scatterlayer .trace")
    assert len(curves) >= 6  # two groups: band edges, curve and at-risk row each
    at_risk = explorer.find_elements("#cohort-km .textpoint")
    assert at_risk, "the number at risk is drawn under the curves"
    assert severe_logs(explorer) == []
    shoot(explorer, "cohorts_compared")


def test_a_write_query_is_refused_and_a_read_query_answers(explorer):
    open_page(explorer, "/query")
    box = explorer.find_element("#query-text")
    replace_text(box, "CREATE (:Patient {patient_id: 'intruder'})")
    explorer.find_element("#query-run").click()
    explorer.wait_for_contains_text("#query-status", "refused", timeout=20)
    replace_text(box, "MATCH (p:Patient) WHERE p.patient_id = 'intruder' RETURN count(p) AS n")
    explorer.find_element("#query-run").click()
    explorer.wait_for_text_to_equal("#query-count", "1 rows", timeout=20)
    assert explorer.find_element("#query-table tbody tr:nth-child(2) td").text == "0"
    shoot(explorer, "query")


def test_hovering_a_lesion_on_the_map_shows_its_crop(explorer):
    explorer.driver.set_window_size(1400, 1000)
    open_page(explorer, "/map")
    explorer.wait_for_element("#map-graph .js-plotly-plot .gl-container", timeout=20)
    time.sleep(1.0)
    # the pixel of a point of the last trace (drawn on top), from Plotly's own axes
    x, y = explorer.driver.execute_script("""
        const gd = document.querySelector('#map-graph .js-plotly-plot');
        const trace = gd._fullData[gd._fullData.length - 1], L = gd._fullLayout;
        const i = Math.floor(trace.x.length / 2);
        return [L.xaxis.l2p(trace.x[i]) + L._size.l, L.yaxis.l2p(trace.y[i]) + L._size.t];""")
    plot = explorer.find_element("#map-graph .js-plotly-plot")
    ActionChains(explorer.driver).move_to_element_with_offset(plot, int(x), int(y)).perform()
    explorer.wait_for_element("#map-tooltip img[src^='data:image/png;base64,']", timeout=20)
    assert "long axis" in explorer.find_element("#map-tooltip").text
    assert severe_logs(explorer) == []
    shoot(explorer, "map_hover", height=1000)
