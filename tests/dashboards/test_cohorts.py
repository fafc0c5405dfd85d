"""Cohort definitions: JSON round trip, checks, and the patients they select."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from dashboards.cohorts import (
    CohortDefinition,
    apply_cohort,
    cohort_csv,
    definition_from_controls,
    describe,
)
from dashboards.data import ExplorerData
from patientgraph.errors import InputError


@pytest.fixture
def tables():
    patients = pd.DataFrame({"sex": ["F", "M", "F", "M", "F"],
                             "age": [40.0, 55.0, 70.0, None, 62.0],
                             "ldh": [150.0, 300.0, 220.0, 500.0, None]},
                            index=pd.Index(["p1", "p2", "p3", "p4", "p5"], name="patient_id"))
    lesions = pd.DataFrame({
        "patient_id": ["p1", "p1", "p2", "p3", "p4", "p5"],
        "coarse_type": [4, 5, 4, 5, None, 4],
        "long_mm": [10.0, 40.0, 25.0, 12.0, 30.0, 8.0],
        "cluster": [0, 1, 0, 1, 2, 0],
    })
    return patients, lesions


def select(definition: dict, tables, similar=None) -> list[str]:
    return apply_cohort(CohortDefinition.from_dict(definition), *tables, similar)


def test_patient_filters(tables):
    assert select({"filters": {"sex": "F"}}, tables) == ["p1", "p3", "p5"]
    assert select({"filters": {"sex": ["F", "M"], "age": {"min": 55}}}, tables) == \
        ["p2", "p3", "p5"]
    assert select({"filters": {"ldh": {"max": 300}}}, tables) == ["p1", "p2", "p3"]


def test_one_lesion_must_pass_every_lesion_filter(tables):
    # p1 has a liver lesion (10 mm) and a lung lesion (40 mm): no single liver lesion >= 20.
    assert select({"filters": {"coarse_type": 4, "long_mm": {"min": 20}}}, tables) == ["p2"]
    assert select({"filters": {"coarse_type": [4, 5]}}, tables) == ["p1", "p2", "p3", "p5"]
    assert select({"filters": {"cluster": [1], "sex": "F"}}, tables) == ["p1", "p3"]


def test_similarity_and_explicit_lists_narrow_the_cohort(tables):
    def similar(patient_id, k):
        assert (patient_id, k) == ("p1", 2)
        return ["p3", "p4"]

    definition = {"filters": {"sex": "F"}, "similar_to": {"patient_id": "p1", "k": 2}}
    assert select(definition, tables, similar) == ["p1", "p3"]
    assert select({"patient_ids": ["p2", "p3", "zz"]}, tables) == ["p2", "p3"]
    with pytest.raises(InputError, match="vector index"):
        select(definition, tables)


def test_unknown_fields_are_named_with_a_suggestion(tables):
    with pytest.raises(InputError, match="Did you mean 'age'"):
        select({"filters": {"agee": {"min": 3}}}, tables)
    patients, lesions = tables
    with pytest.raises(InputError, match="discover stage"):
        select({"filters": {"cluster": [1]}}, (patients, lesions.drop(columns="cluster")))


def test_json_round_trip():
    definition = CohortDefinition.from_dict({
        "name": "older liver", "filters": {"coarse_type": [4], "age": {"min": 60.0}},
        "similar_to": {"patient_id": "000007", "k": 25}, "patient_ids": ["000001"]})
    again = CohortDefinition.from_json(definition.to_json())
    assert again == definition
    assert again.to_dict()["version"] == 1


@pytest.mark.parametrize("raw, problem", [
    ("[1, 2]", "is a JSON object"),
    ('{"filters": {"age": {"from": 3}}}', "has keys"),
    ('{"filters": {"age": {"min": "old"}}}', "not a number"),
    ('{"filters": {"sex": []}}', "is empty"),
    ('{"similar_to": {"k": 5}}', "needs a patient_id"),
    ('{"filter": {}}', "Did you mean 'filters'"),
    ('{"version": 7}', "version 7"),
    ("{not json", "not valid JSON"),
])
def test_bad_definitions_are_refused_with_the_file_named(raw, problem):
    with pytest.raises(InputError, match=problem) as info:
        CohortDefinition.from_json(raw, source="mine.json")
    assert "mine.json" in info.value.message


def test_definition_from_controls_skips_empty_controls():
    definition = definition_from_controls(
        "A", types=[5, 4], clusters=[], age=(None, 70), sex=None, record_field="ldh",
        record_min=None, record_max=None, similar_patient="p9", similar_k=None)
    assert definition.filters == {"coarse_type": [4, 5], "age": {"max": 70.0}}
    assert definition.similar_to == {"patient_id": "p9", "k": 50}
    assert describe(definition) == ("coarse_type in {4, 5}; age in [, 70.0]; "
                                    "50 most similar to the chosen patient")


def test_cohort_csv_has_the_patients_rows(tables):
    patients, _ = tables
    frame = pd.read_csv(io.StringIO(cohort_csv(["p3", "p1"], patients)), dtype={"sex": str})
    assert frame["patient_id"].tolist() == ["p1", "p3"]
    assert list(frame.columns) == ["patient_id", "sex", "age", "ldh"]


@pytest.mark.parametrize("filters", [
    {"sex": "F"},
    {"age": {"min": 50, "max": 75}},
    {"coarse_type": [4, 5]},
    {"coarse_type": 4, "long_mm": {"min": 15.0}},
    {"sex": "M", "ldh": {"min": 180.0}},
])
def test_the_same_patients_as_the_graph_store(workspace, filters):
    """A definition's filters select in the explorer what GraphStore.cohort selects."""
    _same_as_graph(workspace, filters)


def test_cluster_filters_agree_with_the_clusters_in_the_graph(workspace):
    clusters = pd.read_parquet(workspace.path("discovery", "clusters.parquet"))
    first = int(clusters.loc[clusters["cluster"] >= 0, "cluster"].min())
    _same_as_graph(workspace, {"cluster": [first], "sex": "F"})


def _same_as_graph(workspace, filters: dict) -> None:
    data = ExplorerData.load(workspace.root)
    try:
        mine = apply_cohort(CohortDefinition(filters=filters), data.patient_table,
                            data.lesion_table)
        graph = data.graph.run(lambda store: store.cohort(filters))
    finally:
        data.graph.close()
    assert mine == graph
    assert 0 < len(mine) < len(data.patient_table) or filters == {"coarse_type": [4, 5]}


@pytest.fixture
def forecast_tables(tables):
    patients, lesions = tables
    category = ["progression", "stable", "partial_response", None, "progression"]
    return patients.assign(forecast_category=pd.Series(category, index=patients.index,
                                                       dtype=object)), lesions


@pytest.mark.parametrize("wanted, expected", [
    ("progression", ["p1", "p5"]),
    (["stable", "partial_response"], ["p2", "p3"]),
    (["partial_response", "progression", "stable"], ["p1", "p2", "p3", "p5"]),
])
def test_forecast_category_selects_its_patients(forecast_tables, wanted, expected):
    # p4 has no forecast (too few measurements): no category selects it
    assert select({"filters": {"forecast_category": wanted}}, forecast_tables) == expected


def test_forecast_category_from_the_builder_controls(forecast_tables):
    d = definition_from_controls("growing", forecast=["progression"], sex=["F"])
    assert d.filters["forecast_category"] == ["progression"]
    assert apply_cohort(d, *forecast_tables) == ["p1", "p5"]
    assert "forecast_category in {progression}" in describe(d)


@pytest.mark.parametrize("bad, message", [
    ("progresion", r"'progresion' is not a forecast category.*Did you mean 'progression'"),
    (["stable", "complete_response"], r"'complete_response' is not a forecast category"),
    ([], r"list of values of 'forecast_category' is empty"),
    ({"min": 1}, r"something of type dict is not a forecast category"),
    ([3], r"something of type int is not a forecast category"),
    (["<script>" * 20], r"a text of 160 characters is not a forecast category"),
])
def test_a_bad_forecast_category_is_refused(forecast_tables, bad, message):
    with pytest.raises(InputError, match=message) as info:
        CohortDefinition.from_dict({"filters": {"forecast_category": bad}})
    assert "progression, stable, partial_response" in info.value.fix
    if bad:  # the builder's empty selection is no filter
        with pytest.raises(InputError, match=message):
            definition_from_controls("A", forecast=bad if isinstance(bad, list) else [bad])


def test_forecast_category_without_forecasts_says_what_to_run(tables):
    with pytest.raises(InputError, match="no growth forecasts") as info:
        select({"filters": {"forecast_category": ["stable"]}}, tables)
    assert "--stages discover" in info.value.fix
