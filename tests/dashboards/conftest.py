"""A small synthetic workspace with every stage run, shared by the explorer's tests.

Browser tests run the real app in headless Chromium through ``dash_duo`` (dash[testing]);
``--headless`` is switched on here, and a missing Chromium or chromedriver fails them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from pathlib import Path

import pytest

from patientgraph import Workspace, ingest_deeplesion
from patientgraph.synth import generate

N_PATIENTS = 24
CONFIG = {"embed": {"preset": "fast"}, "index": {"k": 5},
          "discover": {"gnn": {"max_epochs": 20, "n_bootstrap": 50}}}
DISCOVERY_MODULES = ("discovery.stage", "discovery.clusters", "discovery.tracking",
                     "discovery.candidates", "discovery.survival", "discovery.gnn")
ARTIFACTS = Path(os.environ.get("PATIENTGRAPH_TEST_ARTIFACTS", "/tmp/dash_artifacts")) \
    / "patientgraph-explorer"


def pytest_configure(config):
    if hasattr(config.option, "headless"):
        config.option.headless = True
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium and "DASH_TEST_CHROMEPATH" not in os.environ:
        os.environ["DASH_TEST_CHROMEPATH"] = chromium


def discover_available() -> bool:
    """Whether this version has the discover stage (it is run on the test workspace if so)."""
    return all(importlib.util.find_spec(m) is not None for m in DISCOVERY_MODULES)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("explorer") / "cohort"
    generate(out, n_patients=N_PATIENTS, seed=3, image_size=128)
    return out


@pytest.fixture(scope="session")
def workspace(cohort, tmp_path_factory) -> Workspace:
    """Ingested, embedded, indexed and loaded into a graph (and discovered, when available).

    Read-only: copy it before changing it.
    """
    from patientgraph.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("explorer") / "ws"
    ingest_deeplesion(cohort / "DL_info.csv", cohort / "Images_png", root,
                      records=cohort / "records.csv", outcomes=cohort / "outcomes.csv",
                      studies=cohort / "studies.csv")
    stages = "embed,index,graph" + (",discover" if discover_available() else "")
    run_pipeline(root, stages=stages, config=CONFIG, echo=lambda _m: None)
    return Workspace(root)


@pytest.fixture
def workspace_copy(workspace, tmp_path) -> Workspace:
    shutil.copytree(workspace.root, tmp_path / "ws")
    return Workspace(tmp_path / "ws")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
