"""Rendering a lesion's key slice with its box."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from patientgraph import InputError, Workspace, ingest_deeplesion
from patientgraph.render import BOX_COLOUR, SELECTED_COLOUR, render_lesion

# the two lesions of the mini archive's slice 000001_01_01_012
FIRST, SECOND = "000001_01_01_012_0", "000001_01_01_012_1"


@pytest.fixture
def ws(tmp_path, mini) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ingest_deeplesion(mini / "DL_info.csv", mini / "Images_png", ws)
    return ws


def _bottom_edge(ws: Workspace, lesion_id: str, img: np.ndarray) -> tuple[int, ...]:
    """The colour in the middle of the bottom edge of ``lesion_id``'s box (scale 1)."""
    lesions = ws.table("lesions").set_index("lesion_id")
    x1, _, x2, y2 = lesions.loc[lesion_id, "bbox"]
    return tuple(img[int(y2), int((x1 + x2) / 2)])


def test_box_is_drawn_where_the_lesion_is(tmp_path, ws):
    out = render_lesion(ws, FIRST, tmp_path / "l.png", scale=1)
    img = np.asarray(Image.open(out))
    assert img.shape == (64, 64, 3)
    assert _bottom_edge(ws, FIRST, img) == SELECTED_COLOUR
    # inside the box the lesion (120 HU) is brighter than the tissue around it (40 HU)
    cx, cy = ws.table("lesions").loc[0, ["center_x", "center_y"]]
    assert img[int(cy) + 2, int(cx) + 2, 1] > img[int(cy) + 15, int(cx) + 2, 1]
    with pytest.raises(InputError, match="no lesion"):
        render_lesion(ws, "nope", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("chosen, other", [(FIRST, SECOND), (SECOND, FIRST)])
def test_the_requested_lesion_is_set_apart_from_the_others_on_its_slice(tmp_path, ws, chosen,
                                                                        other):
    img = np.asarray(Image.open(render_lesion(ws, chosen, tmp_path / "l.png", scale=1)))
    assert _bottom_edge(ws, chosen, img) == SELECTED_COLOUR
    assert _bottom_edge(ws, other, img) == BOX_COLOUR
    # the chosen box is the thicker one: two pixels inside its edge are still box
    lesions = ws.table("lesions").set_index("lesion_id")
    x1, _, x2, y2 = lesions.loc[chosen, "bbox"]
    assert tuple(img[int(y2) - 1, int((x1 + x2) / 2)]) == SELECTED_COLOUR
    # and it is labelled: a run of the selected colour beyond its box (the lesion_id)
    x1, y1, x2, y2 = lesions.loc[chosen, "bbox"]
    mask = np.all(img == SELECTED_COLOUR, axis=-1)
    mask[int(y1) - 1:int(y2) + 2, int(x1) - 1:int(x2) + 2] = False
    assert mask.sum() > 10
