"""Figure builders: pure functions from tables to Plotly figures (and Cytoscape elements).

None of them touches the workspace, the graph or Dash; the app passes them data and puts
their output on the page, and the unit tests call them directly. Figures are plain
``{"data": [...], "layout": {...}}`` dicts in Plotly's schema: building graph objects
validates every property and cost more than the data behind a figure (``go.Figure(fig)``
validates one in a test). Arrays go out as Plotly's typed arrays (base64), so that a map
of 32,000 lesions stays small on the wire.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from _plotly_utils.utils import to_typed_array_spec
from plotly.colors import qualitative

from dashboards.survival import Comparison, Curve

Figure = dict[str, Any]
PALETTE = qualitative.D3 + qualitative.Set2 + qualitative.Pastel1
MISSING_COLOUR = "#bbbbbb"
SIMILAR_COLOUR = "#8c8c8c"
GRID = "#ececec"
MARGIN = {"l": 50, "r": 20, "t": 50, "b": 40}
KM_HEIGHT = 500
GROWTH_HEIGHT = 320
FOREST_LIMITS = (0.05, 20.0)
"""The forest plot's widest axis (hazard ratios); wider intervals run off its edges."""
NUMERIC_LEVELS = 8
"""A numeric colour field with more distinct values than this gets a colour scale."""
CATEGORICAL_LIMIT = 40
"""A colour field with more levels than this is drawn as numbers (or one colour)."""


def figure(data: list[dict], title: str = "", **layout: Any) -> Figure:
    """A figure dict with the explorer's look (white, light grid)."""
    base = {"title": {"text": title, "x": 0.01, "xanchor": "left"}, "margin": dict(MARGIN),
            "paper_bgcolor": "white", "plot_bgcolor": "white",
            "xaxis": {"gridcolor": GRID, "zerolinecolor": GRID},
            "yaxis": {"gridcolor": GRID, "zerolinecolor": GRID}}
    for key, value in layout.items():
        base[key] = {**base[key], **value} if isinstance(base.get(key), dict) \
            and isinstance(value, dict) else value
    return {"data": data, "layout": base}


def empty_figure(message: str) -> Figure:
    """A blank figure that says why it is blank."""
    return figure([], xaxis={"visible": False}, yaxis={"visible": False}, annotations=[
        {"text": message, "showarrow": False, "x": 0.5, "y": 0.5, "xref": "paper",
         "yref": "paper", "font": {"size": 14, "color": "#666"}}])


def typed(values) -> Any:
    """A numeric column as a Plotly typed array (float32 for floats)."""
    array = np.asarray(values)
    if array.dtype.kind == "f":
        array = array.astype(np.float32)
    return to_typed_array_spec(array)


# --------------------------------------------------------------------------- overview


def cohort_counts(patients: pd.DataFrame, lesions: pd.DataFrame) -> dict[str, float]:
    """Headline numbers: patients, studies, lesions, labelled lesions, events, follow-up."""
    out = {"patients": len(patients), "studies": int(patients["n_studies"].sum()),
           "lesions": len(lesions),
           "labelled lesions": int(lesions["coarse_type"].notna().sum())}
    if "event" in patients:
        out["events"] = int(pd.to_numeric(patients["event"], errors="coerce").fillna(0).sum())
    if "time_days" in patients:
        out["median follow-up (days)"] = float(np.nanmedian(
            pd.to_numeric(patients["time_days"], errors="coerce")))
    return out


def type_bar(lesions: pd.DataFrame) -> Figure:
    """Lesions per coarse type (unlabelled included)."""
    counts = lesions["type"].value_counts()
    colours = [MISSING_COLOUR if t == "unlabelled" else PALETTE[0] for t in counts.index]
    return figure([{"type": "bar", "x": counts.index.tolist(), "y": counts.tolist(),
                    "marker": {"color": colours}}], "Lesions by type",
                  yaxis={"title": {"text": "lesions"}})


def studies_histogram(patients: pd.DataFrame) -> Figure:
    """How many patients have 1, 2, 3, ... studies."""
    counts = patients["n_studies"].value_counts().sort_index()
    return figure([{"type": "bar", "x": counts.index.astype(int).tolist(),
                    "y": counts.tolist(), "marker": {"color": PALETTE[1]}}],
                  "Studies per patient", xaxis={"title": {"text": "studies"}, "dtick": 1},
                  yaxis={"title": {"text": "patients"}})


def missing_bar(tables: Mapping[str, pd.DataFrame]) -> Figure:
    """Share of missing values per field, for each table given (``{"records": df, ...}``)."""
    rows = []
    for table, frame in tables.items():
        for column in frame.columns:
            if column.endswith("_id") or len(frame) == 0:
                continue
            rows.append((f"{table}.{column}", float(frame[column].isna().mean())))
    rows = sorted((r for r in rows if r[1] > 0), key=lambda r: r[1])
    if not rows:
        return empty_figure("No missing values")
    return figure([{"type": "bar", "orientation": "h", "x": [r[1] * 100 for r in rows],
                    "y": [r[0] for r in rows], "marker": {"color": PALETTE[3]}}],
                  "Missing data", xaxis={"title": {"text": "% missing"}},
                  height=max(300, 22 * len(rows) + 100), margin={**MARGIN, "l": 140})


# --------------------------------------------------------------------------- lesion map


def lesion_map(points: pd.DataFrame, colour: str, *, title: str = "") -> Figure:
    """The 2-D lesion map (WebGL) coloured by ``colour``.

    ``points`` has x, y and the colour column; each point's ``customdata`` is its row
    position in ``points`` (the app maps hovered and selected points back to lesions). A
    field with few levels gets one trace per level (a legend); a numeric field a colour
    scale; missing values are grey.
    """
    values = points[colour] if colour in points else pd.Series(np.nan, index=points.index)
    position = np.arange(len(points))
    missing = values.isna().to_numpy()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    levels = pd.unique(values[~missing])
    traces = []
    if numeric and colour != "cluster" and len(levels) > NUMERIC_LEVELS:
        shown = ~missing
        traces.append(_scatter(points[shown], position[shown], colour, {
            "color": typed(values[shown].to_numpy(float)), "colorscale": "Viridis",
            "showscale": True, "colorbar": {"title": {"text": colour}}}))
    elif len(levels) <= CATEGORICAL_LIMIT:
        for n, level in enumerate(sorted(levels, key=_level_key)):
            shown = (values == level).to_numpy() & ~missing
            label = "noise" if colour == "cluster" and _is_minus_one(level) else _label(level)
            col = MISSING_COLOUR if label == "noise" else PALETTE[n % len(PALETTE)]
            traces.append(_scatter(points[shown], position[shown], label, {"color": col}))
    else:
        traces.append(_scatter(points[~missing], position[~missing], colour,
                               {"color": PALETTE[0]}))
    if missing.any():
        traces.append(_scatter(points[missing], position[missing], "missing",
                               {"color": MISSING_COLOUR}))
    hidden = {"visible": False}
    return figure(traces, title, dragmode="lasso", hovermode="closest", uirevision=True,
                  legend={"itemsizing": "constant", "title": {"text": colour}},
                  xaxis=hidden, yaxis=hidden)


def _scatter(points: pd.DataFrame, position: np.ndarray, name: str, marker: dict) -> dict:
    return {"type": "scattergl", "mode": "markers", "name": name,
            "x": typed(points["x"].to_numpy(float)), "y": typed(points["y"].to_numpy(float)),
            "customdata": position.tolist(),  # plain: hover events drop typed customdata
            "marker": {"size": 5, "opacity": 0.8, **marker}, "hoverinfo": "none"}


def _level_key(level) -> tuple:
    try:
        return (0, float(level), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(level))


def _label(level) -> str:
    if isinstance(level, (float, np.floating)) and float(level).is_integer():
        return str(int(level))
    return str(level)


def _is_minus_one(level) -> bool:
    try:
        return float(level) == -1
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- patient


def growth_figure(lesions: pd.DataFrame, forecasts: pd.DataFrame | None = None,
                  similar: pd.DataFrame | None = None, *, note: str | None = None,
                  coverage: float = 0.8) -> Figure:
    """Long diameter over study days, one line per tracked lesion (or per lesion).

    ``forecasts`` (rows of ``discovery/forecasts.parquet``: track_id, last_day, target_day,
    long_mm, long_mm_lo, long_mm_hi) adds each track's forecast, a dashed line from its last
    measurement through the target days, in the track's colour over its shaded ``coverage``
    interval. ``similar`` (query_track, track_id, patient_id, day, long_mm; days already
    aligned) adds other patients' trajectories as thin grey lines beneath. ``note`` is a
    short line above the plot (e.g. why there is no forecast). Each trace's ``meta`` says
    what it is: "measured", "forecast", "band" or "similar".
    """
    rows = lesions.dropna(subset=["day", "long_mm"])
    if rows.empty:
        return empty_figure("No measured lesions")
    key = "track_id" if "track_id" in rows and rows["track_id"].notna().any() else "lesion_id"
    traces, ahead = _similar_traces(similar), []
    by_track = (forecasts.dropna(subset=["target_day", "long_mm"]).groupby("track_id")
                if key == "track_id" and forecasts is not None and not forecasts.empty
                else None)
    for n, (name, group) in enumerate(rows.groupby(key, sort=True)):
        group = group.sort_values("day")
        colour = PALETTE[n % len(PALETTE)]
        label = f"{group['type'].iloc[0]} {n + 1}" if "type" in group else str(name)
        traces.append({
            "type": "scatter", "mode": "lines+markers", "x": group["day"].tolist(),
            "y": group["long_mm"].tolist(), "name": label, "legendgroup": label,
            "meta": "measured", "line": {"color": colour},
            "hovertemplate": "day %{x:.0f}<br>%{y:.1f} mm<extra></extra>"})
        if by_track is not None and name in by_track.groups:
            ahead += _forecast_traces(group, by_track.get_group(name), label, colour, coverage)
    layout: dict[str, Any] = {}
    if note:
        layout["annotations"] = [{"text": note, "showarrow": False, "xref": "paper",
                                  "yref": "paper", "x": 0, "y": 1, "xanchor": "left",
                                  "yanchor": "bottom", "font": {"size": 11, "color": "#666"}}]
    # bands first (beneath), then the dashed lines, then the measurements on top
    order = [t for t in ahead if t["meta"] == "band"] + \
        [t for t in ahead if t["meta"] == "forecast"]
    similar_traces = [t for t in traces if t["meta"] == "similar"]
    measured = [t for t in traces if t["meta"] == "measured"]
    return figure(similar_traces + order + measured, "Lesion growth",
                  xaxis={"title": {"text": "day"}},
                  yaxis={"title": {"text": "long diameter (mm)"}}, height=GROWTH_HEIGHT,
                  **layout)


def _forecast_traces(measured: pd.DataFrame, forecast: pd.DataFrame, label: str,
                     colour: str, coverage: float) -> list[dict]:
    """A track's forecast line and its interval, both starting at its last measurement."""
    forecast = forecast.sort_values("target_day")
    last_day = float(forecast["last_day"].iloc[0]) if "last_day" in forecast \
        else float(measured["day"].iloc[-1])
    at = measured[measured["day"] <= last_day]
    start = (at if not at.empty else measured).iloc[-1]
    x0, y0 = float(start["day"]), float(start["long_mm"])
    days = forecast["target_day"].astype(float).tolist()
    lo = forecast["long_mm_lo"].astype(float).tolist()
    hi = forecast["long_mm_hi"].astype(float).tolist()
    share = f"{100 * coverage:.0f}%"
    band = {"type": "scatter", "mode": "lines", "x": [x0, *days, *days[::-1], x0],
            "y": [y0, *hi, *lo[::-1], y0], "fill": "toself",
            "fillcolor": _rgba(colour, 0.15), "line": {"width": 0, "color": colour},
            "name": f"{label}: {share} interval", "legendgroup": label, "showlegend": False,
            "meta": "band", "hoverinfo": "skip"}
    line = {"type": "scatter", "mode": "lines+markers", "x": [x0, *days],
            "y": [y0, *forecast["long_mm"].astype(float).tolist()],
            "name": f"{label} forecast", "legendgroup": label, "showlegend": False,
            "meta": "forecast", "line": {"color": colour, "dash": "dash"},
            "marker": {"symbol": "circle-open", "size": 7},
            "customdata": [[y0, y0], *zip(lo, hi, strict=True)],
            "hovertemplate": "day %{x:.0f}<br>forecast %{y:.1f} mm<br>" + share
                             + " interval %{customdata[0]:.1f}-%{customdata[1]:.1f} mm"
                             "<extra></extra>"}
    return [band, line]


def _similar_traces(similar: pd.DataFrame | None) -> list[dict]:
    """Other patients' trajectories (already aligned), thin and grey, one legend entry."""
    if similar is None or similar.empty:
        return []
    out = []
    for (_query, _track), group in similar.groupby(["query_track", "track_id"], sort=False):
        group = group.sort_values("day")
        patient = str(group["patient_id"].iloc[0])
        out.append({"type": "scatter", "mode": "lines+markers", "x": group["day"].tolist(),
                    "y": group["long_mm"].tolist(), "name": "similar lesions",
                    "legendgroup": "similar", "showlegend": not out, "meta": "similar",
                    "line": {"color": SIMILAR_COLOUR, "width": 1},
                    "marker": {"size": 3, "color": SIMILAR_COLOUR}, "opacity": 0.7,
                    "hovertemplate": f"patient {patient}<br>day %{{x:.0f}} (aligned)<br>"
                                     "%{y:.1f} mm<extra></extra>"})
    return out


def _rgba(colour: str, alpha: float) -> str:
    """A Plotly colour ("#rrggbb" or "rgb(r, g, b)") with transparency ``alpha``."""
    if colour.startswith("#") and len(colour) == 7:
        r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    elif colour.startswith("rgb("):
        r, g, b = (int(float(v)) for v in colour[4:-1].split(","))
    else:
        return colour
    return f"rgba({r}, {g}, {b}, {alpha})"


def contributions_figure(similar: pd.DataFrame, modalities: Sequence[str]) -> Figure:
    """Stacked bars: each similar patient's score split into its modalities' parts."""
    if similar.empty:
        return empty_figure("No similar patients")
    order = similar.iloc[::-1]
    traces = [{"type": "bar", "orientation": "h", "y": order["patient_id"].tolist(),
               "x": order[m].tolist(), "name": m, "marker": {"color": PALETTE[n]}}
              for n, m in enumerate(m for m in modalities if m in similar)]
    return figure(traces, "What each modality contributed", barmode="relative",
                  xaxis={"title": {"text": "score"}}, yaxis={"type": "category"},
                  height=max(260, 24 * len(similar) + 110))


def risk_figure(explain: pd.DataFrame, top: int = 10) -> Figure:
    """The largest contributions to a patient's GNN risk (features and neighbours)."""
    if explain.empty:
        return empty_figure("No risk explanation for this patient")
    rows = explain.reindex(explain["contribution"].abs().sort_values(ascending=False).index)
    rows = rows.head(top).iloc[::-1]
    labels = [f"{k}: {n}" for k, n in zip(rows["kind"], rows["name"], strict=True)]
    colours = [PALETTE[3] if c > 0 else PALETTE[2] for c in rows["contribution"]]
    return figure([{"type": "bar", "orientation": "h", "x": rows["contribution"].tolist(),
                    "y": labels, "marker": {"color": colours}}],
                  "What drove the risk (positive raises it)",
                  xaxis={"title": {"text": "contribution"}}, yaxis={"type": "category"},
                  height=max(240, 26 * len(rows) + 100), margin={**MARGIN, "l": 160})


def neighbourhood_elements(patient_id: str, structure: pd.DataFrame,
                           similar: pd.DataFrame) -> list[dict]:
    """Cytoscape elements: the patient, its studies and lesions, and its similar patients.

    ``structure`` has study_id, day, lesion_id, type (one row per lesion); ``similar`` has
    patient_id and score.
    """
    elements = [{"data": {"id": f"P:{patient_id}", "label": patient_id, "kind": "patient"},
                 "classes": "centre"}]
    for study_id, group in structure.groupby("study_id", sort=True):
        day = group["day"].iloc[0]
        label = f"day {day:.0f}" if pd.notna(day) else str(study_id)
        elements.append({"data": {"id": f"S:{study_id}", "label": label, "kind": "study"},
                         "classes": "study"})
        elements.append({"data": {"source": f"P:{patient_id}", "target": f"S:{study_id}"}})
        for row in group.itertuples():
            elements.append({"data": {"id": f"L:{row.lesion_id}", "label": str(row.type),
                                      "kind": "lesion"}, "classes": "lesion"})
            elements.append({"data": {"source": f"S:{study_id}", "target": f"L:{row.lesion_id}"}})
    for row in similar.itertuples():
        elements.append({"data": {"id": f"P:{row.patient_id}", "label": row.patient_id,
                                  "kind": "patient"}, "classes": "similar"})
        elements.append({"data": {"source": f"P:{patient_id}", "target": f"P:{row.patient_id}",
                                  "label": f"{row.score:.2f}"}, "classes": "similarity"})
    return elements


# --------------------------------------------------------------------------- survival


def km_figure(curves: Sequence[Curve], comparison: Comparison | None = None, *,
              title: str = "Kaplan-Meier", n_ticks: int = 6) -> Figure:
    """Kaplan-Meier curves with their 95% bands and the number at risk under the plot."""
    curves = [c for c in curves if c is not None]
    if not curves:
        return empty_figure("Too few patients with follow-up for a survival curve")
    end = max(float(c.time.max()) for c in curves)
    ticks = _nice_ticks(end, n_ticks)
    traces = []
    for n, curve in enumerate(curves):
        colour = PALETTE[n % len(PALETTE)]
        step = {"type": "scatter", "mode": "lines", "x": typed(curve.time), "xaxis": "x",
                "yaxis": "y"}
        traces.append({**step, "y": typed(curve.ci_high), "line": {"width": 0, "shape": "hv"},
                       "showlegend": False, "hoverinfo": "skip"})
        traces.append({**step, "y": typed(curve.ci_low), "line": {"width": 0, "shape": "hv"},
                       "fill": "tonexty", "fillcolor": _alpha(colour, 0.15),
                       "showlegend": False, "hoverinfo": "skip"})
        traces.append({**step, "y": typed(curve.survival),
                       "line": {"color": colour, "width": 2, "shape": "hv"},
                       "name": f"{curve.label} (n={curve.n}, events={curve.events})",
                       "hovertemplate": "day %{x:.0f}: %{y:.2f}<extra>" + curve.label
                       + "</extra>"})
        traces.append({"type": "scatter", "mode": "text", "x": ticks,
                       "y": [curve.label] * len(ticks),
                       "text": [str(v) for v in curve.at_risk(ticks)],
                       "textfont": {"color": colour}, "showlegend": False,
                       "hoverinfo": "skip", "xaxis": "x2", "yaxis": "y2"})
    subtitle = f"<br><sup>{comparison_text(comparison)}</sup>" if comparison else ""
    return figure(
        traces, title + subtitle, height=KM_HEIGHT, margin={**MARGIN, "l": 110, "t": 80},
        xaxis={"matches": "x2", "showticklabels": False, "anchor": "y"},
        yaxis={"title": {"text": "survival"}, "range": [0, 1.02], "domain": [0.3, 1.0]},
        xaxis2={"title": {"text": "days"}, "tickvals": ticks, "anchor": "y2",
                "gridcolor": GRID, "zeroline": False},
        yaxis2={"title": {"text": "at risk"}, "type": "category", "autorange": "reversed",
                "domain": [0.0, 0.2], "anchor": "x2"},
        legend={"x": 0.99, "xanchor": "right", "y": 0.99, "yanchor": "top",
                "bgcolor": "rgba(255,255,255,0.8)"})


def comparison_text(comparison: Comparison) -> str:
    """'log-rank p = 0.003 · HR (B vs A) 1.84 [1.21, 2.79]' and any note."""
    text = f"log-rank p = {format_p(comparison.logrank_p)}"
    if math.isfinite(comparison.hr):
        text += (f" · HR ({comparison.label_b} vs {comparison.label_a}) {comparison.hr:.2f} "
                 f"[{comparison.hr_low:.2f}, {comparison.hr_high:.2f}]")
    if comparison.note:
        text += f" · {comparison.note}"
    if comparison.dropped:
        text += f" · {comparison.dropped} rows without usable follow-up left out"
    return text


def format_p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def forest_figure(biomarkers: pd.DataFrame, top: int = 30) -> Figure:
    """Hazard ratios with their 95% intervals (log axis) of the first ``top`` rows.

    Each point's ``customdata`` is its row's index label in ``biomarkers``. Rows are named
    by ``biomarker`` (else ``candidate: level``); flagged rows are grey, q < 0.05 red.
    """
    rows = biomarkers.dropna(subset=["hr", "ci_low", "ci_high"]).head(top).iloc[::-1]
    rows = rows[(rows["hr"] > 0) & (rows["ci_low"] > 0)]
    if rows.empty:
        return empty_figure("No hazard ratios to show")
    q = pd.to_numeric(rows["q"], errors="coerce") if "q" in rows else pd.Series(
        np.nan, index=rows.index)
    flagged = (rows["flag"].fillna("").astype(str).str.len() > 0 if "flag" in rows
               else pd.Series(False, index=rows.index))
    colours = [MISSING_COLOUR if f else (PALETTE[3] if v < 0.05 else PALETTE[0])
               for f, v in zip(flagged, q.fillna(1), strict=True)]
    low = max(float(rows["ci_low"].min()), FOREST_LIMITS[0])
    high = min(float(rows["ci_high"].max()), FOREST_LIMITS[1])
    trace = {"type": "scatter", "mode": "markers", "x": rows["hr"].tolist(),
             "y": [_biomarker_label(r) for r in rows.itertuples()],
             "customdata": rows.index.tolist(),
             "marker": {"color": colours, "size": 9, "symbol": "square"},
             "error_x": {"type": "data", "symmetric": False,
                         "array": (rows["ci_high"] - rows["hr"]).tolist(),
                         "arrayminus": (rows["hr"] - rows["ci_low"]).tolist(),
                         "color": "#555"},
             "hovertemplate": "%{y}: HR %{x:.2f}<extra></extra>"}
    return figure(
        [trace], "Hazard ratios, 95% CI (red: q < 0.05, grey: flagged)",
        xaxis={"title": {"text": "hazard ratio"}, "type": "log",
               "range": [math.log10(min(low, 0.9)) - 0.05, math.log10(max(high, 1.1)) + 0.05]},
        yaxis={"type": "category"}, height=max(320, 22 * len(rows) + 120),
        margin={**MARGIN, "l": 140},
        shapes=[{"type": "line", "x0": 1, "x1": 1, "xref": "x", "y0": 0, "y1": 1,
                 "yref": "paper", "line": {"dash": "dash", "color": "#999"}}])


def _biomarker_label(row) -> str:
    if isinstance(getattr(row, "biomarker", None), str):
        return row.biomarker
    level = getattr(row, "level", None)
    if level is None or (isinstance(level, float) and math.isnan(level)) or level == "":
        return str(row.candidate)
    return f"{row.candidate}: {level}"


def _nice_ticks(end: float, n: int) -> list[float]:
    if end <= 0:
        return [0.0]
    raw = end / max(n - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [float(v) for v in np.arange(0, end + 1e-9, step)]


def _alpha(hex_colour: str, alpha: float) -> str:
    if hex_colour.startswith("rgb"):
        return hex_colour.replace("rgb(", "rgba(").replace(")", f", {alpha})")
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {alpha})"
