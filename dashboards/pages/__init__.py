"""The explorer's pages; each offers ``layout(explorer, state)`` and ``register(app, explorer)``.

This module holds the small pieces of page markup they share.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from dash import dash_table, html
from dash.dash_table.Format import Format, Scheme, Trim

NOTE_STYLE = {"background": "#fff8e1", "border": "1px solid #f0d58c", "padding": "8px 12px",
              "borderRadius": "4px", "margin": "8px 0"}
ERROR_STYLE = {"background": "#fdecea", "border": "1px solid #f5b7b1", "padding": "8px 12px",
               "borderRadius": "4px", "margin": "8px 0", "whiteSpace": "pre-wrap"}
CARD_STYLE = {"display": "inline-block", "padding": "10px 16px", "margin": "0 12px 12px 0",
              "border": "1px solid #e3e3e3", "borderRadius": "6px", "minWidth": "120px"}
ROW = {"display": "flex", "gap": "16px", "flexWrap": "wrap", "alignItems": "flex-start"}


def graph_style(figure: dict, **style) -> dict:
    """A dcc.Graph style as tall as the figure: Dash sizes a plot to its container
    (450 px unless told), so a taller figure would be cut off."""
    return {"height": f"{figure['layout'].get('height', 450)}px", **style}


def note(text: str, **kw) -> html.Div:
    """A yellow notice (e.g. 'run the discover stage')."""
    return html.Div(text, className="pg-note", style=NOTE_STYLE, **kw)


def error(text: str) -> html.Div:
    return html.Div(text, className="pg-error", style=ERROR_STYLE)


def card(label: str, value) -> html.Div:
    """A headline number (or short text) with its label under it."""
    if isinstance(value, (bool, np.bool_)):
        shown = str(value)
    elif isinstance(value, (int, np.integer)) or (
            isinstance(value, (float, np.floating)) and float(value).is_integer()):
        shown = f"{int(value):,}"
    elif isinstance(value, (float, np.floating)):
        shown = f"{value:,.1f}"
    else:
        shown = str(value)
    return html.Div([html.Div(shown, style={"fontSize": "24px", "fontWeight": 700}),
                     html.Div(label, style={"color": "#666"})], style=CARD_STYLE)


def records(frame: pd.DataFrame) -> list[dict]:
    """DataFrame rows as JSON-safe dicts for a DataTable (NaN and NA as None)."""
    out = frame.astype(object).where(frame.notna(), None)
    return out.to_dict("records")


P_VALUE_FORMAT = Format(precision=2, scheme=Scheme.decimal_or_exponent)
NUMBER_FORMAT = Format(precision=4, scheme=Scheme.decimal, trim=Trim.yes)


def columns_of(frame: pd.DataFrame, columns: Sequence[str]) -> list[dict]:
    """DataTable column specs: numbers sort as numbers and show 4 significant digits,
    p-values (``p``, ``q``, ``*_p``) 2 with an exponent when small."""
    specs = []
    for c in columns:
        spec: dict = {"name": c, "id": c}
        if c in frame and pd.api.types.is_numeric_dtype(frame[c]) \
                and not pd.api.types.is_bool_dtype(frame[c]):
            spec["type"] = "numeric"
            is_p = c in ("p", "q") or c.endswith("_p")
            spec["format"] = P_VALUE_FORMAT if is_p else NUMBER_FORMAT
        specs.append(spec)
    return specs


def data_table(table_id: str, frame: pd.DataFrame, *, page_size: int = 15,
               columns: Sequence[str] | None = None, **kw) -> dash_table.DataTable:
    """A sortable, paged table of ``frame``; ``columns`` are shown, every column is in
    the rows' data (callbacks read the hidden ones)."""
    columns = list(columns or frame.columns)
    return dash_table.DataTable(
        id=table_id, data=records(frame) if len(frame) else [],
        columns=columns_of(frame, columns), page_size=page_size,
        sort_action="native", style_table={"overflowX": "auto"},
        style_cell={"fontFamily": "system-ui, sans-serif", "fontSize": "13px",
                    "padding": "4px 8px", "textAlign": "left", "whiteSpace": "normal",
                    "height": "auto", "maxWidth": "520px"},
        style_header={"fontWeight": 700, "background": "#f5f5f5"}, **kw)
