"""The Dash app: a navigation shell, six pages and the stores that carry state between them.

Pages are chosen by path (``/``, ``/map``, ``/patient``, ``/cohorts``, ``/biomarkers``,
``/query``); the chosen patient and the two cohorts live in memory stores in the browser,
never in the URL. Each page module offers ``layout(explorer, state)`` and
``register(app, explorer)``.
"""

from __future__ import annotations

from pathlib import Path

import dash
from dash import Input, Output, State, dcc, html

from dashboards.context import Explorer, guarded
from dashboards.data import ExplorerData
from dashboards.pages import (
    biomarkers,
    cohort_page,
    error,
    lesion_map,
    overview,
    patient,
    query,
)
from dashboards.security import AuthConfig, HttpPolicy, protect
from patientgraph.workspace import Workspace

PAGES = {
    "/": ("Overview", overview),
    "/map": ("Lesion map", lesion_map),
    "/patient": ("Patient", patient),
    "/cohorts": ("Cohorts", cohort_page),
    "/biomarkers": ("Biomarkers", biomarkers),
    "/query": ("Query", query),
}
STORES = ("patient-store", "cohort-a", "cohort-b", "map-selection")
STYLE = {"fontFamily": "system-ui, sans-serif", "margin": "0 auto", "maxWidth": "1400px",
         "padding": "0 16px"}
NAV_LINK = {"marginRight": "18px", "textDecoration": "none", "fontWeight": 600}


def create_app(workspace: str | Path | Workspace, *, graph: str | None = None,
               auth: AuthConfig | None = None, http: HttpPolicy | None = None,
               warm: bool = False) -> dash.Dash:
    """The explorer on ``workspace`` (files and graph opened read-only).

    ``graph`` overrides where the graph is (a folder or a Neo4j URI); ``auth`` turns on
    token or basic auth for every request; ``http`` says which Host names it answers to
    (default: loopback names only). See :mod:`dashboards.security`. ``warm`` loads what
    the first clicks need in a background thread once the first page is served
    (:meth:`~dashboards.context.Explorer.warm_in_background`; ``serve`` asks for it).
    """
    explorer = Explorer(ExplorerData.load(workspace, graph=graph))
    app = dash.Dash(__name__, title="PatientGraph explorer", update_title=None,
                    suppress_callback_exceptions=True)
    # Pages are built on navigation and callbacks may name components not yet shown
    # (suppress_callback_exceptions), so Dash reads no validation layout: none is built,
    # which would render every page, figures included, before the server could answer.
    app.layout = _shell(explorer)
    _register_routing(app, explorer)
    for _, module in PAGES.values():
        module.register(app, explorer)
    app.server.wsgi_app = protect(
        app.server.wsgi_app, auth, http, callbacks=lambda: app.callback_map,
        callback_path=app.config.routes_pathname_prefix + "_dash-update-component")
    app.server.config["explorer"] = explorer
    if warm:
        explorer.warm_in_background()
    return app


def _shell(explorer: Explorer) -> html.Div:
    links = [dcc.Link(title, href=path, id=f"nav-{module.__name__.rsplit('.', 1)[-1]}",
                      style=NAV_LINK) for path, (title, module) in PAGES.items()]
    return html.Div([
        dcc.Location(id="url", refresh=False),
        *(dcc.Store(id=name, storage_type="memory") for name in STORES),
        html.Header([
            html.H2("PatientGraph explorer", style={"margin": "12px 24px 12px 0",
                                                    "display": "inline-block"}),
            html.Nav(links, style={"display": "inline-block"}),
            html.Span(str(explorer.data.workspace.root.name),
                      style={"float": "right", "color": "#888", "marginTop": "20px"}),
        ], style={"borderBottom": "1px solid #ddd", "marginBottom": "12px"}),
        html.Main(id="page"),
    ], style=STYLE)


def _register_routing(app: dash.Dash, explorer: Explorer) -> None:
    @app.callback(Output("page", "children"), Input("url", "pathname"),
                  *(State(name, "data") for name in STORES))
    @guarded("show page", error)
    def show(pathname: str | None, *stores):
        state = dict(zip(STORES, stores, strict=True))
        _, module = PAGES.get(pathname or "/", ("Not found", None))
        if module is None:
            return html.Div([html.H3("No such page"),
                             dcc.Link("Back to the overview", href="/")])
        try:
            return module.layout(explorer, state)
        finally:
            explorer.first_page.set()  # the warm-up may start (see Explorer.warm_in_background)
