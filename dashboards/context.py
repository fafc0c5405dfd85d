"""The explorer's per-process state: the loaded data, crop cache and cached similarity.

Callbacks get one :class:`Explorer`; everything on it is read-only after start-up or guarded
by a lock, because the web server answers from several threads.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, TypeVar

import pandas as pd

from dashboards.data import ExplorerData
from dashboards.images import CropCache
from dashboards.similar import Neighbours, PatientSimilarity
from patientgraph.errors import InputError

log = logging.getLogger("patientgraph.explorer")
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
_MISSING = object()
WARM_AFTER_S = 10.0
"""The longest the warm-up waits for the first page before it starts anyway."""


class Explorer:
    """Data and services shared by the pages of one app."""

    def __init__(self, data: ExplorerData):
        self.data = data
        self.crops = CropCache(data.workspace, data.lesions)
        self.neighbours = PatientSimilarity(data.workspace)
        self.has_index = self.neighbours.available
        self.first_page = threading.Event()
        self._warm_once = threading.Lock()
        self._warmed = False
        self._stopping = threading.Event()
        self._warm_thread: threading.Thread | None = None
        self._derived: dict[str, Any] = {}
        self._derive_lock = threading.Lock()

    def derived(self, name: str, build: Callable[[], T]) -> T:
        """A value derived from the read-only data, built once on first use (a lock keeps
        two threads from building it twice)."""
        value = self._derived.get(name, _MISSING)
        if value is _MISSING:
            with self._derive_lock:
                value = self._derived.get(name, _MISSING)
                if value is _MISSING:
                    value = self._derived[name] = build()
        return value

    def similar(self, patient_id: str, k: int = 10,
                weights: Mapping[str, float] | None = None) -> pd.DataFrame:
        """The ``k`` most similar patients with each modality's part (cached)."""
        return self.similar_answer(patient_id, k, weights).frame

    def similar_answer(self, patient_id: str, k: int = 10,
                       weights: Mapping[str, float] | None = None) -> Neighbours:
        """:meth:`similar` without the DataFrame (the patient page's hot path)."""
        if not self.has_index:
            raise InputError(self.data.workspace.root, "the workspace has no vector index yet",
                             "run the index stage: patientgraph run --workspace W "
                             "--stages embed,index")
        return self.neighbours.query(str(patient_id), int(k), weights)

    def similar_ids(self, patient_id: str, k: int) -> list[str]:
        return list(self.similar_answer(patient_id, k).patient_ids)

    def warm_in_background(self, wait_s: float = WARM_AFTER_S) -> threading.Thread:
        """Load what the first clicks need (the patient index, the survival modules) in a
        thread that starts once the first page is answered (or after ``wait_s``), so the
        server answers its first page without waiting for them and a click seldom does."""

        def run() -> None:
            deadline = time.monotonic() + wait_s
            while not (self.first_page.is_set() or self._stopping.is_set()) \
                    and time.monotonic() < deadline:
                self._stopping.wait(0.1)
            if not self._stopping.is_set():
                self.warm()

        thread = threading.Thread(target=run, name="explorer-warm-up", daemon=True)
        thread.start()
        self._warm_thread = thread
        # At exit, stop it or let its import finish before the interpreter is torn down: a
        # daemon thread caught mid-import by the shutdown can hang the process (Ctrl+C).
        atexit.register(self.stop_warming)
        return thread

    def stop_warming(self, timeout_s: float = 30.0) -> None:
        """Keep the warm-up from starting, or wait (at most ``timeout_s``) for it to end."""
        self._stopping.set()
        if self._warm_thread is not None:
            self._warm_thread.join(timeout_s)

    def warm(self) -> None:
        """Import the survival modules and read the patient index now (once)."""
        with self._warm_once:
            if self._warmed:
                return
            self._warmed = True
            try:
                _warm_imports()
                if self.has_index:
                    self.neighbours.load()
            except Exception as exc:  # noqa: BLE001 - a click reports the problem itself
                log.warning("warm-up stopped: %s", type(exc).__name__)


def _warm_imports() -> None:
    """Import the modules the survival and cohort callbacks need (lifelines, scipy.stats)."""
    import importlib.util

    if importlib.util.find_spec("discovery.survival") is not None:
        import discovery.survival  # noqa: F401
    import lifelines  # noqa: F401

    import dashboards.survival  # noqa: F401


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
