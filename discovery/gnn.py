"""GNN risk model on the patient similarity graph, compared with a Cox model on the same inputs.

Nodes are patients, edges the symmetrised patient kNN graph (``SIMILAR_TO``, weight = the
similarity score), node features the patient embedding (or its principal components) and the
record fields, encoded by the rule of :func:`graphdb.pyg.features` (numeric standardised,
categorical one-hot, a missing value is 0 plus a ``<name>_missing`` indicator). A two-layer
GraphSAGE-style network (``GraphConv`` over a similarity-weighted neighbour mean) gives every
node a log-risk; it is trained full-batch with the Cox partial likelihood (Breslow ties) on the
training patients only (transductive: every patient is a node, only training patients enter
the loss) and stopped early on a validation split carved out of the training patients.

The baseline is a penalised lifelines ``CoxPHFitter`` on exactly the same node features.
Unsupervised preprocessing (standardisation, PCA of the embedding, the kNN graph itself) sees
every patient's features but never an outcome. Both models are scored on the held-out test
patients by Harrell's C-index with paired bootstrap intervals (:func:`evaluate`).

The graph is built in :mod:`discovery.gnn_graph`, the model and the Cox baseline are
:mod:`discovery.gnn_model`, the explanations :mod:`discovery.gnn_explain`; this module fits
and scores them for the discover stage and re-exports their public names.
"""

from __future__ import annotations

import time as _time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from discovery.concordance import bootstrap_c_index, c_index
from discovery.gnn_explain import EXPLANATION_COLUMNS, attributions, explain, explain_all
from discovery.gnn_graph import EMBEDDINGS, KNN, MIN_WEIGHT, _unique_ids, patient_graph
from discovery.gnn_model import (
    CoxBaseline,
    GNNRisk,
    RiskNet,
    _stratified_pick,
    cox_partial_nll,
    mean_weights,
)
from patientgraph.errors import InputError
from patientgraph.options import merge_options

__all__ = [
    "DEFAULTS", "OUTCOMES", "KNN", "EMBEDDINGS", "MIN_WEIGHT", "EXPLANATION_COLUMNS",
    "patient_graph", "cox_partial_nll", "RiskNet", "mean_weights", "GNNRisk", "CoxBaseline",
    "evaluate", "explain", "explain_all", "attributions", "fit_risk",
]

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "test_fraction": 0.25,
    "val_fraction": 0.2,
    "embedding_components": 16,
    "hidden": 32,
    "dropout": 0.3,
    "lr": 0.01,
    "weight_decay": 1e-3,
    "max_epochs": 300,
    "patience": 30,
    "penalizer": 0.1,
    "n_bootstrap": 1000,
    "min_events": 10,
    "explain": "all",
    "device": "auto",
    "threads": 1,
}
"""Options of :func:`fit_risk` (``explain``: ``"all"``, ``"test"`` or ``"none"``)."""

OUTCOMES = "cohort/outcomes.parquet"


# -- evaluation --------------------------------------------------------------------------------

def evaluate(time: np.ndarray, event: np.ndarray, risk_gnn: np.ndarray, risk_cox: np.ndarray,
             *, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """C-index of both models on the given (held-out) patients, with bootstrap intervals.

    Both models are scored on the same resamples, so ``c_index_diff_ci`` (GNN - Cox) is a
    paired interval (percentile). Resamples without a comparable pair are skipped;
    ``n_bootstrap`` is the number used.
    """
    time, event = np.asarray(time, float), np.asarray(event, float)
    risks = [np.asarray(risk_gnn, float), np.asarray(risk_cox, float)]
    out: dict[str, Any] = {"c_index_gnn": c_index(time, event, risks[0]),
                           "c_index_cox": c_index(time, event, risks[1])}
    out["c_index_diff"] = out["c_index_gnn"] - out["c_index_cox"]
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_bootstrap, len(time)))
    rows = rng.integers(0, len(time), (n_bootstrap, len(time)))
    np.add.at(counts, (np.arange(n_bootstrap)[:, None], rows), 1.0)
    draws = bootstrap_c_index(time, event, risks, counts)
    draws = draws[~np.isnan(draws).any(axis=1)]
    draws = np.column_stack([draws, draws[:, 0] - draws[:, 1]])
    tail = 100 * (1 - level) / 2
    for j, name in enumerate(("c_index_gnn", "c_index_cox", "c_index_diff")):
        out[f"{name}_ci"] = (np.percentile(draws[:, j], [tail, 100 - tail]).tolist()
                             if len(draws) else [np.nan, np.nan])
    out["n_bootstrap"] = len(draws)
    return out


# -- the stage-facing fit ----------------------------------------------------------------------

def fit_risk(patients: pd.DataFrame, records: pd.DataFrame, outcomes: pd.DataFrame,
             patient_embeddings: pd.DataFrame, patient_knn: pd.DataFrame | None,
             config: Mapping[str, Any] | None = None
             ) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """Fit the GNN and the Cox baseline, score both on held-out patients, explain the GNN.

    Patients with an outcome are split (seeded, stratified by event) into train and test;
    the GNN carves its validation split out of train. Patients without an outcome are graph
    nodes and get a risk, but enter no loss and no metric (``split="no_outcome"``).

    Returns the risk frame (patient_id, risk, risk_cox, split), the metrics (C-indices with
    bootstrap intervals, counts, timings) and the explanation frame of :func:`explain`.
    Raises :class:`InputError` when there are fewer than ``min_events`` events.
    """
    cfg = _config(config)
    started = _time.perf_counter()
    data = patient_graph(patients, records, patient_embeddings, patient_knn,
                         embedding_components=cfg["embedding_components"])
    time, event, labelled, unmatched = _outcomes(outcomes, pd.Index(data.patient_id))
    _check_events(event, labelled, cfg["min_events"])
    test = _stratified_pick(labelled, event, cfg["test_fraction"], [cfg["seed"], 0])
    train = labelled & ~test
    if event[test].sum() < 1 or event[train].sum() < 2:
        raise InputError(OUTCOMES, "the split leaves the test or training patients without "
                         "events", "add patients with events or change test_fraction",
                         column="event")
    graph_seconds = _time.perf_counter() - started

    started = _time.perf_counter()
    options = ("hidden", "dropout", "lr", "weight_decay", "max_epochs", "patience",
               "val_fraction", "seed", "device", "threads")
    gnn = GNNRisk(**{k: cfg[k] for k in options}).fit(data, time, event, train)
    risk = gnn.predict(data)
    gnn_seconds = _time.perf_counter() - started
    started = _time.perf_counter()
    cox = CoxBaseline(cfg["penalizer"]).fit(data.x.numpy(), time, event, train)
    risk_cox = cox.predict(data.x.numpy())
    cox_seconds = _time.perf_counter() - started

    split = np.where(test, "test", np.where(train, "train", "no_outcome")).astype(object)
    split[gnn.val_mask_] = "val"
    frame = pd.DataFrame({"patient_id": data.patient_id, "risk": risk, "risk_cox": risk_cox,
                          "split": split})
    metrics = evaluate(time[test], event[test], risk[test], risk_cox[test],
                       n_bootstrap=cfg["n_bootstrap"], seed=cfg["seed"])
    metrics.update({
        "n_patients": int(data.num_nodes), "n_train": int(gnn.fit_mask_.sum()),
        "n_val": int(gnn.val_mask_.sum()), "n_test": int(test.sum()),
        "n_no_outcome": int((~labelled).sum()), "n_outcomes_unmatched": unmatched,
        "events": int(event[labelled].sum()), "events_train": int(event[train].sum()),
        "events_test": int(event[test].sum()), "n_features": int(data.x.shape[1]),
        "n_edges": int(data.edge_index.shape[1] // 2), "best_epoch": int(gnn.best_epoch_),
        "epochs_run": len(gnn.history_), "seconds_graph": graph_seconds,
        "seconds_gnn": gnn_seconds, "seconds_cox": cox_seconds,
        "device": str(next(gnn.net_.parameters()).device), "cox_warnings": cox.warnings_,
    })
    started = _time.perf_counter()
    chosen = {"all": range(data.num_nodes), "test": np.flatnonzero(test), "none": []}
    explanations = explain_all(gnn, data, chosen[cfg["explain"]])
    metrics["seconds_explain"] = _time.perf_counter() - started
    return frame, metrics, explanations


def _config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = merge_options(DEFAULTS, config, unknown="unknown GNN option {key!r}")
    if cfg["explain"] not in ("all", "test", "none"):
        raise InputError(None, f"explain is {cfg['explain']!r}",
                         "set explain to 'all', 'test' or 'none'")
    if not 0 < cfg["test_fraction"] < 1:
        raise InputError(None, f"test_fraction is {cfg['test_fraction']!r}",
                         "set test_fraction between 0 and 1")
    return cfg


def _outcomes(outcomes: pd.DataFrame, ids: pd.Index
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """time, event (0 where unknown), the labelled mask in node order, unmatched row count."""
    own = _unique_ids(outcomes, OUTCOMES)
    for column in ("time_days", "event"):
        if column not in outcomes.columns:
            raise InputError(OUTCOMES, f"there is no {column} column",
                             f"add the {column} column", column=column)
    time = pd.to_numeric(outcomes["time_days"], errors="coerce").to_numpy(float)
    event = pd.to_numeric(outcomes["event"], errors="coerce").to_numpy(float)
    for column, bad in (("time_days", time < 0),
                        ("event", ~np.isnan(event) & ~np.isin(event, (0.0, 1.0)))):
        rows = np.flatnonzero(bad)
        if rows.size:
            raise InputError(OUTCOMES, f"{column} is {outcomes[column].iloc[rows[0]]!r}",
                             "give time_days >= 0 and event 0 or 1 (or leave both empty)",
                             row=int(rows[0]), column=column, more=rows.size - 1)
    rows = own.get_indexer(ids)
    found = rows >= 0
    node_time = np.where(found, time[rows], np.nan)
    node_event = np.where(found, event[rows], np.nan)
    labelled = ~np.isnan(node_time) & ~np.isnan(node_event)
    unmatched = int((~own.isin(ids)).sum())
    return (np.where(labelled, node_time, 0.0), np.where(labelled, node_event, 0.0),
            labelled, unmatched)


def _check_events(event: np.ndarray, labelled: np.ndarray, min_events: int) -> None:
    n_events = int(event[labelled].sum())
    if n_events < min_events:
        raise InputError(OUTCOMES, f"only {n_events} events among {int(labelled.sum())} "
                         f"patients with an outcome; the risk model needs at least "
                         f"{min_events} to train and test", "add patients or follow-up, "
                         "or lower the GNN option min_events", column="event")
