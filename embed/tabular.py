"""The record encoder: numeric and categorical covariates with missing values to a vector.

:class:`RecordFeatures` turns a records table into model inputs without imputing anything:
each numeric field becomes a standardised value (log-transformed first when the documented
skew rule says so) that is 0 where missing, plus a missingness indicator; each categorical
field a one-hot block that is all 0 where missing, plus its indicator. :class:`RecordEncoder`
learns a small embedding self-supervised, by reconstructing observed fields that were
masked at random (the loss never sees a value that was not observed).
:func:`standardised_raw` is the baseline: z-scores and one-hots, missing values set to
the mean, no indicators.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from embed.config import TabularConfig
from patientgraph.encoding import RECORD_EMBEDDING_SKEW, wants_log

KEY = "patient_id"
SKEW_LOG_THRESHOLD = RECORD_EMBEDDING_SKEW
"""A positive numeric field whose sample skewness exceeds this is log-transformed (labs
like CRP, CEA and LDH are log-normal), recorded per field in ``RecordFeatures.fields_``.
The rule, and why the survival scan and the graph features use other thresholds, is
:mod:`patientgraph.encoding`."""


@dataclass(frozen=True)
class Field:
    """How one record column becomes model inputs."""

    name: str
    kind: str  # "numeric" or "categorical"
    log: bool = False
    mean: float = 0.0
    sd: float = 1.0
    categories: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return 1 if self.kind == "numeric" else len(self.categories)


class RecordFeatures:
    """Standardised values, one-hot categories and missingness indicators (no imputation).

    ``fit(records)`` learns each field's transform; ``transform(records)`` gives
    ``values`` ``(n, width)`` (0 where missing), ``observed`` ``(n, width)`` and the
    per-field ``indicators`` ``(n, n_fields)`` (1 = missing).
    """

    def __init__(self, max_categories: int = 20, log_skewed: bool = True):
        self.max_categories = max_categories
        self.log_skewed = log_skewed

    def fit(self, records: pd.DataFrame) -> RecordFeatures:
        self.fields_ = [self._field(name, records[name]) for name in _covariates(records)]
        return self

    @property
    def width(self) -> int:
        return sum(f.width for f in self.fields_)

    def _field(self, name: str, column: pd.Series) -> Field:
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            x = column.to_numpy(dtype=float)
            present = x[np.isfinite(x)]
            log = self.log_skewed and wants_log(present, SKEW_LOG_THRESHOLD)
            if log:
                present = np.log(present)
            mean = float(present.mean()) if len(present) else 0.0
            sd = float(present.std()) if len(present) > 1 else 1.0
            return Field(name, "numeric", log=log, mean=mean, sd=sd if sd > 0 else 1.0)
        counts = column.dropna().astype(str).value_counts()
        return Field(name, "categorical",
                     categories=tuple(sorted(counts.index[: self.max_categories])))

    def transform(self, records: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(records)
        values = np.zeros((n, self.width), np.float32)
        observed = np.zeros((n, self.width), bool)
        indicators = np.zeros((n, len(self.fields_)), np.float32)
        start = 0
        for i, f in enumerate(self.fields_):
            block = slice(start, start + f.width)
            column = records[f.name] if f.name in records else pd.Series([None] * n)
            v, present = _encode(f, column)
            values[:, block], observed[:, block] = v, present[:, None]
            indicators[:, i] = ~present
            start += f.width
        return values, observed, indicators


def _covariates(records: pd.DataFrame) -> list[str]:
    return [c for c in records.columns if c != KEY]


def _encode(f: Field, column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """One field's values ``(n, width)`` (0 where missing) and its presence ``(n,)``."""
    if f.kind == "numeric":
        x = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
        present = np.isfinite(x)
        if f.log:
            present &= x > 0
            x = np.log(np.where(present, x, 1.0))
        z = np.where(present, (x - f.mean) / f.sd, 0.0)
        return z[:, None].astype(np.float32), present
    text = column.astype(object).where(column.notna(), None).to_numpy()
    present = np.array([v is not None for v in text])
    onehot = np.array([[str(v) == c for c in f.categories] if v is not None
                       else [False] * f.width for v in text], np.float32).reshape(-1, f.width)
    return onehot, present


class _AutoEncoder(nn.Module):
    """Inputs (values + indicators) -> embedding -> reconstructed values."""

    def __init__(self, n_inputs: int, width: int, hidden: int, dim: int):
        super().__init__()
        self.encode = nn.Sequential(nn.Linear(n_inputs, hidden), nn.ReLU(),
                                    nn.Linear(hidden, dim))
        self.decode = nn.Sequential(nn.ReLU(), nn.Linear(dim, hidden), nn.ReLU(),
                                    nn.Linear(hidden, width))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(inputs))


class RecordEncoder:
    """Self-supervised embedding of patient records (masked-field reconstruction).

    >>> encoder = RecordEncoder(TabularConfig(epochs=50)).fit(records)   # doctest: +SKIP
    >>> vectors = encoder.transform(records)                             # (n, dim), unit norm
    """

    def __init__(self, config: TabularConfig = TabularConfig()):
        self.config = config

    def fit(self, records: pd.DataFrame) -> RecordEncoder:
        c = self.config
        self.features_ = RecordFeatures(c.max_categories).fit(records)
        values, observed, indicators = self.features_.transform(records)
        torch.manual_seed(c.seed)
        generator = torch.Generator().manual_seed(c.seed)
        n_fields = len(self.features_.fields_)
        self.model_ = _AutoEncoder(values.shape[1] + n_fields, values.shape[1], c.hidden_dim,
                                   c.embedding_dim)
        opt = torch.optim.AdamW(self.model_.parameters(), lr=3e-3, weight_decay=1e-4)
        x = torch.from_numpy(values)
        seen = torch.from_numpy(observed)
        missing = torch.from_numpy(indicators)
        field_of = torch.from_numpy(self._field_index())
        self.loss_history_ = []
        for _ in range(c.epochs):
            hide = (torch.rand(missing.shape, generator=generator) < c.mask_rate) & (missing == 0)
            hide_cols = hide[:, field_of]
            inputs = torch.cat([x * ~hide_cols, (missing.bool() | hide).float()], dim=1)
            recon = self.model_(inputs)
            loss = self._reconstruction_loss(recon, x, seen & hide_cols)
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.loss_history_.append(float(loss.detach()))
        self.model_.eval()
        return self

    def _field_index(self) -> np.ndarray:
        """The field of every input column."""
        return np.repeat(np.arange(len(self.features_.fields_)),
                         [f.width for f in self.features_.fields_])

    def _reconstruction_loss(self, recon: torch.Tensor, x: torch.Tensor,
                             target: torch.Tensor) -> torch.Tensor:
        """Squared error on hidden numeric fields, cross-entropy on hidden categories."""
        losses = []
        start = 0
        for f in self.features_.fields_:
            block = slice(start, start + f.width)
            rows = target[:, start]
            start += f.width
            if not rows.any():
                continue
            if f.kind == "numeric":
                losses.append(F.mse_loss(recon[rows, block], x[rows, block]))
            else:
                losses.append(F.cross_entropy(recon[rows, block], x[rows, block].argmax(1)))
        return torch.stack(losses).mean() if losses else recon.sum() * 0.0

    def transform(self, records: pd.DataFrame) -> np.ndarray:
        """Unit-norm embeddings ``(n, embedding_dim)`` in the row order of ``records``."""
        values, _, indicators = self.features_.transform(records)
        inputs = torch.from_numpy(np.concatenate([values, indicators], axis=1))
        with torch.no_grad():
            z = self.model_.encode(inputs)
        return F.normalize(z, dim=1).numpy().astype(np.float32)

    def state(self) -> dict:
        """Weights and everything that rebuilds the encoder (for ``torch.save``)."""
        return {
            "config": dict(vars(self.config)),
            "fields": [vars(f) | {"categories": list(f.categories)}
                       for f in self.features_.fields_],
            "max_categories": self.features_.max_categories,
            "log_skewed": self.features_.log_skewed,
            "state_dict": self.model_.state_dict(),
        }

    @classmethod
    def from_state(cls, state: dict) -> RecordEncoder:
        encoder = cls(TabularConfig(**state["config"]))
        encoder.features_ = RecordFeatures(state["max_categories"], state["log_skewed"])
        encoder.features_.fields_ = [
            Field(**{**f, "categories": tuple(f["categories"])}) for f in state["fields"]]
        c = encoder.config
        width = encoder.features_.width
        encoder.model_ = _AutoEncoder(width + len(encoder.features_.fields_), width,
                                      c.hidden_dim, c.embedding_dim)
        encoder.model_.load_state_dict(state["state_dict"])
        encoder.model_.eval()
        return encoder


def standardised_raw(records: pd.DataFrame) -> np.ndarray:
    """Baseline record vectors: z-scored numerics (mean where missing) and one-hot
    categories (all zero where missing); no indicators, no learning."""
    values, _, _ = RecordFeatures(log_skewed=False).fit(records).transform(records)
    return values
