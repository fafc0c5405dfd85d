"""The command line: help for every command, exit codes, stage selection."""

from __future__ import annotations

import pytest

from tests.conftest import MINI, ingest_args, run_cli

COMMANDS = [[], ["synth"], ["ingest"], ["ingest", "deeplesion"], ["ingest", "table"],
            ["run"], ["info"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help(cmd):
    res = run_cli(*cmd, "--help")
    assert res.returncode == 0, res.stderr
    assert "Usage" in res.stdout


def test_contract_flags_are_present():
    text = run_cli("ingest", "deeplesion", "--help").stdout
    for flag in ("--info", "--images", "--records", "--outcomes", "--time-col", "--event-col",
                 "--workspace"):
        assert flag in text
    text = run_cli("synth", "--help").stdout
    assert "--patients" in text and "--seed" in text
    text = run_cli("run", "--help").stdout
    assert "--stages" in text and "--graph" in text and "--force" in text


def test_run_needs_an_ingested_workspace(tmp_path):
    res = run_cli("run", "--workspace", tmp_path / "empty")
    assert res.returncode == 2
    assert "ingest" in res.stderr and "Fix:" in res.stderr


def test_run_rejects_unknown_stage_with_suggestion(tmp_path):
    ws = tmp_path / "ws"
    assert run_cli(*ingest_args(MINI, ws)).returncode == 0
    res = run_cli("run", "--workspace", ws, "--stages", "embd")
    assert res.returncode == 2
    assert "Did you mean 'embed'?" in res.stderr


def test_missing_info_file(tmp_path):
    res = run_cli("ingest", "deeplesion", "--info", tmp_path / "nope.csv", "--images",
                  tmp_path, "--workspace", tmp_path / "ws")
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert not (tmp_path / "ws").exists()


def test_synth_workers_give_the_same_files(tmp_path):
    from tests.conftest import tree_digest

    for workers in (1, 2):
        res = run_cli("synth", tmp_path / f"w{workers}", "--patients", "3", "--seed", "4",
                      "--image-size", "64", "--workers", workers)
        assert res.returncode == 0, res.stderr
    assert tree_digest(tmp_path / "w1") == tree_digest(tmp_path / "w2")
    res = run_cli("synth", tmp_path / "w0", "--patients", "3", "--workers", "0")
    assert res.returncode == 2 and not (tmp_path / "w0").exists()
