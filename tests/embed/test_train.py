"""Training the lesion encoder on a tiny cohort: reproducible, split by patient."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import embed.train
from embed.config import EmbedConfig
from embed.crops import read_crops
from embed.encoder import LesionEncoder
from embed.inference import embed_crops
from embed.labels import HOLDOUT, split_patients
from embed.train import (
    BatchSampler,
    TrainingHeads,
    _prepare_data,
    pseudo_labels,
    train_lesion_encoder,
)
from patientgraph.errors import InputError

FAST = EmbedConfig.from_dict({"preset": "fast"})


@pytest.fixture(scope="module")
def crops(ingested):
    return read_crops(ingested.table("lesions"), ingested.image_root(), FAST.crop, workers=0).hu


def test_training_is_reproducible_on_the_cpu(ingested, crops):
    lesions, studies = ingested.table("lesions"), ingested.table("studies")
    steps = []
    a = train_lesion_encoder(crops, lesions, studies, FAST,
                             progress=lambda done, total: steps.append((done, total)))
    b = train_lesion_encoder(crops, lesions, studies, FAST)
    for (name, x), (_, y) in zip(a.encoder.state_dict().items(),
                                 b.encoder.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert steps[-1] == (8, 8)  # 2 epochs x 4 steps
    summary = a.summary()
    assert summary["epochs_run"] == len(summary["history"]) >= 1
    assert summary["patients"]["holdout"] == (split_patients(lesions) == HOLDOUT).sum()
    assert np.isfinite([h["loss"] for h in summary["history"]]).all()


def test_other_seed_other_weights(ingested, crops):
    lesions, studies = ingested.table("lesions"), ingested.table("studies")
    other = EmbedConfig.from_dict({"preset": "fast", "train": {"seed": 1}})
    a = train_lesion_encoder(crops, lesions, studies, FAST).encoder
    b = train_lesion_encoder(crops, lesions, studies, other).encoder
    assert not torch.equal(a.projection[0].weight, b.projection[0].weight)


def test_everyone_held_out_is_an_error(ingested, crops):
    lesions = ingested.table("lesions").assign(split=3)
    lesions["split"] = lesions["split"].astype("Int64")
    with pytest.raises(InputError, match="no patient is left.*holdout_split to null"):
        train_lesion_encoder(crops, lesions, ingested.table("studies"), FAST)


def test_pseudo_labels_fill_only_untyped_training_lesions(ingested, crops):
    lesions, studies = ingested.table("lesions"), ingested.table("studies")
    data = _prepare_data(crops, lesions, studies, FAST)
    train = np.flatnonzero(data.role == "train")
    torch.manual_seed(0)
    model = LesionEncoder(FAST.encoder, FAST.crop)
    heads = TrainingHeads(FAST.encoder.embedding_dim, data.targets.shape[1])
    cpu = torch.device("cpu")
    given = data.types.copy()
    untyped = train[given[train] < 0]
    assert len(untyped)
    everyone = pseudo_labels(model, heads, data, train, given, replace(FAST.train,
                             pseudo_label_threshold=0.0), cpu)
    assert set(everyone[untyped]) <= set(range(1, 9))  # a coarse type each, never 0
    typed = given >= 0
    assert np.array_equal(everyone[typed], given[typed])  # readers' labels are kept
    outside = np.setdiff1d(np.arange(len(given)), train)
    assert np.array_equal(everyone[outside], given[outside])  # never validation or holdout
    none = pseudo_labels(model, heads, data, train, given, replace(FAST.train,
                         pseudo_label_threshold=1.01), cpu)
    assert np.array_equal(none, given)


def test_training_with_pseudo_labels_and_patient_positives(ingested, crops):
    config = EmbedConfig.from_dict({"preset": "fast", "train": {
        "pseudo_label_epoch": 1, "pseudo_label_threshold": 0.0, "same_patient_weight": 1.0,
        "keep": "last"}})
    result = train_lesion_encoder(crops, ingested.table("lesions"), ingested.table("studies"),
                                  config)
    summary = result.summary()
    assert summary["pseudo_labelled"] > 0
    assert summary["epochs_run"] == config.train.max_epochs  # keep=last: no early stop
    assert np.isfinite([h["loss"] for h in summary["history"]]).all()


def test_second_round_trains_afresh_on_the_first_rounds_pseudo_labels(ingested, crops):
    lesions, studies = ingested.table("lesions"), ingested.table("studies")
    options = {"pseudo_label_epoch": None, "pseudo_label_threshold": 0.0, "keep": "last"}
    one = EmbedConfig.from_dict({"preset": "fast", "train": options})
    two = EmbedConfig.from_dict({"preset": "fast", "train": {**options, "rounds": 2}})
    first = train_lesion_encoder(crops, lesions, studies, one).summary()
    both = train_lesion_encoder(crops, lesions, studies, two)
    summary = both.summary()
    assert first["pseudo_labelled"] == 0  # no pseudo-labels within a round
    assert summary["pseudo_labelled"] > 0  # the second round trained on the first's
    assert [h["round"] for h in summary["history"]] == [1] * 2 + [2] * 2
    # round 1 of the two-round run is the one-round run, step for step
    assert [h["loss"] for h in summary["history"][:2]] == [h["loss"] for h in first["history"]]
    assert [h["loss"] for h in summary["history"][2:]] != [h["loss"] for h in first["history"]]
    again = train_lesion_encoder(crops, lesions, studies, two).encoder
    for a, b in zip(both.encoder.state_dict().values(), again.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)  # reproducible


def test_later_rounds_may_continue_from_the_last_rounds_network(ingested, crops,
                                                               monkeypatch):
    lesions, studies = ingested.table("lesions"), ingested.table("studies")
    options = {"pseudo_label_epoch": None, "pseudo_label_threshold": 0.0, "keep": "last",
               "rounds": 2}
    fresh = EmbedConfig.from_dict({"preset": "fast", "train": options})
    warm = EmbedConfig.from_dict({"preset": "fast", "train": {**options,
                                                               "round_start": "previous"}})
    real, starts = embed.train._train_round, []

    def spy(*args):  # _train_round(data, labels, ..., round_, start=None), positionally
        start = args[7] if len(args) > 7 else None
        starts.append(None if start is None else _state(start[0]))
        out = real(*args)
        starts.append(_state(out[0].encoder))
        return out

    monkeypatch.setattr(embed.train, "_train_round", spy)
    a = train_lesion_encoder(crops, lesions, studies, warm).summary()
    assert starts[0] is None  # round 1 starts fresh
    for name, weights in starts[1].items():  # round 2 starts where round 1 ended
        assert torch.equal(starts[2][name], weights), name
    b = train_lesion_encoder(crops, lesions, studies, fresh).summary()
    assert starts[4] is None  # the default: every round from a fresh network
    assert [h["loss"] for h in a["history"][:2]] == [h["loss"] for h in b["history"][:2]]
    assert [h["loss"] for h in a["history"][2:]] != [h["loss"] for h in b["history"][2:]]


def _state(model: LesionEncoder) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_trained_encoder_is_centred_on_its_training_lesions(ingested, crops):
    lesions, studies = ingested.table("lesions"), ingested.table("studies")
    encoder = train_lesion_encoder(crops, lesions, studies, FAST).encoder
    data = _prepare_data(crops, lesions, studies, FAST)
    train = np.flatnonzero(data.role == "train")
    centre = encoder.mean_embedding.clone()
    assert centre.norm() > 0.1  # uncentred embeddings share a direction
    centred = embed_crops(encoder, crops[train], data.metadata[train])
    assert np.linalg.norm(centred.mean(axis=0)) < 0.5 * float(centre.norm())
    encoder.mean_embedding.zero_()
    uncentred = embed_crops(encoder, crops[train], data.metadata[train])
    assert np.allclose(uncentred.mean(axis=0), centre.numpy(), atol=1e-4)


def test_rounds_stop_when_every_training_lesion_is_typed(ingested, crops):
    lesions = ingested.table("lesions")
    untyped = lesions["coarse_type"].isna()
    assert untyped.any()
    lesions.loc[untyped, "coarse_type"] = 1 + np.arange(int(untyped.sum())) % 8
    lesions["noisy"] = False
    config = EmbedConfig.from_dict({"preset": "fast", "train": {"rounds": 3, "keep": "last"}})
    steps = []
    result = train_lesion_encoder(crops, lesions, ingested.table("studies"), config,
                                  progress=lambda done, total: steps.append((done, total)))
    summary = result.summary()
    assert summary["pseudo_labelled"] == 0
    # a second round would train on the same labels: the same network again
    assert [h["round"] for h in summary["history"]] == [1, 1]
    assert steps[-1] == (24, 24)  # the bar still ends full (3 rounds x 2 epochs x 4 steps)


def test_batch_sampler_mixes_typed_paired_and_random_lesions():
    train = np.arange(40)
    types = np.where(train < 10, train % 2 + 1, -1)
    track = np.where((train >= 20) & (train < 30), (train - 20) // 2, -1)
    sampler = BatchSampler(train, types, track, batch_size=16, labelled_share=0.5,
                           rng=np.random.default_rng(0))
    batch = sampler()
    assert len(batch) == 16
    assert (types[batch[:8]] >= 0).all()  # the typed half
    pairs = batch[8:10]
    assert track[pairs[0]] == track[pairs[1]] >= 0  # a mined pair, both members


def test_batch_sampler_draws_groups_of_one_patients_lesions():
    train = np.arange(60)
    types = np.full(60, -1)
    track = np.full(60, -1)
    patient = train // 5  # 12 patients with 5 lesions each
    sampler = BatchSampler(train, types, track, batch_size=16, labelled_share=0.5,
                           rng=np.random.default_rng(0), patient=patient, patient_group=4)
    batch = sampler()
    assert len(batch) == 16
    groups = batch.reshape(4, 4)  # no typed lesions, no pairs: four groups of four
    assert all(len(set(patient[g])) == 1 and len(set(g)) == 4 for g in groups)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_cuda_with_mixed_precision(ingested, crops):
    config = EmbedConfig.from_dict({"preset": "fast", "train": {"device": "cuda"}})
    result = train_lesion_encoder(crops, ingested.table("lesions"), ingested.table("studies"),
                                  config)
    assert next(result.encoder.parameters()).is_cuda
    assert np.isfinite([h["loss"] for h in result.history]).all()
