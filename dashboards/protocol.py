"""Calling the explorer's callbacks over HTTP, as the browser does (tests and benchmarks).

:class:`CallbackClient` finds a callback by one of its outputs (``"patient-km.figure"``),
builds the JSON body of Dash's ``/_dash-update-component`` request from the input values
given (the rest sent as None) and returns the outputs the server answered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dash

UPDATE_PATH = "/_dash-update-component"


@dataclass(frozen=True)
class CallbackSpec:
    """One callback: its key in ``app.callback_map``, outputs, inputs and states."""

    key: str
    outputs: list[dict[str, str]]
    inputs: list[dict[str, str]]
    state: list[dict[str, str]]

    def body(self, values: Mapping[str, Any], changed: list[str] | None = None) -> dict:
        """The request body; ``values`` maps ``"id.property"`` to its value."""
        def items(specs):
            return [{**s, "value": values.get(f"{s['id']}.{s['property']}")} for s in specs]

        inputs = items(self.inputs)
        if changed is None:
            changed = [f"{i['id']}.{i['property']}" for i in inputs
                       if f"{i['id']}.{i['property']}" in values]
        outputs: Any = self.outputs if self.key.startswith("..") else self.outputs[0]
        return {"output": self.key, "outputs": outputs, "inputs": inputs,
                "state": items(self.state), "changedPropIds": changed}


def find_callback(app: dash.Dash, output: str, given: Iterable[str] = ()) -> CallbackSpec:
    """The callback that writes ``output`` (``"id.property"``).

    When several do (``allow_duplicate``), the one whose inputs and states include every
    ``"id.property"`` in ``given``.
    """
    given = set(given)
    for key, cb in app.callback_map.items():
        outputs = [_split(part) for part in _output_parts(key)]
        if not any(f"{o['id']}.{o['property']}" == output for o in outputs):
            continue
        spec = CallbackSpec(key=key, outputs=outputs, inputs=list(cb["inputs"]),
                            state=list(cb.get("state", [])))
        if given <= {f"{i['id']}.{i['property']}" for i in spec.inputs + spec.state}:
            return spec
    raise KeyError(f"no callback writes {output!r} from {sorted(given)}")


class CallbackClient:
    """Posts callback requests with ``post(path, json=..., headers=...)``.

    ``post`` is a Flask test client's or a ``requests.Session``'s (with a base URL bound),
    so the same calls run in-process or against a served app.
    """

    def __init__(self, app: dash.Dash, post: Callable[..., Any],
                 headers: Mapping[str, str] | None = None):
        self.app = app
        self.post = post
        self.headers = dict(headers or {})
        self._specs: dict[tuple, CallbackSpec] = {}

    def call(self, output: str, values: Mapping[str, Any],
             changed: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Run the callback writing ``output``; returns ``{id: {property: value}}``.

        A callback that updates nothing (HTTP 204) returns ``{}``; any other failure raises.
        """
        cache_key = (output, tuple(sorted(values)))
        spec = self._specs.get(cache_key) or self._specs.setdefault(
            cache_key, find_callback(self.app, output, values))
        response = self.post(UPDATE_PATH, json=spec.body(values, changed),
                             headers=self.headers)
        status = getattr(response, "status_code", None)
        if status == 204:
            return {}
        if status != 200:
            raise RuntimeError(f"callback for {output} answered HTTP {status}")
        payload = response.get_json() if hasattr(response, "get_json") else response.json()
        return payload.get("response", {})


def _output_parts(key: str) -> list[str]:
    if key.startswith(".."):
        return [p for p in key.strip(".").split("...") if p]
    return [key]


def _split(part: str) -> dict[str, str]:
    part = part.split("@", 1)[0]
    ident, _, prop = part.rpartition(".")
    return {"id": ident, "property": prop}
