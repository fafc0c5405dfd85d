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
"""

from __future__ import annotations

import contextlib
import copy
import time as _time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import GraphConv
from torch_geometric.utils import remove_self_loops, scatter, to_undirected

from discovery.concordance import bootstrap_c_index, c_index
from graphdb.pyg import features
from graphdb.schema import PATIENT_OUTPUTS, property_type, record_properties
from patientgraph.errors import InputError
from patientgraph.options import merge_options

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
KNN = "index/patient_knn.parquet"
EMBEDDINGS = "embeddings/patients.parquet"
MIN_WEIGHT = 1e-6
"""Edge weights are similarity scores clipped below at this (a weighted mean needs w > 0)."""


# -- the graph ---------------------------------------------------------------------------------

def patient_graph(patients: pd.DataFrame, records: pd.DataFrame, embeddings: pd.DataFrame,
                  knn: pd.DataFrame | None, *, embedding_components: int | None = 16) -> Data:
    """The patient graph as a validated ``Data``: one node per row of ``patients``, in order.

    ``x`` holds the embedding block (``embedding_components`` principal components, each
    scaled to unit variance, or every embedding dimension standardised when ``None``), then
    the patient and record fields. ``feature_names`` names each column and
    ``feature_groups`` its source (``"embedding"`` or the field name). ``edge_index`` holds
    both directions of every kNN edge without self-loops; ``edge_weight`` is the score.
    """
    ids = _unique_ids(patients, "cohort/patients.parquet")
    _unique_ids(records, "cohort/records.parquet")
    embedding, names = _embedding_block(ids, embeddings, embedding_components)
    blocks, groups = [embedding], ["embedding"] * len(names)
    table = patients.drop(columns=[c for c in PATIENT_OUTPUTS if c in patients.columns])
    types = {c: property_type(table[c]) for c in table.columns if c != "patient_id"}
    types.update(record_properties(records))
    if len(records.columns) > 1:
        records = records.assign(patient_id=records["patient_id"].astype(str))
        table = table.assign(patient_id=ids).merge(records, on="patient_id", how="left")
    for field, type_ in types.items():
        block, field_names = features(table[[field]], {field: type_})
        blocks.append(block)
        names += field_names
        groups += [field] * len(field_names)
    x = np.concatenate(blocks, axis=1).astype(np.float32)
    edge_index, edge_weight = _edges(ids, knn)
    data = Data(x=torch.from_numpy(x), edge_index=edge_index, edge_weight=edge_weight,
                num_nodes=len(ids))
    data.patient_id = list(ids)
    data.feature_names = names
    data.feature_groups = groups
    data.validate(raise_on_error=True)
    return data


def _unique_ids(frame: pd.DataFrame, file: str) -> pd.Index:
    if "patient_id" not in frame.columns:
        raise InputError(file, "there is no patient_id column", "add the patient_id column",
                         column="patient_id")
    ids = pd.Index(frame["patient_id"].astype(str))
    if ids.has_duplicates:
        rows = np.flatnonzero(ids.duplicated())
        raise InputError(file, f"patient {ids[rows[0]]!r} appears more than once",
                         "keep one row per patient", row=int(rows[0]), column="patient_id",
                         more=len(rows) - 1)
    return ids


def _embedding_block(ids: pd.Index, embeddings: pd.DataFrame,
                     components: int | None) -> tuple[np.ndarray, list[str]]:
    """Embedding columns (standardised or PCA), 0 plus an indicator where a patient has none."""
    emb_ids = _unique_ids(embeddings, EMBEDDINGS)
    rows = emb_ids.get_indexer(ids)
    present = rows >= 0
    if not present.any():
        raise InputError(EMBEDDINGS, "no patient of the cohort has an embedding",
                         "run the embed stage for this cohort", column="embedding")
    matrix = np.stack(embeddings["embedding"].to_numpy()[rows[present]]).astype(np.float64)
    centred = matrix - matrix.mean(axis=0)
    if components is not None and components < matrix.shape[1]:
        # PCA from the (dim x dim) covariance: far cheaper than an SVD of the rows. Each
        # component's sign is fixed so that its largest loading is positive.
        values, vectors = np.linalg.eigh(centred.T @ centred)
        vt = vectors[:, np.argsort(values)[::-1][:components]].T
        vt *= np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])[:, None]
        centred = centred @ vt.T
        names = [f"embedding_pc{i + 1}" for i in range(centred.shape[1])]
    else:
        names = [f"embedding_{i}" for i in range(centred.shape[1])]
    sd = centred.std(axis=0)
    block = np.zeros((len(ids), centred.shape[1]), np.float64)
    block[present] = centred / np.where(sd > 0, sd, 1.0)
    if not present.all():
        block = np.column_stack([block, ~present])
        names.append("embedding_missing")
    return block.astype(np.float32), names


def _edges(ids: pd.Index, knn: pd.DataFrame | None) -> tuple[torch.Tensor, torch.Tensor]:
    if knn is None:
        raise InputError(KNN, "there is no patient kNN graph, which the GNN risk model needs",
                         "run the index stage before the discover stage")
    for column in ("src", "dst", "score"):
        if column not in knn.columns:
            raise InputError(KNN, f"there is no {column} column", "rerun the index stage",
                             column=column)
    src = ids.get_indexer(knn["src"].astype(str))
    dst = ids.get_indexer(knn["dst"].astype(str))
    bad = np.flatnonzero((src < 0) | (dst < 0))
    if bad.size:
        raise InputError(KNN, "an edge names a patient that is not in the cohort",
                         "rerun the index stage after the embed stage", row=int(bad[0]),
                         column="src" if src[bad[0]] < 0 else "dst", more=bad.size - 1)
    score = knn["score"].to_numpy(dtype=np.float32, copy=True)
    if not np.isfinite(score).all():
        raise InputError(KNN, "a similarity score is not a finite number",
                         "rerun the index stage", row=int(np.flatnonzero(~np.isfinite(score))[0]),
                         column="score")
    edge_index = torch.as_tensor(np.stack([src, dst]), dtype=torch.long)
    weight = torch.as_tensor(np.maximum(score, MIN_WEIGHT))
    edge_index, weight = remove_self_loops(edge_index, weight)
    return to_undirected(edge_index, weight, num_nodes=len(ids), reduce="max")


# -- the loss ----------------------------------------------------------------------------------

def cox_partial_nll(log_risk: torch.Tensor, time: torch.Tensor,
                    event: torch.Tensor) -> torch.Tensor:
    """Negative Cox log partial likelihood (Breslow ties), divided by the number of events.

    Each event ``i`` contributes ``eta_i - log sum_{j: t_j >= t_i} exp(eta_j)``; tied
    times share one risk set (Breslow). Returns 0 when there is no event.
    """
    order = torch.argsort(time, descending=True, stable=True)
    eta, t, e = log_risk[order], time[order], event[order].to(log_risk.dtype)
    cumulative = torch.logcumsumexp(eta, dim=0)
    # The risk set of t_i ends at the last position (in descending order) with time t_i.
    ascending = torch.flip(t, dims=[0])
    last = len(t) - 1 - torch.searchsorted(ascending, t, right=False)
    log_denominator = cumulative[last]
    n_events = e.sum()
    if n_events == 0:
        return log_risk.sum() * 0.0
    return -((eta - log_denominator) * e).sum() / n_events


# -- the network -------------------------------------------------------------------------------

class RiskNet(nn.Module):
    """Two ``GraphConv`` layers over a similarity-weighted neighbour mean -> one log-risk."""

    def __init__(self, in_channels: int, hidden: int = 32, dropout: float = 0.3):
        super().__init__()
        self.conv1 = GraphConv(in_channels, hidden, aggr="add")
        self.conv2 = GraphConv(hidden, 1, aggr="add")
        self.dropout = dropout

    def reset_parameters(self) -> None:
        self.conv1.reset_parameters()
        self.conv2.reset_parameters()

    def hidden(self, x: torch.Tensor, edge_index: torch.Tensor,
               edge_weight: torch.Tensor) -> torch.Tensor:
        x = nn.functional.dropout(x, p=self.dropout / 2, training=self.training)
        h = torch.relu(self.conv1(x, edge_index, edge_weight))
        return nn.functional.dropout(h, p=self.dropout, training=self.training)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor,
                edge_weight: torch.Tensor) -> torch.Tensor:
        weight = mean_weights(edge_index, edge_weight, x.shape[0])
        return self.conv2(self.hidden(x, edge_index, weight), edge_index, weight).view(-1)


def mean_weights(edge_index: torch.Tensor, edge_weight: torch.Tensor,
                 num_nodes: int) -> torch.Tensor:
    """Edge weights divided by their target's total, so that ``add`` is a weighted mean."""
    total = scatter(edge_weight, edge_index[1], dim=0, dim_size=num_nodes, reduce="sum")
    return edge_weight / total[edge_index[1]]


@contextlib.contextmanager
def _threads(count: int | None):
    """Run torch with ``count`` CPU threads (``None``: unchanged), then restore the setting.

    The graphs are small: at 4,427 nodes one thread was ~10x faster than two on a shared
    2-core machine, where OpenMP threads wait on each other at every operation.
    """
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class GNNRisk:
    """Graph neural network Cox model (see the module docstring).

    ``fit(data, time, event, train_mask)`` trains on the nodes of ``train_mask`` less a
    seeded, event-stratified validation split (``val_fraction`` of them) that decides the
    early stop; ``time``/``event`` of other nodes are never read. ``threads``: torch CPU
    threads while fitting and predicting (``None`` leaves torch's setting). Fitted: ``net_``,
    ``history_`` (epoch, train_loss, val_loss), ``best_epoch_``, ``fit_mask_``, ``val_mask_``.
    """

    def __init__(self, hidden: int = 32, dropout: float = 0.3, lr: float = 0.01,
                 weight_decay: float = 1e-3, max_epochs: int = 300, patience: int = 30,
                 val_fraction: float = 0.2, seed: int = 0, device: str = "auto",
                 threads: int | None = 1):
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if max_epochs < 1 or patience < 1 or hidden < 1:
            raise ValueError("max_epochs, patience and hidden must be positive")
        self.hidden, self.dropout, self.lr = hidden, dropout, lr
        self.weight_decay, self.max_epochs, self.patience = weight_decay, max_epochs, patience
        self.val_fraction, self.seed, self.device = val_fraction, seed, device
        self.threads = threads

    def fit(self, data: Data, time: np.ndarray, event: np.ndarray,
            train_mask: np.ndarray) -> GNNRisk:
        train_mask = np.asarray(train_mask, bool)
        time = np.where(train_mask, np.asarray(time, float), 0.0)
        event = np.where(train_mask, np.asarray(event, float), 0.0)
        if not (np.isfinite(time).all() and np.isfinite(event).all()):
            raise ValueError("a training node has no time or event")
        self.val_mask_ = _stratified_pick(train_mask, event, self.val_fraction, [self.seed, 1])
        self.fit_mask_ = train_mask & ~self.val_mask_
        if event[self.fit_mask_].sum() < 1:
            raise ValueError("the training patients have no event")
        if self.val_fraction > 0 and event[self.val_mask_].sum() < 1:
            raise ValueError("the validation patients have no event")
        device = _device(self.device)
        x, edge_index, weight = (t.to(device) for t in (data.x, data.edge_index,
                                                         data.edge_weight))
        t = torch.as_tensor(time, dtype=torch.float32, device=device)
        e = torch.as_tensor(event, dtype=torch.float32, device=device)
        fit_idx = torch.as_tensor(np.flatnonzero(self.fit_mask_), device=device)
        val_idx = torch.as_tensor(np.flatnonzero(self.val_mask_), device=device)
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), _threads(self.threads):
            torch.manual_seed(self.seed)
            self.net_ = RiskNet(x.shape[1], self.hidden, self.dropout).to(device)
            self._train(x, edge_index, weight, t, e, fit_idx, val_idx)
        return self

    def _train(self, x, edge_index, weight, t, e, fit_idx, val_idx) -> None:
        optimiser = torch.optim.Adam(self.net_.parameters(), lr=self.lr,
                                     weight_decay=self.weight_decay)
        history, best, best_state, self.best_epoch_, waited = [], np.inf, None, 0, 0
        for epoch in range(self.max_epochs):
            self.net_.train()
            optimiser.zero_grad()
            risk = self.net_(x, edge_index, weight)
            loss = cox_partial_nll(risk[fit_idx], t[fit_idx], e[fit_idx])
            loss.backward()
            optimiser.step()
            val_loss = np.nan
            if len(val_idx):
                self.net_.eval()
                with torch.no_grad():
                    risk = self.net_(x, edge_index, weight)
                    val_loss = float(cox_partial_nll(risk[val_idx], t[val_idx], e[val_idx]))
            history.append((epoch, loss.item(), val_loss))
            if not len(val_idx) or val_loss < best - 1e-6:
                best, best_state, self.best_epoch_, waited = (
                    val_loss, copy.deepcopy(self.net_.state_dict()), epoch, 0)
            else:
                waited += 1
                if waited >= self.patience:
                    break
        if best_state is None:
            raise RuntimeError("GNN training diverged: the validation loss was never finite")
        self.net_.load_state_dict(best_state)
        self.net_.eval()
        self.history_ = pd.DataFrame(history, columns=["epoch", "train_loss", "val_loss"])

    def predict(self, data: Data) -> np.ndarray:
        """Log-risk of every node (higher = shorter expected survival)."""
        device = next(self.net_.parameters()).device
        self.net_.eval()
        with torch.no_grad(), _threads(self.threads):
            risk = self.net_(data.x.to(device), data.edge_index.to(device),
                             data.edge_weight.to(device))
        return risk.cpu().numpy().astype(np.float64)


def _stratified_pick(mask: np.ndarray, event: np.ndarray, fraction: float,
                     seed: int | Sequence[int]) -> np.ndarray:
    """A seeded ``fraction`` of the ``mask`` nodes, drawn separately among events and not."""
    picked = np.zeros(len(mask), bool)
    if fraction <= 0:
        return picked
    rng = np.random.default_rng(seed)
    for stratum in (mask & (event > 0), mask & (event <= 0)):
        nodes = np.flatnonzero(stratum)
        n = int(round(fraction * len(nodes)))
        picked[rng.permutation(nodes)[:n]] = True
    return picked


class CoxBaseline:
    """Penalised lifelines Cox model on the node features (no graph).

    Columns constant among the training rows carry no information and are left out.
    Fitted: ``cph_``, ``params_``, ``columns_`` (the columns used), ``warnings_`` (lifelines'
    convergence warnings, reported by :func:`fit_risk` as ``cox_warnings``).
    """

    def __init__(self, penalizer: float = 0.1):
        self.penalizer = penalizer

    def fit(self, x: np.ndarray, time: np.ndarray, event: np.ndarray,
            train_mask: np.ndarray) -> CoxBaseline:
        from lifelines import CoxPHFitter
        from lifelines.exceptions import ConvergenceWarning

        x = np.asarray(x, float)
        train = np.asarray(train_mask, bool)
        self.columns_ = np.flatnonzero(x[train].std(axis=0) > 0)
        frame = pd.DataFrame(x[train][:, self.columns_],
                             columns=[f"f{i}" for i in self.columns_])
        frame["time"] = np.asarray(time, float)[train]
        frame["event"] = np.asarray(event, float)[train]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            self.cph_ = CoxPHFitter(penalizer=self.penalizer).fit(frame, "time", "event")
        self.warnings_ = [str(w.message) for w in caught
                          if issubclass(w.category, ConvergenceWarning)]
        self.params_ = self.cph_.params_.to_numpy()
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Log partial hazard (centred as lifelines centres it) of every row."""
        x = np.asarray(x, float)[:, self.columns_]
        return self.cph_.predict_log_partial_hazard(x).to_numpy()


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


# -- explanation -------------------------------------------------------------------------------

EXPLANATION_COLUMNS = ["patient_id", "kind", "name", "contribution"]


def explain(model: GNNRisk, data: Data, patient_index: int) -> pd.DataFrame:
    """What drove one patient's GNN risk: its feature groups and its neighbours.

    ``kind="feature"``: gradient x input, summed over every node that reaches the patient's
    risk (itself and its 1- and 2-hop neighbours) and over the columns of each feature
    group (the embedding, each field with its one-hot and missing columns); the reference
    input is 0, i.e. the cohort mean or "absent". ``kind="neighbour"``: the exact change of
    the log-risk when the edge to that neighbour is removed (both directions), i.e.
    risk - risk without it. Columns: patient_id, kind, name, contribution.
    """
    return explain_all(model, data, [int(patient_index)])


def explain_all(model: GNNRisk, data: Data, indices: Sequence[int] | None = None) -> pd.DataFrame:
    """:func:`explain` for many patients (all when ``indices`` is None), one frame.

    Closed form for the two-layer :class:`RiskNet`, vectorised over nodes and edges (a few
    milliseconds for thousands of patients); the tests check it against autograd and
    against refitting the forward pass with each edge removed.
    """
    with _threads(model.threads):
        features_, edge_index, edge_delta = attributions(model.net_, data)
    groups = pd.Index(pd.unique(np.asarray(data.feature_groups)))
    member = groups.get_indexer(data.feature_groups)
    per_group = np.zeros((data.num_nodes, len(groups)))
    np.add.at(per_group.T, member, features_.T)
    nodes = np.arange(data.num_nodes) if indices is None else np.asarray(indices, int)
    ids = np.asarray(data.patient_id, dtype=object)
    feature_rows = pd.DataFrame({
        "patient_id": np.repeat(ids[nodes], len(groups)), "kind": "feature",
        "name": np.tile(np.asarray(groups, dtype=object), len(nodes)),
        "contribution": per_group[nodes].ravel(), "_node": np.repeat(nodes, len(groups)),
        "_order": 0})
    chosen = np.isin(edge_index[1], nodes)
    neighbour_rows = pd.DataFrame({
        "patient_id": ids[edge_index[1][chosen]], "kind": "neighbour",
        "name": ids[edge_index[0][chosen]], "contribution": edge_delta[chosen],
        "_node": edge_index[1][chosen], "_order": 1})
    frame = pd.concat([feature_rows, neighbour_rows], ignore_index=True)
    frame = frame.sort_values(["_node", "_order"], kind="stable")
    return frame[EXPLANATION_COLUMNS].reset_index(drop=True)


def attributions(net: RiskNet, data: Data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per node and feature column, gradient x input of the node's risk (summed over the
    nodes that reach it); per directed edge ``j -> i``, risk_i - risk_i without edge i-j.

    Returns (N x F array, the 2 x E edge index, E array of risk changes).
    """
    device = next(net.parameters()).device
    x, edge_index = data.x.to(device).double(), data.edge_index.to(device)
    raw = data.edge_weight.to(device).double()
    src, dst = edge_index
    n = x.shape[0]
    lin = {f"{conv}.{part}": _linear(getattr(getattr(net, conv), f"lin_{part}"))
           for conv in ("conv1", "conv2") for part in ("rel", "root")}
    total = scatter(raw, dst, dim=0, dim_size=n, reduce="sum")
    a = raw / total[dst]
    agg1 = scatter(a[:, None] * x[src], dst, dim=0, dim_size=n, reduce="sum")
    w1_rel, b1 = lin["conv1.rel"]
    w1_root, _ = lin["conv1.root"]
    pre1 = agg1 @ w1_rel.T + b1 + x @ w1_root.T
    h = torch.relu(pre1)
    slope = (pre1 > 0).double()
    w2_rel, b2 = lin["conv2.rel"]
    w2_root, _ = lin["conv2.root"]
    w2_rel, w2_root = w2_rel[0], w2_root[0]

    # Gradient x input: risk_i is linear in h_i (weight w2_root) and in each neighbour's h_k
    # (weight a_ki * w2_rel); h_k is relu of a linear map of x_k and of agg1_k.
    def through(g: torch.Tensor) -> torch.Tensor:
        return (g @ w1_root) * x + (g @ w1_rel) * agg1

    own = through(slope * w2_root)
    from_neighbours = scatter(a[:, None] * through(slope * w2_rel)[src], dst, dim=0,
                              dim_size=n, reduce="sum")
    feature_part = own + from_neighbours

    # Edge removal: only node i's layer-1 mean and its layer-2 mean lose node j.
    risk = (scatter(a[:, None] * h[src], dst, dim=0, dim_size=n, reduce="sum") @ w2_rel
            + b2[0] + h @ w2_root)
    rest = total[dst] - raw
    kept = rest > 0
    denominator = torch.where(kept, rest, torch.ones_like(rest))[:, None]
    weighted1 = scatter(raw[:, None] * x[src], dst, dim=0, dim_size=n, reduce="sum")
    agg1_without = torch.where(kept[:, None],
                               (weighted1[dst] - raw[:, None] * x[src]) / denominator, 0.0)
    h_without = torch.relu(agg1_without @ w1_rel.T + b1 + x[dst] @ w1_root.T)
    weighted2 = scatter(raw[:, None] * h[src], dst, dim=0, dim_size=n, reduce="sum")
    agg2_without = torch.where(kept[:, None],
                               (weighted2[dst] - raw[:, None] * h[src]) / denominator, 0.0)
    risk_without = agg2_without @ w2_rel + b2[0] + h_without @ w2_root
    edge_delta = risk[dst] - risk_without
    return (feature_part.detach().cpu().numpy(), edge_index.cpu().numpy(),
            edge_delta.detach().cpu().numpy())


def _linear(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight = layer.weight.detach().double()
    bias = None if layer.bias is None else layer.bias.detach().double()
    return weight, bias



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
