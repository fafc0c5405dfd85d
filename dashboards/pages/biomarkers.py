"""Biomarkers: the ranked scan (hazard ratio, interval, p, q) with a forest plot.

Clicking a candidate (a table row or a forest-plot point) draws Kaplan-Meier curves of the
patients split by it: its two levels, or above and below its median.
"""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, dcc, html, no_update

from dashboards import figures
from dashboards.context import Explorer, guarded
from dashboards.data import discover_note
from dashboards.pages import data_table, error, graph_style, note
from dashboards.survival import compare, split_by_values

SHOWN = ("biomarker", "family", "hr", "ci_low", "ci_high", "p", "q", "n", "events",
         "transform", "ph_violated", "flag")
KEPT = ("candidate", "level", "reference", "note")


def ranked(biomarkers: pd.DataFrame) -> pd.DataFrame:
    """The scan's rows, best first (by q, then p), with a ``biomarker`` name per row.

    The name is the scan's own (``candidate`` or ``candidate=level``) or made the same way.
    """
    rows = biomarkers.sort_values([c for c in ("q", "p") if c in biomarkers],
                                  kind="stable", na_position="last").reset_index(drop=True)
    if "biomarker" not in rows:
        level = rows["level"] if "level" in rows else pd.Series(None, index=rows.index)
        named = level.notna() & (level.astype(str) != "")
        rows["biomarker"] = rows["candidate"].astype(str).where(
            ~named, rows["candidate"].astype(str) + "=" + level.astype(str))
    return rows[[c for c in (*SHOWN, *KEPT) if c in rows]]


def layout(explorer: Explorer, state: dict[str, Any]) -> html.Div:
    data = explorer.data
    if not data.has("biomarkers"):
        return html.Div([html.H3("Biomarkers"), note(discover_note(data.workspace))],
                        id="biomarkers-page")
    table = ranked(data.discovery["biomarkers"])
    forest = figures.forest_figure(table)
    return html.Div([
        html.H3("Biomarkers"),
        html.Div("Candidate imaging and record biomarkers, ranked by Benjamini-Hochberg q. "
                 "Click a row or a point for its Kaplan-Meier curves.",
                 style={"color": "#666"}),
        html.Div([
            html.Div(data_table("biomarker-table", table, page_size=15,
                                columns=[c for c in SHOWN if c in table],
                                style_data_conditional=[{
                                    "if": {"filter_query": "{q} < 0.05"},
                                    "fontWeight": 700}]),
                     style={"flex": "1 1 640px"}),
            dcc.Graph(id="biomarker-forest", figure=forest,
                      style=graph_style(forest, flex="1 1 480px")),
        ], style={"display": "flex", "gap": "16px", "flexWrap": "wrap"}),
        html.Div(id="biomarker-note"),
        dcc.Graph(id="biomarker-km", figure=figures.empty_figure("Click a biomarker"),
                  style={"height": f"{figures.KM_HEIGHT}px"}),
    ], id="biomarkers-page")


def register(app: dash.Dash, explorer: Explorer) -> None:
    data = explorer.data
    table = ranked(data.discovery["biomarkers"]) if data.has("biomarkers") else None
    @app.callback(Output("biomarker-km", "figure"), Output("biomarker-note", "children"),
                  Input("biomarker-table", "active_cell"), Input("biomarker-forest", "clickData"),
                  State("biomarker-table", "derived_viewport_data"), prevent_initial_call=True)
    @guarded("biomarker curves", lambda m: (no_update, error(m)))
    def curves(cell: dict | None, click: dict | None, rows: list[dict] | None):
        trigger = dash.ctx.triggered_id
        row = None
        if trigger == "biomarker-table" and cell and rows and cell["row"] < len(rows):
            row = rows[cell["row"]]
        elif trigger == "biomarker-forest" and click and click.get("points"):
            row = table.iloc[int(click["points"][0]["customdata"])].to_dict()
        if row is None:
            return no_update, no_update
        return split_curves(explorer, str(row["candidate"]), row.get("level"),
                            row.get("reference"))


def candidate_values(explorer: Explorer, candidate: str) -> pd.Series | None:
    """A candidate's value per patient (index patient_id), from the scan's own table."""
    data = explorer.data
    for frame in (data.discovery.get("candidates"), data.patient_table.reset_index()):
        if frame is not None and candidate in frame and "patient_id" in frame:
            values = frame.set_index(frame["patient_id"].astype(str))[candidate]
            return values.rename(candidate)
    return None


def split_curves(explorer: Explorer, candidate: str, level: Any = None,
                 reference: Any = None):
    """Kaplan-Meier figure and a note for the patients split by ``candidate`` (a level)."""
    table = explorer.data.patient_table
    shown = candidate if level is None else f"{candidate} = {level}"
    values = candidate_values(explorer, candidate)
    if values is None:
        return figures.empty_figure(shown), note(
            f"The workspace has no per-patient values of {candidate} to split by.")
    if "time_days" not in table:
        return figures.empty_figure(shown), note("The workspace has no outcomes.")
    split = split_by_values(values, level, reference)
    if split is None:
        return figures.empty_figure(shown), note(f"{shown} does not split the patients.")
    in_b, label_a, label_b = split
    ids_b, ids_a = in_b.index[in_b], in_b.index[~in_b]
    a = table.loc[table.index.intersection(ids_a)]
    b = table.loc[table.index.intersection(ids_b)]
    curves, comparison = compare(a, b, label_a, label_b)
    figure = figures.km_figure(curves, comparison, title=f"Split by {shown}")
    return figure, html.Div(f"{len(a)} patients ({label_a}) against {len(b)} ({label_b}). "
                            "These curves and this hazard ratio are unadjusted; the table's "
                            "hazard ratios come from the scan's age- and sex-adjusted Cox "
                            "models.", id="biomarker-note-body")
