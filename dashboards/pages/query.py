"""Query: a read-only Cypher box over the graph, results as a table.

Queries run through ``GraphStore.query``: the guard (:mod:`graphdb.guard`) accepts one
read-only statement and nothing else, the engine stops after ``MAX_ROWS`` + 1 rows (so the
page can say there were more) and after the explorer's time limit; the explorer opened the
graph read-only besides.
"""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, dcc, html, no_update

from dashboards.context import Explorer, guarded
from dashboards.pages import data_table, error, note

MAX_ROWS = 1000
EXAMPLE = ("MATCH (p:Patient)-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(l:Lesion)\n"
           "WHERE l.coarse_type = 4\n"
           "RETURN p.patient_id AS patient_id, p.age AS age, count(l) AS liver_lesions\n"
           "ORDER BY liver_lesions DESC LIMIT 20")


def run_query(explorer: Explorer, text: str) -> tuple[pd.DataFrame, bool]:
    """The first ``MAX_ROWS`` rows of a read-only query, and whether there were more."""
    result = explorer.data.graph.run(lambda store: store.query(text, max_rows=MAX_ROWS + 1))
    return _plain(result.head(MAX_ROWS)), len(result) > MAX_ROWS


def layout(explorer: Explorer, state: dict[str, Any]) -> html.Div:
    from graphdb.guard import ACCEPTED  # its Cypher parser loads on the first visit

    graph = explorer.data.graph
    return html.Div([
        html.H3("Query the graph"),
        html.Div(f"Cypher over Patient, Study, Lesion, Cluster and Biomarker nodes: {ACCEPTED}. "
                 f"At most {MAX_ROWS} rows are shown; a query is stopped after "
                 f"{graph.timeout_s:g} s.", style={"color": "#666"}),
        note("This workspace has no graph: run the graph stage.") if not graph.available
        else None,
        dcc.Textarea(id="query-text", value=EXAMPLE,
                     style={"width": "100%", "height": "140px", "fontFamily": "monospace"}),
        html.Button("Run", id="query-run", n_clicks=0),
        html.Div(id="query-status", style={"margin": "8px 0"}),
        html.Div(id="query-result"),
    ], id="query-page")


def register(app: dash.Dash, explorer: Explorer) -> None:
    @app.callback(Output("query-result", "children"), Output("query-status", "children"),
                  Input("query-run", "n_clicks"), State("query-text", "value"),
                  prevent_initial_call=True)
    @guarded("query", lambda m: (None, error(m)))
    def run(n_clicks: int, text: str | None):
        if not n_clicks:
            return no_update, no_update
        if not text or not text.strip():
            return None, note("Write a query first.")
        rows, more = run_query(explorer, text)
        shown = (f"more than {MAX_ROWS} rows; showing the first {MAX_ROWS}" if more
                 else f"{len(rows)} rows")
        return data_table("query-table", rows, page_size=20), html.Span(
            shown, id="query-count")


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells a table can show: nested values (lists, nodes, paths) as text."""
    out = frame.copy()
    out.columns = [str(c) for c in out.columns]
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].map(
                lambda v: v if v is None or isinstance(v, (str, int, float, bool)) else str(v))
    return out
