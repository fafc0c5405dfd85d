"""Render a lesion's key slice under a CT window with its box and RECIST axes (8-bit PNG).

The requested lesion's box is drawn thicker in :data:`SELECTED_COLOUR` with its lesion_id
beside it; the other lesions of the same slice keep a thin :data:`BOX_COLOUR` box.

Used by ``patientgraph render`` and for the README figure; reads through
:mod:`patientgraph.imaging`, so DeepLesion, NIfTI and DICOM lesions render alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from patientgraph.atomic import atomic_path
from patientgraph.errors import InputError
from patientgraph.imaging import apply_windows, open_series
from patientgraph.workspace import Workspace

BOX_COLOUR = (255, 64, 64)
SELECTED_COLOUR = (255, 215, 0)
RECIST_COLOUR = (64, 200, 255)


def lesion_image(workspace: Workspace, lesion_id: str, *, window="soft_tissue",
                 scale: int = 2) -> Image.Image:
    """The key slice of ``lesion_id`` with every lesion box of that slice drawn on it, the
    box of ``lesion_id`` set apart (thicker, :data:`SELECTED_COLOUR`, labelled)."""
    lesions = workspace.table("lesions")
    row = lesions[lesions["lesion_id"] == lesion_id]
    if row.empty:
        raise InputError(workspace.root, f"no lesion {lesion_id!r} in this workspace",
                         "give a lesion_id from cohort/lesions.parquet")
    row = row.iloc[0]
    ref = Path(row["series_ref"])
    root = workspace.image_root()
    if root is not None and not ref.is_absolute():
        ref = root / ref
    hu = open_series(row["image_format"], ref).get_slice(int(row["key_slice"]))
    gray = (apply_windows(hu, [window])[0] * 255).astype(np.uint8)
    img = Image.fromarray(gray).convert("RGB")
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    same = lesions[(lesions["series_ref"] == row["series_ref"])
                   & (lesions["key_slice"] == row["key_slice"])]
    # the requested lesion last, so that its box lies on top of any box it overlaps
    same = same.assign(_chosen=same["lesion_id"] == lesion_id).sort_values(
        "_chosen", kind="stable")
    for _, other in same.iterrows():
        x1, y1, x2, y2 = (float(v) * scale for v in other["bbox"])
        if other["_chosen"]:
            draw.rectangle([x1, y1, x2, y2], outline=SELECTED_COLOUR, width=2 * max(1, scale))
            _label(draw, str(other["lesion_id"]), x1, y1, y2, img.size)
        else:
            draw.rectangle([x1, y1, x2, y2], outline=BOX_COLOUR, width=max(1, scale))
        recist = other.get("recist")
        if recist is not None and len(recist) == 8:
            p = [float(v) * scale for v in recist]
            draw.line(p[0:4], fill=RECIST_COLOUR, width=1)
            draw.line(p[4:8], fill=RECIST_COLOUR, width=1)
    return img


def _label(draw: ImageDraw.ImageDraw, text: str, x1: float, y1: float, y2: float,
           size: tuple[int, int]) -> None:
    """``text`` just above the box (below it when the box touches the top edge)."""
    draw.fontmode = "1"  # no anti-aliasing: the label keeps exactly its colour
    left, top, right, bottom = draw.textbbox((0, 0), text)
    height = bottom - top
    y = y1 - height - 3 if y1 - height - 3 >= 0 else min(y2 + 3, size[1] - height)
    x = min(max(0.0, x1), max(0.0, size[0] - (right - left)))
    draw.text((x, y - top), text, fill=SELECTED_COLOUR)


def render_lesion(workspace: str | Path | Workspace, lesion_id: str, out: str | Path,
                  **kw) -> Path:
    ws = Workspace.of(workspace)
    img = lesion_image(ws, lesion_id, **kw)
    with atomic_path(out, suffix=".png") as tmp:
        img.save(tmp, format="PNG")
    return Path(out)
