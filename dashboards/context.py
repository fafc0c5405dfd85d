"""The explorer's per-process state: the loaded data, crop cache and cached similarity.

Callbacks get one :class:`Explorer`; everything on it is read-only after start-up or guarded
by a lock, because the web server answers from several threads.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, TypeVar

import pandas as pd

from dashboards.data import ExplorerData
from dashboards.images import CropCache
from patientgraph.errors import InputError

log = logging.getLogger("patientgraph.explorer")
F = TypeVar("F", bound=Callable[..., Any])
SIMILAR_CACHE = 2048


class Explorer:
    """Data and services shared by the pages of one app."""

    def __init__(self, data: ExplorerData):
        self.data = data
        self.crops = CropCache(data.workspace, data.lesions)
        self._similar: OrderedDict[tuple, pd.DataFrame] = OrderedDict()
        self._lock = threading.Lock()
        self.has_index = data.workspace.path("index", "patients.faiss").exists()
        _warm_imports(self.has_index)

    def similar(self, patient_id: str, k: int = 10,
                weights: Mapping[str, float] | None = None) -> pd.DataFrame:
        """The ``k`` most similar patients with each modality's part (cached)."""
        from embed.similar import similar_patients

        key = (str(patient_id), int(k), tuple(sorted((weights or {}).items())))
        with self._lock:
            if key in self._similar:
                self._similar.move_to_end(key)
                return self._similar[key]
        if not self.has_index:
            raise InputError(self.data.workspace.root, "the workspace has no vector index yet",
                             "run the index stage: patientgraph run --workspace W "
                             "--stages embed,index")
        table = similar_patients(self.data.workspace, str(patient_id), k=int(k),
                                 weights=dict(weights) if weights else None)
        with self._lock:
            self._similar[key] = table
            if len(self._similar) > SIMILAR_CACHE:
                self._similar.popitem(last=False)
        return table

    def similar_ids(self, patient_id: str, k: int) -> list[str]:
        return self.similar(patient_id, k)["patient_id"].astype(str).tolist()


def _warm_imports(has_index: bool) -> None:
    """Import the heavy modules now (seconds: torch, lifelines), not on a user's first click."""
    import importlib.util

    if has_index:
        import embed.similar  # noqa: F401
    if importlib.util.find_spec("discovery.survival") is not None:
        import discovery.survival  # noqa: F401
    import lifelines  # noqa: F401


def guarded(name: str, on_error: Callable[[str], Any]) -> Callable[[F], F]:
    """Turn a callback's failure into ``on_error(message)`` on the page.

    A user's mistake (InputError) shows its message. Anything else shows a short notice and
    is logged with its type and stack but not its message, which could carry patient data.
    """

    def decorate(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except InputError as exc:
                return on_error(exc.message)
            except Exception as exc:  # noqa: BLE001 - a page must keep working
                if type(exc).__name__ == "PreventUpdate":
                    raise
                stack = "".join(traceback.format_tb(exc.__traceback__))
                log.error("callback %s failed: %s\n%s", name, type(exc).__name__, stack)
                return on_error(f"Something went wrong ({type(exc).__name__}); "
                                "the server log has the details.")

        return wrapper  # type: ignore[return-value]

    return decorate
