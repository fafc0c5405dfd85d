"""Synthetic test workspaces built once and kept on disk, keyed by content.

A session fixture that runs the pipeline on a synthetic cohort (a minute or more) asks
:func:`cached` for a folder: it is built once per key, under a file lock (so the two
pytest-xdist workers, or two sessions, never build it twice at once) and reused by later
sessions until the key changes. The key hashes the fixture's name and parameters, every
source file of the packages that build it and the versions of the libraries whose results
go into it, so an edit to the code or an upgrade builds a fresh one.

The folders are read-only by contract, as the session fixtures always were: a test that
changes a workspace copies it first. ``PATIENTGRAPH_TEST_CACHE`` moves the cache
(default ``~/.cache/patientgraph/test-workspaces``); ``PATIENTGRAPH_TEST_CACHE=off`` builds
into the session's temporary folder every time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("patientgraph", "embed", "graphdb", "discovery")
LIBRARIES = ("numpy", "pandas", "pyarrow", "torch", "monai", "faiss-cpu", "scikit-learn",
             "lifelines", "umap-learn", "hdbscan", "ladybug", "torch-geometric", "pillow")
DONE = ".complete"


def cache_root() -> Path | None:
    raw = os.environ.get("PATIENTGRAPH_TEST_CACHE", "")
    if raw.strip().lower() == "off":
        return None
    return Path(raw) if raw.strip() else Path.home() / ".cache/patientgraph/test-workspaces"


def key(name: str, params: Any) -> str:
    h = hashlib.sha256(json.dumps({"name": name, "params": params}, sort_keys=True,
                                  default=str).encode())
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            h.update(path.relative_to(ROOT).as_posix().encode())
            h.update(path.read_bytes())
    for lib in LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            h.update(f"{lib}={importlib.metadata.version(lib)}".encode())
    return h.hexdigest()[:16]


def cached(name: str, params: Any, build: Callable[[Path], None],
           fallback: Callable[[], Path]) -> Path:
    """A folder holding what ``build(folder)`` makes, from the cache when its key matches.

    ``fallback()`` gives a fresh temporary folder when the cache is off.
    """
    root = cache_root()
    if root is None:
        folder = fallback()
        build(folder)
        return folder
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = root / f"{name}-{key(name, params)}"
    with open(root / f"{folder.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / DONE).exists():
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
        try:
            # build in place under the final name: workspaces record absolute paths
            os.replace(work, folder)
            build(folder)
            (folder / DONE).touch()
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        _prune(root, name, keep=folder)
    return folder


def _prune(root: Path, name: str, keep: Path, age_s: float = 86_400) -> None:
    """Remove builds of the same fixture under other keys, once a day old (a session with
    other sources, running beside this one, may still read a newer one)."""
    import time

    for other in root.glob(f"{name}-*"):
        if other != keep and other.is_dir() and time.time() - other.stat().st_mtime > age_s:
            shutil.rmtree(other, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                (root / f"{other.name}.lock").unlink()
