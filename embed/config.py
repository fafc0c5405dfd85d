"""Options of the ``embed`` stage: the lesion crop, the network, its training, the record
encoder and the default modality weights.

Every option has a default that suits a 2-core CPU and a DeepLesion-sized archive. A stage
config is a nested mapping (``{"train": {"max_epochs": 5}}``) applied over a preset
(``"preset": "fast"`` for tests and smoke runs); an unknown name is an
:class:`~patientgraph.errors.InputError` with a "did you mean" suggestion.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from patientgraph.errors import InputError, did_you_mean

ON_IMAGE_ERROR = ("skip", "raise")
KEEP = ("best", "last")
ROUND_START = ("fresh", "previous")


@dataclass(frozen=True)
class CropConfig:
    """A fixed physical field of view around the lesion centre.

    ``size_mm`` square, resampled to ``out_px`` pixels, on ``n_slices`` slices spaced
    ``slice_step_mm`` apart (the key slice in the middle), each shown under every CT window
    in ``windows``. With ``context_mm`` a wider view of the key slice (``context_mm``
    square, also ``out_px`` pixels) follows the slices, so that the network sees the organ
    and the body level around the lesion: ``depth`` views, ``depth * len(windows)`` input
    channels (the context view helps most where lesion types share a look but not a
    site; docs/experiments.md has the measurements).
    """

    size_mm: float = 96.0
    out_px: int = 64
    n_slices: int = 3
    slice_step_mm: float = 2.0
    windows: tuple[str, ...] = ("lung", "soft_tissue", "bone")
    context_mm: float | None = 256.0

    @property
    def depth(self) -> int:
        """Views per crop: the slices, then the context view if there is one."""
        return self.n_slices + (1 if self.context_mm else 0)

    @property
    def channels(self) -> int:
        return self.depth * len(self.windows)


@dataclass(frozen=True)
class EncoderConfig:
    """A 2-D MONAI ResNet over the crop channels, then a projection to ``embedding_dim``.

    With ``location_input`` the lesion's normalised location (loc_x, loc_y, loc_z, given for
    every lesion of a DeepLesion-format archive) joins the image features before the
    projection, as Fourier features; a lesion without a location gets zeros and a flag.
    With ``window_input`` so does the display window the reader marked the lesion in
    (window_lo, window_hi: DeepLesion's DICOM_windows; a weak cue to the site, as readers
    pick lung, bone or soft-tissue windows for what they look at); a lesion without one
    gets zeros and a flag. With ``context_signature`` so does the HU make-up of rings
    around the lesion (:class:`embed.encoder.ContextSignature`). With ``centre`` the mean
    embedding of the training lesions (set once training ends) is subtracted from every
    embedding before it is normalised again, so that cosine similarity is not spent on the
    direction all lesions share (the centring step of SimpleShot, Wang et al. 2019: a
    small, consistent gain in type retrieval for a small loss in same-lesion matching).
    Fused patient vectors then lean more on imaging at the same modality weights.
    """

    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    stem_kernel: int = 5
    stem_stride: int = 2
    projection_dim: int = 256
    embedding_dim: int = 128
    location_input: bool = True
    window_input: bool = True
    context_signature: bool = True
    centre: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """Metric learning with weak labels (see :mod:`embed.train`).

    Held-out patients (any lesion in ``holdout_split``, DeepLesion's test split) are never
    trained on, so that they stay an honest evaluation set; set it to None to train on
    everyone. ``validation_share`` of the remaining labelled patients are scored after
    every epoch: with ``keep="best"`` the best epoch's weights are kept and training stops
    after ``patience`` epochs without improvement; with ``keep="last"`` (the default: a few
    validation patients give a noisy score) all ``max_epochs`` run down the cosine schedule.

    Loss weights: ``type_weight`` (same-type positives in the contrastive loss, per anchor,
    against 1 for the anchor's other view), ``same_lesion_weight`` (mined pairs across
    studies), ``proxy_weight`` (type proxies), ``location_weight`` (location and size
    regression), ``same_patient_weight`` (the patient's other lesions, drawn in groups of
    ``patient_group``). After epoch ``pseudo_label_epoch`` (None: never) untyped training
    lesions whose type the proxies, pooled over the patient's lesions with weight
    ``pseudo_label_patient_mix``, give with probability >= ``pseudo_label_threshold`` are
    trained on as that type (fewer, cleaner pseudo-labels; the threshold made no difference
    beyond the seed spread at DeepLesion scale). With ``rounds`` above 1 training starts
    again from a fresh network, the untyped lesions typed by the last round's pseudo-labels
    (self-training: twice the training time for two rounds, worth it from about 1,000
    patients). Each later round starts from a fresh network (``round_start="fresh"``, the
    default, which measured better) or from the last round's weights and type proxies
    (``"previous"``: a warm restart of the learning-rate schedule). The measurements behind
    each default are in docs/experiments.md.
    ``labelled_share`` of each batch are typed lesions; ``steps_per_epoch`` None means one
    pass over the training lesions; ``same_lesion_max_distance`` bounds the
    normalised-location distance of a mined pair; ``device`` is auto, cpu or cuda.
    """

    seed: int = 0
    max_epochs: int = 14
    patience: int = 5
    batch_size: int = 64
    steps_per_epoch: int | None = None
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.1
    type_weight: float = 3.0
    proxy_weight: float = 1.0
    same_lesion_weight: float = 1.0
    same_patient_weight: float = 1.0
    patient_group: int = 4
    location_weight: float = 1.0
    labelled_share: float = 0.4
    validation_share: float = 0.2
    holdout_split: int | None = 3
    same_lesion_max_distance: float = 0.06
    device: str = "auto"
    keep: str = "last"
    pseudo_label_epoch: int | None = 6
    pseudo_label_threshold: float = 0.95
    pseudo_label_patient_mix: float = 1.0
    rounds: int = 2
    round_start: str = "fresh"


@dataclass(frozen=True)
class TabularConfig:
    """The record encoder (:class:`embed.tabular.RecordEncoder`)."""

    embedding_dim: int = 32
    hidden_dim: int = 64
    epochs: int = 300
    mask_rate: float = 0.3
    max_categories: int = 20
    seed: int = 0


@dataclass(frozen=True)
class EmbedConfig:
    """Everything the ``embed`` stage does, as one hashable, serialisable value.

    ``weights`` are the default modality weights of the patient vector (:mod:`embed.fusion`);
    ``on_image_error`` is ``"skip"`` (embed what can be read, list the failures) or
    ``"raise"``; ``encoder_checkpoint`` uses a trained encoder instead of training one;
    ``cache_crops`` keeps the lesion crops in the workspace (``cache/crops``, about 1 GB at
    DeepLesion scale) so that the next run with the same crop settings, lesions and images
    skips reading the slices (:func:`embed.crops.cached_crops`).
    """

    crop: CropConfig = field(default_factory=CropConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tabular: TabularConfig = field(default_factory=TabularConfig)
    weights: tuple[tuple[str, float], ...] = (("imaging", 0.5), ("records", 0.5))
    on_image_error: str = "skip"
    encoder_checkpoint: str | None = None
    workers: int = 2
    inference_batch_size: int = 256
    cache_crops: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples as lists, weights as a mapping)."""
        out = _plain(dataclasses.asdict(self))
        out["weights"] = dict(self.weights)
        return out

    @classmethod
    def from_dict(cls, config: Mapping[str, Any] | None = None) -> EmbedConfig:
        """Apply a nested mapping over a preset (``config["preset"]``, default "default")."""
        config = dict(config or {})
        preset = config.pop("preset", "default")
        if preset not in PRESETS:
            raise InputError(
                None, f"unknown embed preset {preset!r}.{did_you_mean(str(preset), PRESETS)}",
                f"choose one of {', '.join(PRESETS)}",
            )
        base = PRESETS[preset]
        if "weights" in config:
            config["weights"] = _weights_tuple(config["weights"])
        out = _replace(base, config, "embed")
        _check_choice("on_image_error", out.on_image_error, ON_IMAGE_ERROR,
                      "use skip (embed what can be read, list the failures) or raise")
        _check_crop(out.crop)
        if not isinstance(out.cache_crops, bool):
            raise InputError(None, f"embed option cache_crops is {out.cache_crops!r}",
                             "give true (keep the crops for the next run) or false")
        rounds = out.train.rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise InputError(None, f"embed option train.rounds is {rounds!r}",
                             "give a whole number of training rounds, 1 or more")
        _check_fractions(out.train)
        _check_choice("train.round_start", out.train.round_start, ROUND_START,
                      "use fresh (each round trains a new network) or previous (each round "
                      "continues from the last round's weights)")
        _check_choice("train.keep", out.train.keep, KEEP,
                      "use best (the epoch that scored best on the validation patients) or "
                      "last")
        return out


def _check_choice(option: str, value: Any, choices: tuple[str, ...], fix: str) -> None:
    """An option that takes one of a few names: anything else, with the closest name."""
    if value not in choices:
        raise InputError(None, f"embed option {option} is {value!r}."
                         f"{did_you_mean(str(value), choices)}", fix)


_FRACTIONS = {
    # option: (lowest, highest, whether the highest is allowed, what it is)
    "pseudo_label_threshold": (0.0, 1.0, True, "the confidence a pseudo-type needs"),
    "validation_share": (0.0, 1.0, False, "the share of typed patients kept for validation"),
    "labelled_share": (0.0, 1.0, True, "the share of each batch drawn from typed lesions"),
}


def _check_fractions(train: TrainConfig) -> None:
    """Shares and thresholds between 0 and 1: a threshold above 1 would silently leave
    every lesion untyped, a validation share of 1 leave nothing to train on."""
    for name, (low, high, high_ok, what) in _FRACTIONS.items():
        value = getattr(train, name)
        number = not isinstance(value, bool) and isinstance(value, int | float)
        if not (number and low <= value and (value <= high if high_ok else value < high)):
            bound = "1" if high_ok else "less than 1"
            raise InputError(None, f"embed option train.{name} is {value!r}",
                             f"give {what} as a number from 0 to {bound}")
    mix = train.pseudo_label_patient_mix
    if isinstance(mix, bool) or not isinstance(mix, int | float) or not mix >= 0:
        raise InputError(None, f"embed option train.pseudo_label_patient_mix is {mix!r}",
                         "give the weight of the patient's other lesions as a number >= 0 "
                         "(0: each lesion on its own)")


def _check_crop(crop: CropConfig) -> None:
    for name in ("size_mm", "out_px", "n_slices", "slice_step_mm", "context_mm"):
        value = getattr(crop, name)
        if name == "context_mm" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            fix = "give a positive number" + (" of mm, or null for no context view"
                                              if name == "context_mm" else "")
            raise InputError(None, f"embed option crop.{name} is {value!r}", fix)


def _weights_tuple(weights: Any) -> tuple[tuple[str, float], ...]:
    if not isinstance(weights, Mapping):
        raise InputError(None, "embed option 'weights' is not a mapping",
                         'give modality weights as {"imaging": 0.5, "records": 0.5}')
    return tuple((str(k), float(v)) for k, v in weights.items())


def _replace(obj: Any, overrides: Mapping[str, Any], where: str) -> Any:
    """A copy of dataclass ``obj`` with nested ``overrides``; unknown names are errors."""
    names = {f.name: f for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            raise InputError(
                None, f"unknown option {where}.{key}.{did_you_mean(key, names)}",
                f"choose from {', '.join(names)}",
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise InputError(None, f"option {where}.{key} must be a mapping",
                                 f"give {where}.{key} as {{name: value}}")
            value = _replace(current, value, f"{where}.{key}")
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        changes[key] = value
    return dataclasses.replace(obj, **changes)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def crop_from_dict(values: Mapping[str, Any]) -> CropConfig:
    """Rebuild a :class:`CropConfig` from :meth:`EmbedConfig.to_dict` output.

    Options added after a checkpoint was written take the value that reproduces it (no
    context view), not today's default.
    """
    return _replace(CropConfig(), {"context_mm": None, **values}, "crop")


def encoder_from_dict(values: Mapping[str, Any]) -> EncoderConfig:
    """Rebuild an :class:`EncoderConfig` from :meth:`EmbedConfig.to_dict` output."""
    return _replace(EncoderConfig(), values, "encoder")


FAST = EmbedConfig(
    crop=CropConfig(size_mm=64.0, out_px=32),
    encoder=EncoderConfig(widths=(8, 16, 32, 64), projection_dim=64),
    train=TrainConfig(max_epochs=2, patience=1, batch_size=32, steps_per_epoch=4, rounds=1),
    tabular=TabularConfig(epochs=20, hidden_dim=32, embedding_dim=16),
    workers=0,
    inference_batch_size=64,
)
"""Tiny network, two short epochs: for tests and smoke runs, not for results."""

PRESETS: dict[str, EmbedConfig] = {"default": EmbedConfig(), "fast": FAST}
