"""Shared fixtures: the tiny valid DeepLesion-format archive and helpers to run the CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
MINI = DATA / "deeplesion_mini"


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    """A writable copy of the valid mini archive."""
    dst = tmp_path / "mini"
    shutil.copytree(MINI, dst)
    return dst


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None):
    """Run ``patientgraph ARGS`` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "patientgraph", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})},
        timeout=600,
    )


def ctrl_c(proc: subprocess.Popen, timeout: float) -> tuple[str, str, bool]:
    """Send Ctrl+C (SIGINT) to a server process: its stdout, its stderr, and whether it
    stopped within ``timeout`` seconds (if not, it is killed)."""
    import signal

    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=timeout)
        return out, err, True
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return out, err, False


def ingest_args(archive: Path, workspace: Path, *, extras: bool = True) -> list[str]:
    args = ["ingest", "deeplesion", "--info", archive / "DL_info.csv",
            "--images", archive / "Images_png", "--workspace", workspace]
    if extras:
        args += ["--records", archive / "records.csv", "--outcomes", archive / "outcomes.csv",
                 "--studies", archive / "studies.csv"]
    return [str(a) for a in args]


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its bytes (for 'unchanged' checks)."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="session")
def discovered(tmp_path_factory):
    """A small synthetic cohort run through every stage, discover included (read-only).

    60 patients on 96 px slices: enough events for the survival scan and the GNN, small
    enough for a test session. The embed stage uses the fast preset.
    """
    from patientgraph import Workspace
    from tests.cache import cached

    config = {"embed": {"preset": "fast"}, "index": {"k": 5}}
    folder = cached("discovered", {"patients": 60, "seed": 3, "px": 96, "config": config},
                    lambda base: build_workspace(base, 60, 3, 96, config),
                    lambda: tmp_path_factory.mktemp("discovered"))
    return Workspace(folder / "ws")


def build_workspace(base: Path, n_patients: int, seed: int, image_size: int,
                    config: dict, stages: str | None = None) -> None:
    """A synthetic cohort in ``base/cohort`` ingested into ``base/ws`` and run through
    ``stages`` (default: all) with ``config``."""
    from patientgraph import ingest_deeplesion
    from patientgraph.app.pipeline import run_pipeline
    from patientgraph.synth import generate

    cohort = base / "cohort"
    generate(cohort, n_patients=n_patients, seed=seed, image_size=image_size)
    ingest_deeplesion(cohort / "DL_info.csv", cohort / "Images_png", base / "ws",
                      records=cohort / "records.csv", outcomes=cohort / "outcomes.csv",
                      studies=cohort / "studies.csv")
    run_pipeline(base / "ws", stages=stages, config=config, echo=lambda _msg: None)


# -- the fast tier (make check) -------------------------------------------------------------

# Fixtures that start a server, a browser or build a full pipeline workspace: a test that
# uses one (or runs on the Neo4j backend) is "slow" and left out of ``make check``. The full
# suite (``make test``, CI) runs everything.
SLOW_FIXTURES = {"neo4j_server", "dash_duo", "discovered", "workspace", "embedded",
                 "base", "setup", "driver"}
SLOW_PATHS = ("tests/test_notebooks.py", "tests/graphdb/test_server.py",
              "tests/embed/test_train.py", "tests/security/test_crash_consistency.py",
              "tests/security/test_http.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath)).relative_to(Path(__file__).parent.parent).as_posix()
        neo4j = "neo4j" in item.name.split("[", 1)[-1] if "[" in item.name else False
        if (SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or neo4j
                or path in SLOW_PATHS or "neo4j" in path):
            item.add_marker(pytest.mark.slow)
