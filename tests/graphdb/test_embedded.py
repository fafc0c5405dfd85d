"""What only the embedded backend does: its folder, its lock, its read-only guards."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from graphdb import open_store
from graphdb.errors import (
    GraphDatabaseNotFoundError,
    GraphQueryError,
    GraphUnavailableError,
    WriteRefusedError,
)
from patientgraph.errors import InputError


def test_read_only_open_of_a_missing_graph(tmp_path):
    with pytest.raises(GraphDatabaseNotFoundError, match="no graph database"):
        open_store(tmp_path / "nothing", read_only=True)
    assert not (tmp_path / "nothing").exists()


def test_a_graph_held_by_another_process_is_reported(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from graphdb import open_store
            store = open_store({str(tmp_path / "g")!r})
            print("open", flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(GraphUnavailableError, match="open for writing"):
            open_store(tmp_path / "g")
        with open_store(tmp_path / "g", read_only=True) as reader:  # readers may share it
            assert reader.stats()["nodes"]["Patient"] == 0
    finally:
        holder.communicate("", timeout=60)


def test_query_refuses_file_writes_and_several_statements(tmp_path):
    with open_store(tmp_path / "g") as store:
        with pytest.raises(WriteRefusedError, match="COPY"):
            store.query(f"COPY (MATCH (p:Patient) RETURN p.patient_id) TO "
                        f"'{tmp_path / 'out.csv'}'")
        with pytest.raises(GraphQueryError, match="one statement"):
            store.query("MATCH (p:Patient) RETURN count(p); MATCH (s:Study) RETURN count(s)")
        with pytest.raises(GraphQueryError, match="the query failed"):
            store.query("MATCH (p:Nope) RETURN p")
    assert not (tmp_path / "out.csv").exists()


def test_record_fields_keep_their_type(tmp_path):
    patients = pd.DataFrame({"patient_id": ["1"], "sex": ["F"], "age": [50.0]})
    empty = pd.DataFrame({"study_id": [], "patient_id": [], "day": []})
    lesions = pd.DataFrame({"lesion_id": [], "study_id": []})
    with open_store(tmp_path / "g") as store:
        store.write_cohort(patients, empty, lesions,
                           pd.DataFrame({"patient_id": ["1"], "LDH (U/L)": [250.0]}))
        assert store.patient_types()["LDH (U/L)"] == "DOUBLE"
        with pytest.raises(GraphQueryError, match="rebuild the graph"):
            store.write_cohort(patients, empty, lesions,
                               pd.DataFrame({"patient_id": ["1"], "LDH (U/L)": ["high"]}))
        with pytest.raises(InputError, match="clashes with a Patient property"):
            store.write_cohort(patients, empty, lesions,
                               pd.DataFrame({"patient_id": ["1"], "Age": [3.0]}))
        with pytest.raises(InputError, match="cannot be a graph property name"):
            store.write_cohort(patients, empty, lesions,
                               pd.DataFrame({"patient_id": ["1"], "a`b": [3.0]}))
