"""Lesion-encoder throughput on CUDA (mixed precision) beside the CPU; prints JSON.

    python -m benchmarks.gpu_check [--steps 300] [--knn-points 1000000]

Runs without a cohort: random HU crops of the default crop shape go through the default
encoder. Measures training steps (two views per lesion, the contrastive loss of the embed
stage), inference, and the exact all-points kNN graph in torch (:func:`embed.index.torch_knn`).
CPU figures come from a few steps and are rates, not totals. Throughput only: no quality.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
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

    step()
    _synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    seconds = time.perf_counter() - t0
    return {"lesions_per_s": steps * batch_size / seconds, "steps": steps,
            "batch_lesions": batch_size, "seconds": seconds}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="CUDA training steps")
    parser.add_argument("--knn-points", type=int, default=1_000_000)
    args = parser.parse_args()
    cpu = torch.device("cpu")
    report = {"torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "cuda": torch.cuda.is_available()}
    report["cpu"] = {
        "train": train_throughput(cpu, steps=3, batch_size=64),
        "inference": inference_throughput(cpu, n=2048, batch_size=256),
        "knn_graph": knn_graph_seconds(cpu, args.knn_points, n_queries=2048),
    }
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        report["gpu"] = torch.cuda.get_device_name(0)
        report["amp_dtype"] = str(amp_dtype(cuda))
        report["cuda"] = {
            "train": train_throughput(cuda, steps=args.steps),
            "inference": inference_throughput(cuda, n=DEEPLESION_LESIONS),
            "knn_graph": knn_graph_seconds(cuda, args.knn_points, n_queries=args.knn_points),
        }
        for part in ("train", "inference"):
            report["cuda"][part]["speedup_vs_cpu"] = (
                report["cuda"][part]["lesions_per_s"] / report["cpu"][part]["lesions_per_s"])
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
