"""Atomic file writes: write to a temporary name beside the target, then rename.

A crash at any point leaves either the old file or the new one, never a half-written file
that a later stage would trust. What a killed process leaves behind (a temporary file or
folder, or the old copy of a folder being swapped) has a name that
:func:`clean_leftovers` recognises, and the workspace removes (or, for an old folder whose
replacement never arrived, restores) them when the next run or ingest takes its lock.

Everything written here is private to the user: files 0600 (``mkstemp`` creates them so and
``os.replace`` keeps the mode), folders 0700, including the files that other code (pandas,
a graph engine) creates inside a temporary folder, which are tightened before the swap.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

FILE_MODE = 0o600
DIR_MODE = 0o700
_TEMP_TAG = ".tmp-"
_OLD_TAG = ".old"
# ".NAME.tmp-XXXXXXXX[suffix]" (atomic_path, atomic_dir) and ".NAME.old" (atomic_dir).
_LEFTOVER = re.compile(r"^\.(?P<name>.+?)(?:\.tmp-\w{8}.*|\.old)$")


def _temp_prefix(target: Path) -> str:
    return f".{target.name}{_TEMP_TAG}"


def _old_name(target: Path) -> Path:
    return target.with_name(f".{target.name}{_OLD_TAG}")


def make_private_dirs(folder: str | Path) -> Path:
    """Create ``folder`` and any missing parents, each created one 0700 (like mkdir -p)."""
    folder = Path(folder)
    missing = []
    for parent in (folder, *folder.parents):
        if parent.exists():
            break
        missing.append(parent)
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=DIR_MODE)
    return folder


def make_private(root: str | Path) -> None:
    """Tighten ``root`` and everything under it: folders 0700, files 0600 (links left)."""
    root = Path(root)
    if root.is_symlink() or not root.exists():
        return
    if root.is_file():
        os.chmod(root, FILE_MODE)
        return
    os.chmod(root, DIR_MODE)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISDIR(mode):
                os.chmod(path, DIR_MODE)
            elif stat.S_ISREG(mode):
                os.chmod(path, FILE_MODE)


@contextlib.contextmanager
def atomic_path(target: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    On an exception the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    make_private_dirs(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=suffix or ".tmp",
                               dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)  # a writer may have replaced the file mkstemp made
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; swap it into place on success.

    The old folder is renamed aside (``.NAME.old``) for the moment between the two renames;
    a crash in that moment leaves it for :func:`clean_leftovers` to put back.
    """
    target = Path(target)
    make_private_dirs(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), dir=target.parent))
    try:
        yield tmp
        make_private(tmp)
        if target.exists():
            old = _old_name(target)
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_leftover(name: str) -> bool:
    """True for the name of a temporary file or folder, or an old folder, left by a crash."""
    return _LEFTOVER.match(name) is not None


def clean_leftovers(root: str | Path, *, only: str | None = None) -> list[Path]:
    """Remove what killed atomic writes left under ``root``; returns what was cleaned.

    A ``.NAME.old`` folder whose ``NAME`` is missing (a crash between atomic_dir's two
    renames) is renamed back to ``NAME``, so the folder is exactly the old one again; any
    other leftover is deleted. With ``only``, just the leftovers of that one name directly
    in ``root`` (for a target outside the workspace). Only call this while no other process
    writes there (the workspace lock).
    """
    if only is not None:
        names = [n for n in os.listdir(root) if (m := _LEFTOVER.match(n)) and m["name"] == only]
        return [_clean(Path(root, name)) for name in names]
    cleaned: list[Path] = []
    for folder, dirs, files in os.walk(root):
        cleaned += [_clean(Path(folder, name)) for name in [*dirs, *files] if is_leftover(name)]
        dirs[:] = [d for d in dirs if not is_leftover(d)]
    return cleaned


def _clean(path: Path) -> Path:
    original = path.with_name(_LEFTOVER.match(path.name)["name"])
    if path.name.endswith(_OLD_TAG) and path.is_dir() and not original.exists():
        os.replace(path, original)
    elif path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    return path


def write_parquet(df: pd.DataFrame, target: str | Path) -> Path:
    """Write ``df`` to ``target`` atomically (no index column)."""
    with atomic_path(target, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)
    return Path(target)


def write_json(obj: Any, target: str | Path) -> Path:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    with atomic_path(target, suffix=".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    return Path(target)


def write_text(text: str, target: str | Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)
