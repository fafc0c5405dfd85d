"""One small workspace run through every stage, shared by the workspace fault tests.

20 synthetic patients on 96 px slices (the fewest with enough events for the survival
scan). The lesion encoder is an untrained one from a checkpoint (``encoder_checkpoint``)
and the record encoder trains for two epochs, so no test waits for training; the discover
stage's analyses are recorded once so that the fault-injection children can replay them
(:mod:`tests.security.crash_driver`).
"""

from __future__ import annotations

import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

N_PATIENTS = 20


@dataclass(frozen=True)
class Base:
    """The shared workspace (read-only: copy it) and what rebuilds or reruns it."""

    root: Path
    cohort: Path
    config: dict[str, Any]
    checkpoint: Path
    replay: Path

    def copy(self, dst: Path) -> Path:
        shutil.copytree(self.root, dst, symlinks=True)
        return dst

    def ingest_kwargs(self) -> dict[str, Any]:
        c = self.cohort
        return {"info": str(c / "DL_info.csv"), "images": str(c / "Images_png"),
                "records": str(c / "records.csv"), "outcomes": str(c / "outcomes.csv"),
                "studies": str(c / "studies.csv")}


def save_random_encoder(path: Path, seed: int) -> Path:
    """An untrained lesion encoder of the fast preset, written as a checkpoint."""
    import torch

    from embed.config import EmbedConfig
    from embed.encoder import LesionEncoder, save_encoder

    cfg = EmbedConfig.from_dict({"preset": "fast"})
    torch.manual_seed(seed)
    return save_encoder(LesionEncoder(cfg.encoder, cfg.crop).eval(), path,
                        metadata={"seed": seed})


def pipeline_config(checkpoint: Path) -> dict[str, Any]:
    return {"embed": {"preset": "fast", "encoder_checkpoint": str(checkpoint),
                      "tabular": {"epochs": 2}},
            "index": {"k": 5}}


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Base:
    import discovery.stage
    from patientgraph import ingest_deeplesion
    from patientgraph.app.pipeline import run_pipeline
    from patientgraph.synth import generate

    top = tmp_path_factory.mktemp("faults")
    cohort = top / "cohort"
    generate(cohort, n_patients=N_PATIENTS, seed=3, image_size=96)
    checkpoint = save_random_encoder(top / "encoder.pt", seed=0)
    ws = top / "ws"
    b = Base(ws, cohort, pipeline_config(checkpoint), checkpoint, top / "analyses.pkl")
    ingest_deeplesion(workspace=ws, **b.ingest_kwargs())

    real = discovery.stage.analyse
    recorded = []

    def recording(*args, **kwargs):
        recorded.append(real(*args, **kwargs))
        return recorded[-1]

    discovery.stage.analyse = recording
    try:
        run_pipeline(ws, config=b.config, echo=lambda _m: None)
    finally:
        discovery.stage.analyse = real
    b.replay.write_bytes(pickle.dumps(recorded[-1]))
    return b
