"""Lesion crops as PNG data URIs."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from dashboards.images import CROP_PX, CropCache, field_of_view_mm, to_png_uri, window_of
from patientgraph.imaging import WINDOWS


def decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


@pytest.mark.parametrize("long_mm, size", [(5.0, 40.0), (30.0, 90.0), (120.0, 200.0),
                                           (None, 64.0), (float("nan"), 64.0)])
def test_field_of_view_scales_with_the_lesion(long_mm, size):
    assert field_of_view_mm(long_mm) == size


def test_window_is_the_lesions_own_or_soft_tissue():
    assert window_of({"window_lo": -100.0, "window_hi": 200.0}) == (-100.0, 200.0)
    assert window_of({"window_lo": None, "window_hi": 200.0}) == WINDOWS["soft_tissue"]
    assert window_of({}) == WINDOWS["soft_tissue"]


def test_png_uri_maps_the_window_to_grey_levels():
    hu = np.array([[-1000.0, 0.0], [40.0, 2000.0]])
    pixels = decode(to_png_uri(hu, (-160.0, 240.0)))
    assert pixels.tolist() == [[0, 102], [127, 255]]


def test_crop_cache_reads_each_lesion_once(workspace):
    lesions = workspace.table("lesions")
    cache = CropCache(workspace, lesions, size=2)
    first = lesions["lesion_id"].iloc[0]
    uri = cache.uri(first)
    assert decode(uri).shape == (CROP_PX, CROP_PX)
    assert cache.uri(first) is uri
    assert cache.uri("no-such-lesion") is None
    for lesion_id in lesions["lesion_id"].iloc[1:4]:
        cache.uri(lesion_id)
    assert len(cache._cache) == 2
