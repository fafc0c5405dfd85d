"""Similar patients for the explorer: the patient index held in memory, scored exactly.

The explorer answers the same question as :func:`embed.similar.similar_patients` (score
``sum_m w_m cos_m``, one contribution per modality) but many times a second from several
threads. So the index's vectors are read once per process into one matrix per modality,
and each question is a few matrix-vector products and a partial sort, with no FAISS search
and no pandas on the way. Scores are exact: the same as a ``Flat`` index gives (the index
the embed stage builds for any cohort up to :data:`embed.index.EXACT_MAX` patients).

Only :mod:`embed.index` (FAISS), :mod:`embed.fusion` and :mod:`embed.outputs` are
imported, never :mod:`embed.stage`, which imports torch: serving needs no deep-learning
stack.

The index is read again when its file is replaced (the index stage writes by rename), so a
rebuilt index is not answered from stale vectors for more than :data:`RECHECK_S`.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dashboards.cache import LRU
from embed.fusion import MODALITIES, resolve_weights, split_parts
from embed.outputs import PATIENTS, default_weights
from patientgraph.errors import InputError
from patientgraph.workspace import Workspace

INDEX_FILE = ("index", "patients.faiss")
RECHECK_S = 1.0
"""How often the index file's stamp is looked at again: a replaced index is read within a
second, and a busy server does not ask the file system on every request."""
RESULTS_CACHE = 2048
"""Answers kept per process: a user who goes back and forth between patients, or changes
the weight back, is answered at once; a few MB at most."""


@dataclass(frozen=True)
class Neighbours:
    """One answer: ids best first, their scores and each modality's part of the score."""

    patient_ids: tuple[str, ...]
    scores: np.ndarray
    parts: Mapping[str, np.ndarray]

    @functools.cached_property
    def frame(self) -> pd.DataFrame:
        """As :func:`embed.similar.similar_patients` returns it (built once, then shared:
        read it, do not change it)."""
        return pd.DataFrame({"patient_id": list(self.patient_ids), "score": self.scores,
                             **{m: self.parts[m] for m in MODALITIES}})


class _Loaded:
    """The vectors of one version of the index file."""

    def __init__(self, ws: Workspace, stamp: tuple[int, int]):
        from embed.index import VectorIndex

        self.stamp = stamp
        folder = ws.path(INDEX_FILE[0])
        try:
            index = VectorIndex.load(folder, "patients")
        except InputError:
            raise
        except (RuntimeError, ValueError, OSError, KeyError, TypeError) as exc:
            raise InputError(folder / INDEX_FILE[1], "the vector index is damaged or foreign "
                             f"({type(exc).__name__})", ws.rerun_fix("index")) from None
        self.ids = np.asarray([str(i) for i in index.ids], dtype=object)
        self.position = {pid: n for n, pid in enumerate(self.ids)}
        meta = pd.read_parquet(ws.path(PATIENTS), columns=["patient_id", *MODALITIES])
        dims = {m: len(meta[m].iloc[0]) for m in MODALITIES}
        self.default_weights = default_weights(meta)
        vectors = np.ascontiguousarray(index.vectors(), dtype=np.float32)
        self.parts = {m: np.ascontiguousarray(p)
                      for m, p in split_parts(vectors, dims).items()}


class PatientSimilarity:
    """Exact similar-patient search over a workspace's patient index, with a bounded LRU
    of answers (``cache`` entries; 0 keeps none). The index file is looked at again at
    most every ``recheck_s`` seconds. Safe to call from several threads."""

    def __init__(self, workspace: Workspace, cache: int = RESULTS_CACHE,
                 recheck_s: float = RECHECK_S):
        self.workspace = workspace
        self.recheck_s = float(recheck_s)
        self._checked = -math.inf
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._answers: LRU[Neighbours] = LRU(cache)

    @property
    def available(self) -> bool:
        return self.workspace.path(*INDEX_FILE).exists()

    def cached(self) -> int:
        """How many answers are kept now."""
        return len(self._answers)

    def load(self) -> None:
        """Read the index now (the server calls this once it answers, not on a click)."""
        self._current()

    def _current(self) -> _Loaded:
        loaded = self._loaded
        now = time.monotonic()
        if loaded is not None and now - self._checked < self.recheck_s:
            return loaded
        path = self.workspace.path(*INDEX_FILE)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise InputError(self.workspace.root, "the workspace has no vector index yet",
                             "run the index stage: patientgraph run --workspace W "
                             "--stages embed,index") from None
        stamp = (st.st_mtime_ns, st.st_ino)
        with self._lock:
            if self._loaded is None or self._loaded.stamp != stamp:
                self._loaded = _Loaded(self.workspace, stamp)
                self._answers.clear()  # answers of the replaced index are stale
            self._checked = now
            return self._loaded

    def query(self, patient_id: str, k: int = 10,
              weights: Mapping[str, float] | None = None) -> Neighbours:
        """The ``k`` patients most similar to ``patient_id``, itself left out, best first."""
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise InputError(None, f"k is {k!r}", "ask for k >= 1 neighbours")
        loaded = self._current()
        patient_id = str(patient_id)
        at = loaded.position.get(patient_id)
        if at is None:
            from patientgraph.schema import unknown_id

            raise unknown_id(patient_id, loaded.ids, "patient_id")
        w = resolve_weights(weights, loaded.default_weights)
        key = (loaded.stamp, patient_id, int(k), tuple(w[m] for m in MODALITIES))
        return self._answers.get_or_make(
            key, lambda: _search(loaded, at, min(int(k), len(loaded.ids) - 1), w))


def _search(loaded: _Loaded, at: int, k: int, w: Mapping[str, float]) -> Neighbours:
    parts = {m: w[m] * (p @ p[at]) for m, p in loaded.parts.items()}
    score = np.sum([parts[m] for m in MODALITIES], axis=0)
    score[at] = -np.inf
    if k <= 0:
        best = np.zeros(0, np.int64)
    else:
        top = np.argpartition(-score, k - 1)[:k] if k < len(score) else np.arange(len(score))
        best = top[np.lexsort((top, -score[top]))]  # best first; ties by index position
        best = best[np.isfinite(score[best])]
    return Neighbours(tuple(loaded.ids[best]), score[best].astype(np.float64),
                      {m: parts[m][best].astype(np.float64) for m in MODALITIES})
