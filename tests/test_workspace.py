"""Workspace, manifest and atomic writes."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from patientgraph.atomic import atomic_dir, atomic_path, write_parquet
from patientgraph.errors import InputError
from patientgraph.workspace import Workspace, fingerprint, listing_sha256


def test_atomic_path_leaves_old_file_on_crash(tmp_path):
    target = tmp_path / "t.parquet"
    write_parquet(pd.DataFrame({"a": [1]}), target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert pd.read_parquet(target)["a"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temp left


def test_atomic_dir_swaps_whole_folder(tmp_path):
    target = tmp_path / "cohort"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(ValueError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("2")
        raise ValueError
    assert (target / "a.txt").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


def test_manifest_records_and_skips(tmp_path):
    ws = Workspace(tmp_path / "w")
    assert ws.manifest() == {"stages": {}}
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "out.txt").write_text("x")
    ws.record_stage("embed", config={"dim": 128}, inputs={"lesions": "abc"},
                    outputs=["out.txt"], seconds=1.5, summary={"n": 3})
    rec = ws.stage_record("embed")
    assert rec["config"] == {"dim": 128} and rec["seconds"] == 1.5
    assert "numpy" in rec["versions"] and "python" in rec["versions"]
    assert ws.is_current("embed", fingerprint({"dim": 128}, {"lesions": "abc"}))
    assert not ws.is_current("embed", fingerprint({"dim": 64}, {"lesions": "abc"}))
    assert not ws.is_current("embed", fingerprint({"dim": 128}, {"lesions": "abd"}))
    (tmp_path / "w" / "out.txt").unlink()  # a lost output forces a rerun
    assert not ws.is_current("embed", fingerprint({"dim": 128}, {"lesions": "abc"}))


def test_stage_run_skips_only_when_current(tmp_path):
    ws = Workspace(tmp_path / "w")
    stage = ws.start_stage("index", {"k": 5}, {"emb": "h1"})
    assert stage.skip() is None  # never ran
    ws.path().mkdir()
    ws.path("out.txt").write_text("x")
    done = stage.finish(["out.txt"], {"edges": 10})
    assert done == {"edges": 10, "skipped": False}
    rec = ws.stage_record("index")
    assert rec["config"] == {"k": 5} and rec["inputs"] == {"emb": "h1"}
    assert rec["seconds"] >= 0 and rec["output_hashes"]["out.txt"]
    assert ws.start_stage("index", {"k": 5}, {"emb": "h1"}).skip() == {"edges": 10,
                                                                       "skipped": True}
    assert ws.start_stage("index", {"k": 5}, {"emb": "h1"}).skip(force=True) is None
    assert ws.start_stage("index", {"k": 6}, {"emb": "h1"}).skip() is None
    assert ws.start_stage("index", {"k": 5}, {"emb": "h2"}).skip() is None
    ws.path("out.txt").write_text("changed")
    assert ws.start_stage("index", {"k": 5}, {"emb": "h1"}).skip() is None
    assert Workspace.of(ws) is ws and Workspace.of(tmp_path / "w").root == ws.root


def test_corrupt_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="manifest is not valid JSON"):
        Workspace(tmp_path).manifest()


def test_listing_hash_sees_changed_and_missing_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"1")
    h1 = listing_sha256(tmp_path, ["a.png"])
    assert listing_sha256(tmp_path, ["a.png"]) == h1
    (tmp_path / "a.png").write_bytes(b"22")
    assert listing_sha256(tmp_path, ["a.png"]) != h1
    assert listing_sha256(tmp_path, ["b.png"]) != listing_sha256(tmp_path, ["a.png"])


def test_missing_table_names_the_fix(tmp_path):
    with pytest.raises(InputError, match="ingest"):
        Workspace(tmp_path).table("lesions")


def test_fingerprint_is_order_independent():
    assert fingerprint({"a": 1, "b": 2}, {}) == fingerprint(json.loads('{"b": 2, "a": 1}'), {})
