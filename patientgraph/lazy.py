"""Names a package exports without importing their modules until first use.

A package lists its public API in ``__all__``; the names whose modules are heavy (torch,
FAISS, Dash, scipy) come through :func:`lazy_exports`, so that importing the package stays
cheap:

    __getattr__ = lazy_exports(__name__, {"similar_patients": "embed.similar"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``name`` from ``names[name]`` when asked."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(names[name]), name)

    return __getattr__


__all__ = ["lazy_exports"]
