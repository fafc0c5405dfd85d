"""Each package names its public API in ``__all__``, every name resolves, and importing a
package stays light (the heavy names are imported on first use)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ("patientgraph", "embed", "graphdb", "discovery", "dashboards")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves(package: str):
    module = importlib.import_module(package)
    assert module.__all__
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


@pytest.mark.parametrize("package, heavy", [
    ("patientgraph", ("pandas", "torch", "scipy", "PIL")),
    ("embed", ("pandas", "torch", "faiss")),
    ("graphdb", ("pandas", "neo4j", "ladybug")),
])
def test_import_is_light(package: str, heavy: tuple[str, ...]):
    code = f"import sys, {package}; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
