"""Lesion map: the 2-D map of every lesion (WebGL), coloured by a chosen field.

Hovering a point shows the lesion's crop; a lasso or box selection becomes a cohort of the
selected lesions' patients.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, dcc, html, no_update

from dashboards import figures
from dashboards.cohorts import CohortDefinition
from dashboards.context import Explorer, guarded
from dashboards.data import discover_note
from dashboards.pages import ROW, error, note

LESION_COLOURS = ("cluster", "type", "long_mm", "short_mm", "growth_per_100d", "probability",
                  "loc_z")
PATIENT_COLOURS = ("growth_rate", "risk", "age", "sex", "event")


class MapPoints:
    """The lesions on the map (those with map coordinates), in a fixed order."""

    def __init__(self, explorer: Explorer):
        self.explorer = explorer

    @cached_property
    def frame(self) -> pd.DataFrame:
        lesions = self.explorer.data.lesion_table
        if "x" not in lesions:
            return pd.DataFrame(columns=["lesion_id", "patient_id", "x", "y"])
        return lesions.dropna(subset=["x", "y"]).reset_index(drop=True)

    @cached_property
    def colours(self) -> list[str]:
        data = self.explorer.data
        own = [c for c in LESION_COLOURS if c in self.frame]
        patient = [c for c in (*PATIENT_COLOURS, *data.record_fields)
                   if c in data.patient_table and c not in own]
        return own + patient

    def with_colour(self, colour: str) -> pd.DataFrame:
        frame = self.frame
        if colour in frame or colour not in self.explorer.data.patient_table:
            return frame
        values = self.explorer.data.patient_table[colour]
        return frame.assign(**{colour: frame["patient_id"].map(values).to_numpy()})

    def figure(self, colour: str) -> Any:
        return figures.lesion_map(self.with_colour(colour), colour,
                                  title=f"{len(self.frame):,} lesions")


def layout(explorer: Explorer, state: dict[str, Any]) -> html.Div:
    points = _points(explorer)
    if points.frame.empty:
        return html.Div([html.H3("Lesion map"), note(discover_note(explorer.data.workspace))],
                        id="map-page")
    default = "cluster" if "cluster" in points.frame else "type"
    return html.Div([
        html.H3("Lesion map"),
        html.Div([
            html.Label(["Colour by ", dcc.Dropdown(
                id="map-colour", options=points.colours, value=default, clearable=False,
                style={"width": "260px"})]),
            html.Div("Lasso or box-select lesions to make a cohort of their patients.",
                     style={"color": "#666", "alignSelf": "center"}),
        ], style=ROW),
        dcc.Graph(id="map-graph", figure=points.figure(default), clear_on_unhover=True,
                  config={"displaylogo": False, "scrollZoom": True},
                  style={"height": "680px"}),
        dcc.Tooltip(id="map-tooltip", direction="right"),
        html.Div([
            html.Span(id="map-selection-text", children="Nothing selected."),
            html.Button("Use as cohort A", id="map-to-a", n_clicks=0),
            html.Button("Use as cohort B", id="map-to-b", n_clicks=0),
            html.Span(id="map-cohort-text", style={"color": "#2a7"}),
        ], style={**ROW, "alignItems": "center"}),
    ], id="map-page")


def register(app: dash.Dash, explorer: Explorer) -> None:
    points = _points(explorer)

    @app.callback(Output("map-graph", "figure"), Input("map-colour", "value"),
                  prevent_initial_call=True)
    @guarded("map colour", figures.empty_figure)
    def recolour(colour: str):
        return points.figure(colour)

    @app.callback(Output("map-tooltip", "show"), Output("map-tooltip", "bbox"),
                  Output("map-tooltip", "children"), Input("map-graph", "hoverData"))
    @guarded("map hover", lambda m: (False, no_update, no_update))
    def hover(hover_data: dict | None):
        if not hover_data or not hover_data.get("points") \
                or "customdata" not in hover_data["points"][0]:
            return False, no_update, no_update
        point = hover_data["points"][0]
        row = points.frame.iloc[int(point["customdata"])]
        uri = explorer.crops.uri(row["lesion_id"])
        image = (html.Img(src=uri, style={"width": "128px", "height": "128px"}) if uri
                 else html.Div("(no image)", style={"color": "#888"}))
        lines = [f"type: {row['type']}", f"long axis: {row['long_mm']:.1f} mm"]
        if "cluster" in row and pd.notna(row["cluster"]):
            lines.append(f"cluster: {int(row['cluster'])}")
        return True, point["bbox"], html.Div(
            [image, *(html.Div(t) for t in lines)],
            style={"fontSize": "12px", "width": "140px"})

    @app.callback(Output("map-selection", "data"), Output("map-selection-text", "children"),
                  Input("map-graph", "selectedData"), prevent_initial_call=True)
    @guarded("map selection", lambda m: (no_update, m))
    def select(selected: dict | None):
        if not selected or not selected.get("points"):
            return None, "Nothing selected."
        rows = points.frame.iloc[[int(p["customdata"]) for p in selected["points"]
                                  if "customdata" in p]]
        ids = sorted(rows["patient_id"].astype(str).unique())
        return ids, f"{len(rows):,} lesions of {len(ids):,} patients selected."

    for letter in ("a", "b"):
        _register_to_cohort(app, letter)


def _register_to_cohort(app: dash.Dash, letter: str) -> None:
    @app.callback(Output(f"cohort-{letter}", "data", allow_duplicate=True),
                  Output("map-cohort-text", "children", allow_duplicate=True),
                  Input(f"map-to-{letter}", "n_clicks"), State("map-selection", "data"),
                  prevent_initial_call=True)
    @guarded(f"map to cohort {letter}", lambda m: (no_update, error(m)))
    def to_cohort(n_clicks: int, selection: list[str] | None):
        if not n_clicks:
            return no_update, no_update
        if not selection:
            return no_update, error("Select some lesions first.")
        definition = CohortDefinition(name=f"map selection {letter.upper()}",
                                      patient_ids=list(selection))
        return definition.to_dict(), (f"Cohort {letter.upper()} is now these "
                                      f"{len(selection)} patients (see Cohorts).")


def _points(explorer: Explorer) -> MapPoints:
    if not hasattr(explorer, "map_points"):
        explorer.map_points = MapPoints(explorer)
    return explorer.map_points
