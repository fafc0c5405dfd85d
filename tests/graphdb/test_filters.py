"""Cohort filters: checked names, typed values, parameters only."""

from __future__ import annotations

import pytest

from graphdb.errors import GraphQueryError
from graphdb.filters import compile_filters
from graphdb.schema import PATIENT

TYPES = {**PATIENT.properties, "ldh": "DOUBLE", "smoking": "STRING", "LDH (U/L)": "DOUBLE"}


def test_patient_and_lesion_conditions_with_parameters():
    cond = compile_filters({"sex": "F", "age": {"min": 40, "max": 70}, "coarse_type": [4, 5],
                            "ldh": {"min": 250}}, TYPES)
    assert cond.patient == ["p.`sex` = $f0", "p.`age` >= $f1 AND p.`age` <= $f2",
                            "p.`ldh` >= $f4"]
    assert cond.lesion == ["l.`coarse_type` IN $f3"]
    assert cond.params == {"f0": "F", "f1": 40.0, "f2": 70.0, "f3": [4, 5], "f4": 250.0}


def test_variable_names_and_quoted_field_names():
    cond = compile_filters({"LDH (U/L)": {"max": 300}}, TYPES, patient_var="q")
    assert cond.patient == ["q.`LDH (U/L)` <= $f0"]


@pytest.mark.parametrize("filters, message", [
    ({"agee": 3}, "Did you mean 'age'"),
    ({"age) DETACH DELETE (p": 1}, "unknown filter field"),
    ({"patient_id": "000001"}, "unknown filter field"),
    ({"age": "old"}, "DOUBLE values, not 'old'"),
    ({"age": True}, "DOUBLE values"),
    ({"coarse_type": 4.5}, "INT64 values"),
    ({"sex": {"min": "F"}}, "no range"),
    ({"age": {"low": 3}}, "has keys"),
    ({"sex": []}, "empty"),
    ({"age": float("nan")}, "DOUBLE values"),
])
def test_bad_filters(filters, message):
    with pytest.raises(GraphQueryError, match=message):
        compile_filters(filters, TYPES)


def test_no_filters():
    cond = compile_filters(None, TYPES)
    assert (cond.patient, cond.lesion, cond.params) == ([], [], {})
