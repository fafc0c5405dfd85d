"""The GNN risk model (:mod:`discovery.gnn`): the Cox loss, the network, its training, and
the Cox baseline on the same node features.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import GraphConv
from torch_geometric.utils import scatter

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
