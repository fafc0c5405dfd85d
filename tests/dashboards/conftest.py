"""A small synthetic workspace with every stage run, shared by the explorer's tests.

Browser tests run the real app in headless Chromium through ``dash_duo`` (dash[testing]);
``--headless`` is switched on here, and a missing Chromium or chromedriver fails them.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from patientgraph import Workspace

N_PATIENTS = 24
CONFIG = {"embed": {"preset": "fast"}, "index": {"k": 5},
          "discover": {"gnn": {"max_epochs": 20, "n_bootstrap": 50}}}
ARTIFACTS = Path(os.environ.get("PATIENTGRAPH_TEST_ARTIFACTS", "/tmp/dash_artifacts")) \
    / "patientgraph-explorer"


def pytest_configure(config):
    if hasattr(config.option, "headless"):
        config.option.headless = True
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium and "DASH_TEST_CHROMEPATH" not in os.environ:
        os.environ["DASH_TEST_CHROMEPATH"] = chromium


@pytest.fixture(scope="session")
def explorer_base(tmp_path_factory) -> Path:
    """The cohort (``cohort/``) and its workspace (``ws/``), built once (tests.cache)."""
    from tests.cache import cached
    from tests.conftest import build_workspace

    return cached("explorer", {"patients": N_PATIENTS, "seed": 3, "px": 128, "config": CONFIG},
                  lambda base: build_workspace(base, N_PATIENTS, 3, 128, CONFIG),
                  lambda: tmp_path_factory.mktemp("explorer"))


@pytest.fixture(scope="session")
def cohort(explorer_base) -> Path:
    return explorer_base / "cohort"


@pytest.fixture(scope="session")
def workspace(explorer_base) -> Workspace:
    """Ingested, embedded, indexed, loaded into a graph and discovered.

    Read-only: copy it before changing it.
    """
    return Workspace(explorer_base / "ws")


@pytest.fixture
def workspace_copy(workspace, tmp_path) -> Workspace:
    shutil.copytree(workspace.root, tmp_path / "ws")
    return Workspace(tmp_path / "ws")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
