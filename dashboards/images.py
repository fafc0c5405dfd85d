"""Lesion crops as small PNG images (data URIs) for hover cards and the patient gallery.

The crop is the key slice around the lesion centre, a field of view that scales with the
lesion (three times its long diameter, 40 to 200 mm), shown under the lesion's own DICOM
window when the table has one, else the soft-tissue window. Crops are cached per lesion;
reads go through one lock because the image readers' slice caches are not thread-safe.
"""

from __future__ import annotations

import base64
import io
import threading
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
from PIL import Image

from patientgraph.errors import InputError
from patientgraph.workspace import Workspace

CROP_PX = 96
CACHE_SIZE = 4096


def field_of_view_mm(long_mm: float | None) -> float:
    """Side of the square crop in mm: 3 x the long diameter, within 40..200 mm."""
    try:
        size = 3.0 * float(long_mm)
    except (TypeError, ValueError):
        return 64.0
    return float(np.clip(size, 40.0, 200.0)) if np.isfinite(size) else 64.0


def window_of(row: Mapping) -> tuple[float, float]:
    """The lesion's DICOM window (window_lo, window_hi) or the soft-tissue window."""
    try:
        lo, hi = float(row.get("window_lo")), float(row.get("window_hi"))
        if np.isfinite(lo) and np.isfinite(hi) and lo < hi:
            return lo, hi
    except (TypeError, ValueError):
        pass
    from patientgraph.imaging import WINDOWS

    return WINDOWS["soft_tissue"]


def to_png_uri(hu: np.ndarray, window: tuple[float, float]) -> str:
    """A 2-D HU array under ``window`` as a ``data:image/png;base64,...`` URI."""
    lo, hi = window
    gray = (np.clip((np.asarray(hu, np.float32) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class CropCache:
    """Crop data URIs of a workspace's lesions, computed on demand and kept (LRU)."""

    def __init__(self, workspace: Workspace, lesions, size: int = CACHE_SIZE):
        self.root = workspace.image_root()
        self.rows = lesions.set_index("lesion_id", drop=False)
        self.size = size
        self._cache: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def uri(self, lesion_id: str) -> str | None:
        """The crop of ``lesion_id``, or None when its image cannot be read."""
        with self._lock:
            if lesion_id in self._cache:
                self._cache.move_to_end(lesion_id)
                return self._cache[lesion_id]
            uri = self._make(lesion_id)
            self._cache[lesion_id] = uri
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
            return uri

    def _make(self, lesion_id: str) -> str | None:
        if lesion_id not in self.rows.index:
            return None
        from patientgraph.imaging import lesion_crop  # scipy.ndimage: imported on first use

        row = self.rows.loc[lesion_id]
        try:
            hu = lesion_crop(row, self.root,
                             size_mm=field_of_view_mm(row.get("long_mm")), out_px=CROP_PX,
                             n_slices=1)
        except (InputError, OSError, ValueError, KeyError):  # shown as "no image"
            return None
        return to_png_uri(hu[0], window_of(row))
