"""The workspace: a folder that is the contract between pipeline stages.

Each stage reads the files of the stages before it and writes its own, atomically; the
manifest (``W/manifest.json``) records, per stage, its config, the hashes of its inputs,
the library versions and the timings. A rerun of a stage whose fingerprint (config plus
input hashes) is unchanged is skipped unless forced.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from patientgraph.atomic import write_json
from patientgraph.errors import InputError

MANIFEST = "manifest.json"
COHORT_DIR = "cohort"

# Libraries whose versions are recorded with each stage (those installed).
_TRACKED = (
    "patientgraph", "numpy", "pandas", "pyarrow", "scipy", "pillow", "pandera", "nibabel",
    "pydicom", "torch", "monai", "faiss-cpu", "torch-geometric", "lifelines", "umap-learn",
    "hdbscan", "ladybug", "neo4j", "dash",
)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _TRACKED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def listing_sha256(root: str | Path, relpaths: Iterable[str]) -> str:
    """A cheap fingerprint of many files: their relative paths, sizes and mtimes.

    Used for image folders, where hashing every byte of tens of thousands of slices would
    cost more than the ingest itself. A missing file is fingerprinted as missing.
    """
    root = Path(root)
    h = hashlib.sha256()
    for rel in sorted(set(relpaths)):
        try:
            st = os.stat(root / rel)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            h.update(f"{rel}\0missing\n".encode())
    return h.hexdigest()


def fingerprint(config: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    blob = json.dumps({"config": config, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Workspace:
    """A pipeline workspace folder (it need not exist yet)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def relative(self, path: str | Path) -> str:
        """``path`` as the manifest records it: relative to the workspace when inside it
        (so a copied or moved workspace stays current), else absolute."""
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(Path(path).resolve())

    @property
    def manifest_path(self) -> Path:
        return self.path(MANIFEST)

    def manifest(self) -> dict[str, Any]:
        """The manifest, or an empty one if the workspace has none yet."""
        if not self.manifest_path.exists():
            return {"stages": {}}
        try:
            return json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(
                self.manifest_path,
                f"the workspace manifest is not valid JSON ({exc.msg} at line {exc.lineno})",
                "restore it from a backup, or rerun the ingest with --force to rebuild it",
            ) from None

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        return self.manifest().get("stages", {}).get(stage)

    def is_current(self, stage: str, fp: str) -> bool:
        """True if ``stage`` last ran with fingerprint ``fp`` and its outputs still exist."""
        rec = self.stage_record(stage)
        if not rec or rec.get("fingerprint") != fp:
            return False
        return all(self.path(p).exists() for p in rec.get("outputs", []))

    def record_stage(
        self,
        stage: str,
        *,
        config: Mapping[str, Any],
        inputs: Mapping[str, str],
        outputs: Iterable[str],
        seconds: float,
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        """Write the stage's entry into the manifest (atomically, after its outputs)."""
        manifest = self.manifest()
        manifest.setdefault("stages", {})[stage] = {
            "fingerprint": fingerprint(config, inputs),
            "config": dict(config),
            "inputs": dict(inputs),
            "outputs": sorted(outputs),
            "versions": library_versions(),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(seconds, 3),
            "summary": dict(summary or {}),
        }
        write_json(manifest, self.manifest_path)

    # -- cohort tables -------------------------------------------------------------------
    def table_path(self, name: str) -> Path:
        return self.path(COHORT_DIR, f"{name}.parquet")

    def table(self, name: str) -> pd.DataFrame:
        path = self.table_path(name)
        if not path.exists():
            raise InputError(
                self.root,
                f"the workspace has no {COHORT_DIR}/{name}.parquet",
                "run `patientgraph ingest deeplesion ...` or `patientgraph ingest table ...` "
                "into this workspace first",
            )
        return pd.read_parquet(path)

    def image_root(self) -> Path | None:
        """The folder that relative ``image_ref``/``series_ref`` values are relative to."""
        rec = self.stage_record("ingest")
        root = (rec or {}).get("config", {}).get("image_root")
        return Path(root) if root else None
