"""Tests of patientgraph/options.py and of the five option mappings that use it."""

from __future__ import annotations

import pytest

import discovery.clusters
import discovery.gnn
import discovery.stage
import discovery.tracking
import embed.index_stage
from patientgraph.errors import InputError
from patientgraph.options import env_number, merge_options, signature_defaults


def test_merge_options_copies_dict_defaults_and_replaces_given_keys():
    defaults = {"a": 1, "b": {"x": 1}}
    merged = merge_options(defaults, {"a": 2}, unknown="unknown option {key!r}")
    assert merged == {"a": 2, "b": {"x": 1}}
    merged["b"]["x"] = 5
    assert defaults["b"] == {"x": 1}


def test_signature_defaults_keeps_the_order():
    def f(a, b=1, *, c=None):
        return a

    assert list(signature_defaults(f).items()) == [("b", 1), ("c", None)]


@pytest.mark.parametrize("config, message", [
    (lambda c: embed.index_stage._config(c), "unknown option index.kk. Did you mean 'k'? Fix: "
     "choose from k, lesion_factory, patient_factory, ef_search, ef_construction, device."),
    (lambda c: discovery.stage._config(c), "the discover config has an unknown option 'kk'. "
     "Fix: use clusters, tracking, forecast, scan, gnn, graph, write_graph."),
    (lambda c: discovery.stage.fit_forecasts(None, None, c), "unknown forecast option 'kk'. "
     "Fix: use one of horizons, method, coverage, neighbours, "),
    (lambda c: discovery.gnn._config(c), "unknown GNN option 'kk'. Fix: use one of seed, "),
    (lambda c: discovery.tracking.track_lesions(None, None, None, c),
     "unknown tracking option 'kk'. Fix: use one of gate, max_gap, gap_penalty, align, "
     "min_align, adapt_scales, scales, weights."),
    (lambda c: discovery.clusters.cluster_lesions(None, None, None, c),
     "unknown clustering option 'kk'. Fix: use one of n_components, n_neighbors, "),
])
def test_each_option_mapping_names_the_options(config, message):
    with pytest.raises(InputError) as caught:
        config({"kk": 1})
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("horizons", [[], [0], [90, "soon"], 90, [5000]])
def test_forecast_horizons_must_be_days(horizons):
    with pytest.raises(InputError, match="forecast horizons must be a list of days"):
        discovery.stage.fit_forecasts(None, None, {"horizons": horizons})


@pytest.mark.parametrize("raw", ["0.05", "-1", "soon", "nan", "inf", "1e9", "5 s"])
def test_env_number_refuses_what_is_not_a_number_in_range(raw):
    with pytest.raises(InputError) as err:
        env_number("PG_LIMIT", 5.0, low=0.1, high=3600, unit="seconds",
                   environ={"PG_LIMIT": raw})
    assert "$PG_LIMIT" in str(err.value) and "from 0.1 to 3600" in str(err.value)
    assert "e.g. 5" in err.value.fix


def test_env_number_default_bounds_and_open_low():
    read = lambda raw, **kw: env_number("PG_LIMIT", 5.0, low=0, high=10, unit="s",  # noqa: E731
                                        environ={} if raw is None else {"PG_LIMIT": raw}, **kw)
    assert read(None) == 5.0 and read("  ") == 5.0
    assert read("0") == 0.0 and read(" 10 ") == 10.0 and read("2.5") == 2.5
    with pytest.raises(InputError, match="above 0 to 10"):
        read("0", low_open=True)


@pytest.mark.parametrize("raw", ["0", "abc", "nan", "4000"])
def test_bad_query_timeout_in_the_environment_is_refused(raw):
    from dashboards.data import QUERY_TIMEOUT_ENV, query_timeout_s
    with pytest.raises(InputError, match=QUERY_TIMEOUT_ENV):
        query_timeout_s({QUERY_TIMEOUT_ENV: raw})
    assert query_timeout_s({QUERY_TIMEOUT_ENV: "2"}) == 2.0
    assert query_timeout_s({}) == 5.0
