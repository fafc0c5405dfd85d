"""User-facing errors.

Every mistake in a user's input becomes an :class:`InputError` that names the file, the row,
the column and the fix. The command line prints its message as one paragraph and exits
with code 2; nothing in the workspace is touched (stages stage their writes and rename last).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

EXIT_INPUT_ERROR = 2


class InputError(Exception):
    """A problem with the user's input that the user can fix.

    Parameters
    ----------
    file:
        The input file (or folder) the problem is in, as the user named it.
    problem:
        What is wrong, in one sentence.
    fix:
        What to do about it, in one sentence.
    row:
        0-based data row of a table (the header is not a row), if the problem is in one.
    column:
        The column, if the problem is in one.
    more:
        How many further rows have the same problem (reported, not listed).
    """

    def __init__(
        self,
        file: str | Path | None,
        problem: str,
        fix: str,
        *,
        row: int | None = None,
        column: str | None = None,
        more: int = 0,
    ):
        self.file = None if file is None else str(file)
        self.problem = problem.rstrip(".")
        self.fix = fix.rstrip(".")
        self.row = None if row is None else int(row)
        self.column = column
        self.more = int(more)
        super().__init__(self.message)

    @property
    def where(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(self.file)
        if self.row is not None:
            # Data row r sits on line r + 2 of a CSV with one header line.
            parts.append(f"row {self.row} (line {self.row + 2})")
        if self.column is not None:
            parts.append(f"column '{self.column}'")
        return ", ".join(parts)

    @property
    def message(self) -> str:
        text = f"{self.where}: {self.problem}" if self.where else self.problem
        if self.more:
            rows = "row has" if self.more == 1 else "rows have"
            text += f" ({self.more} more {rows} the same problem)"
        stop = "" if text.endswith(("?", "!")) else "."  # "Did you mean 'k'?" ends itself
        return f"{text}{stop} Fix: {self.fix}."


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return " Did you mean 'x'?" for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
