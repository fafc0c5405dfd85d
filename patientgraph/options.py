"""Options of a stage or model: a user's ``config`` merged over declared defaults.

One rule for every ``config`` mapping in the package: a key that is not an option is an
:class:`InputError` that names the closest option ("Did you mean ...?") and lists them all;
the others replace the defaults. Where a class's keyword arguments are the options,
:func:`signature_defaults` reads the defaults from its signature, so they are declared once.
A number set in the environment (a server's limits) is read by :func:`env_number`: unset or
blank gives the default, anything else must be a number in its range.
"""

from __future__ import annotations

import inspect
import math
import os
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


def env_number(name: str, default: float, *, low: float, high: float, unit: str,
               low_open: bool = False, environ: Mapping[str, str] | None = None) -> float:
    """The number in environment variable ``name`` (``default`` when unset or blank).

    It must lie in ``[low, high]`` (``(low, high]`` with ``low_open``); "nan", "inf", words
    and numbers out of range are an :class:`InputError` naming the variable and its range.
    """
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    above_low = low < value if low_open else low <= value
    if not (above_low and value <= high):
        bound = f"above {low:g}" if low_open else f"from {low:g}"
        raise InputError(None, f"${name} is {raw.strip()!r}, not a number of {unit} "
                         f"{bound} to {high:g}", f"set it to e.g. {default:g}, or unset it")
    return value
