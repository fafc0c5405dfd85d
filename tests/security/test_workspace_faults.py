"""Workspace faults: damaged or foreign files, what killed writes leave, a second writer,
read-only use, and who may read the files.

Every damaged or foreign workspace file is an InputError (exit code 2 from the command line)
that names the file and the stage to rerun with --force, never a traceback; a damaged or
replaced output makes its stage "not current", so the next run redoes it.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from patientgraph.app.pipeline import run_pipeline
from patientgraph.atomic import atomic_dir, atomic_path, write_parquet
from patientgraph.errors import InputError
from patientgraph.workspace import LOCK_FILE, Workspace, content_sha256, fingerprint
from tests.conftest import MINI, ingest_args, run_cli, tree_digest
from tests.security.workspace_base import Base


@pytest.fixture
def ws(base: Base, tmp_path) -> Workspace:
    """A writable copy of the shared workspace (every stage run)."""
    return Workspace(base.copy(tmp_path / "ws"))


def run(ws: Workspace, base: Base, stages: str | None = None) -> list[str]:
    echo: list[str] = []
    run_pipeline(ws, stages=stages, config=base.config, echo=echo.append)
    return echo


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def hold_lock(root: Path) -> int:
    """Take the workspace lock as another process would (its own open file)."""
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


# -- the manifest protocol ------------------------------------------------------------------

def _recorded(tmp_path: Path) -> tuple[Workspace, str]:
    ws = Workspace(tmp_path / "w")
    write_parquet(pd.DataFrame({"a": [1, 2, 3]}), ws.path("out/t.parquet"))
    (ws.path("out") / "note.txt").write_text("x")
    ws.record_stage("embed", config={}, inputs={}, outputs=["out"], seconds=0.0)
    return ws, fingerprint({}, {})


def test_begin_stage_removes_the_record_before_outputs_change(tmp_path):
    ws, fp = _recorded(tmp_path)
    assert ws.is_current("embed", fp)
    ws.begin_stage("embed")
    assert ws.stage_record("embed") is None and not ws.is_current("embed", fp)


@pytest.mark.parametrize("change", ["truncate", "edit", "add", "remove"])
def test_a_changed_output_is_not_current(tmp_path, change):
    ws, fp = _recorded(tmp_path)
    folder = ws.path("out")
    if change == "truncate":
        truncate(folder / "t.parquet")
    elif change == "edit":
        (folder / "note.txt").write_text("y")
    elif change == "add":
        (folder / "extra").write_text("")
    else:
        (folder / "note.txt").unlink()
    assert not ws.is_current("embed", fp)
    assert ws.changed_outputs("embed") == ["out"]


def test_a_pending_record_is_not_current_until_refreshed(tmp_path):
    ws, fp = _recorded(tmp_path)
    ws.mark_pending("embed", "another stage writes into it")
    assert not ws.is_current("embed", fp)
    (ws.path("out") / "note.txt").write_text("changed in place")
    ws.refresh_outputs("embed")
    assert ws.is_current("embed", fp) and "pending" not in ws.stage_record("embed")


def test_a_record_without_output_hashes_is_not_trusted(tmp_path):
    ws, fp = _recorded(tmp_path)
    manifest = ws.manifest()
    del manifest["stages"]["embed"]["output_hashes"]
    ws.manifest_path.write_text(json.dumps(manifest))
    assert not ws.is_current("embed", fp)


# -- leftovers of killed writes ---------------------------------------------------------------

def test_leftovers_are_cleaned_when_the_lock_is_taken(tmp_path):
    ws = Workspace(tmp_path / "w")
    with atomic_dir(ws.path("cohort")) as tmp:
        (tmp / "lesions.parquet").write_text("old")
    (tmp_path / "w" / "notes.txt").write_text("the user's")
    # a kill between atomic_dir's renames: the old folder aside, the new one not in place
    os.replace(ws.path("cohort"), ws.path(".cohort.old"))
    (ws.path(".cohort.tmp-abcd1234") / "sub").mkdir(parents=True)
    ws.path(".graph.tmp-x1y2z3w4").mkdir()
    ws.path("embeddings").mkdir()
    ws.path("embeddings", ".lesions.parquet.tmp-k9j8h7g6.parquet").write_text("half")
    with ws.lock():
        pass
    assert sorted(p.name for p in ws.root.iterdir()) == [LOCK_FILE, "cohort", "embeddings",
                                                         "notes.txt"]
    assert ws.path("cohort", "lesions.parquet").read_text() == "old"
    assert list(ws.path("embeddings").iterdir()) == []


# -- one writer at a time ---------------------------------------------------------------------

def test_a_second_writer_is_refused_and_the_same_one_may_reenter(tmp_path):
    ws = Workspace(tmp_path / "w")
    ws.root.mkdir()
    with ws.lock(), ws.lock():  # a run holds it, and each stage it runs takes it again
        pass
    fd = hold_lock(ws.root)
    try:
        with pytest.raises(InputError, match="another patientgraph run or ingest") as exc, \
                ws.lock():
            pass
        assert "wait for it to finish" in exc.value.message
    finally:
        os.close(fd)
    with ws.lock():
        pass


def test_a_killed_holder_leaves_no_lock(tmp_path):
    ws = Workspace(tmp_path / "w")
    ws.root.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from patientgraph.workspace import "
         "Workspace\nwith Workspace(sys.argv[1]).lock():\n print('held', flush=True)\n "
         "time.sleep(60)", str(ws.root)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(InputError), ws.lock():
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with ws.lock():
        pass


def test_ingest_and_run_refuse_a_locked_workspace(ws, base, tmp_path):
    before = tree_digest(ws.root)
    fd = hold_lock(ws.root)
    try:
        res = run_cli(*ingest_args(MINI, ws.root), "--force")
        with pytest.raises(InputError, match="another patientgraph run"):
            run(ws, base, stages="graph")
    finally:
        os.close(fd)
    assert res.returncode == 2, res.stderr
    assert "another patientgraph run or ingest" in res.stderr and "Traceback" not in res.stderr
    assert tree_digest(ws.root) == before


def test_a_first_ingest_takes_the_lock_once_the_folder_exists(tmp_path):
    ws = Workspace(tmp_path / "new")
    with ws.lock():
        assert not ws.root.exists()
        ws.begin_stage("ingest")
        blocked = subprocess.run(
            [sys.executable, "-c", "import sys; from patientgraph.workspace import Workspace\n"
             "with Workspace(sys.argv[1]).lock(): pass", str(ws.root)],
            capture_output=True, text=True)
    assert blocked.returncode != 0 and "another patientgraph run" in blocked.stderr


# -- damaged and foreign files ----------------------------------------------------------------

def test_truncated_cohort_table_is_a_clear_error(ws, base):
    truncate(ws.table_path("lesions"))
    res = run_cli("run", "--workspace", ws.root, "--stages", "graph")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    message = " ".join(res.stderr.split())
    assert "cohort/lesions.parquet" in message and "ingest" in message
    assert "--force" in message
    with pytest.raises(InputError, match=r"lesions\.parquet.*damaged or is not a Parquet"):
        ws.table("lesions")


def test_foreign_cohort_table_names_the_missing_column(ws):
    pd.DataFrame({"x": [1]}).to_parquet(ws.table_path("lesions"))
    with pytest.raises(InputError, match="lacks the column 'lesion_id'") as exc:
        ws.table("lesions")
    assert "--force" in exc.value.message


@pytest.mark.parametrize("content", ["{not json", "[]", '{"stages": 1}', '{"stages": {"a": 2}}'])
def test_bad_manifest_is_a_clear_error_and_a_forced_ingest_repairs_it(ws, base, content):
    from patientgraph import ingest_deeplesion

    ws.manifest_path.write_text(content)
    with pytest.raises(InputError, match="manifest") as exc:
        run(ws, base)
    assert "manifest.json" in exc.value.message and "--force" in exc.value.message
    ingest_deeplesion(workspace=ws.root, force=True, **base.ingest_kwargs())
    assert ws.stage_record("ingest") is not None


def test_not_a_parquet_embedding_table(ws, base):
    ws.path("embeddings/lesions.parquet").write_bytes(b"PAR1 this is not a table")
    from embed import index_stage

    with pytest.raises(InputError) as exc:
        index_stage.run(ws, config=base.config["index"], force=True)
    assert "embeddings/lesions.parquet" in exc.value.message
    assert "--stages embed --force" in exc.value.message
    assert run(ws, base, stages="embed") == ["embed: done"]  # a full run redoes it


def test_damaged_checkpoint_makes_embed_run_again(ws, base):
    from embed.encoder import read_checkpoint

    truncate(ws.path("models/lesion_encoder.pt"))
    with pytest.raises(InputError, match="lesion_encoder.pt"):
        read_checkpoint(ws.path("models/lesion_encoder.pt"))
    assert run(ws, base, stages="embed") == ["embed: done"]
    assert run(ws, base, stages="embed") == ["embed: up to date"]


def test_damaged_vector_index(ws, base):
    from embed.similar import similar_lesions

    truncate(ws.path("index/lesions.faiss"))
    lesion = ws.table("lesions")["lesion_id"].iloc[0]
    with pytest.raises(InputError) as exc:
        similar_lesions(ws, lesion, k=3)
    assert "index/lesions.faiss" in exc.value.message
    assert "--stages index --force" in exc.value.message
    assert run(ws, base, stages="index") == ["index: done"]
    assert len(similar_lesions(ws, lesion, k=3)) == 3


def test_truncated_graph_is_rebuilt(ws, base):
    truncate(ws.path("graph/graph.lbug"))
    assert run(ws, base, stages="graph") == ["graph: done"]


def test_damaged_discover_results(ws, base):
    from discovery import load_results

    ws.path("discovery/risk.parquet").write_text("no")
    with pytest.raises(InputError, match="risk.parquet") as exc:
        load_results(ws)
    assert "--stages discover --force" in exc.value.message
    assert ws.changed_outputs("discover") == ["discovery"]


def test_a_changed_upstream_output_reruns_what_reads_it(ws, base):
    knn = ws.path("index/patient_knn.parquet")
    table = pd.read_parquet(knn)
    table["score"] = table["score"] * 0.5
    table.to_parquet(knn, index=False)
    assert run(ws, base, stages="graph") == ["graph: done"]  # it loads the kNN table
    assert run(ws, base, stages="index") == ["index: done"]  # it wrote the kNN table


# -- read-only use ----------------------------------------------------------------------------

def test_reading_the_workspace_changes_no_file(ws, base):
    from embed.similar import similar_patients
    from graphdb import open_store

    before = tree_digest(ws.root)
    with open_store(ws.path("graph"), read_only=True) as store:
        assert store.stats()
    patient = ws.table("patients")["patient_id"].iloc[0]
    assert len(similar_patients(ws, patient, k=3)) == 3
    assert tree_digest(ws.root) == before
    assert not any(ws.changed_outputs(s) for s in ("ingest", "embed", "index", "graph",
                                                   "discover"))


def test_the_graph_record_holds_the_hash_after_write_back(base):
    ws = Workspace(base.root)
    graph, discover = ws.stage_record("graph"), ws.stage_record("discover")
    assert "pending" not in graph and not ws.changed_outputs("graph")
    assert discover["summary"]["graph"]["Cluster"] > 0  # the results are in that graph
    assert graph["output_hashes"]["graph"] == content_sha256(ws.path("graph"))


# -- who may read the files -------------------------------------------------------------------

def _modes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root.parent)): oct(stat.S_IMODE(p.stat().st_mode))
            for p in [root, *root.rglob("*")]}


def test_workspace_is_private_to_its_owner(base):
    modes = _modes(base.root)
    assert {p: m for p, m in modes.items()
            if m != ("0o700" if (base.root.parent / p).is_dir() else "0o600")} == {}


def test_atomic_writes_are_private_under_any_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "new" / "deep" / "t.parquet")
        with atomic_path(tmp_path / "new" / "f.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "new" / "d") as tmp:
            (tmp / "inner").mkdir()
            (tmp / "inner" / "x.parquet").write_text("y")
    finally:
        os.umask(old)
    assert set(_modes(tmp_path / "new").values()) == {"0o700", "0o600"}
    assert {m for p, m in _modes(tmp_path / "new").items()
            if (tmp_path / p).is_dir()} == {"0o700"}


def test_lock_file_and_new_workspace_are_private(tmp_path):
    ws = Workspace(tmp_path / "a" / "w")
    with ws.lock():
        ws.begin_stage("ingest")
    assert oct(stat.S_IMODE(ws.root.stat().st_mode)) == "0o700"
    assert oct(stat.S_IMODE(ws.path(LOCK_FILE).stat().st_mode)) == "0o600"
