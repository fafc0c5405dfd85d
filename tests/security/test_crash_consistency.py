"""Kill -9 at every rename of every stage: the workspace never claims what it does not hold.

Each stage (the ingest included) is first run once, forced, to count its renames into the
workspace (its atomic writes and manifest writes). Then, for every n, a copy of the old
workspace gets the same forced run killed with SIGKILL just before its n-th rename, and at
a few calls inside the graph build and the discover stage's write-back. After each kill:

* a stage record that is still the old one vouches for the old files, byte for byte;
  any other record (not pending) matches the files by its output hashes;
* a plain rerun (no --force) completes, and the one after it says "up to date" everywhere;
* nothing temporary is left, and the outputs are exactly the old ones or exactly the new.

The new state differs from the old one: the forced runs use another lesion encoder (the
checkpoint file's content changes, its path in the config does not), so that a new encoder
beside old embeddings would show. The number of kill points survived is printed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from patientgraph.atomic import is_leftover
from patientgraph.workspace import Workspace, content_sha256
from tests.security.workspace_base import Base, pipeline_config, save_random_encoder

REPO = Path(__file__).resolve().parents[2]
STAGES = ("embed", "index", "graph", "discover")
# Outputs whose bytes the same inputs reproduce (model files and the graph database carry
# ids and layout of their own): the old and new states are compared on these.
DETERMINISTIC = ("cohort", "embeddings", "index", "discovery")
CALLS = {
    "graph": ["graphdb.store:GraphStore.write_similarity"],  # half way through the load
    "discover": ["graphdb.store:GraphStore.write_tracks",    # half way through write-back
                 "graphdb.store:GraphStore.write_risk"],
}
SURVIVED: dict[str, int] = {}


class Driver:
    """The fork server of :mod:`tests.security.crash_driver`."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.security.crash_driver"], cwd=REPO, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def __call__(self, **request: Any) -> dict[str, Any]:
        request["ws"] = str(request["ws"])
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@dataclass
class Setup:
    old: Path
    new_digests: dict[str, str | None]
    renames: dict[str, int]
    config: dict[str, Any]
    base: Base
    top: Path


def digests(root: Path) -> dict[str, str | None]:
    return {rel: content_sha256(root / rel) for rel in DETERMINISTIC}


def ok(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["exit"] == 0, reply
    return reply["result"]


@pytest.fixture(scope="module")
def driver():
    d = Driver()
    yield d
    d.close()


@pytest.fixture(scope="module")
def setup(base: Base, driver: Driver, tmp_path_factory) -> Setup:
    """The old workspace, with its encoder checkpoint at a path of this module's, then a
    new encoder at that path; the new state's digests and each stage's rename count."""
    top = tmp_path_factory.mktemp("crash")
    old = base.copy(top / "old")
    checkpoint = top / "encoder.pt"
    shutil.copyfile(base.checkpoint, checkpoint)
    config = pipeline_config(checkpoint)
    echo = ok(driver(op="run", ws=old, config=config, replay=str(base.replay)))["echo"]
    # the same encoder under another path: new embed record, the same embeddings after it
    assert echo == ["embed: done", "index: up to date", "graph: up to date",
                    "discover: up to date"]
    save_random_encoder(checkpoint, seed=1)

    new = Path(shutil.copytree(old, top / "new"))
    renames = {"ingest": ok(driver(op="ingest", ws=new, force=True,
                                   ingest=base.ingest_kwargs()))["renames"]}
    for stage in STAGES:
        result = ok(driver(op="run", ws=new, stages=stage, force=True, config=config,
                           replay=str(base.replay)))
        renames[stage] = result["renames"]
    new_digests = digests(new)
    assert new_digests["embeddings"] != digests(old)["embeddings"]
    return Setup(old, new_digests, renames, config, base, top)


def check_claims(ws: Path, old: Path) -> None:
    """What the manifest says after a kill is true of the files."""
    now = Workspace(ws).manifest()["stages"]
    before = Workspace(old).manifest()["stages"]
    for stage, record in now.items():
        if record == before.get(stage):
            for rel in record["outputs"]:
                assert content_sha256(ws / rel) == content_sha256(old / rel), (
                    f"{stage}'s old record survived but {rel} changed")
        elif "pending" not in record:
            assert not Workspace(ws).changed_outputs(stage), f"{stage} record is not true"


def leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if is_leftover(p.name)]


def survive(s: Setup, driver: Driver, stage: str, kill: dict[str, Any], n: int) -> None:
    ws = s.top / f"{stage}-{n}"
    shutil.copytree(s.old, ws)
    common = {"ws": ws, "config": s.config, "replay": str(s.base.replay)}
    if stage == "ingest":
        reply = driver(op="ingest", ws=ws, force=True, ingest=s.base.ingest_kwargs(),
                       kill=kill)
    else:
        reply = driver(op="run", stages=stage, force=True, kill=kill, **common)
    assert reply["signal"] == signal.SIGKILL, (kill, reply)
    check_claims(ws, s.old)

    if stage == "ingest":
        ok(driver(op="ingest", ws=ws, ingest=s.base.ingest_kwargs()))
    echo = ok(driver(op="run", runs=2, **common))["echo"]
    assert echo[len(STAGES):] == [f"{name}: up to date" for name in STAGES], (kill, echo)
    assert not leftovers(ws), kill
    assert digests(ws) in (digests(s.old), s.new_digests), (kill, echo)
    assert oct(os.stat(ws / "manifest.json").st_mode & 0o777) == "0o600"
    shutil.rmtree(ws)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["ingest", *STAGES])
def test_kill_anywhere_in_a_stage(stage: str, setup: Setup, driver: Driver, record_property):
    kills = [{"replace": n} for n in range(1, setup.renames[stage] + 1)]
    kills += [{"call": call} for call in CALLS.get(stage, [])]
    for n, kill in enumerate(kills):
        survive(setup, driver, stage, kill, n)
    SURVIVED[stage] = len(kills)
    record_property("kill_points", len(kills))
    print(f"\n{stage}: survived {len(kills)} kill points; all stages so far: "
          f"{sum(SURVIVED.values())}")
