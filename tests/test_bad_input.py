"""Every broken input of the corpus (tests/data/bad) gives exit code 2, one message naming
the file, row and column and the fix, and leaves the workspace exactly as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import DATA, ingest_args, run_cli, tree_digest

CASES = sorted(p.name for p in (DATA / "bad").iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    """A workspace holding a good ingest of the mini archive."""
    ws = tmp_path_factory.mktemp("good") / "ws"
    res = run_cli(*ingest_args(DATA / "deeplesion_mini", ws))
    assert res.returncode == 0, res.stderr
    return ws


def broken_archive(case: str, dst: Path) -> tuple[Path, dict]:
    """The valid archive with the case's files laid over it."""
    shutil.copytree(DATA / "deeplesion_mini", dst)
    case_dir = DATA / "bad" / case
    expect = json.loads((case_dir / "case.json").read_text())
    for src in case_dir.rglob("*"):
        if src.is_file() and src.name != "case.json":
            target = dst / src.relative_to(case_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
    if "delete" in expect:
        (dst / expect["delete"]).unlink()
    return dst, expect


def test_corpus_covers_the_issue_list():
    wanted = {"missing_column", "malformed_coordinates", "bbox_outside_image",
              "wrong_image_size", "png_8bit", "png_missing", "png_corrupt", "duplicate_rows",
              "records_unknown_patient", "negative_time", "event_not_binary",
              "non_numeric_age"}
    assert wanted <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_cleanly(case: str, tmp_path: Path, ingested: Path):
    archive, expect = broken_archive(case, tmp_path / "archive")
    ws = tmp_path / "ws"
    shutil.copytree(ingested, ws)
    before = tree_digest(ws)

    res = run_cli(*ingest_args(archive, ws), "--force")

    assert res.returncode == 2, res.stdout + res.stderr
    message = " ".join(res.stderr.split())
    assert "Traceback" not in res.stderr
    assert expect["file"] in message
    if "row" in expect:
        assert f"row {expect['row']} (line {expect['row'] + 2})" in message
    assert f"column '{expect['column']}'" in message
    assert "Fix:" in message
    if "mention" in expect:
        assert expect["mention"] in message
    assert tree_digest(ws) == before, "the workspace changed"


@pytest.mark.parametrize("case", ["png_corrupt", "records_unknown_patient"])
def test_bad_input_creates_no_workspace(case: str, tmp_path: Path):
    archive, _ = broken_archive(case, tmp_path / "archive")
    ws = tmp_path / "new_ws"
    res = run_cli(*ingest_args(archive, ws))
    assert res.returncode == 2
    assert not ws.exists()
