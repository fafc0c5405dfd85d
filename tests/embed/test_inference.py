"""Inference: streamed from images or from crops in memory, CPU and (when present) CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embed.config import FAST
from embed.crops import lesion_metadata, read_crops
from embed.encoder import LesionEncoder
from embed.inference import embed_crops, embed_lesions, resolve_device
from patientgraph.errors import InputError


@pytest.fixture(scope="module")
def encoder() -> LesionEncoder:
    torch.manual_seed(0)
    return LesionEncoder(FAST.encoder, FAST.crop).eval()


def test_streamed_and_in_memory_embeddings_agree(ingested, encoder):
    lesions = ingested.table("lesions")
    streamed, problems = embed_lesions(encoder, lesions, ingested.image_root(), batch_size=16,
                                       workers=2, device="cpu")
    crops = read_crops(lesions, ingested.image_root(), FAST.crop, workers=0)
    in_memory = embed_crops(encoder, crops.hu, lesion_metadata(lesions), batch_size=16,
                            device="cpu")
    assert not problems
    assert streamed.shape == (len(lesions), 128)
    # crops are kept as float16 in memory: nearly, not exactly, the same vectors
    assert (streamed * in_memory).sum(axis=1).min() > 0.999


def test_failed_lesions_are_nan_rows(ingested, encoder):
    lesions = ingested.table("lesions").head(5).copy()
    lesions.loc[1, "series_ref"] = "gone"
    vectors, problems = embed_lesions(encoder, lesions, ingested.image_root(), workers=0,
                                      device="cpu")
    assert list(problems) == [1]
    assert np.isnan(vectors[1]).all() and np.isfinite(vectors[[0, 2, 3, 4]]).all()


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="Did you mean 'cuda'"):
        resolve_device("cdua")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_mixed_precision_matches_cpu(ingested, encoder):
    lesions = ingested.table("lesions")
    crops = read_crops(lesions, ingested.image_root(), FAST.crop, workers=0)
    loc = lesion_metadata(lesions)
    cpu = embed_crops(encoder, crops.hu, loc, device="cpu")
    gpu = embed_crops(encoder, crops.hu, loc, device="cuda")
    encoder.cpu()
    assert (cpu * gpu).sum(axis=1).min() > 0.99
