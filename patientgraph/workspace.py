"""The workspace: a folder that is the contract between pipeline stages.

Each stage reads the files of the stages before it and writes its own, atomically; the
manifest (``W/manifest.json``) records, per stage, its config, the hashes of its inputs,
the content hashes of its outputs, the library versions and the timings. A rerun of a stage
whose fingerprint (config plus input hashes) is unchanged, and whose outputs are still the
bytes it wrote, is skipped unless forced.

Crash consistency: a stage calls :meth:`Workspace.begin_stage` before it replaces any of
its outputs (which removes its record) and :meth:`Workspace.record_stage` after the last
(which writes it), so a process killed in between leaves a stage without a record, which
the next run redoes. A stage that changes another stage's output in place (the discover
stage writing into the graph) marks that record pending first
(:meth:`Workspace.mark_pending`) and re-hashes it after (:meth:`Workspace.refresh_outputs`).

Every stage runs the same way (:class:`StageRun`, from :meth:`Workspace.start_stage`): work
out its config and input hashes, return the last summary when it is current
(:meth:`StageRun.skip`), compute, ``begin_stage``, write, then :meth:`StageRun.finish`
records it.

Serialisation: ``ingest`` and ``run`` hold the workspace lock (:meth:`Workspace.lock`, an
``flock`` on ``W/.lock``); a second writer is refused with an :class:`InputError`. Readers
(the explorer, ``similar``) take no lock and change no file.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from patientgraph.atomic import FILE_MODE, clean_leftovers, make_private_dirs, write_json
from patientgraph.errors import InputError

MANIFEST = "manifest.json"
COHORT_DIR = "cohort"
LOCK_FILE = ".lock"
INGEST = "ingest"

# Libraries whose versions are recorded with each stage (those installed).
_TRACKED = (
    "patientgraph", "numpy", "pandas", "pyarrow", "scipy", "pillow", "pandera", "nibabel",
    "pydicom", "torch", "monai", "faiss-cpu", "torch-geometric", "lifelines", "umap-learn",
    "hdbscan", "ladybug", "neo4j", "dash",
)


def library_versions() -> dict[str, str]:
    return dict(_library_versions())


@functools.lru_cache(maxsize=1)
def _library_versions() -> dict[str, str]:
    """Looked up once per process (each lookup scans the installed distributions)."""
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


def content_sha256(path: str | Path) -> str | None:
    """The content hash of a stage output: a file's sha256; for a folder, a hash over its
    files' relative paths and their sha256 (so a file added, removed, renamed or changed
    changes it); None when the path does not exist."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        return None
    h = hashlib.sha256(b"folder\n")
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{file.relative_to(path).as_posix()}\0{file_sha256(file)}\n".encode())
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


@dataclass
class _Held:
    """This process's hold on one workspace's lock (``fd`` None until the folder exists)."""

    fd: int | None = None
    depth: int = 1


# resolved workspace root -> this process's hold; the lock is re-entrant within a process.
_HELD: dict[str, _Held] = {}

F = TypeVar("F", bound=Callable[..., Any])


def holding_lock(fn: F) -> F:
    """Run a stage's ``run(workspace, ...)`` holding the workspace lock (re-entrant)."""

    @functools.wraps(fn)
    def wrapper(workspace: str | Path | Workspace, *args: Any, **kwargs: Any) -> Any:
        ws = Workspace.of(workspace)
        with ws.lock():
            return fn(ws, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass
class StageRun:
    """One run of a stage: what it was given (config, input hashes) and when it started.

    >>> stage = ws.start_stage("index", cfg, inputs)
    >>> if (last := stage.skip(force)) is not None:
    ...     return last                      # current: the last summary, skipped=True
    >>> ...                                  # compute; ws.begin_stage("index"); write
    >>> return stage.finish(outputs=["index"], summary=summary)
    """

    ws: Workspace
    name: str
    config: Mapping[str, Any]
    inputs: Mapping[str, str]
    started: float = field(default_factory=time.perf_counter)

    def skip(self, force: bool = False) -> dict[str, Any] | None:
        """The last run's summary with ``skipped=True`` when the stage is current (same
        config and inputs, outputs untouched) and not forced; else None (run it)."""
        if force or not self.ws.is_current(self.name, fingerprint(self.config, self.inputs)):
            return None
        return {**self.ws.stage_record(self.name)["summary"], "skipped": True}

    def finish(self, outputs: Iterable[str], summary: Mapping[str, Any]) -> dict[str, Any]:
        """Record the stage (after its last output is written); returns the summary with
        ``skipped=False``."""
        self.ws.record_stage(self.name, config=self.config, inputs=self.inputs,
                             outputs=outputs, seconds=time.perf_counter() - self.started,
                             summary=summary)
        return {**summary, "skipped": False}


class Workspace:
    """A pipeline workspace folder (it need not exist yet)."""

    @classmethod
    def of(cls, workspace: str | Path | Workspace) -> Workspace:
        """``workspace`` itself if it is one, else the workspace at that folder."""
        return workspace if isinstance(workspace, Workspace) else cls(workspace)

    def __init__(self, root: str | Path):
        # absolute, so that a path built by ``path()`` names the same file when joined to
        # the root again (``read_parquet(ws.path(...))``) and after a change of directory
        self.root = Path(root).absolute()

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

    # -- the manifest ----------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path(MANIFEST)

    def manifest(self) -> dict[str, Any]:
        """The manifest, or an empty one if the workspace has none yet."""
        if not self.manifest_path.exists():
            return {"stages": {}}
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as exc:
            self._bad_manifest(f"is not valid JSON ({exc.msg} at line {exc.lineno})")
        except (OSError, UnicodeDecodeError) as exc:
            self._bad_manifest(f"cannot be read ({type(exc).__name__})")
        stages = manifest.get("stages") if isinstance(manifest, dict) else None
        if not isinstance(stages, dict) or not all(isinstance(r, dict) for r in
                                                   stages.values()):
            self._bad_manifest("is not a PatientGraph manifest (no object of stage records)")
        return manifest

    def _bad_manifest(self, problem: str) -> None:
        raise InputError(
            self.manifest_path, f"the workspace manifest {problem}",
            "restore it from a backup, or rerun the ingest with --force to start a new one "
            "(the later stages then run again)",
        ) from None

    def _write_manifest(self, manifest: Mapping[str, Any]) -> None:
        write_json(manifest, self.manifest_path)

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        return self.manifest().get("stages", {}).get(stage)

    def start_stage(self, stage: str, config: Mapping[str, Any], inputs: Mapping[str, str],
                    started: float | None = None) -> StageRun:
        """Start a run of ``stage`` with this config and these input hashes (its clock
        starts now, or at ``started``, a ``time.perf_counter()`` value)."""
        return StageRun(self, stage, config, inputs,
                        time.perf_counter() if started is None else started)

    def begin_stage(self, stage: str) -> None:
        """Call before a stage replaces any of its outputs: removes its record, so that a
        process killed before :meth:`record_stage` leaves a stage that reruns.

        The ingest starts a new manifest when the old one cannot be read (the fix that
        :meth:`manifest` names); any other stage refuses to touch it.
        """
        held = _HELD.get(self._key())
        if held is not None and held.fd is None:  # the lock was asked for before W existed
            make_private_dirs(self.root)
            self._acquire(held)
        try:
            manifest = self.manifest()
            changed = manifest["stages"].pop(stage, None) is not None
        except InputError:
            if stage != INGEST:
                raise
            manifest, changed = {"stages": {}}, True
        if changed:
            self._write_manifest(manifest)

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
        """Write the stage's entry into the manifest (atomically, after its outputs), with
        the content hash of every output."""
        outputs = sorted(outputs)
        manifest = self.manifest()
        manifest["stages"][stage] = {
            "fingerprint": fingerprint(config, inputs),
            "config": dict(config),
            "inputs": dict(inputs),
            "outputs": outputs,
            "output_hashes": self._hashes(outputs),
            "versions": library_versions(),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(seconds, 3),
            "summary": dict(summary or {}),
        }
        self._write_manifest(manifest)

    def mark_pending(self, stage: str, why: str) -> None:
        """Mark ``stage``'s outputs as being changed in place by another stage (``why``):
        the stage is no longer current until :meth:`refresh_outputs` re-hashes them, so a
        process killed in between leaves it to be redone."""
        manifest = self.manifest()
        record = manifest["stages"].get(stage)
        if record is not None:
            record["pending"] = why
            self._write_manifest(manifest)

    def refresh_outputs(self, stage: str) -> None:
        """Re-hash ``stage``'s outputs after a change in place, and clear the pending mark
        (its fingerprint and finish time stay, so the stages after it are not redone)."""
        manifest = self.manifest()
        record = manifest["stages"].get(stage)
        if record is not None:
            record["output_hashes"] = self._hashes(record.get("outputs", []))
            record.pop("pending", None)
            self._write_manifest(manifest)

    def _hashes(self, outputs: Iterable[str]) -> dict[str, str | None]:
        return {rel: content_sha256(self.path(rel)) for rel in outputs}

    def changed_outputs(self, stage: str, only: Iterable[str] | None = None) -> list[str]:
        """The outputs of ``stage`` (or those of them in ``only``) that are not the bytes
        it recorded: changed, damaged or missing. All of them when the stage has no
        complete record (none, pending, or written before outputs were hashed)."""
        record = self.stage_record(stage) or {}
        outputs = list(record.get("outputs", [])) if only is None else list(only)
        hashes = record.get("output_hashes")
        if not record or "pending" in record or not isinstance(hashes, dict):
            return outputs
        return [rel for rel in outputs
                if rel not in hashes or content_sha256(self.path(rel)) != hashes[rel]]

    def is_current(self, stage: str, fp: str) -> bool:
        """True if ``stage`` last ran to the end with fingerprint ``fp`` and its outputs
        are still exactly what it wrote (a truncated, damaged or replaced output, or a
        stage killed half way, means it runs again)."""
        rec = self.stage_record(stage)
        if not rec or rec.get("fingerprint") != fp:
            return False
        return not self.changed_outputs(stage)

    def rerun_fix(self, stage: str) -> str:
        """How to rewrite the files of ``stage`` (the fix of a damaged workspace file)."""
        if stage == INGEST:
            return ("rerun the ingest into this workspace with --force (`patientgraph ingest "
                    f"deeplesion|table ... --workspace {self.root} --force`)")
        return (f"rerun the stage that writes it: `patientgraph run --workspace {self.root} "
                f"--stages {stage} --force`")

    # -- the lock --------------------------------------------------------------------------
    def _key(self) -> str:
        return str(self.root.resolve())

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the workspace lock (``flock`` on ``W/.lock``, non-blocking) for the block.

        A second process is refused with an :class:`InputError`; the same process may
        enter again (a run holds it, and each stage it runs takes it too). The lock is the
        kernel's: it goes when its process does, even one killed with SIGKILL. On taking
        it, what killed writers left behind is cleaned up. For a workspace that does not
        exist yet (a first ingest) it is taken when :meth:`begin_stage` creates the folder.
        """
        key = self._key()
        if key in _HELD:
            _HELD[key].depth += 1
            try:
                yield
            finally:
                _HELD[key].depth -= 1
            return
        held = _HELD[key] = _Held()
        try:
            if self.root.is_dir():
                self._acquire(held)
            yield
        finally:
            del _HELD[key]
            if held.fd is not None:
                os.close(held.fd)  # releases the flock

    def _acquire(self, held: _Held) -> None:
        fd = os.open(self.path(LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(
                self.root, "another patientgraph run or ingest is using this workspace (it "
                f"holds the lock {LOCK_FILE})", "wait for it to finish, then run this "
                "command again (the lock goes with that process, even if it is killed)",
            ) from None
        held.fd = fd
        clean_leftovers(self.root)

    # -- reading workspace tables ----------------------------------------------------------
    def read_parquet(self, rel: str | Path, *, writer: str, columns: Iterable[str] = (),
                     ) -> pd.DataFrame:
        """Read a workspace table written by the stage ``writer``.

        A missing, damaged or foreign file (not Parquet, truncated, lacking one of
        ``columns``) is an :class:`InputError` naming it and the stage that rewrites it.
        """
        import pyarrow as pa

        path = self.path(str(rel))
        if not path.is_file():
            raise InputError(path, "the workspace file is missing", self.rerun_fix(writer))
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise InputError(
                path, "the workspace file is damaged or is not a Parquet table "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                self.rerun_fix(writer)) from None
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise InputError(path, f"the workspace file lacks the column {missing[0]!r}, so "
                             f"the {writer} stage did not write it", self.rerun_fix(writer),
                             column=missing[0])
        return frame

    # -- cohort tables ---------------------------------------------------------------------
    def table_path(self, name: str) -> Path:
        return self.path(COHORT_DIR, f"{name}.parquet")

    def table(self, name: str) -> pd.DataFrame:
        from patientgraph.schema import SCHEMAS

        path = self.table_path(name)
        if not path.exists():
            raise InputError(
                self.root,
                f"the workspace has no {COHORT_DIR}/{name}.parquet",
                "run `patientgraph ingest deeplesion ...` or `patientgraph ingest table ...` "
                "into this workspace first",
            )
        return self.read_parquet(Path(COHORT_DIR, f"{name}.parquet"), writer=INGEST,
                                 columns=SCHEMAS[name].columns)

    def image_root(self) -> Path | None:
        """The folder that relative ``image_ref``/``series_ref`` values are relative to."""
        rec = self.stage_record(INGEST)
        root = (rec or {}).get("config", {}).get("image_root")
        return Path(root) if root else None
