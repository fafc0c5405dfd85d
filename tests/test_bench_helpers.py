"""Small helpers of the benchmarks: the old-tree export and the embed lever options."""

from __future__ import annotations

import subprocess

import pytest

from benchmarks.bench_embed import _flatten, _merge, _merge_all, parse_option
from benchmarks.trees import REPO, export_tree


def test_export_tree_writes_the_committed_files_of_the_paths_asked(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout.strip()
    out = export_tree(head, tmp_path / "tree", ("embed",))
    assert sorted(p.name for p in out.iterdir()) == ["embed"]
    committed = subprocess.run(["git", "show", f"{head}:embed/config.py"], cwd=REPO,
                               check=True, capture_output=True).stdout
    assert (out / "embed" / "config.py").read_bytes() == committed


def test_export_tree_refuses_an_unknown_commit(tmp_path):
    with pytest.raises(subprocess.CalledProcessError):
        export_tree("0" * 40, tmp_path / "tree")


def test_lever_options_parse_nest_and_name_their_rows():
    options = _merge_all([parse_option("encoder.stem_stride=4"),
                          parse_option("crop.out_px=48"), parse_option("train.keep=best")])
    assert options == {"encoder": {"stem_stride": 4}, "crop": {"out_px": 48},
                       "train": {"keep": "best"}}
    assert _flatten(options) == [("crop.out_px", 48), ("encoder.stem_stride", 4),
                                 ("train.keep", "best")]
    seeded = _merge(options, {"train": {"seed": 2}})
    assert seeded["train"] == {"keep": "best", "seed": 2}
    assert options["train"] == {"keep": "best"}  # the merge copies


@pytest.mark.parametrize("text", ["encoder.stem_stride", "=4", ""])
def test_a_lever_option_without_key_and_value_is_refused(text):
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        parse_option(text)


def test_retired_explorer_metrics_are_listed_apart(tmp_path):
    import json

    from benchmarks.results import render

    rows = [("dashboards", "select patient p50"), ("dashboards", "select patient (HTTP) p50"),
            ("dashboards", "start: serve launch to first page"), ("embed", "select patient p50")]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps({
        "benchmark": b, "metric": m, "value": 1.0, "unit": "ms", "baseline_value": None,
        "ratio": None, "n": 1, "machine": {"cores": 2, "memory_gib": 1}, "commit": "abc",
        "date": "2026-12-07T00:00:00"}) + "\n" for b, m in rows))
    render(results, tmp_path / "RESULTS.md")
    today, _, old = (tmp_path / "RESULTS.md").read_text().partition("## Retired metrics")
    assert "| dashboards | select patient (HTTP) p50 |" in today
    assert "| dashboards | start: serve launch to first page |" in today
    assert "| embed | select patient p50 |" in today
    assert "| dashboards | select patient p50 |" in old
    assert "| dashboards | select patient p50 |" not in today
