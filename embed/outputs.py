"""What the embed stage writes, by name, and how to read its stored weights: a module
without torch, so that what only reads the outputs (the index stage, ``patientgraph
similar``, the explorer) does not import the deep-learning stack."""

from __future__ import annotations

import json

import pandas as pd

from embed.fusion import MODALITIES

LESIONS = "embeddings/lesions.parquet"
PATIENTS = "embeddings/patients.parquet"
FAILURES = "embeddings/failures.parquet"
LESION_MODEL = "models/lesion_encoder.pt"
RECORD_MODEL = "models/record_encoder.pt"
CROP_CACHE = "cache/crops"
"""Crops kept for the next run (:func:`embed.crops.cached_crops`); safe to delete."""
WEIGHTS_KEY = "patientgraph.weights"
"""Parquet metadata key of patients.parquet holding the default modality weights (JSON)."""


def default_weights(patients: pd.DataFrame) -> dict[str, float]:
    """The default modality weights stored with ``patients.parquet`` (equal without)."""
    raw = patients.attrs.get(WEIGHTS_KEY)
    return json.loads(raw) if raw else {m: 1.0 / len(MODALITIES) for m in MODALITIES}
