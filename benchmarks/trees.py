"""The project's code as of an older commit, for benchmarks that run it beside today's.

A benchmark that compares against an earlier path runs that commit's code in the same run,
on the same machine: :func:`export_tree` writes it (``git archive``) into a folder, which the
benchmark then puts first on ``PYTHONPATH`` and uses as the child process's working
directory (``python -m`` puts the working directory ahead of ``PYTHONPATH``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def export_tree(commit: str, into: Path, paths: tuple[str, ...] = ()) -> Path:
    """``paths`` of the repository (all of it when empty) as of ``commit``, under ``into``
    (created if need be)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", commit, *paths], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into
