"""Lesion crops: windows as imaging defines them, parallel reading, failures reported."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from embed.config import FAST
from embed.crops import (
    CACHE_KEEP,
    METADATA,
    CTWindows,
    cached_crops,
    lesion_locations,
    lesion_metadata,
    read_crops,
    series_order,
    window_bounds,
)
from patientgraph.imaging import apply_windows, lesion_crop


def test_ct_windows_match_imaging_apply_windows():
    hu = np.random.default_rng(0).uniform(-1200, 1500, size=(2, 3, 8, 8)).astype(np.float32)
    windows = ("lung", "soft_tissue", (-100.0, 300.0))
    ours = CTWindows(windows)(torch.from_numpy(hu)).numpy()
    for b in range(2):
        for s in range(3):
            expected = apply_windows(hu[b, s], windows)
            assert ours[b, 3 * s:3 * s + 3] == pytest.approx(expected, abs=1e-6)


def test_unknown_window_suggests_a_name():
    with pytest.raises(ValueError, match="Did you mean 'soft_tissue'"):
        window_bounds(["soft_tisue"])


def test_read_crops_in_table_order(ingested):
    lesions = ingested.table("lesions")
    crops = read_crops(lesions, ingested.image_root(), FAST.crop, workers=2)
    assert crops.hu.shape == (len(lesions), 4, 32, 32) and crops.hu.dtype == np.float16
    assert not crops.problems and crops.ok.all()
    expected = lesion_crop(lesions.iloc[5], ingested.image_root(), size_mm=64.0, out_px=32)
    assert crops.hu[5, :3].astype(np.float32) == pytest.approx(expected, abs=1.0)


def test_context_view_is_a_wider_view_of_the_key_slice(ingested):
    lesions = ingested.table("lesions").head(4)
    same = dataclasses.replace(FAST.crop, context_mm=FAST.crop.size_mm)
    crops = read_crops(lesions, ingested.image_root(), same, workers=0)
    assert crops.hu.shape == (4, 4, 32, 32)
    # a context view as wide as the crop is its key (middle) slice
    assert crops.hu[:, 3] == pytest.approx(crops.hu[:, 1], abs=1.0)
    wide = read_crops(lesions, ingested.image_root(),
                      dataclasses.replace(FAST.crop, context_mm=4 * FAST.crop.size_mm), workers=0)
    assert wide.hu[:, :3] == pytest.approx(crops.hu[:, :3])
    expected = lesion_crop(lesions.iloc[0], ingested.image_root(), size_mm=256.0, out_px=32,
                           n_slices=1)
    assert wide.hu[0, 3].astype(np.float32) == pytest.approx(expected[0], abs=1.0)


def test_unreadable_image_is_reported_not_fatal(ingested, tmp_path):
    lesions = ingested.table("lesions").head(6).copy()
    lesions.loc[2, "series_ref"] = "missing_series"
    progress = []
    crops = read_crops(lesions, ingested.image_root(), FAST.crop, workers=0,
                       progress=lambda done, total: progress.append((done, total)))
    assert list(crops.problems) == [2] and "does not exist" in crops.problems[2]
    assert crops.ok.tolist() == [True, True, False, True, True, True]
    failures = crops.failures(lesions)
    assert failures["lesion_id"].tolist() == [lesions.loc[2, "lesion_id"]]
    assert progress[-1] == (6, 6)


def test_series_order_groups_series():
    lesions = pd.DataFrame({"series_ref": ["b", "a", "b", "a"], "key_slice": [5, 9, 2, 1]})
    assert series_order(lesions).tolist() == [3, 1, 2, 0]


def test_lesion_locations_nan_when_absent():
    table = pd.DataFrame({"loc_x": [0.1, None], "loc_y": [0.2, 0.3], "loc_z": [0.3, 0.4]})
    loc = lesion_locations(table)
    assert loc.dtype == np.float32 and np.isnan(loc[1, 0])
    assert np.isnan(lesion_locations(pd.DataFrame({"x": [1]}))).all()


def test_lesion_metadata_is_location_then_reading_window():
    table = pd.DataFrame({"loc_x": [0.1, 0.5], "loc_y": [0.2, 0.3], "loc_z": [0.3, 0.4],
                          "window_lo": [-1350.0, None], "window_hi": [150.0, None]})
    meta = lesion_metadata(table)
    assert meta.shape == (2, len(METADATA)) and meta.dtype == np.float32
    np.testing.assert_allclose(meta[0], [0.1, 0.2, 0.3, -1350, 150], rtol=1e-6)
    assert np.isnan(meta[1, 3:]).all() and np.isfinite(meta[1, :3]).all()
    # an archive without reading windows (e.g. a NIfTI table): location only
    no_windows = lesion_metadata(table.drop(columns=["window_lo", "window_hi"]))
    assert np.isnan(no_windows[:, 3:]).all()
    np.testing.assert_array_equal(no_windows[:, :3], meta[:, :3])


def _reads_counted(monkeypatch) -> list[int]:
    """Count the lesions read from images (through embed.crops.read_crops)."""
    import embed.crops as crops_module

    calls, real = [], crops_module.read_crops

    def counting(lesions, *args, **kwargs):
        calls.append(len(lesions))
        return real(lesions, *args, **kwargs)

    monkeypatch.setattr(crops_module, "read_crops", counting)
    return calls


def test_cached_crops_are_read_once_and_equal_a_fresh_read(ingested, tmp_path, monkeypatch):
    lesions = ingested.table("lesions").head(10).copy()
    lesions.loc[3, "series_ref"] = "missing_series"
    inputs = {"images": "img-1", "lesions": "les-1"}
    calls = _reads_counted(monkeypatch)
    first, hit1 = cached_crops(lesions, ingested.image_root(), FAST.crop, tmp_path / "cache",
                               inputs, workers=0)
    second, hit2 = cached_crops(lesions, ingested.image_root(), FAST.crop, tmp_path / "cache",
                                inputs, workers=0)
    assert (hit1, hit2) == (False, True) and calls == [10]
    assert np.array_equal(second.hu, first.hu) and second.hu.dtype == np.float16
    assert second.problems == first.problems and list(second.problems) == [3]
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700


def test_cached_crops_follow_the_settings_and_inputs(ingested, tmp_path, monkeypatch):
    lesions = ingested.table("lesions").head(4)
    calls = _reads_counted(monkeypatch)
    folder, root = tmp_path / "cache", ingested.image_root()
    cached_crops(lesions, root, FAST.crop, folder, {"images": "a", "lesions": "b"}, workers=0)
    # other images, another lesion table, other crop settings: each reads again
    cached_crops(lesions, root, FAST.crop, folder, {"images": "a2", "lesions": "b"}, workers=0)
    cached_crops(lesions, root, FAST.crop, folder, {"images": "a2", "lesions": "b2"}, workers=0)
    wider = dataclasses.replace(FAST.crop, size_mm=80.0)
    out, hit = cached_crops(lesions, root, wider, folder, {"images": "a2", "lesions": "b2"},
                            workers=0)
    assert calls == [4, 4, 4, 4] and not hit and out.hu.shape == (4, 4, 32, 32)
    assert len(list(folder.glob("crops-*.npz"))) == CACHE_KEEP  # the oldest were removed
    # the most recently used file is kept; the first key's file is gone and reads again
    cached_crops(lesions, root, FAST.crop, folder, {"images": "a", "lesions": "b"}, workers=0)
    assert calls == [4, 4, 4, 4, 4]


def test_a_damaged_cache_file_is_read_afresh(ingested, tmp_path, monkeypatch):
    lesions = ingested.table("lesions").head(3)
    inputs = {"images": "a", "lesions": "b"}
    calls = _reads_counted(monkeypatch)
    fresh, _ = cached_crops(lesions, ingested.image_root(), FAST.crop, tmp_path, inputs,
                            workers=0)
    (path,) = tmp_path.glob("crops-*.npz")
    path.write_bytes(path.read_bytes()[:100])  # truncated
    again, hit = cached_crops(lesions, ingested.image_root(), FAST.crop, tmp_path, inputs,
                              workers=0)
    assert not hit and calls == [3, 3] and np.array_equal(again.hu, fresh.hu)
    assert cached_crops(lesions, ingested.image_root(), FAST.crop, tmp_path, inputs,
                        workers=0)[1]
