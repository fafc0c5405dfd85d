"""Cohorts: two filter builders, their Kaplan-Meier comparison, CSV export, JSON save/load.

The definitions live in the ``cohort-a`` / ``cohort-b`` stores; the builder's controls show
the filters they can express, and anything else a definition holds (a map selection, a
filter on another field from a loaded file) is kept as "also" until cleared.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import dash
from dash import Input, Output, State, ctx, dcc, html, no_update

from dashboards import figures
from dashboards.cohorts import (
    FORECAST_FIELD,
    CohortDefinition,
    apply_cohort,
    cohort_csv,
    definition_from_controls,
    describe,
)
from dashboards.context import Explorer, guarded
from dashboards.data import COARSE_TYPE_NAMES, FORECAST_HORIZON, forecast_categories
from dashboards.pages import ROW, error, note
from dashboards.survival import compare

LETTERS = ("a", "b")
CONTROLS = ("name", "types", "clusters", "age-min", "age-max", "sex", "field", "field-min",
            "field-max", "similar", "similar-k", "forecast")
BOX = {"flex": "1 1 560px", "border": "1px solid #e3e3e3", "borderRadius": "6px",
       "padding": "10px 14px"}
LABEL = {"display": "block", "margin": "6px 0"}
SHOWN_FILTERS = ("coarse_type", "cluster", "age", "sex", FORECAST_FIELD)
"""Filters the builder has controls for (besides one record field range)."""


def layout(explorer: Explorer, state: dict[str, Any]) -> html.Div:
    return html.Div([
        html.H3("Cohorts"),
        html.Div([_builder(explorer, letter, state.get(f"cohort-{letter}"))
                  for letter in LETTERS], style=ROW),
        html.H4("A against B"),
        html.Div(id="cohort-stats"),
        dcc.Graph(id="cohort-km", figure=figures.empty_figure("Build two cohorts"),
                  style={"height": f"{figures.KM_HEIGHT}px"}),
    ], id="cohorts-page")


def _builder(explorer: Explorer, letter: str, stored: dict | None) -> html.Div:
    data = explorer.data
    definition = (CohortDefinition.from_dict(stored) if stored else
                  CohortDefinition(name=letter.upper()))
    values = _control_values(definition, data.numeric_record_fields)
    sexes = sorted(str(s) for s in data.patients["sex"].dropna().unique()) \
        if "sex" in data.patients else []
    clusters = data.clusters()
    forecasts = FORECAST_FIELD in data.patient_table
    pid = f"cohort-{letter}"
    return html.Div([
        html.H4(f"Cohort {letter.upper()}"),
        dcc.Input(id=f"{pid}-name", value=values["name"], debounce=True,
                  placeholder="name", style={"width": "200px"}),
        html.Label(["Lesion type", dcc.Dropdown(
            id=f"{pid}-types", multi=True, value=values["types"],
            options=[{"label": n, "value": c} for c, n in COARSE_TYPE_NAMES.items()])],
            style=LABEL),
        html.Label(["Cluster", dcc.Dropdown(
            id=f"{pid}-clusters", multi=True, value=values["clusters"], options=clusters,
            disabled=not clusters,
            placeholder="pick clusters" if clusters else "run the discover stage first")],
            style=LABEL),
        html.Label([f"Forecast at +{FORECAST_HORIZON:.0f} d", dcc.Dropdown(
            id=f"{pid}-forecast", multi=True, value=values["forecast"],
            options=[{"label": c.replace("_", " "), "value": c} for c in forecast_categories()],
            disabled=not forecasts,
            placeholder="pick forecast categories" if forecasts
            else "no growth forecasts: run the discover stage")], style=LABEL),
        html.Div([
            html.Label(["Age from ", dcc.Input(id=f"{pid}-age-min", type="number",
                                               value=values["age-min"], debounce=True,
                                               style={"width": "70px"})]),
            html.Label([" to ", dcc.Input(id=f"{pid}-age-max", type="number",
                                          value=values["age-max"], debounce=True,
                                          style={"width": "70px"})]),
            dcc.Checklist(id=f"{pid}-sex", options=sexes, value=values["sex"], inline=True),
        ], style={**ROW, "alignItems": "center"}),
        html.Div([
            dcc.Dropdown(id=f"{pid}-field", options=data.numeric_record_fields,
                         value=values["field"], placeholder="record field",
                         style={"width": "170px"}),
            dcc.Input(id=f"{pid}-field-min", type="number", placeholder="min",
                      value=values["field-min"], debounce=True, style={"width": "80px"}),
            dcc.Input(id=f"{pid}-field-max", type="number", placeholder="max",
                      value=values["field-max"], debounce=True, style={"width": "80px"}),
        ], style={**ROW, "margin": "6px 0"}),
        html.Div([
            dcc.Dropdown(id=f"{pid}-similar", options=data.patient_ids, value=values["similar"],
                         placeholder="similar to patient", style={"width": "200px"}),
            html.Label(["top ", dcc.Input(id=f"{pid}-similar-k", type="number", min=1,
                                          value=values["similar-k"], debounce=True,
                                          style={"width": "70px"})]),
        ], style={**ROW, "margin": "6px 0"}),
        html.Div([html.Span(id=f"{pid}-extra"),
                  html.Button("clear", id=f"{pid}-clear", n_clicks=0,
                              style={"display": "none"})], style={"margin": "6px 0"}),
        html.Div(id=f"{pid}-count", style={"fontWeight": 600, "margin": "6px 0"}),
        html.Div([
            html.Button("Export CSV", id=f"{pid}-csv", n_clicks=0),
            html.Button("Save definition", id=f"{pid}-json", n_clicks=0),
            dcc.Upload(html.Button("Load definition"), id=f"{pid}-upload", accept=".json"),
            dcc.Download(id=f"{pid}-csv-download"), dcc.Download(id=f"{pid}-json-download"),
        ], style=ROW),
        html.Div(id=f"{pid}-message"),
    ], style=BOX, id=f"{pid}-builder")


def register(app: dash.Dash, explorer: Explorer) -> None:
    for letter in LETTERS:
        _register_builder(app, explorer, letter)

    @app.callback(Output("cohort-stats", "children"), Output("cohort-km", "figure"),
                  Input("cohort-a", "data"), Input("cohort-b", "data"))
    @guarded("compare cohorts", lambda m: (error(m), figures.empty_figure("No comparison")))
    def compare(a: dict | None, b: dict | None):
        return compare_cohorts(explorer, a, b)


def compare_cohorts(explorer: Explorer, a: dict | None, b: dict | None):
    """The stats line and Kaplan-Meier figure of cohort B against cohort A."""
    if not a or not b:
        return note("Build cohort A and cohort B to compare them."), \
            figures.empty_figure("Build two cohorts")
    table = explorer.data.patient_table
    if "time_days" not in table:
        return note("The workspace has no outcomes to compare."), no_update
    defs = [CohortDefinition.from_dict(d) for d in (a, b)]
    ids = [apply_cohort(d, table, explorer.data.lesion_table, explorer.similar_ids)
           for d in defs]
    if ids[0] == ids[1]:
        return note(f"A and B are the same {len(ids[0])} patients: set filters that make "
                    "them differ."), figures.empty_figure("A and B are the same patients")
    curves, comparison = compare(table.loc[ids[0]], table.loc[ids[1]], defs[0].name,
                                 defs[1].name)
    lines = [f"A: {len(ids[0])} patients · B: {len(ids[1])} patients"]
    if comparison is not None:
        lines.append(figures.comparison_text(comparison))
    else:
        lines.append("Each cohort needs at least two patients with follow-up.")
    stats = html.Div([html.Div(line) for line in lines], id="cohort-stats-body")
    return stats, figures.km_figure(curves, comparison, title="Cohort A against cohort B")


def _register_builder(app: dash.Dash, explorer: Explorer, letter: str) -> None:
    data = explorer.data
    pid = f"cohort-{letter}"

    @app.callback(Output(pid, "data"), Output(f"{pid}-count", "children"),
                  Output(f"{pid}-extra", "children"), Output(f"{pid}-clear", "style"),
                  *(Input(f"{pid}-{c}", "value") for c in CONTROLS),
                  Input(f"{pid}-clear", "n_clicks"), State(pid, "data"))
    @guarded(f"cohort {letter}", lambda m: (no_update, error(m), no_update, no_update))
    def define(*args):
        *values, _clear, stored = args
        controls = dict(zip(CONTROLS, values, strict=True))
        built = definition_from_controls(
            controls["name"] or letter.upper(), types=controls["types"],
            clusters=controls["clusters"], age=(controls["age-min"], controls["age-max"]),
            sex=controls["sex"], record_field=controls["field"],
            record_min=controls["field-min"], record_max=controls["field-max"],
            similar_patient=controls["similar"], similar_k=controls["similar-k"],
            forecast=controls["forecast"])
        if stored and ctx.triggered_id != f"{pid}-clear":
            built = _with_extras(built, CohortDefinition.from_dict(stored),
                                 data.numeric_record_fields)
        ids = apply_cohort(built, data.patient_table, data.lesion_table, explorer.similar_ids)
        extra = _extras_text(built, data.numeric_record_fields)
        return (built.to_dict(), f"{len(ids):,} patients: {describe(built)}", extra,
                {"marginLeft": "8px", "display": "inline" if extra else "none"})

    @app.callback(*(Output(f"{pid}-{c}", "value") for c in CONTROLS),
                  Output(pid, "data", allow_duplicate=True),
                  Output(f"{pid}-message", "children"),
                  Input(f"{pid}-upload", "contents"), State(f"{pid}-upload", "filename"),
                  prevent_initial_call=True)
    @guarded(f"load cohort {letter}", lambda m: (*[no_update] * (len(CONTROLS) + 1), error(m)))
    def load(contents: str | None, filename: str | None):
        if not contents:
            return (*[no_update] * (len(CONTROLS) + 1), no_update)
        raw = base64.b64decode(contents.split(",", 1)[-1])
        definition = CohortDefinition.from_json(raw, source=filename or "the uploaded file")
        values = _control_values(definition, data.numeric_record_fields)
        return (*(values[c] for c in CONTROLS), definition.to_dict(),
                note(f"Loaded {definition.name}."))

    @app.callback(Output(f"{pid}-csv-download", "data"), Input(f"{pid}-csv", "n_clicks"),
                  State(pid, "data"), prevent_initial_call=True)
    @guarded(f"export cohort {letter}", lambda m: no_update)
    def export_csv(n_clicks: int, stored: dict | None):
        if not n_clicks or not stored:
            return no_update
        definition = CohortDefinition.from_dict(stored)
        ids = apply_cohort(definition, data.patient_table, data.lesion_table,
                           explorer.similar_ids)
        return dcc.send_string(cohort_csv(ids, data.patient_table),
                               f"{_file_name(definition.name)}.csv")

    @app.callback(Output(f"{pid}-json-download", "data"), Input(f"{pid}-json", "n_clicks"),
                  State(pid, "data"), prevent_initial_call=True)
    @guarded(f"save cohort {letter}", lambda m: no_update)
    def save_json(n_clicks: int, stored: dict | None):
        if not n_clicks or not stored:
            return no_update
        definition = CohortDefinition.from_dict(stored)
        return dcc.send_string(definition.to_json(), f"{_file_name(definition.name)}.json")


def _control_values(definition: CohortDefinition, record_fields: list[str]) -> dict[str, Any]:
    f = definition.filters
    age = f.get("age") if isinstance(f.get("age"), dict) else {}
    field = next((k for k in f if k in record_fields and isinstance(f[k], dict)), None)
    sim = definition.similar_to or {}
    return {
        "name": definition.name,
        "types": _as_list(f.get("coarse_type")), "clusters": _as_list(f.get("cluster")),
        "age-min": age.get("min"), "age-max": age.get("max"),
        "sex": [str(s) for s in _as_list(f.get("sex"))],
        "field": field, "field-min": f[field].get("min") if field else None,
        "field-max": f[field].get("max") if field else None,
        "similar": sim.get("patient_id"), "similar-k": sim.get("k", 50),
        "forecast": [str(c) for c in _as_list(f.get(FORECAST_FIELD))],
    }


def _extras(definition: CohortDefinition, record_fields: list[str]) -> dict[str, Any]:
    """The filters of ``definition`` that the builder's controls do not show."""
    field = _control_values(definition, record_fields)["field"]
    return {k: v for k, v in definition.filters.items()
            if k not in SHOWN_FILTERS and k != field}


def _with_extras(built: CohortDefinition, stored: CohortDefinition,
                 record_fields: list[str]) -> CohortDefinition:
    """``built`` (from the controls) plus what ``stored`` holds that the controls cannot show."""
    extras = _extras(stored, record_fields)
    return CohortDefinition(name=built.name, filters={**built.filters, **{
        k: v for k, v in extras.items() if k not in built.filters}},
        similar_to=built.similar_to, patient_ids=stored.patient_ids)


def _extras_text(definition: CohortDefinition, record_fields: list[str]) -> str:
    text = []
    if definition.patient_ids is not None:
        text.append(f"limited to {len(definition.patient_ids)} patients from a map selection")
    extras = _extras(definition, record_fields)
    if extras:
        text.append("also filtered on " + ", ".join(extras))
    return "Also: " + "; ".join(text) if text else ""


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "cohort"
