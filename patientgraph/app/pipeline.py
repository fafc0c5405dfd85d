"""The pipeline: ingest -> embed -> index -> graph -> discover.

Each stage is registered here by name with the module that implements it. A stage module
exposes ``run(workspace, config, force) -> dict`` and reads only the workspace files of the
stages before it. Stages whose module is not installed yet are reported as unavailable.
A run holds the workspace lock from its first stage to its last.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from patientgraph.errors import InputError, did_you_mean
from patientgraph.workspace import INGEST, Workspace

# torch_geometric (imported by the discover stage's GNN and by the graph's PyG export)
# applies torch.jit.script to some of its functions when it is imported, and the torch of
# this version deprecates that with a FutureWarning on every run. The call is theirs, not
# ours, so exactly that warning is silenced here, before any stage module is imported.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                        category=FutureWarning)

# name -> module implementing ``run``; in pipeline order.
STAGES: dict[str, str] = {
    "embed": "embed.stage",
    "index": "embed.index_stage",
    "graph": "graphdb.stage",
    "discover": "discovery.stage",
}


def stage_module(name: str):
    """The module of an available stage, or None if it is not part of this version."""
    try:
        return importlib.import_module(STAGES[name])
    except ModuleNotFoundError as exc:
        if exc.name and STAGES[name].startswith(exc.name):
            return None
        raise


def available_stages() -> list[str]:
    return [name for name in STAGES if stage_module(name) is not None]


def parse_stages(stages: str | None) -> list[str]:
    if stages is None:
        return available_stages()
    names = [s.strip() for s in stages.split(",") if s.strip()]
    for name in names:
        if name not in STAGES:
            raise InputError(None, f"unknown stage {name!r}.{did_you_mean(name, STAGES)}",
                             f"choose from {', '.join(STAGES)}")
        if stage_module(name) is None:
            raise InputError(None, f"the stage {name!r} is not available in this version",
                             f"run the available stages ({', '.join(available_stages())})")
    return sorted(names, key=list(STAGES).index)


def run_pipeline(
    workspace: str | Path | Workspace,
    *,
    stages: str | None = None,
    graph: str | None = None,
    force: bool = False,
    config: Mapping[str, Mapping[str, Any]] | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the chosen stages in order; returns each stage's summary.

    ``config`` maps a stage name to that stage's options (e.g. ``{"embed": {"preset":
    "fast"}, "index": {"k": 10}}``); ``graph`` is the graph URI that the ``graph`` stage
    loads and the ``discover`` stage writes its results into.
    """
    config = dict(config or {})
    unknown = set(config) - set(STAGES)
    if unknown:
        name = sorted(unknown)[0]
        raise InputError(None, f"the config names an unknown stage {name!r}."
                         f"{did_you_mean(name, STAGES)}", f"use stage names {', '.join(STAGES)}")
    ws = Workspace.of(workspace)
    if ws.stage_record(INGEST) is None:
        raise InputError(ws.root, "the workspace holds no ingested cohort",
                         "run `patientgraph ingest deeplesion ...` into it first")
    names = parse_stages(stages)
    results: dict[str, Any] = {}
    with ws.lock():
        _check_cohort(ws)
        for name in names:
            options = dict(config.get(name, {}))
            if name in ("graph", "discover") and graph:
                options["graph"] = graph
            summary = stage_module(name).run(ws, config=options, force=force)
            echo(f"{name}: " + ("up to date" if summary.get("skipped") else "done"))
            results[name] = summary
    return results


def _check_cohort(ws: Workspace) -> None:
    """Refuse to run on cohort tables that are not the bytes the ingest wrote (damaged, or
    replaced by hand): every stage would build on them."""
    record = ws.stage_record(INGEST)
    if record is None:  # a killed ingest, or one begun by another process since
        raise InputError(ws.root, "the workspace holds no complete ingest",
                         ws.rerun_fix(INGEST))
    if "output_hashes" not in record:  # written before outputs were hashed
        return
    changed = ws.changed_outputs(INGEST)
    if changed:
        raise InputError(ws.path(changed[0]), "the cohort table has changed since the "
                         "ingest wrote it (it is damaged, missing or was replaced)",
                         ws.rerun_fix(INGEST))
