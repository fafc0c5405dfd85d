"""Cohort filters: a user's ``{field: condition}`` checked and turned into Cypher conditions.

A field is a Patient property (``sex``, ``age``, a record field such as ``ldh``) or a Lesion
property (``coarse_type``, ``cluster``, ``long_mm``, ...). A patient passes when it passes
every patient filter and one of its lesions passes every lesion filter. Conditions:

``"F"`` or ``4``                     equal to the value
``["M", "F"]`` or ``[4, 5]``         one of the values
``{"min": 40, "max": 70}``           in the range, bounds included (either may be left out)

Field names are checked against the properties the graph knows (with a "did you mean"
hint) and then quoted; values are checked against the property's type and passed only as
parameters.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graphdb.cypher import quote
from graphdb.errors import GraphQueryError
from graphdb.schema import BOOLEAN, DOUBLE, INT64, LESION, NUMERIC, STRING
from patientgraph.errors import did_you_mean

FIX = ("give each field a value, a list of values, or {'min': ..., 'max': ...} "
       "(see graphdb.filters)")


@dataclass
class Conditions:
    """Cypher conditions on the patient and on one of its lesions, with their parameters."""

    patient: list[str] = field(default_factory=list)
    lesion: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)


def compile_filters(filters: Mapping[str, Any] | None, patient_types: Mapping[str, str], *,
                    patient_var: str = "p", lesion_var: str = "l") -> Conditions:
    """Check ``filters`` and build their conditions on ``patient_var`` and ``lesion_var``.

    ``patient_types`` maps the Patient property names the graph holds to their types.
    Raises :class:`GraphQueryError` for an unknown field or a value of the wrong kind.
    """
    lesion_types = {k: t for k, t in LESION.properties.items() if k != LESION.key}
    known = {**{k: t for k, t in patient_types.items() if k != "patient_id"}, **lesion_types}
    out = Conditions()
    for name, condition in (filters or {}).items():
        if name not in known:
            raise GraphQueryError(None, f"unknown filter field {name!r}."
                                  f"{did_you_mean(str(name), known)}",
                                  f"use one of: {', '.join(sorted(known))}")
        on_lesion = name in lesion_types
        var = lesion_var if on_lesion else patient_var
        text = _condition(f"{var}.{quote(name)}", name, known[name], condition, out.params)
        (out.lesion if on_lesion else out.patient).append(text)
    return out


def _condition(target: str, name: str, type_: str, condition: Any, params: dict) -> str:
    def param(value: Any) -> str:
        key = f"f{len(params)}"
        params[key] = value
        return f"${key}"

    if isinstance(condition, Mapping):
        unknown = set(condition) - {"min", "max"}
        if unknown or not condition:
            raise GraphQueryError(None, f"the range of {name!r} has keys {sorted(condition)}",
                                  "give a range as {'min': lo, 'max': hi} (either may be "
                                  "left out)")
        if type_ not in NUMERIC:
            raise GraphQueryError(None, f"{name!r} holds {type_} values, which have no range",
                                  FIX)
        parts = []
        if condition.get("min") is not None:
            parts.append(f"{target} >= {param(_value(name, type_, condition['min']))}")
        if condition.get("max") is not None:
            parts.append(f"{target} <= {param(_value(name, type_, condition['max']))}")
        return " AND ".join(parts) if parts else "true"
    if isinstance(condition, (list, tuple, set, frozenset)):
        if not condition:
            raise GraphQueryError(None, f"the list of values of {name!r} is empty", FIX)
        values = [_value(name, type_, v) for v in condition]
        return f"{target} IN {param(values)}"
    return f"{target} = {param(_value(name, type_, condition))}"


def _value(name: str, type_: str, value: Any) -> Any:
    """``value`` as the property's type, or :class:`GraphQueryError` if it is not one."""
    ok = False
    if type_ == STRING:
        ok = isinstance(value, str)
    elif type_ == BOOLEAN:
        ok = isinstance(value, bool)
    elif type_ in (DOUBLE, INT64):
        ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
              and math.isfinite(value))
        if ok and type_ == INT64 and float(value) != int(value):
            ok = False
    if not ok:
        raise GraphQueryError(None, f"{name!r} holds {type_} values, not {value!r}", FIX)
    if type_ == DOUBLE:
        return float(value)
    if type_ == INT64:
        return int(value)
    return value
