"""Refusing bad rows of an input table: the one way every ingest reader raises.

A reader computes a mask of the rows that break a rule and calls :func:`fail_rows`, which
raises an :class:`~patientgraph.errors.InputError` at the first of them, naming the file,
the row (the user's 0-based data row, through the table's :class:`Source`), the column and
the fix, and counting the further rows with the same problem.

The message says what is wrong in general terms and never quotes a cell: a cell may
identify a patient (an id, an image path, a File_name holding the patient number, free
text in a shifted row).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from patientgraph.errors import InputError
from patientgraph.schema import Source


def fail_rows(
    source: Source,
    mask: np.ndarray | pd.Series,
    column: str,
    problem: str | Callable[[int], str],
    fix: str,
) -> None:
    """Raise for the first row in ``mask``; return if no row is in it.

    ``mask`` is a boolean Series over the table's index (its labels are mapped to file rows
    by ``source``) or a boolean array over row positions. ``problem`` is a sentence, or a
    function of the first row's position that returns one.
    """
    hits = np.flatnonzero(np.asarray(mask, dtype=bool))
    if not len(hits):
        return
    first = int(hits[0])
    label = mask.index[first] if isinstance(mask, pd.Series) else first
    text = problem(first) if callable(problem) else problem
    raise InputError(source.file, text, fix, row=source.row_of(label), column=column,
                     more=len(hits) - 1)


__all__ = ["fail_rows"]
