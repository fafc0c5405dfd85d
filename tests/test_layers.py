"""The packages form layers, and nothing imports up (docs/design.md, "Layout").

patientgraph (core) <- embed, graphdb <- discovery <- dashboards <- patientgraph.app (the
command line and the pipeline). A cycle between packages makes each one impossible to read,
test or replace alone, so the allowed imports are listed here and every import statement in
the tree is checked against them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("patientgraph", "embed", "graphdb", "discovery", "dashboards")
ALLOWED: dict[str, set[str]] = {
    "patientgraph": set(),
    "embed": {"patientgraph"},
    "graphdb": {"patientgraph"},
    "discovery": {"patientgraph", "embed", "graphdb"},
    "dashboards": {"patientgraph", "embed", "graphdb", "discovery"},
    "patientgraph.app": set(PACKAGES),
}
# The package facade names run_pipeline (imported on first use) and `python -m patientgraph`
# runs the command line: the two places in the core that point at the application layer.
FACADES = {"patientgraph/__init__.py", "patientgraph/__main__.py"}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _layer(module: str) -> str:
    return "patientgraph.app" if module.startswith("patientgraph.app") else module.split(".")[0]


def test_no_package_imports_up():
    wrong = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            here = _layer(".".join(path.relative_to(ROOT).with_suffix("").parts))
            for line, name in _imports(path):
                there = _layer(name)
                if there == here or name.split(".")[0] not in PACKAGES or rel in FACADES:
                    continue
                if there not in ALLOWED[here]:
                    wrong.append(f"{rel}:{line} imports {name}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from dashboards.app import build\nimport graphdb.store\n")
    assert [name for _, name in _imports(bad)] == ["dashboards.app", "graphdb.store"]
    assert "dashboards" not in ALLOWED[_layer("embed.stage")]
    assert "graphdb" not in ALLOWED[_layer("patientgraph.workspace")]
