"""Pipeline stage ``embed``: lesion embeddings, record embeddings and patient vectors.

Reads ``W/cohort/*.parquet`` and the images; writes

* ``W/embeddings/lesions.parquet``: lesion_id, embedding (128 float32, unit norm);
* ``W/embeddings/patients.parquet``: patient_id, embedding (fused at the default weights),
  and the modality parts ``imaging`` and ``records`` (unit or zero vectors) that explain
  scores, ``n_lesions``, ``has_records``; the default weights are in the file's metadata;
* ``W/embeddings/failures.parquet``: lesion_id, source_row, problem for every lesion whose
  image could not be read (empty when all were);
* ``W/models/lesion_encoder.pt`` and ``W/models/record_encoder.pt``: weights and the configs
  that rebuild them.

A rerun with unchanged cohort and config is skipped; when only the records (or the weights)
changed, the lesion encoder and the lesion embeddings are reused (if they are still the bytes
the last run recorded). The stage's manifest record is removed before the first output is
replaced and written after the last, so a killed run is redone in full.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from embed.config import EmbedConfig
from embed.crops import cached_crops, lesion_metadata, read_crops
from embed.encoder import LesionEncoder, load_encoder, read_checkpoint, save_encoder
from embed.fusion import MODALITIES, fuse, pool_lesions, resolve_weights
from embed.inference import embed_crops, resolve_device
from embed.outputs import (  # noqa: F401  (default_weights: part of this module's API)
    CROP_CACHE,
    FAILURES,
    LESION_MODEL,
    LESIONS,
    PATIENTS,
    RECORD_MODEL,
    WEIGHTS_KEY,
    default_weights,
)
from embed.tabular import RecordEncoder
from embed.train import train_lesion_encoder
from patientgraph.atomic import atomic_path, write_parquet
from patientgraph.errors import InputError
from patientgraph.workspace import Workspace, file_sha256, fingerprint, holding_lock

STAGE = "embed"
Progress = Callable[[int, int], None]


@holding_lock
def run(
    workspace: str | Path | Workspace,
    config: Mapping[str, Any] | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the stage; returns its summary (``skipped=True`` when nothing changed)."""
    started = time.perf_counter()
    ws = Workspace.of(workspace)
    cfg = EmbedConfig.from_dict(config)
    weights = resolve_weights(dict(cfg.weights), {})
    inputs = _inputs(ws)
    stage = ws.start_stage(STAGE, cfg.to_dict(), inputs, started)
    if (last := stage.skip(force)) is not None:
        return last

    lesions = ws.table("lesions")
    summary: dict[str, Any] = {"device": str(resolve_device(cfg.train.device))}
    lesion_fp = fingerprint(_lesion_config(cfg), _lesion_inputs(inputs))
    previous = (ws.stage_record(STAGE) or {}).get("summary", {})
    encoder = None  # trained or loaded here, else the lesion embeddings are reused
    if (not force and previous.get("lesion_fingerprint") == lesion_fp
            and not ws.changed_outputs(STAGE, [LESIONS, FAILURES, LESION_MODEL])):
        lesion_table = ws.read_parquet(LESIONS, writer=STAGE, columns=["lesion_id",
                                                                        "embedding"])
        failures = ws.read_parquet(FAILURES, writer=STAGE)
        summary.update(reused_lesion_embeddings=True,
                       training=previous.get("training", {}))
    else:
        lesion_table, failures, encoder, training = _embed_lesions(ws, cfg, lesions, inputs,
                                                                   progress)
        summary.update(reused_lesion_embeddings=False, training=training)
    summary["lesion_fingerprint"] = lesion_fp
    patients, record_encoder = _patient_vectors(ws, cfg, lesion_table, lesions, weights)

    # Everything is computed: from here on the stage replaces its outputs.
    ws.begin_stage(STAGE)
    if encoder is not None:
        save_encoder(encoder, ws.path(LESION_MODEL), metadata=summary["training"])
        write_parquet(failures, ws.path(FAILURES))
        write_parquet(lesion_table, ws.path(LESIONS))
    if record_encoder is None:
        ws.path(RECORD_MODEL).unlink(missing_ok=True)
    else:
        with atomic_path(ws.path(RECORD_MODEL), suffix=".pt") as tmp:
            torch.save(record_encoder.state(), tmp)
    _write_patients(patients, weights, ws.path(PATIENTS))
    summary.update(
        lesions=len(lesion_table), failed_lesions=len(failures), patients=len(patients),
        patients_with_records=int(patients["has_records"].sum()), weights=weights,
    )
    outputs = [LESIONS, PATIENTS, FAILURES, LESION_MODEL]
    if record_encoder is not None:
        outputs.append(RECORD_MODEL)
    return stage.finish(outputs, summary)


def _inputs(ws: Workspace) -> dict[str, str]:
    """What the stage depends on: the ingest (which hashes the images) and the tables."""
    ingest = ws.stage_record("ingest")
    if ingest is None:
        raise InputError(ws.root, "the workspace holds no ingested cohort",
                         "run `patientgraph ingest deeplesion ...` into it first")
    inputs = {"images": ingest.get("inputs", {}).get("images", ingest["fingerprint"])}
    for name in ("patients", "studies", "lesions", "records"):
        inputs[name] = file_sha256(ws.table_path(name)) if ws.table_path(name).exists() else ""
    return inputs


def _lesion_inputs(inputs: Mapping[str, str]) -> dict[str, str]:
    return {k: inputs[k] for k in ("images", "studies", "lesions")}


def _lesion_config(cfg: EmbedConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    return {k: d[k] for k in ("crop", "encoder", "train", "encoder_checkpoint")}


def _embed_lesions(
    ws: Workspace, cfg: EmbedConfig, lesions: pd.DataFrame, inputs: Mapping[str, str],
    progress: Progress | None,
) -> tuple[pd.DataFrame, pd.DataFrame, LesionEncoder, dict[str, Any]]:
    """Read crops, train (or load) the encoder, embed: (lesion table, failures, encoder,
    training summary); nothing is written but the crop cache."""
    # a checkpoint that does not fit the config fails before minutes of reading slices
    given = _checkpoint(cfg) if cfg.encoder_checkpoint else None
    if cfg.cache_crops:
        crops, _cached = cached_crops(lesions, ws.image_root(), cfg.crop, ws.path(CROP_CACHE),
                                      _lesion_inputs(inputs), workers=cfg.workers,
                                      progress=progress)
    else:
        crops = read_crops(lesions, ws.image_root(), cfg.crop, workers=cfg.workers,
                           progress=progress)
    failures = crops.failures(lesions)
    _check_failures(failures, len(lesions), cfg.on_image_error)
    ok = crops.ok
    readable = lesions[ok].reset_index(drop=True)
    if given is not None:
        encoder, training = given
    else:
        result = train_lesion_encoder(crops.hu[ok], readable, ws.table("studies"), cfg,
                                      progress=progress)
        encoder, training = result.encoder, result.summary()
    vectors = embed_crops(encoder, crops.hu[ok], lesion_metadata(readable),
                          batch_size=cfg.inference_batch_size, device=cfg.train.device,
                          progress=progress)
    table = pd.DataFrame({"lesion_id": readable["lesion_id"].astype(str),
                          "embedding": list(vectors)})
    return table, failures, encoder, training


def _check_failures(failures: pd.DataFrame, n_lesions: int, on_image_error: str) -> None:
    if failures.empty:
        return
    if on_image_error == "raise" or len(failures) == n_lesions:
        first = failures.iloc[0]
        what = "no lesion image could be read" if len(failures) == n_lesions else (
            f"{len(failures)} lesion image(s) could not be read")
        raise InputError(
            None, f"{what}; the first, lesions row {int(first['source_row'])}: "
            f"{first['problem']}",
            "repair or restore the images, or set the embed option on_image_error to skip "
            "to embed the others and list the failures in embeddings/failures.parquet",
        )


def _checkpoint(cfg: EmbedConfig) -> tuple[LesionEncoder, dict[str, Any]]:
    """The given encoder checkpoint (checked against the crop and network config) and its
    training summary."""
    encoder = load_encoder(cfg.encoder_checkpoint, expect_crop=cfg.crop,
                           expect_encoder=cfg.encoder)
    metadata = read_checkpoint(cfg.encoder_checkpoint).get("metadata", {})
    return encoder, {"checkpoint": str(cfg.encoder_checkpoint), **metadata}


def _patient_vectors(ws: Workspace, cfg: EmbedConfig, lesion_table: pd.DataFrame,
                     lesions: pd.DataFrame, weights: Mapping[str, float],
                     ) -> tuple[pd.DataFrame, RecordEncoder | None]:
    """One row per patient: fused embedding and the modality parts; and the record encoder
    (None when there are no records)."""
    patient_ids = ws.table("patients")["patient_id"].astype(str).tolist()
    lesion_patient = lesion_table["lesion_id"].map(
        lesions.set_index("lesion_id")["patient_id"]).astype(str).to_numpy()
    vectors = np.stack(lesion_table["embedding"].to_numpy()) if len(lesion_table) else (
        np.zeros((0, cfg.encoder.embedding_dim), np.float32))
    parts = {"imaging": pool_lesions(patient_ids, lesion_patient, vectors)}
    parts["records"], has_records, record_encoder = _record_vectors(ws, cfg, patient_ids)
    fused = fuse(parts, weights)
    n_lesions = pd.Series(lesion_patient).value_counts().reindex(patient_ids, fill_value=0)
    return pd.DataFrame({
        "patient_id": patient_ids,
        "embedding": list(fused),
        **{m: list(parts[m]) for m in MODALITIES},
        "n_lesions": n_lesions.to_numpy(dtype="int64"),
        "has_records": has_records,
    }), record_encoder


def _record_vectors(ws: Workspace, cfg: EmbedConfig, patient_ids: list[str],
                    ) -> tuple[np.ndarray, np.ndarray, RecordEncoder | None]:
    """Record embeddings per patient (zero, has_records False, where there is no record),
    and the fitted record encoder (None without records)."""
    records = ws.table("records")
    dim = cfg.tabular.embedding_dim
    covariates = [c for c in records.columns if c != "patient_id"]
    if records.empty or not covariates:
        zeros = np.zeros((len(patient_ids), dim), np.float32)
        return zeros, np.zeros(len(patient_ids), bool), None
    encoder = RecordEncoder(cfg.tabular).fit(records)
    vectors = pd.DataFrame(encoder.transform(records), index=records["patient_id"].astype(str))
    present = pd.Index(patient_ids).isin(vectors.index)
    out = vectors.reindex(patient_ids).fillna(0.0).to_numpy(dtype=np.float32)
    return out, present, encoder


def _write_patients(patients: pd.DataFrame, weights: Mapping[str, float], path: Path) -> None:
    patients = patients.copy()
    patients.attrs[WEIGHTS_KEY] = json.dumps(dict(weights))
    write_parquet(patients, path)
