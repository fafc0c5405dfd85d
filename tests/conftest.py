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
        [sys.executable, "-m", "patientgraph.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})},
        timeout=600,
    )


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
    from patientgraph import Workspace, ingest_deeplesion
    from patientgraph.pipeline import run_pipeline
    from patientgraph.synth import generate

    base = tmp_path_factory.mktemp("discovered")
    cohort = base / "cohort"
    generate(cohort, n_patients=60, seed=3, image_size=96)
    ws = Workspace(base / "ws")
    ingest_deeplesion(cohort / "DL_info.csv", cohort / "Images_png", ws.root,
                      records=cohort / "records.csv", outcomes=cohort / "outcomes.csv",
                      studies=cohort / "studies.csv")
    run_pipeline(ws, config={"embed": {"preset": "fast"}, "index": {"k": 5}},
                 echo=lambda _msg: None)
    return ws
