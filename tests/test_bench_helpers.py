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
