"""GNN risk model: the patient graph, the Cox loss, training, explanations and fit_risk."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index

from benchmarks.bench_discovery import neighbour_signal_data
from discovery.gnn import (
    EXPLANATION_COLUMNS,
    CoxBaseline,
    GNNRisk,
    attributions,
    cox_partial_nll,
    evaluate,
    explain,
    explain_all,
    fit_risk,
    patient_graph,
)
from patientgraph.errors import InputError


def _tiny_frames():
    patients = pd.DataFrame({"patient_id": ["a", "b", "c", "d", "e"],
                             "sex": ["F", "M", None, "F", "M"],
                             "age": [40.0, 50.0, 60.0, None, 70.0]})
    records = pd.DataFrame({"patient_id": ["a", "b", "c", "d"],  # e has no record
                            "ldh": [100.0, None, 300.0, 200.0],
                            "stage": ["I", "II", None, "I"]})
    rng = np.random.default_rng(0)
    embeddings = pd.DataFrame({"patient_id": ["a", "b", "c", "e"],  # d has no embedding
                               "embedding": list(rng.normal(size=(4, 6)).astype(np.float32))})
    knn = pd.DataFrame({"src": ["a", "b", "c", "d", "e", "a"],
                        "dst": ["b", "a", "d", "e", "c", "a"],  # b<->a twice, a->a a self-loop
                        "score": [0.9, 0.9, 0.5, -0.2, 0.7, 1.0], "rank": [1, 1, 1, 1, 1, 2]})
    return patients, records, embeddings, knn


@pytest.fixture(scope="module")
def scenario():
    return neighbour_signal_data(120, seed=3)


@pytest.fixture(scope="module")
def graph(scenario):
    return patient_graph(scenario["patients"], scenario["records"],
                         scenario["patient_embeddings"], scenario["patient_knn"],
                         embedding_components=4)


@pytest.fixture(scope="module")
def fitted(scenario, graph):
    outcomes = scenario["outcomes"]
    train = np.arange(graph.num_nodes) < 90
    model = GNNRisk(max_epochs=40, patience=40, seed=0).fit(
        graph, outcomes["time_days"].to_numpy(), outcomes["event"].to_numpy(), train)
    return model, train


# -- the graph ---------------------------------------------------------------------------------

def test_patient_graph_features_edges_and_validate():
    data = patient_graph(*_tiny_frames(), embedding_components=2)
    assert data.validate()
    assert data.patient_id == ["a", "b", "c", "d", "e"]
    assert data.feature_names == [
        "embedding_pc1", "embedding_pc2", "embedding_missing", "sex=F", "sex=M", "sex_missing",
        "age", "age_missing", "ldh", "ldh_missing", "stage=I", "stage=II", "stage_missing"]
    assert data.feature_groups[:3] == ["embedding"] * 3
    assert data.feature_groups[3:] == ["sex"] * 3 + ["age"] * 2 + ["ldh"] * 2 + ["stage"] * 3
    x = data.x.numpy()
    assert x.shape == (5, 13)
    col = data.feature_names.index
    # d has no embedding: zeros plus the indicator; e has no record: missing ldh and stage.
    np.testing.assert_array_equal(x[3, :2], 0)
    np.testing.assert_array_equal(x[:, col("embedding_missing")], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(x[:, col("ldh_missing")], [0, 1, 0, 0, 1])
    np.testing.assert_allclose(x[:, col("ldh")], [-1.2247449, 0, 1.2247449, 0, 0], atol=1e-6)
    np.testing.assert_array_equal(x[:, col("stage_missing")], [0, 0, 1, 0, 1])
    # PCA components have unit variance over the patients that have an embedding.
    np.testing.assert_allclose(x[[0, 1, 2, 4], :2].std(axis=0), 1.0, atol=1e-5)
    edges = {(int(s), int(d)): float(w)
             for s, d, w in zip(*data.edge_index.tolist(), data.edge_weight.tolist(), strict=True)}
    # Symmetric, duplicates merged, self-loop dropped, negative score clipped to ~0.
    assert set(edges) == {(0, 1), (1, 0), (2, 3), (3, 2), (3, 4), (4, 3), (4, 2), (2, 4)}
    assert edges[(0, 1)] == pytest.approx(0.9) and edges[(2, 4)] == pytest.approx(0.7)
    assert 0 < edges[(3, 4)] < 1e-5


def test_raw_embedding_columns_when_no_pca():
    data = patient_graph(*_tiny_frames(), embedding_components=None)
    assert data.feature_names[:7] == [f"embedding_{i}" for i in range(6)] + ["embedding_missing"]


@pytest.mark.parametrize(("frame", "column", "match"), [
    (3, "dst", "not in the cohort"),
    (1, "patient_id", "more than once"),
    (None, None, "no patient kNN graph"),
])
def test_bad_graph_input_is_an_input_error(frame, column, match):
    frames = list(_tiny_frames())
    if frame == 3:
        frames[3].loc[2, "dst"] = "ghost"
    elif frame == 1:
        frames[1].loc[1, "patient_id"] = "a"
    else:
        frames[3] = None
    with pytest.raises(InputError, match=match) as error:
        patient_graph(*frames)
    assert error.value.column == column


# -- the loss ----------------------------------------------------------------------------------

def test_cox_loss_equals_lifelines_log_likelihood_without_ties():
    rng = np.random.default_rng(1)
    n = 40
    frame = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n)})
    frame["time"] = rng.permutation(np.arange(1, n + 1)) * 1.5  # distinct times
    frame["event"] = (rng.random(n) < 0.7).astype(int)
    cph = CoxPHFitter().fit(frame, "time", "event")
    eta = torch.as_tensor(frame[["x1", "x2"]].to_numpy() @ cph.params_.to_numpy())
    nll = cox_partial_nll(eta, torch.as_tensor(frame["time"].to_numpy()),
                          torch.as_tensor(frame["event"].to_numpy()))
    assert float(-nll * frame["event"].sum()) == pytest.approx(cph.log_likelihood_, abs=1e-5)


def test_cox_loss_breslow_ties_by_hand():
    time = torch.tensor([2.0, 1.0, 3.0, 2.0], dtype=torch.float64)
    event = torch.tensor([1, 1, 0, 1])
    eta = torch.tensor([0.2, 0.1, 0.4, -0.3], dtype=torch.float64)
    e = math.exp
    # Breslow: both deaths at t=2 share the risk set {t >= 2} = {0.2, 0.4, -0.3}.
    log_lik = (0.1 - math.log(e(0.1) + e(0.2) + e(0.4) + e(-0.3))
               + 0.2 - math.log(e(0.2) + e(0.4) + e(-0.3))
               - 0.3 - math.log(e(0.2) + e(0.4) + e(-0.3)))
    assert float(cox_partial_nll(eta, time, event)) == pytest.approx(-log_lik / 3, abs=1e-12)
    assert float(cox_partial_nll(eta, time, torch.zeros(4))) == 0.0


# -- training ----------------------------------------------------------------------------------

def test_fit_trains_on_training_nodes_and_stops_early(fitted, graph):
    model, train = fitted
    history = model.history_
    assert list(history.columns) == ["epoch", "train_loss", "val_loss"]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert history["val_loss"].min() == history["val_loss"].iloc[model.best_epoch_]
    assert not (model.val_mask_ & model.fit_mask_).any()
    assert ((model.val_mask_ | model.fit_mask_) == train).all()
    assert model.val_mask_.sum() == pytest.approx(0.2 * train.sum(), abs=1)
    risk = model.predict(graph)
    assert risk.shape == (graph.num_nodes,) and np.isfinite(risk).all()


def test_fit_is_deterministic_for_a_seed(scenario, graph, fitted):
    outcomes = scenario["outcomes"]
    model, train = fitted
    args = (graph, outcomes["time_days"].to_numpy(), outcomes["event"].to_numpy(), train)
    again = GNNRisk(max_epochs=40, patience=40, seed=0).fit(*args)
    other = GNNRisk(max_epochs=40, patience=40, seed=1).fit(*args)
    np.testing.assert_array_equal(again.predict(graph), model.predict(graph))
    assert not np.allclose(other.predict(graph), model.predict(graph))


def test_outcomes_outside_the_training_mask_are_never_read(scenario, graph, fitted):
    model, train = fitted
    time = scenario["outcomes"]["time_days"].to_numpy().copy()
    event = scenario["outcomes"]["event"].to_numpy().astype(float)
    time[~train], event[~train] = np.nan, np.nan
    blind = GNNRisk(max_epochs=40, patience=40, seed=0).fit(graph, time, event, train)
    np.testing.assert_array_equal(blind.predict(graph), model.predict(graph))


def test_cox_baseline_matches_lifelines_and_skips_constant_columns(graph, scenario):
    x = graph.x.numpy().copy()
    x[:, 0] = 3.0
    outcomes = scenario["outcomes"]
    train = np.ones(graph.num_nodes, bool)
    cox = CoxBaseline(penalizer=0.1).fit(x, outcomes["time_days"], outcomes["event"], train)
    assert 0 not in cox.columns_
    frame = pd.DataFrame(x[:, cox.columns_], columns=[f"f{i}" for i in cox.columns_])
    expected = cox.cph_.predict_log_partial_hazard(frame).to_numpy()
    np.testing.assert_allclose(cox.predict(x), expected, atol=1e-8)


# -- evaluation --------------------------------------------------------------------------------

def test_evaluate_point_estimates_and_paired_intervals():
    rng = np.random.default_rng(3)
    n = 80
    hazard = rng.normal(size=n)
    time = rng.exponential(np.exp(-hazard))
    event = (rng.random(n) < 0.8).astype(int)
    good, noise = hazard + 0.3 * rng.normal(size=n), rng.normal(size=n)
    out = evaluate(time, event, good, noise, n_bootstrap=300, seed=0)
    assert out["c_index_gnn"] == pytest.approx(concordance_index(time, -good, event))
    assert out["c_index_gnn"] > 0.65
    for name in ("c_index_gnn", "c_index_cox", "c_index_diff"):
        low, high = out[f"{name}_ci"]
        assert low < out[name] < high
    assert out["c_index_diff_ci"][0] > 0  # a paired interval sees the clear win
    assert out["n_bootstrap"] == 300


# -- explanation -------------------------------------------------------------------------------

def test_explanations_equal_autograd_and_edge_removal(fitted, graph):
    model, _ = fitted
    feature_part, edge_index, edge_delta = attributions(model.net_, graph)
    net = copy.deepcopy(model.net_).double().eval()
    x, weight = graph.x.double(), graph.edge_weight.double()
    for node in (0, 17, 101):
        inputs = x.clone().requires_grad_(True)
        risk = net(inputs, graph.edge_index, weight)
        (grad,) = torch.autograd.grad(risk[node], inputs)
        np.testing.assert_allclose(feature_part[node], (grad * inputs).sum(0).detach(),
                                   atol=1e-9)
        for e in np.flatnonzero(edge_index[1] == node)[:3]:
            j = edge_index[0, e]
            src, dst = graph.edge_index
            keep = ~(((src == j) & (dst == node)) | ((src == node) & (dst == j)))
            without = net(x, graph.edge_index[:, keep], weight[keep])[node]
            assert edge_delta[e] == pytest.approx(float((risk[node] - without).detach()), abs=1e-9)


def test_explain_frame_for_one_patient(fitted, graph):
    model, _ = fitted
    frame = explain(model, graph, 17)
    assert list(frame.columns) == EXPLANATION_COLUMNS
    assert (frame["patient_id"] == graph.patient_id[17]).all()
    features = frame[frame["kind"] == "feature"]
    assert list(features["name"]) == ["embedding", "sex", "age", "marker"]
    neighbours = graph.edge_index[0, graph.edge_index[1] == 17].tolist()
    expected = sorted(graph.patient_id[j] for j in neighbours)
    assert sorted(frame.loc[frame["kind"] == "neighbour", "name"]) == expected
    everyone = explain_all(model, graph)
    assert everyone["patient_id"].nunique() == graph.num_nodes
    assert len(everyone) == 4 * graph.num_nodes + graph.edge_index.shape[1]


# -- fit_risk ----------------------------------------------------------------------------------

def test_gnn_beats_cox_where_the_signal_is_in_the_neighbours():
    """The marker is the hazard plus heavy noise; its mean over kNN neighbours is clean."""
    diffs = []
    for seed in (0, 1, 2):
        frames = neighbour_signal_data(600, seed=seed)
        _, metrics, _ = fit_risk(**frames, config={"seed": seed, "explain": "none",
                                                   "n_bootstrap": 200})
        assert metrics["c_index_gnn"] > metrics["c_index_cox"]
        diffs.append(metrics["c_index_diff"])
    assert np.mean(diffs) > 0.03


def test_fit_risk_frames_and_patients_without_outcome():
    frames = neighbour_signal_data(200, seed=5)
    outcomes = frames["outcomes"].copy()
    outcomes.loc[:9, "time_days"] = np.nan  # 10 unknown follow-ups
    frames["outcomes"] = outcomes.iloc[:-5]  # and 5 patients without an outcome row
    risk, metrics, explanations = fit_risk(**frames, config={"n_bootstrap": 50})
    assert list(risk.columns) == ["patient_id", "risk", "risk_cox", "split"]
    assert risk["patient_id"].tolist() == frames["patients"]["patient_id"].tolist()
    assert np.isfinite(risk[["risk", "risk_cox"]].to_numpy()).all()
    unknown = np.r_[0:10, 195:200]
    assert (risk["split"].iloc[unknown] == "no_outcome").all()
    assert (risk["split"].drop(index=unknown) != "no_outcome").all()
    assert metrics["n_no_outcome"] == 15
    counts = risk["split"].value_counts()
    assert metrics["n_test"] == counts["test"] and metrics["n_val"] == counts["val"]
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] + 15 == 200
    known = outcomes.iloc[10:195]
    assert metrics["events"] == known["event"].sum()
    assert set(explanations["kind"]) == {"feature", "neighbour"}
    assert explanations["patient_id"].nunique() == 200


def test_too_few_events_is_an_input_error():
    frames = neighbour_signal_data(60, seed=0)
    outcomes = frames["outcomes"].copy()
    outcomes["event"] = 0
    outcomes.loc[:4, "event"] = 1
    frames["outcomes"] = outcomes
    with pytest.raises(InputError, match="only 5 events .* at least 10") as error:
        fit_risk(**frames)
    assert error.value.column == "event"


def test_negative_follow_up_names_the_row():
    frames = neighbour_signal_data(60, seed=0)
    frames["outcomes"] = frames["outcomes"].copy()
    frames["outcomes"].loc[7, "time_days"] = -3.0
    with pytest.raises(InputError, match="time_days") as error:
        fit_risk(**frames)
    assert (error.value.row, error.value.column) == (7, "time_days")


def test_unknown_option_suggests_the_right_one():
    with pytest.raises(InputError, match="Did you mean 'patience'"):
        fit_risk(**neighbour_signal_data(60, seed=0), config={"patienc": 3})
