"""Options of a stage or model: a user's ``config`` merged over declared defaults.

One rule for every ``config`` mapping in the package: a key that is not an option is an
:class:`InputError` that names the closest option ("Did you mean ...?") and lists them all;
the others replace the defaults. Where a class's keyword arguments are the options,
:func:`signature_defaults` reads the defaults from its signature, so they are declared once.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from patientgraph.errors import InputError, did_you_mean


def merge_options(defaults: Mapping[str, Any], config: Mapping[str, Any] | None, *,
                  unknown: str, fix: str = "use one of") -> dict[str, Any]:
    """``defaults`` updated by ``config`` (dict defaults copied, so no call shares them).

    ``unknown`` is the problem of the error for an unknown key, a format string with
    ``{key}`` (say ``"unknown tracking option {key!r}"``); the error's fix is ``fix``
    followed by the options, comma-separated.
    """
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in defaults.items()}
    for key, value in (config or {}).items():
        if key not in defaults:
            raise InputError(None, unknown.format(key=key) + "." + did_you_mean(key, defaults),
                             f"{fix} {', '.join(defaults)}")
        merged[key] = value
    return merged


def signature_defaults(callable_: Any) -> dict[str, Any]:
    """The keyword defaults of a function or class (its ``__init__``), in their order."""
    return {name: p.default for name, p in inspect.signature(callable_).parameters.items()
            if p.default is not inspect.Parameter.empty}
