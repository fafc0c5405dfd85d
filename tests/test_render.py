"""Rendering a lesion's key slice with its box."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from patientgraph import InputError, Workspace, ingest_deeplesion
from patientgraph.render import BOX_COLOUR, render_lesion


def test_box_is_drawn_where_the_lesion_is(tmp_path, mini):
    ws = Workspace(tmp_path / "ws")
    ingest_deeplesion(mini / "DL_info.csv", mini / "Images_png", ws)
    out = render_lesion(ws, "000001_01_01_012_0", tmp_path / "l.png", scale=1)
    img = np.asarray(Image.open(out))
    assert img.shape == (64, 64, 3)
    x1, y1, x2, y2 = ws.table("lesions").loc[0, "bbox"]
    assert tuple(img[int(y1), int((x1 + x2) / 2)]) == BOX_COLOUR
    # inside the box the lesion (120 HU) is brighter than the tissue around it (40 HU)
    cx, cy = ws.table("lesions").loc[0, ["center_x", "center_y"]]
    assert img[int(cy) + 2, int(cx) + 2, 1] > img[int(cy) + 15, int(cx) + 2, 1]
    with pytest.raises(InputError, match="no lesion"):
        render_lesion(ws, "nope", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
