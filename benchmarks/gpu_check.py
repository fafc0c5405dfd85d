"""Lesion-encoder throughput on CUDA (mixed precision) beside the CPU; prints JSON.

    python -m benchmarks.gpu_check [--steps 300] [--knn-points 1000000] [--stage-epochs 1]
                                   [--out report.json] [--smoke]

Runs without a cohort: random HU crops of the default crop shape go through the default
encoder. Measures training steps (two views per lesion, the contrastive loss of the embed
stage), inference, and the exact all-points kNN graph in torch (:func:`embed.index.torch_knn`).
CPU figures come from a few steps and are rates, not totals. Throughput only: no quality.

On CUDA it also runs the embed stage's own training loop (:func:`embed.train.
train_lesion_encoder`: sampler, crops gathered in GPU memory, augmentation there,
validation) on DeepLesion-sized random crops for ``--stage-epochs`` epochs and extrapolates
the default schedule (two rounds of ``max_epochs``); sweeps the step's batch size with and
without cuDNN autotuning; and trains a generic ResNet-18 on the same crop shape as the
baseline of what the GPU can do. ``--smoke`` runs every part tiny on the CPU (the tests do).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embed.augment import paired_views
from embed.config import EmbedConfig
from embed.crops import METADATA
from embed.encoder import LesionEncoder
from embed.index import torch_knn
from embed.inference import amp_dtype, autocast
from embed.losses import positive_weights, soft_contrastive_loss

DEEPLESION_LESIONS = 32_735


def _crops(n: int, config: EmbedConfig, seed: int = 0) -> torch.Tensor:
    c = config.crop
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c.depth, c.out_px, c.out_px, generator=g) * 1400 - 1000


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed_steps(step, steps: int, batch_size: int, device: torch.device) -> dict:
    """Lesions/s of ``steps`` calls of ``step`` (after one warm-up call)."""
    step()
    _synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    seconds = time.perf_counter() - t0
    return {"lesions_per_s": steps * batch_size / seconds, "steps": steps,
            "batch_lesions": batch_size, "seconds": seconds}


def train_throughput(device: torch.device, steps: int, batch_size: int = 256,
                     config: EmbedConfig = EmbedConfig()) -> dict:
    """Lesions/s of training steps (two views each) with the stage's loss."""
    torch.manual_seed(0)
    model = LesionEncoder(config.encoder, config.crop).to(
        device, memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(enabled=amp_dtype(device) == torch.float16)
    crops = _crops(batch_size, config).to(device)
    metadata = torch.rand(2 * batch_size, len(METADATA), device=device)
    lesion = torch.arange(batch_size).repeat(2)
    weights = positive_weights(lesion, torch.full_like(lesion, -1), lesion % 8).to(device)
    generator = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        views = paired_views(crops, generator, n_slices=config.crop.n_slices)
        with autocast(device):
            z = model(views, metadata)
        loss = soft_contrastive_loss(z.float(), weights, 0.1)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return _timed_steps(step, steps, batch_size, device)


def inference_throughput(device: torch.device, n: int, batch_size: int = 1024,
                         config: EmbedConfig = EmbedConfig()) -> dict:
    """Lesions/s of the encoder on crops already in memory (pinned on CUDA)."""
    torch.manual_seed(0)
    model = LesionEncoder(config.encoder, config.crop).to(
        device, memory_format=torch.channels_last).eval()
    crops = _crops(n, config)
    metadata = torch.rand(n, len(METADATA))
    if device.type == "cuda":
        crops, metadata = crops.pin_memory(), metadata.pin_memory()
    with torch.inference_mode(), autocast(device):
        model(crops[:batch_size].to(device), metadata[:batch_size].to(device))
        _synchronize(device)
        t0 = time.perf_counter()
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size)
            model(crops[rows].to(device, non_blocking=True),
                  metadata[rows].to(device, non_blocking=True)).float().cpu()
        _synchronize(device)
    seconds = time.perf_counter() - t0
    return {"lesions_per_s": n / seconds, "lesions": n, "seconds": seconds,
            "deeplesion_seconds": DEEPLESION_LESIONS * seconds / n}


def knn_graph_seconds(device: torch.device, n_points: int, n_queries: int, k: int = 10,
                      dim: int = 128) -> dict:
    """Exact kNN-graph time for ``n_points`` (extrapolated from ``n_queries`` queries)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_points, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    torch_knn(x, x[:1024], k + 1, device=device.type)
    _synchronize(device)
    t0 = time.perf_counter()
    torch_knn(x, x[:n_queries], k + 1, device=device.type, batch_size=8192)
    _synchronize(device)
    seconds = time.perf_counter() - t0
    return {"points": n_points, "queries_timed": n_queries,
            "graph_seconds": seconds * n_points / n_queries,
            "extrapolated": n_queries < n_points}


def fake_cohort(n_lesions: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A lesion table and its studies shaped like DeepLesion's for the training loop: ~7.4
    lesions and 2-3 studies per patient, a third of the lesions typed, split 3 held out,
    a lesion seen again in the next study at nearly the same place."""
    rng = np.random.default_rng(seed)
    per_study = 3
    n_studies = -(-n_lesions // per_study)
    study_patient = np.arange(n_studies) // 2.4
    studies = pd.DataFrame({
        "study_id": [f"s{i}" for i in range(n_studies)],
        "patient_id": [f"p{int(p)}" for p in study_patient],
        "day": (np.arange(n_studies) % 3) * 90.0, "study_index": np.arange(n_studies) % 3 + 1})
    study = np.arange(n_lesions) // per_study
    patient = study_patient.astype(int)[study]
    base = rng.random((patient.max() + 1, per_study, 3))
    loc = base[patient, np.arange(n_lesions) % per_study] + rng.normal(0, 0.01, (n_lesions, 3))
    split = rng.choice([1, 2, 3], size=n_studies, p=[0.7, 0.15, 0.15])[study]
    typed = rng.random(n_lesions) < 0.33
    lesions = pd.DataFrame({
        "lesion_id": [f"l{i}" for i in range(n_lesions)],
        "patient_id": studies["patient_id"].to_numpy()[study],
        "study_id": studies["study_id"].to_numpy()[study],
        "coarse_type": pd.array(np.where(typed, rng.integers(1, 9, n_lesions), -1),
                                dtype="Int64").astype("Int64"),
        "noisy": False, "split": split,
        "loc_x": loc[:, 0], "loc_y": loc[:, 1], "loc_z": loc[:, 2],
        "window_lo": -160.0, "window_hi": 240.0,
        "long_mm": rng.lognormal(3.0, 0.5, n_lesions),
        "short_mm": rng.lognormal(2.6, 0.5, n_lesions)})
    lesions.loc[~typed, "coarse_type"] = pd.NA
    return lesions, studies


def stage_training(device: torch.device, n_lesions: int, epochs: int,
                   batch_size: int | None = None, config: dict | None = None) -> dict:
    """The embed stage's training loop (one round of ``epochs``) on ``n_lesions`` random
    crops; lesions/s of the loop (validation and the final centring included) and the
    default schedule's time at that rate."""
    from embed.train import train_lesion_encoder

    lesions, studies = fake_cohort(n_lesions)
    cfg = EmbedConfig.from_dict({**(config or {}), "train": {
        **(config or {}).get("train", {}), "max_epochs": epochs, "rounds": 1,
        "pseudo_label_epoch": None, "device": device.type,
        **({"batch_size": batch_size} if batch_size else {})}})
    hu = _crops(n_lesions, cfg).numpy().astype(np.float16)
    _synchronize(device)
    t0 = time.perf_counter()
    result = train_lesion_encoder(hu, lesions, studies, cfg)
    _synchronize(device)
    seconds = time.perf_counter() - t0
    trained = result.patients.get("train", 0)
    default = EmbedConfig().train
    per_epoch = seconds / epochs
    return {"lesions": n_lesions, "train_patients": trained, "epochs": epochs,
            "batch_lesions": cfg.train.batch_size, "seconds": seconds,
            "lesions_per_s": n_lesions * epochs / seconds,
            "default_schedule_seconds": per_epoch * default.max_epochs * default.rounds}


def resnet18_throughput(device: torch.device, steps: int, batch_size: int = 256,
                        config: EmbedConfig = EmbedConfig()) -> dict:
    """A generic 2-D ResNet-18 (MONAI) on the same crop shape and views, same loss: what
    the GPU does for a standard network of this input size."""
    from monai.networks.nets import resnet18

    torch.manual_seed(0)
    c = config.crop
    net = resnet18(spatial_dims=2, n_input_channels=c.channels, num_classes=128).to(
        device, memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    crops = _crops(batch_size, config).to(device)
    windows = LesionEncoder(config.encoder, c).windows.to(device)
    lesion = torch.arange(batch_size).repeat(2)
    weights = positive_weights(lesion, torch.full_like(lesion, -1), lesion % 8).to(device)
    generator = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        views = paired_views(crops, generator, n_slices=c.n_slices)
        with autocast(device):
            z = torch.nn.functional.normalize(net(windows(views)).float(), dim=1)
        loss = soft_contrastive_loss(z, weights, 0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _timed_steps(step, steps, batch_size, device)


def batch_sweep(device: torch.device, steps: int, sizes=(64, 256, 1024)) -> list[dict]:
    """Training-step throughput by batch size, with and without cuDNN autotuning."""
    out = []
    saved = torch.backends.cudnn.benchmark
    try:
        for autotune in (False, True):
            torch.backends.cudnn.benchmark = autotune
            for size in sizes:
                row = train_throughput(device, steps=steps, batch_size=size)
                out.append({"cudnn_benchmark": autotune, **row})
    finally:
        torch.backends.cudnn.benchmark = saved
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="CUDA training steps")
    parser.add_argument("--knn-points", type=int, default=1_000_000)
    parser.add_argument("--stage-epochs", type=int, default=1,
                        help="epochs of the stage's training loop at DeepLesion size")
    parser.add_argument("--out", help="also write the report to this JSON file")
    parser.add_argument("--smoke", action="store_true",
                        help="every part tiny, on the CPU (CUDA parts too): a check, no figure")
    args = parser.parse_args(argv)
    cpu = torch.device("cpu")
    report = {"torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "cuda": torch.cuda.is_available()}
    small = args.smoke
    report["cpu"] = {
        "train": train_throughput(cpu, steps=1 if small else 3, batch_size=8 if small else 64),
        "inference": inference_throughput(cpu, n=64 if small else 2048, batch_size=32 if small
                                          else 256),
        "knn_graph": knn_graph_seconds(cpu, 2048 if small else args.knn_points,
                                       n_queries=256 if small else 2048),
    }
    if torch.cuda.is_available() or small:
        dev = torch.device("cuda") if torch.cuda.is_available() else cpu
        report["gpu"] = torch.cuda.get_device_name(0) if dev.type == "cuda" else None
        report["amp_dtype"] = str(amp_dtype(dev))
        steps = 2 if small else args.steps
        report["cuda"] = {
            "train": train_throughput(dev, steps=steps, batch_size=16 if small else 256),
            "inference": inference_throughput(dev, n=64 if small else DEEPLESION_LESIONS),
            "knn_graph": knn_graph_seconds(dev, 2048 if small else args.knn_points,
                                           n_queries=2048 if small else args.knn_points),
            "stage_training": stage_training(dev, 400 if small else DEEPLESION_LESIONS,
                                             epochs=1 if small else args.stage_epochs),
            "stage_training_batch_256": stage_training(
                dev, 400 if small else DEEPLESION_LESIONS, epochs=1 if small else
                args.stage_epochs, batch_size=256),
            "batch_sweep": batch_sweep(dev, steps=1 if small else 50,
                                       sizes=(8, 16) if small else (64, 256, 1024)),
            "resnet18": resnet18_throughput(dev, steps=steps, batch_size=16 if small else 256),
        }
        for part in ("train", "inference"):
            report["cuda"][part]["speedup_vs_cpu"] = (
                report["cuda"][part]["lesions_per_s"] / report["cpu"][part]["lesions_per_s"])
    text = json.dumps(report, indent=2, default=float)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
