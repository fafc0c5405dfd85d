"""A tiny synthetic cohort, ingested once per test session, and the stages run on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from patientgraph import Workspace, ingest_deeplesion
from patientgraph.synth import generate

FAST = {"preset": "fast"}
"""The embed config of the tests: a tiny network trained for two short epochs."""


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """12 synthetic patients (~80 lesions) on 128 px slices, in DeepLesion format."""
    out = tmp_path_factory.mktemp("embed") / "cohort"
    generate(out, n_patients=12, seed=0, image_size=128)
    return out


@pytest.fixture(scope="session")
def ingested(cohort, tmp_path_factory) -> Workspace:
    """The cohort ingested into a workspace (read-only: copy it before changing it)."""
    root = tmp_path_factory.mktemp("embed") / "ingested"
    ingest_deeplesion(cohort / "DL_info.csv", cohort / "Images_png", root,
                      records=cohort / "records.csv", outcomes=cohort / "outcomes.csv",
                      studies=cohort / "studies.csv")
    return Workspace(root)


@pytest.fixture(scope="session")
def embedded(ingested, tmp_path_factory) -> Workspace:
    """A workspace after the embed and index stages (fast config; read-only)."""
    from embed import index_stage, stage

    root = tmp_path_factory.mktemp("embed") / "embedded"
    shutil.copytree(ingested.root, root)
    ws = Workspace(root)
    stage.run(ws, config=FAST)
    index_stage.run(ws, config={"k": 5})
    return ws


@pytest.fixture
def ingested_copy(ingested, tmp_path) -> Workspace:
    """A writable copy of the ingested workspace (the images stay where they are)."""
    shutil.copytree(ingested.root, tmp_path / "ws")
    return Workspace(tmp_path / "ws")


@pytest.fixture
def embedded_copy(embedded, tmp_path) -> Workspace:
    """A writable copy of the embedded workspace."""
    shutil.copytree(embedded.root, tmp_path / "ws")
    return Workspace(tmp_path / "ws")
