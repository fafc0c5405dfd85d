"""Callback failures become messages on the page, and the log never repeats their text."""

from __future__ import annotations

import logging

import pytest
from dash.exceptions import PreventUpdate

from dashboards.context import Explorer, guarded
from dashboards.data import ExplorerData
from patientgraph.errors import InputError


def test_a_user_mistake_is_shown_as_its_message(caplog):
    @guarded("test", lambda message: ("error", message))
    def callback():
        raise InputError(None, "no patient '000123'", "check the id")

    with caplog.at_level(logging.ERROR, logger="patientgraph.explorer"):
        assert callback() == ("error", "no patient '000123'. Fix: check the id.")
    assert caplog.records == []


def test_a_crash_is_logged_without_its_message(caplog):
    patient_id = "".join(["000", "123"])  # a value, not text of the source the stack shows

    @guarded("select patient", lambda message: message)
    def callback():
        raise KeyError(patient_id)

    with caplog.at_level(logging.ERROR, logger="patientgraph.explorer"):
        shown = callback()
    assert "KeyError" in shown and "000123" not in shown
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "callback select patient failed: KeyError" in logged
    assert "000123" not in logged


def test_prevent_update_passes_through():
    @guarded("test", lambda message: message)
    def callback():
        raise PreventUpdate

    with pytest.raises(PreventUpdate):
        callback()


def test_similar_patients_are_cached_per_query(workspace):
    explorer = Explorer(ExplorerData.load(workspace.root))
    patient = explorer.data.patient_ids[0]
    first = explorer.similar(patient, 5, {"imaging": 0.5, "records": 0.5})
    assert explorer.similar(patient, 5, {"imaging": 0.5, "records": 0.5}) is first
    other = explorer.similar(patient, 5, {"imaging": 1.0, "records": 0.0})
    assert other is not first and (other["records"] == 0).all()
    assert explorer.similar_ids(patient, 3) == first["patient_id"].head(3).tolist()
    with pytest.raises(InputError):
        explorer.similar("no-such-patient", 5)
    explorer.data.graph.close()
