"""Training the lesion encoder with the weak labels of an archive (:mod:`embed.labels`).

Each step draws a batch of training lesions (``labelled_share`` of them typed and
class-balanced, a share of the rest as mined same-lesion pairs), makes two random views of
each (:mod:`embed.augment`) and minimises

* a soft contrastive loss in which a view's positives are its other view (self-supervision,
  every lesion), the same lesion in the next study and lesions of the same coarse type
  (:mod:`embed.losses`);
* a proxy loss: cross-entropy of the cosine similarity to one learnable vector per type,
  for typed lesions (stable class centres when labelled lesions are few);
* a regression of location and size from the embedding.

Two ways to use the untyped majority of an archive (DeepLesion types only its validation
and test rows): the patient's other lesions as weak positives (``same_patient_weight``;
most of a patient's lesions are of one type, and batches then hold groups of a patient's
lesions), and, after ``pseudo_label_epoch``, pseudo-types for untyped training lesions from
the proxy head, pooled over the patient's lesions, where confident (:func:`pseudo_labels`).
With ``rounds`` (two by default) a fresh network then trains again, the untyped lesions
typed by the last round's model (self-training); rounds stop early when the new labels are
those the last round trained on (an archive typed throughout trains once); each round
starts from a fresh network or, with ``round_start="previous"``, from the last round's. The
final network's mean embedding over the training lesions is stored in it
(:meth:`LesionEncoder.set_centre`) when the encoder config asks for centring.

After every epoch the validation patients' lesions are scored (type precision@10 against
the typed training lesions, or same-lesion top-1 on mined pairs where no types exist); the
best epoch's weights are kept and training stops after ``patience`` epochs without
improvement (``keep="best"``), or all ``max_epochs`` run down the cosine schedule and the
last weights are kept (``keep="last"``). Reproducible on the CPU for a given seed and
thread count.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from embed.augment import paired_views
from embed.config import EmbedConfig, TrainConfig
from embed.crops import lesion_metadata
from embed.encoder import LesionEncoder
from embed.inference import amp_dtype, autocast, embed_crops, resolve_device
from embed.labels import (
    HOLDOUT,
    TRAIN,
    VALIDATION,
    location_size_targets,
    mine_same_lesion_pairs,
    split_patients,
    standardise,
    tracks,
    type_labels,
)
from embed.losses import masked_regression_loss, positive_weights, soft_contrastive_loss
from embed.metrics import gallery_precision_at_k, same_lesion_top1
from patientgraph.errors import InputError
from patientgraph.schema import COARSE_TYPES

Progress = Callable[[int, int], None]


@dataclass
class TrainingResult:
    """A trained encoder and how it got there."""

    encoder: LesionEncoder
    metric: str
    best_score: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    patients: dict[str, int] = field(default_factory=dict)
    labelled_lesions: int = 0
    mined_pairs: int = 0
    pseudo_labelled: int = 0
    seconds: float = 0.0

    def summary(self) -> dict:
        """JSON-able facts for the manifest and the checkpoint."""
        return {
            "metric": self.metric, "best_score": self.best_score, "best_epoch": self.best_epoch,
            "epochs_run": len(self.history), "patients": self.patients,
            "labelled_lesions": self.labelled_lesions, "mined_pairs": self.mined_pairs,
            "pseudo_labelled": self.pseudo_labelled,
            "seconds": round(self.seconds, 1), "history": self.history,
        }


@dataclass
class _Data:
    """Per-lesion training arrays, restricted to lesions whose crop was read."""

    hu: np.ndarray
    role: np.ndarray
    patient: np.ndarray
    patient_code: np.ndarray
    study: np.ndarray
    metadata: np.ndarray
    types: np.ndarray
    track: np.ndarray
    targets: np.ndarray
    pairs: pd.DataFrame


class BatchSampler:
    """Draws batches of training-lesion positions: typed lesions class-balanced, mined
    pairs together, the rest uniformly."""

    def __init__(self, train: np.ndarray, types: np.ndarray, track: np.ndarray,
                 batch_size: int, labelled_share: float, rng: np.random.Generator,
                 patient: np.ndarray | None = None, patient_group: int = 0):
        self.train, self.batch_size, self.rng = train, batch_size, rng
        self.patient_group = patient_group
        self.patient_members = []
        if patient is not None and patient_group > 1:
            groups = pd.Series(train).groupby(patient[train]).agg(list)
            self.patient_members = [g for g in groups.tolist() if len(g) >= 2]
        typed = train[types[train] >= 0]
        self.by_type = [typed[types[typed] == t] for t in np.unique(types[typed])]
        self.n_labelled = int(round(batch_size * labelled_share)) if self.by_type else 0
        in_track = train[track[train] >= 0]
        self.track_members = pd.Series(in_track).groupby(track[in_track]).agg(list).tolist()

    def __call__(self) -> np.ndarray:
        picks = [self._typed(self.n_labelled)]
        rest = self.batch_size - self.n_labelled
        if self.track_members:
            picks.append(self._pairs(rest // 4))
        if self.patient_members:
            picks.append(self._patients(self.batch_size - sum(map(len, picks))))
        picks.append(self.rng.choice(self.train, self.batch_size - sum(map(len, picks))))
        return np.concatenate(picks).astype(np.int64)

    def _typed(self, n: int) -> np.ndarray:
        if n == 0:
            return np.empty(0, np.int64)
        groups = self.rng.integers(len(self.by_type), size=n)
        return np.array([self.rng.choice(self.by_type[g]) for g in groups], np.int64)

    def _patients(self, n: int) -> np.ndarray:
        """Groups of up to ``patient_group`` lesions of one patient, ``n`` lesions in all."""
        out, left = [], n
        while left >= 2:
            members = self.patient_members[self.rng.integers(len(self.patient_members))]
            take = min(self.patient_group, len(members), left)
            out.append(self.rng.choice(members, take, replace=False))
            left -= take
        return np.concatenate(out) if out else np.empty(0, np.int64)

    def _pairs(self, n_pairs: int) -> np.ndarray:
        chosen = self.rng.integers(len(self.track_members), size=n_pairs)
        out = [self.rng.choice(self.track_members[c], 2, replace=False) for c in chosen]
        return np.concatenate(out) if out else np.empty(0, np.int64)


def train_lesion_encoder(
    hu: np.ndarray,
    lesions: pd.DataFrame,
    studies: pd.DataFrame,
    config: EmbedConfig,
    *,
    progress: Progress | None = None,
) -> TrainingResult:
    """Train a :class:`LesionEncoder` on the HU crops of ``lesions`` (same row order).

    Rows with a NaN crop must be removed by the caller. ``progress(step, total_steps)`` is
    called after every step.
    """
    started = time.perf_counter()
    tc = config.train
    data = _prepare_data(hu, lesions, studies, config)
    device = resolve_device(tc.device)
    benchmark = torch.backends.cudnn.benchmark
    # every step has the same shapes: let cuDNN time its kernels once and keep the fastest
    torch.backends.cudnn.benchmark = benchmark or device.type == "cuda"
    try:
        return _train(data, config, device, progress, started)
    finally:
        torch.backends.cudnn.benchmark = benchmark


def _train(data: _Data, config: EmbedConfig, device: torch.device,
           progress: Progress | None, started: float) -> TrainingResult:
    tc = config.train
    train = np.flatnonzero(data.role == TRAIN)
    validate = _validator(data, config, device)
    given = labels = data.types.copy()
    result, heads = _train_round(data, given, config, validate, device, progress, 1)
    history = list(result.history)
    for round_ in range(2, tc.rounds + 1):
        new = pseudo_labels(result.encoder, heads, data, train, given, tc, device)
        if np.array_equal(new, labels):
            break  # the same labels would train the same network again (e.g. all typed)
        labels = new
        start = (result.encoder, heads) if tc.round_start == "previous" else None
        result, heads = _train_round(data, labels, config, validate, device, progress, round_,
                                     start)
        history += result.history
    if result.encoder.mean_embedding is not None:
        uncentred = embed_crops(result.encoder, data.hu[train], data.metadata[train],
                                device=device, batch_size=config.inference_batch_size)
        result.encoder.set_centre(torch.from_numpy(uncentred).to(device))
    if progress:
        total = _epoch_steps(tc, len(train)) * tc.max_epochs * tc.rounds
        progress(total, total)
    result.history = history
    roles = pd.Series(data.role).groupby(data.patient).first().value_counts()
    result.patients = {r: int(roles.get(r, 0)) for r in (TRAIN, VALIDATION, HOLDOUT)}
    result.labelled_lesions = int((given[train] >= 0).sum())
    result.pseudo_labelled = int((data.types[train] != given[train]).sum())
    result.mined_pairs = len(data.pairs)
    result.seconds = time.perf_counter() - started
    return result


def _train_round(data: _Data, labels: np.ndarray, config: EmbedConfig, validate: _Validator,
                 device: torch.device, progress: Progress | None, round_: int,
                 start: tuple[LesionEncoder, TrainingHeads] | None = None,
                 ) -> tuple[TrainingResult, TrainingHeads]:
    """One training run, with ``labels`` as the lesions' types (the given ones in round 1,
    the previous round's pseudo-labels after that), from a fresh network or from copies of
    ``start`` (the last round's network and heads)."""
    tc = config.train
    train = np.flatnonzero(data.role == TRAIN)
    data.types = labels
    torch.manual_seed(tc.seed)
    if start is None:
        model = LesionEncoder(config.encoder, config.crop).to(
            device, memory_format=torch.channels_last)
        heads = TrainingHeads(config.encoder.embedding_dim, data.targets.shape[1]).to(device)
    else:
        model, heads = copy.deepcopy(start[0]), copy.deepcopy(start[1])
    params = list(model.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=tc.learning_rate, weight_decay=tc.weight_decay)
    steps = _epoch_steps(tc, len(train))
    schedule = _cosine_schedule(optimizer, steps * tc.max_epochs, warmup=min(steps, 50))
    scaler = torch.amp.GradScaler(enabled=amp_dtype(device) == torch.float16)
    sampler = BatchSampler(train, data.types, data.track, tc.batch_size, tc.labelled_share,
                           np.random.default_rng(tc.seed), patient=data.patient,
                           patient_group=tc.patient_group if tc.same_patient_weight > 0 else 0)
    generator = torch.Generator(device=device).manual_seed(tc.seed)
    arrays = _OnDevice(data, device)

    result = TrainingResult(model, validate.metric, -math.inf, 0)
    best_state = copy.deepcopy(model.state_dict())
    total = steps * tc.max_epochs * tc.rounds
    done = steps * tc.max_epochs * (round_ - 1)
    for epoch in range(1, tc.max_epochs + 1):
        t0 = time.perf_counter()
        model.train()
        losses = []
        for step in range(steps):
            batch = sampler()
            loss = _step_loss(model, heads, arrays, batch, generator, tc)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            losses.append(float(loss.detach()))
            if progress:
                progress(done + (epoch - 1) * steps + step + 1, total)
        if epoch == tc.pseudo_label_epoch:
            data.types = pseudo_labels(model, heads, data, train, labels, tc, device)
            sampler = BatchSampler(train, data.types, data.track, tc.batch_size,
                                   tc.labelled_share, np.random.default_rng(tc.seed + 1),
                                   patient=data.patient, patient_group=sampler.patient_group)
        score = validate(model)
        entry = {"epoch": epoch, "loss": round(float(np.mean(losses)), 4),
                 validate.metric: round(score, 4),
                 "seconds": round(time.perf_counter() - t0, 1)}
        result.history.append({"round": round_, **entry} if tc.rounds > 1 else entry)
        if _improves(score, result.best_score):
            result.best_score, result.best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif tc.keep == "best" and epoch - result.best_epoch >= tc.patience:
            break
    if tc.keep == "last":
        best_state = model.state_dict()
    model.load_state_dict(best_state)
    return result, heads


def _epoch_steps(tc: TrainConfig, n_train: int) -> int:
    return tc.steps_per_epoch or max(1, math.ceil(n_train / tc.batch_size))


def pseudo_labels(model: LesionEncoder, heads: TrainingHeads, data: _Data, train: np.ndarray,
                  given: np.ndarray, tc: TrainConfig, device: torch.device) -> np.ndarray:
    """Types for the untyped training lesions from the proxy head, where confident.

    A lesion's type log-probabilities are mixed with the mean over its patient's training
    lesions (``pseudo_label_patient_mix``: most of a patient's lesions share one type); a
    lesion whose mixed probability reaches ``pseudo_label_threshold`` takes the type. Typed
    lesions keep their given type. Returns a copy of ``given`` with the new labels.
    """
    vectors = embed_crops(model, data.hu[train], data.metadata[train], device=device)
    with torch.no_grad():
        logits = heads.type_logits(torch.from_numpy(vectors).to(device), tc.temperature)
        known = torch.zeros(logits.shape[1], dtype=torch.bool, device=device)
        known[list(COARSE_TYPES)] = True
        log_p = F.log_softmax(logits.float().masked_fill(~known, -math.inf), dim=1)
        log_p = log_p.masked_fill(~known, 0.0).cpu().numpy()
    patient_mean = pd.DataFrame(log_p).groupby(data.patient_code[train]).transform("mean")
    mixed = log_p + tc.pseudo_label_patient_mix * patient_mean.to_numpy()
    mixed[:, ~known.cpu().numpy()] = -np.inf
    mixed -= mixed.max(axis=1, keepdims=True)
    confidence = 1.0 / np.exp(mixed).sum(axis=1)
    out = given.copy()
    take = (given[train] < 0) & (confidence >= tc.pseudo_label_threshold)
    out[train[take]] = mixed.argmax(axis=1)[take]
    return out


def _improves(score: float, best: float) -> bool:
    """Higher is better; an undefined score (NaN: too few validation lesions) counts as an
    improvement only while nothing better was seen, so the latest weights are kept."""
    if math.isnan(score):
        return not best > -math.inf
    return not score <= best


def _prepare_data(hu: np.ndarray, lesions: pd.DataFrame, studies: pd.DataFrame,
                  config: EmbedConfig) -> _Data:
    tc = config.train
    table = lesions.reset_index(drop=True)
    roles = split_patients(table, holdout_split=tc.holdout_split,
                           validation_share=tc.validation_share, seed=tc.seed)
    role = table["patient_id"].astype(str).map(roles).to_numpy()
    if not (role == TRAIN).any():
        raise InputError(
            None, "no patient is left to train the lesion encoder on: every patient is held "
            f"out (split {tc.holdout_split}) or kept for validation",
            "set the embed option train.holdout_split to null to train on every patient, or "
            "lower train.validation_share")
    pairs = mine_same_lesion_pairs(table, studies, tc.same_lesion_max_distance)
    track = tracks(len(table), pairs)
    targets = location_size_targets(table)
    return _Data(
        hu=hu, role=role, patient=table["patient_id"].astype(str).to_numpy(),
        patient_code=pd.factorize(table["patient_id"].astype(str))[0].astype(np.int64),
        study=table["study_id"].astype(str).to_numpy(), metadata=lesion_metadata(table),
        types=type_labels(table), track=track,
        targets=standardise(targets, targets[role == TRAIN]), pairs=pairs,
    )


class TrainingHeads(nn.Module):
    """What training adds on top of the embedding and throws away after: a linear
    regression of location and size, and one learnable proxy vector per coarse type."""

    def __init__(self, embedding_dim: int, n_targets: int):
        super().__init__()
        self.regression = nn.Linear(embedding_dim, n_targets)
        self.proxies = nn.Parameter(torch.randn(max(COARSE_TYPES) + 1, embedding_dim) * 0.1)

    def type_logits(self, z: torch.Tensor, temperature: float) -> torch.Tensor:
        """Cosine similarity to each type's proxy, over the temperature."""
        return z @ F.normalize(self.proxies, dim=1).T / temperature


class _OnDevice:
    """The training arrays as tensors on the training device, so a step gathers its batch
    there: on CUDA every crop sits in GPU memory once (float16 HU, ~1 GB at DeepLesion
    scale with the default crop) and a step sends only its indices, instead of copying its
    crops over the bus; on the CPU the tensors share the arrays' memory. Types change
    with pseudo-labels, so :meth:`types` follows ``data.types``."""

    def __init__(self, data: _Data, device: torch.device):
        self.data, self.device = data, device
        self.hu = torch.from_numpy(data.hu).to(device)
        self.track = torch.from_numpy(data.track).to(device)
        self.patient = torch.from_numpy(data.patient_code).to(device)
        self.targets = torch.from_numpy(data.targets).to(device)
        self.metadata = torch.from_numpy(data.metadata).to(device)
        self._types: tuple[np.ndarray, torch.Tensor] | None = None

    def types(self) -> torch.Tensor:
        if self._types is None or self._types[0] is not self.data.types:
            self._types = (self.data.types, torch.from_numpy(self.data.types).to(self.device))
        return self._types[1]


def _step_loss(model: LesionEncoder, heads: TrainingHeads, arrays: _OnDevice,
               batch: np.ndarray, generator: torch.Generator, tc: TrainConfig) -> torch.Tensor:
    index = torch.from_numpy(batch).to(arrays.device, non_blocking=True)
    views = paired_views(arrays.hu[index].float(), generator,
                         n_slices=model.crop_config.n_slices)
    both = index.repeat(2)
    types = arrays.types()[both]
    weights = positive_weights(
        both, arrays.track[both], types,
        same_lesion_weight=tc.same_lesion_weight, type_weight=tc.type_weight,
        patient=arrays.patient[both], same_patient_weight=tc.same_patient_weight,
    )
    targets = arrays.targets[both]
    with autocast(arrays.device):
        z = model(views, arrays.metadata[both])
    z = z.float()
    loss = soft_contrastive_loss(z, weights, tc.temperature)
    regression = masked_regression_loss(heads.regression(z), targets, ~torch.isnan(targets))
    typed = types >= 0
    if typed.any():
        proxy = F.cross_entropy(heads.type_logits(z[typed], tc.temperature), types[typed])
        loss = loss + tc.proxy_weight * proxy
    return loss + tc.location_weight * regression


class _Validator:
    """Scores the current encoder on the validation patients (higher is better)."""

    def __init__(self, metric: str, rows: np.ndarray, data: _Data, config: EmbedConfig,
                 device: torch.device, score: Callable[[np.ndarray], float]):
        self.metric, self.rows, self.data = metric, rows, data
        self.config, self.device, self.score = config, device, score

    def __call__(self, model: LesionEncoder) -> float:
        if len(self.rows) == 0:
            return float("nan")
        vectors = embed_crops(model, self.data.hu[self.rows], self.data.metadata[self.rows],
                              device=self.device, batch_size=self.config.inference_batch_size)
        return self.score(vectors)


def _validator(data: _Data, config: EmbedConfig, device: torch.device) -> _Validator:
    """Type precision@10 of typed validation lesions against the typed training lesions;
    without types, top-1 of mined same-lesion pairs among validation lesions."""
    validation = data.role == VALIDATION
    typed = data.types >= 0
    queries = np.flatnonzero(validation & typed)
    gallery = np.flatnonzero((data.role == TRAIN) & typed)
    if len(queries) and len(gallery):
        rows = np.concatenate([queries, gallery])
        labels = data.types[rows]
        n = len(queries)
        return _Validator(
            "type_precision@10", rows, data, config, device,
            lambda v: gallery_precision_at_k(v[:n], labels[:n], v[n:], labels[n:], k=10))
    rows = np.flatnonzero(validation)
    local = pd.Series(np.arange(len(rows)), index=rows)
    pairs = data.pairs[data.pairs["a"].isin(local.index) & data.pairs["b"].isin(local.index)]
    query = local[pairs["a"]].to_numpy()
    answer = local[pairs["b"]].to_numpy()
    study = data.study[rows]
    candidates = [np.flatnonzero(study == study[b]) for b in answer]
    return _Validator("same_lesion_top1", rows, data, config, device,
                      lambda v: same_lesion_top1(v, query, candidates, answer))


def _cosine_schedule(optimizer: torch.optim.Optimizer, total: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
