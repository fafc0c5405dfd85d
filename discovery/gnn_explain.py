"""What drove a patient's GNN risk (:mod:`discovery.gnn`): feature groups and neighbours."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.utils import scatter

from discovery.gnn_model import GNNRisk, RiskNet, _threads

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
