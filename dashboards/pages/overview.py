"""Overview: cohort counts, lesion types, studies per patient, missing data, stages run."""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc, html

from dashboards import figures
from dashboards.context import Explorer
from dashboards.data import discover_note, stage_rows
from dashboards.pages import ROW, card, data_table, graph_style, note

GRAPH_CONFIG = {"displaylogo": False}


def layout(explorer: Explorer, state: dict[str, Any]) -> html.Div:
    data = explorer.data
    counts = figures.cohort_counts(data.patient_table, data.lesion_table)
    if data.has("clusters"):
        clusters = data.discovery["clusters"]["cluster"]
        counts["clusters"] = int(clusters[clusters >= 0].nunique())
    if data.has("biomarkers"):
        q = data.discovery["biomarkers"].get("q")
        if q is not None:
            counts["biomarkers with q < 0.05"] = int((q < 0.05).sum())
    missing = {"patients": data.patients.drop(columns=["patient_id"]),
               "records": data.records, "outcomes": data.outcomes,
               "lesions": data.lesions[["coarse_type"]]}
    stages = stage_rows(data.manifest)
    missing_figure = figures.missing_bar(missing)
    return html.Div([
        html.H3("Overview"),
        html.Div([card(k, v) for k, v in counts.items()], id="overview-counts"),
        html.Div([] if data.has("clusters") else [note(discover_note(data.workspace))]),
        html.Div([
            dcc.Graph(id="overview-types", figure=figures.type_bar(data.lesion_table),
                      config=GRAPH_CONFIG, style={"flex": "1 1 420px"}),
            dcc.Graph(id="overview-studies", figure=figures.studies_histogram(
                data.patient_table), config=GRAPH_CONFIG, style={"flex": "1 1 420px"}),
        ], style=ROW),
        html.Div([
            dcc.Graph(id="overview-missing", figure=missing_figure, config=GRAPH_CONFIG,
                      style=graph_style(missing_figure, flex="1 1 420px")),
            html.Div([html.H4("Stages run"),
                      data_table("overview-stages", stages, page_size=10)],
                     style={"flex": "1 1 520px"}),
        ], style=ROW),
    ], id="overview-page")


def register(app: dash.Dash, explorer: Explorer) -> None:
    """The overview is static: no callbacks."""
