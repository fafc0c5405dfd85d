"""Patient: lesion crops across studies, growth, similar patients, graph, risk, survival."""

from __future__ import annotations

import math
import numbers
from typing import Any

import dash
import dash_cytoscape as cyto
import numpy as np
import pandas as pd
from dash import Input, Output, State, dcc, html, no_update

from dashboards import figures
from dashboards.cache import LRU
from dashboards.context import Explorer, guarded
from dashboards.data import (
    FORECAST_HORIZON,
    SIMILAR_TRACKS_K,
    discover_note,
    horizon_forecasts,
    type_name,
)
from dashboards.pages import ROW, card, data_table, error, graph_style, note, records
from dashboards.similar import Neighbours
from dashboards.survival import compare
from embed.fusion import MODALITIES
from patientgraph.errors import InputError

K_DEFAULT = 10
K_MAX = 100
"""The most similar patients the page shows; the server clamps k to 1..K_MAX whatever a
request asks (the browser's limit on the input is no limit on a crafted request)."""
SUMMARY_CACHE = 4096
"""Patients whose summary cards are kept (a few kB each)."""
GROWTH_HEIGHT = figures.GROWTH_HEIGHT
CONTRIB_STYLE = {"flex": "1 1 420px"}
SIMILAR_COLUMNS = ["patient_id", "score", *MODALITIES, "age", "sex", "time_days", "event"]
STRUCTURE_QUERY = (
    "MATCH (p:Patient {patient_id: $id})-[:HAS_STUDY]->(s:Study)-[:HAS_LESION]->(l:Lesion) "
    "RETURN s.study_id AS study_id, s.day AS day, l.lesion_id AS lesion_id, "
    "l.coarse_type AS coarse_type, l.cluster AS cluster ORDER BY day, lesion_id")
SIMILAR_QUERY = (
    "MATCH (p:Patient {patient_id: $id})-[r:SIMILAR_TO]->(q:Patient) "
    "RETURN q.patient_id AS patient_id, r.score AS score ORDER BY score DESC LIMIT $k")
CYTO_STYLE = [
    {"selector": "node", "style": {"label": "data(label)", "font-size": "9px",
                                   "background-color": "#9ecae1", "width": 18, "height": 18}},
    {"selector": ".centre", "style": {"background-color": "#d62728", "width": 30,
                                      "height": 30, "font-size": "12px"}},
    {"selector": ".study", "style": {"shape": "round-rectangle", "background-color": "#bbb"}},
    {"selector": ".lesion", "style": {"background-color": "#ff7f0e", "width": 12,
                                      "height": 12}},
    {"selector": ".similar", "style": {"background-color": "#1f77b4"}},
    {"selector": "edge", "style": {"width": 1, "line-color": "#ccc"}},
    {"selector": ".similarity", "style": {"label": "data(label)", "font-size": "8px",
                                          "line-color": "#1f77b4", "line-style": "dashed"}},
]


def layout(explorer: Explorer, state: dict[str, Any]) -> html.Div:
    weights = _default_weights(explorer)
    return html.Div([
        html.H3("Patient"),
        html.Div([
            html.Label(["Patient ", dcc.Dropdown(
                id="patient-select", options=explorer.data.patient_ids,
                value=state.get("patient-store"), placeholder="type or pick a patient id",
                style={"width": "240px"})]),
            html.Label(["Similar patients ", dcc.Input(
                id="patient-k", type="number", min=1, max=K_MAX, step=1, value=K_DEFAULT,
                style={"width": "70px"})]),
            html.Label(["Imaging weight (records get the rest)", dcc.Slider(
                id="patient-weight", min=0, max=1, step=0.1, value=weights.get("imaging", 0.5),
                marks={0: "0", 0.5: "0.5", 1: "1"})], style={"width": "280px"}),
        ], style=ROW),
        html.Div(id="patient-summary"),
        html.Div([
            html.Div([html.H4("Lesions by study"), html.Div(id="patient-crops")],
                     style={"flex": "1 1 560px"}),
            html.Div([
                dcc.Graph(id="patient-growth", figure=figures.empty_figure("Choose a patient"),
                          style={"height": f"{GROWTH_HEIGHT}px"}),
                html.Div(id="patient-forecast", style={"fontSize": "13px", "margin": "4px 0"}),
                dcc.Checklist(id="patient-similar-tracks",
                              options=[{"label": " show similar lesions' trajectories",
                                        "value": "show"}], value=[],
                              style={"fontSize": "13px"}),
            ], style={"flex": "1 1 420px"}),
        ], style=ROW),
        html.Div([
            html.Div([html.H4("Most similar patients"), html.Div(id="patient-similar-error"),
                      data_table("patient-similar", _similar_frame(), page_size=10)],
                     style={"flex": "1 1 560px"}),
            dcc.Graph(id="patient-contrib", figure=figures.empty_figure("Choose a patient"),
                      style=CONTRIB_STYLE),
        ], style=ROW),
        html.Div([
            html.Div([html.H4("Graph neighbourhood"), html.Div(id="patient-graph-note"),
                      cyto.Cytoscape(id="patient-graph", elements=[], stylesheet=CYTO_STYLE,
                                     layout={"name": "cose", "animate": False},
                                     style={"width": "100%", "height": "420px",
                                            "border": "1px solid #eee"})],
                     style={"flex": "1 1 520px"}),
            html.Div([html.H4("Risk"), html.Div(id="patient-risk")],
                     style={"flex": "1 1 460px"}),
        ], style=ROW),
        dcc.Graph(id="patient-km", figure=figures.empty_figure("Choose a patient"),
                  style={"height": f"{figures.KM_HEIGHT}px"}),
    ], id="patient-page")


def register(app: dash.Dash, explorer: Explorer) -> None:
    data = explorer.data
    blank = figures.empty_figure("Choose a patient")

    @app.callback(Output("patient-store", "data"), Output("patient-summary", "children"),
                  Output("patient-similar", "data"), Output("patient-similar-error", "children"),
                  Output("patient-contrib", "figure"), Output("patient-contrib", "style"),
                  Input("patient-select", "value"), Input("patient-k", "value"),
                  Input("patient-weight", "value"))
    @guarded("select patient", lambda m: (no_update, no_update, [], error(m), no_update,
                                          no_update))
    def select(patient_id: str | None, k: int | None, imaging_weight: float | None):
        if not patient_id:
            return None, note("Choose a patient to see its lesions and similar patients."), \
                [], None, blank, CONTRIB_STYLE
        patient_id = _known(explorer, patient_id)
        answer = _similar_answer(explorer, patient_id, k, imaging_weight)
        contrib = figures.contributions_figure(answer.frame, MODALITIES)
        return (patient_id, _summary(explorer, patient_id), similar_rows(explorer, answer),
                None, contrib, graph_style(contrib, **CONTRIB_STYLE))

    @app.callback(Output("patient-km", "figure"), Input("patient-select", "value"),
                  Input("patient-k", "value"), Input("patient-weight", "value"))
    @guarded("patient survival", lambda m: figures.empty_figure(m))
    def survival(patient_id: str | None, k: int | None, imaging_weight: float | None):
        if not patient_id:
            return blank
        similar = _similar(explorer, _known(explorer, patient_id), k, imaging_weight)
        return _km_neighbours(explorer, similar["patient_id"].tolist())

    @app.callback(Output("patient-crops", "children"), Input("patient-select", "value"))
    @guarded("patient images", error)
    def images(patient_id: str | None):
        if not patient_id:
            return None
        return _gallery(explorer, data.lesions_of(_known(explorer, patient_id)))

    @app.callback(Output("patient-growth", "figure"), Output("patient-forecast", "children"),
                  Input("patient-select", "value"), Input("patient-similar-tracks", "value"))
    @guarded("patient growth", lambda m: (no_update, error(m)))
    def growth(patient_id: str | None, show_similar: list | None):
        if not patient_id:
            return blank, None
        return growth_view(explorer, _known(explorer, patient_id),
                           isinstance(show_similar, list) and "show" in show_similar)

    @app.callback(Output("patient-graph", "elements"), Output("patient-graph-note", "children"),
                  Input("patient-select", "value"))
    @guarded("patient graph", lambda m: ([], error(m)))
    def neighbourhood(patient_id: str | None):
        if not patient_id:
            return [], None
        patient_id = _known(explorer, patient_id)
        structure, similar = data.graph.run(lambda store: (
            store.query(STRUCTURE_QUERY, {"id": patient_id}),
            store.query(SIMILAR_QUERY, {"id": patient_id, "k": 10})))
        structure["type"] = [lesion_label(t, c) for t, c in
                             zip(structure["coarse_type"], structure["cluster"], strict=True)]
        return figures.neighbourhood_elements(patient_id, structure, similar), None

    @app.callback(Output("patient-risk", "children"), Input("patient-select", "value"))
    @guarded("patient risk", error)
    def risk(patient_id: str | None):
        if not patient_id:
            return None
        return _risk(explorer, _known(explorer, patient_id))

    @app.callback(Output("patient-select", "value", allow_duplicate=True),
                  Input("patient-similar", "active_cell"), State("patient-similar", "data"),
                  prevent_initial_call=True)
    @guarded("follow similar patient", lambda m: no_update)
    def follow_table(cell: dict | None, rows: list[dict]):
        row = cell.get("row") if isinstance(cell, dict) else None
        if (not isinstance(rows, list) or not isinstance(row, int) or isinstance(row, bool)
                or not 0 <= row < len(rows) or not isinstance(rows[row], dict)):
            return no_update
        return rows[row].get("patient_id", no_update)

    @app.callback(Output("patient-select", "value", allow_duplicate=True),
                  Input("patient-graph", "tapNodeData"), prevent_initial_call=True)
    @guarded("follow graph node", lambda m: no_update)
    def follow_graph(node: dict | None):
        if not node or node.get("kind") != "patient":
            return no_update
        return node["label"]


def lesion_label(coarse_type, cluster) -> str:
    """The lesion's type when a radiologist gave one, else its cluster (else "lesion")."""
    if pd.notna(coarse_type):
        return type_name(coarse_type)
    if cluster is not None and pd.notna(cluster) and int(cluster) >= 0:
        return f"cluster {int(cluster)}"
    return "unlabelled"


def growth_view(explorer: Explorer, patient_id: str, show_similar: bool = False):
    """The growth figure (measurements, forecasts with their intervals and, when asked,
    similar lesions' trajectories) and the line under it on the forecast."""
    data = explorer.data
    lesions = data.lesions_of(patient_id)
    named = lesions.assign(type=[lesion_label(t, c) for t, c in zip(
        lesions["coarse_type"], lesions.get("cluster", [None] * len(lesions)), strict=True)])
    forecasts = data.discovery.get("forecasts")
    mine = forecasts[forecasts["patient_id"].astype(str) == patient_id] \
        if forecasts is not None and not forecasts.empty else None
    lines, note_text = [], None
    if mine is None or mine.empty:
        note_text = "measurements only: no growth forecast"
        why = ("this workspace has no growth forecasts; run the discover stage again"
               if forecasts is None else
               "the discover stage made no growth forecast for this patient (forecasts need "
               "lesion tracks and patients with follow-up to learn from)")
        lines.append(note(f"No growth forecast: {why}."))
    else:
        lines.append(_forecast_line(data, patient_id))
    similar = None
    if show_similar:
        if mine is None or mine.empty:
            lines.append(note("Similar lesions' trajectories need the growth forecaster."))
        else:
            queries = mine.drop_duplicates("track_id")[["track_id", "lesion_id", "patient_id",
                                                        "last_day"]].rename(
                columns={"last_day": "day"})
            try:
                similar = data.similar_tracks.of(queries)
            except InputError as exc:
                lines.append(note(f"No similar lesions: {exc.message}"))
            else:
                lines.append(html.Div(
                    f"Grey: the {SIMILAR_TRACKS_K} most similar lesions of other patients "
                    "per track (the forecaster's training lesions), each shifted so that "
                    "its matched lesion falls on this track's last day.",
                    style={"color": "#555"}))
    fig = figures.growth_figure(named, mine, similar, note=note_text,
                                coverage=forecast_coverage(data))
    return fig, html.Div(lines, id="patient-forecast-body")


def forecast_coverage(data) -> float:
    """The nominal coverage of the forecast intervals (the discover stage's option)."""
    record = data.manifest.get("stages", {}).get("discover") or {}
    value = (record.get("config", {}).get("forecast") or {}).get("coverage", 0.8)
    return float(value) if isinstance(value, (int, float)) and 0 < value < 1 else 0.8


def _forecast_line(data, patient_id: str) -> html.Div:
    """"forecast at +180 d: sum 54 mm (40-73), stable" and what the dashes mean."""
    row = horizon_forecasts(data.discovery.get("forecasts"),
                            data.discovery.get("patient_forecasts"))
    parts = []
    if patient_id in row.index:
        r = row.loc[patient_id]
        parts.append(html.Span(
            f"Forecast at +{FORECAST_HORIZON:.0f} d (day {r['target_day']:.0f}): sum of long "
            f"diameters {r['sum_long_mm']:.0f} mm ({r['sum_lo']:.0f}-{r['sum_hi']:.0f}), "
            f"{str(r['category']).replace('_', ' ')}", id="patient-forecast-category",
            style={"fontWeight": 600}))
    share = f"{100 * forecast_coverage(data):.0f}%"
    parts.append(html.Span(f" · dashed: forecast; shaded: {share} interval",
                           style={"color": "#555"}))
    return html.Div(parts)


def _similar(explorer: Explorer, patient_id: str, k: Any, imaging_weight: Any) -> pd.DataFrame:
    return _similar_answer(explorer, patient_id, k, imaging_weight).frame


def _similar_answer(explorer: Explorer, patient_id: str, k: Any,
                    imaging_weight: Any) -> Neighbours:
    w = _number(imaging_weight, 0.5, 0.0, 1.0, "the imaging weight")
    k = int(round(_number(k, K_DEFAULT, 1, K_MAX, "the number of similar patients")))
    return explorer.similar_answer(patient_id, k, {"imaging": w, "records": 1 - w})


def similar_rows(explorer: Explorer, answer: Neighbours) -> list[dict]:
    """The similar-patients table's rows: the answer's scores beside each patient's
    SIMILAR_COLUMNS fields, which are converted once per process, not per request."""
    fields = explorer.derived("similar-fields", lambda: _similar_fields(explorer.data))
    scored = {"score": answer.scores, **answer.parts}
    rows = []
    for n, pid in enumerate(answer.patient_ids):
        mine = {"patient_id": pid, **{c: float(v[n]) for c, v in scored.items()},
                **fields.get(pid, {})}
        rows.append({c: mine[c] for c in SIMILAR_COLUMNS if c in mine})
    return rows


def _similar_fields(data) -> dict[str, dict]:
    table = data.patient_table
    columns = [c for c in SIMILAR_COLUMNS if c in table and c not in ("patient_id", "score",
                                                                     *MODALITIES)]
    rows = records(table[columns])
    return dict(zip(table.index, rows, strict=True))


def _number(value: Any, default: float, lo: float, hi: float, what: str) -> float:
    """A control's value checked on the server: ``default`` when empty, else clamped to
    [lo, hi]; anything but a finite number is refused (without quoting it)."""
    if value is None:
        return float(default)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = math.nan
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not math.isfinite(value)):
        raise InputError(None, f"{what} is not a number",
                         f"give a number from {lo:g} to {hi:g}")
    return float(min(max(value, lo), hi))


def _known(explorer: Explorer, patient_id: Any) -> str:
    """``patient_id`` if the workspace has that patient; else an error that names no other
    patient (see :func:`patientgraph.schema.unknown_id`)."""
    table = explorer.data.patient_table
    if not isinstance(patient_id, str) or patient_id not in table.index:
        from patientgraph.schema import unknown_id  # pandera: only on this rare path

        raise unknown_id(patient_id, table.index, "patient_id")
    return patient_id


def _similar_frame() -> pd.DataFrame:
    """An empty similar-patients table with the column types the table formats by."""
    text = {"patient_id", "sex"}
    return pd.DataFrame({c: pd.Series(dtype=object if c in text else float)
                         for c in SIMILAR_COLUMNS})


def _default_weights(explorer: Explorer) -> dict[str, float]:
    record = explorer.data.manifest.get("stages", {}).get("embed") or {}
    weights = record.get("config", {}).get("weights") or {}
    total = sum(weights.values()) or 1.0
    return {k: v / total for k, v in weights.items()}


def _summary(explorer: Explorer, patient_id: str) -> html.Div:
    """The patient's cards (kept per patient: the data do not change while serving)."""
    kept = explorer.derived("summaries", lambda: LRU(SUMMARY_CACHE))
    return kept.get_or_make(patient_id, lambda: _make_summary(explorer, patient_id))


def _make_summary(explorer: Explorer, patient_id: str) -> html.Div:
    row = explorer.data.patient_table.loc[patient_id]
    items = [("sex", row.get("sex")), ("age", row.get("age")), ("studies", row["n_studies"]),
             ("lesions", row["n_lesions"])]
    if "time_days" in row:
        status = "event" if row.get("event") == 1 else "censored"
        items.append((f"follow-up, {status}", f"{row['time_days']:.0f} d"
                      if pd.notna(row["time_days"]) else "unknown"))
    if "growth_rate" in row and pd.notna(row["growth_rate"]):
        items.append(("growth (log mm / 100 d)", f"{100 * row['growth_rate']:.3f}"))
    shown = [card(label, "n/a" if value is None or (isinstance(value, float) and np.isnan(
        value)) else value) for label, value in items]
    fields = [f"{c}: {row[c]}" for c in explorer.data.record_fields if pd.notna(row.get(c))]
    return html.Div([html.Div(shown), html.Div("Records: " + ", ".join(fields),
                                               style={"color": "#555", "fontSize": "13px"})],
                    id="patient-summary-body")


def _gallery(explorer: Explorer, lesions: pd.DataFrame) -> list:
    rows = []
    for study_id, group in lesions.groupby("study_id", sort=False):
        day = group["day"].iloc[0]
        tiles = []
        for lesion in group.itertuples():
            uri = explorer.crops.uri(lesion.lesion_id)
            label = lesion_label(lesion.coarse_type, getattr(lesion, "cluster", None))
            tiles.append(html.Figure([
                html.Img(src=uri, style={"width": "96px", "height": "96px"}) if uri
                else html.Div("no image", style={"width": "96px", "height": "96px"}),
                html.Figcaption(f"{label}, {lesion.long_mm:.0f} mm",
                                style={"fontSize": "11px"})],
                style={"margin": "0 6px 0 0", "display": "inline-block"}))
        label = f"day {day:.0f}" if pd.notna(day) else str(study_id)
        rows.append(html.Div([html.Div(label, style={"width": "70px", "fontWeight": 600}),
                              html.Div(tiles)], style={**ROW, "margin": "4px 0"}))
    return rows or [note("This patient has no lesions.")]


def _km_neighbours(explorer: Explorer, neighbours: list[str]):
    table = explorer.data.patient_table
    if "time_days" not in table:
        return figures.empty_figure("The workspace has no outcomes")
    inside = table.index.isin(neighbours)
    curves, comparison = compare(table[~inside], table[inside], "everyone else",
                                 "similar patients")
    return figures.km_figure(curves, comparison, title="Similar patients against everyone else")


def _risk(explorer: Explorer, patient_id: str) -> list:
    data = explorer.data
    if not data.has("risk"):
        return [note(discover_note(data.workspace))]
    risk = data.discovery["risk"].set_index("patient_id")
    if patient_id not in risk.index:
        return [note("The risk model has no score for this patient.")]
    row = risk.loc[patient_id]
    rank = float((risk["risk"] < row["risk"]).mean())
    items = [card("GNN risk", f"{row['risk']:.2f}"),
             card("percentile", f"{100 * rank:.0f}")]
    if "risk_cox" in row and pd.notna(row["risk_cox"]):
        items.append(card("Cox baseline", f"{row['risk_cox']:.2f}"))
    if "split" in row:
        items.append(card("split", row["split"]))
    out: list = [html.Div(items)]
    if data.has("risk_explain"):
        explain = data.discovery["risk_explain"]
        mine = explain[explain["patient_id"] == patient_id]
        figure = figures.risk_figure(mine)
        out.append(dcc.Graph(id="patient-risk-explain", figure=figure,
                             style=graph_style(figure)))
    return out


