"""Writing the cohort: the slices of each patient (16-bit PNG) and the tables and
``truth.json``; :func:`generate` runs it all, in parallel if asked."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import multiprocessing
import os
import struct
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path

import numpy as np

from patientgraph.atomic import atomic_dir
from patientgraph.imaging import HU_OFFSET
from patientgraph.synth.cohort import _Patient, _pid, _plan_patient
from patientgraph.synth.dynamics import _params as _dynamics_params
from patientgraph.synth.params import (
    _NOISE,
    AGE_MISSING,
    ANNOTATE_P,
    COMPANION_P,
    DECOYS,
    DL_COLUMNS,
    EFFECTS,
    FOV_MM,
    GROWTH_LESION_SD,
    GROWTH_MEAN,
    GROWTH_SD,
    INDIRECT,
    LABEL_ERROR_RATE,
    LESION_COUNT_P,
    LOOKS,
    NOISY_FLAG_P,
    PRIMARY_SHARE,
    RECORD_MISSING,
    SITES,
    SIZE_LOG_SD,
    SIZE_MEDIAN_MM,
    SIZE_RANGE_MM,
    SLICE_INTERVALS_MM,
    SPLIT_P,
    STUDY_COUNT_P,
    STUDY_GAP_DAYS,
    SURVIVAL,
    TYPE_PRIOR,
    TYPE_SITES,
    _rng,
)
from patientgraph.synth.slices import _mottle, _render_slice


def _write_patient(patient: _Patient, seed: int, images: Path) -> None:
    """Render and write every slice the patient's rows refer to (key slice and neighbours)."""
    for study in patient.studies:
        folder = images / f"{_pid(patient.pid)}_{study.index:02d}_{study.series:02d}"
        slices = sorted({r["Key_slice_index"] + d for r in study.rows for d in (-1, 0, 1)})
        if slices:
            folder.mkdir(parents=True, exist_ok=True)
        mottle = 6.0 * _mottle(_rng(seed, patient.pid, _NOISE, study.index),
                               study.frame.size, 4.0 / study.frame.spacing)
        for k in slices:
            hu = _render_slice(seed, patient.pid, patient.body, study, k, mottle)
            _write_png16(folder / f"{k:03d}.png", np.round(hu + HU_OFFSET).astype(np.uint16))


def _write_png16(path: Path, pixels: np.ndarray) -> None:
    """Write a 16-bit grayscale PNG (mode "I;16" when read back).

    Encoded here rather than by Pillow, which spends most of its time choosing a filter per
    row: every row takes the PNG "Up" filter (a difference with the row above, computed
    in one array operation), deflated with run-length matches only (zlib's Z_RLE): the CT
    noise leaves few longer matches to find, and the slices are many.
    """
    height, width = pixels.shape
    rows = pixels.astype(">u2").view(np.uint8).reshape(height, 2 * width)
    body = np.empty((height, 2 * width + 1), np.uint8)
    body[:, 0] = 2  # filter type Up
    body[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=body[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)  # 16-bit grey
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    data = deflate.compress(body.tobytes()) + deflate.flush()
    path.write_bytes(b"".join([
        b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header), _png_chunk(b"IDAT", data),
        _png_chunk(b"IEND", b""),
    ]))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _build_patient(pid: int, seed: int, image_size: int, images: Path | None) -> _Patient:
    patient = _plan_patient(seed, pid, image_size)
    if images is not None:
        _write_patient(patient, seed, images)
    return patient


# --------------------------------------------------------------------------- writing


def generate(
    out_dir: str | Path,
    n_patients: int = 200,
    seed: int = 0,
    image_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
    *,
    workers: int | None = None,
    images: bool = True,
) -> dict:
    """Write a synthetic DeepLesion-format cohort into ``out_dir``.

    Writes ``DL_info.csv``, ``Images_png/`` (key slices and their neighbours, 16-bit PNG,
    HU + 32768), ``records.csv``, ``outcomes.csv`` and ``studies.csv`` (all keyed by
    ``Patient_index``) and ``truth.json``. The folder appears whole or not at all; an existing
    ``out_dir`` is replaced only if it is empty or an earlier synthetic cohort.

    ``workers`` processes render patients in parallel (default: up to 2 for cohorts of 50 or
    more patients); the output is byte-identical whatever their number. ``progress(done,
    total)`` is called after each patient. Returns a summary: counts and seconds.

    ``images=False`` skips rendering and writing the slices (no ``Images_png/``): the tables
    and ``truth.json`` are the same as with images, for analyses that need no pixels.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be at least 1, not {n_patients}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed}")
    if image_size < 64:
        raise ValueError(f"image_size must be at least 64 pixels, not {image_size}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "truth.json").exists():
        raise FileExistsError(f"{out} exists and is not an earlier synthetic cohort; "
                              "choose an empty or new folder")
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if n_patients >= 50 else 1
    started = time.perf_counter()
    with atomic_dir(out) as tmp:
        tmp.chmod(0o755)  # a private temporary folder becomes an ordinary one
        folder = tmp / "Images_png" if images else None
        if folder is not None:
            folder.mkdir()
        build = partial(_build_patient, seed=seed, image_size=image_size, images=folder)
        pids = range(1, n_patients + 1)
        patients = []
        with contextlib.ExitStack() as stack:
            mapper = map
            if workers > 1:
                pool = stack.enter_context(ProcessPoolExecutor(
                    workers, mp_context=multiprocessing.get_context("spawn")))
                mapper = partial(pool.map, chunksize=2)
            try:
                for patient in mapper(build, pids):
                    patients.append(patient)
                    if progress:
                        progress(len(patients), n_patients)
            except BrokenProcessPool:
                raise RuntimeError(
                    "the worker processes that render patients stopped before they could "
                    "start; in a script, call generate() under `if __name__ == \"__main__\":` "
                    "(worker processes import the script), or pass workers=1") from None
        summary = _write_tables(tmp, patients, seed)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


def _write_csv(path: Path, header, rows) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_tables(root: Path, patients: list[_Patient], seed: int) -> dict:
    """Write DL_info.csv, records.csv, outcomes.csv, studies.csv and truth.json."""
    rows = [r for p in patients for s in p.studies for r in s.rows]
    _write_csv(root / "DL_info.csv", DL_COLUMNS, ([r[c] for c in DL_COLUMNS] for r in rows))
    fields = list(RECORD_MISSING)
    _write_csv(root / "records.csv", ["Patient_index", *fields],
               ([p.pid, *(p.record[f] for f in fields)] for p in patients))
    _write_csv(root / "outcomes.csv", ["Patient_index", "time_days", "event"],
               ([p.pid, p.outcome["time_days"], p.outcome["event"]] for p in patients))
    _write_csv(root / "studies.csv", ["Patient_index", "Study_index", "day"],
               ([p.pid, s.index, s.day] for p in patients for s in p.studies))
    cells = [p.record[f] for p in patients for f in fields]
    missing = sum(c == "" for c in cells) / len(cells)
    truth = {
        "seed": seed,
        "n_patients": len(patients),
        "params": _params(),
        "lesions": {k: v for p in patients for k, v in p.lesion_truth.items()},
        "patients": {_pid(p.pid): p.truth for p in patients},
        "effects": [
            {"name": name, "kind": kind, "definition": definition,
             **({"column": name} if kind == "record" and name in RECORD_MISSING else {}),
             **({"hr": math.exp(beta)} if sd == 1.0 and centre == 0.0
                else {"log_hr_per_sd": beta, "centre": centre, "sd": sd}),
             "direction": 1 if beta > 0 else -1}
            for name, kind, definition, beta, centre, sd in EFFECTS
        ],
        "decoys": DECOYS,
        "indirect": INDIRECT,
        "missing_fraction": round(missing, 4),
    }
    (root / "truth.json").write_text(json.dumps(truth, indent=1, default=_json_default) + "\n")
    n_events = sum(p.outcome["event"] for p in patients)
    return {
        "patients": len(patients),
        "studies": sum(len(p.studies) for p in patients),
        "lesion_rows": len(rows),
        "physical_lesions": sum(len(p.truth["physical_lesions"]) for p in patients),
        "slices": (sum(1 for _ in (root / "Images_png").rglob("*.png"))
                   if (root / "Images_png").is_dir() else 0),
        "events": n_events,
        "censored_fraction": round(1 - n_events / len(patients), 3),
        "missing_fraction": truth["missing_fraction"],
    }


def _params() -> dict:
    """Every constant that defines the cohort, for truth.json."""
    return {
        "type_prior": TYPE_PRIOR, "primary_share": PRIMARY_SHARE, "type_sites": TYPE_SITES,
        "sites": {k: {"labels": v[0], "z_range": v[1], "region": v[2]} for k, v in SITES.items()},
        "looks": LOOKS, "size_median_mm": SIZE_MEDIAN_MM, "size_log_sd": SIZE_LOG_SD,
        "size_range_mm": SIZE_RANGE_MM, "study_count_p": STUDY_COUNT_P,
        "study_gap_days": STUDY_GAP_DAYS, "lesion_count_p": LESION_COUNT_P,
        "annotate_p": ANNOTATE_P, "companion_p": COMPANION_P, "split_p": SPLIT_P,
        "label_error_rate": LABEL_ERROR_RATE, "noisy_flag_p": NOISY_FLAG_P,
        "slice_intervals_mm": SLICE_INTERVALS_MM, "fov_mm": FOV_MM,
        "growth_mean": GROWTH_MEAN, "growth_sd": GROWTH_SD,
        "growth_lesion_sd": GROWTH_LESION_SD, **_dynamics_params(),
        "record_missing": RECORD_MISSING,
        "age_missing": AGE_MISSING, "survival": SURVIVAL,
    }


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to truth.json")
