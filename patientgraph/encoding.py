"""When a numeric record field is log-transformed: one rule, three documented thresholds.

A record field (a lab such as CRP or LDH, a lesion size) reaches three models, and each asks
:func:`wants_log` whether to take its log before standardising it. The rule: at least three
observed values, all > 0, whose sample skewness (bias-corrected, as ``pandas.Series.skew``)
exceeds the model's threshold. The thresholds differ, on purpose, and are all here:

* :data:`RECORD_EMBEDDING_SKEW` (``embed.tabular``, the record encoder): 1.0, only strongly
  skewed fields, so that the encoder sees most fields on their recorded scale.
* :data:`SURVIVAL_SCAN_SKEW` (``discovery.survival``, the biomarker scan, with
  ``more_symmetric=True``): 0.5, and only when the log makes the values more symmetric and
  there are at least three distinct values, because the scan reports a hazard ratio per SD
  of the transformed value, which a long tail would dominate.
* :data:`GRAPH_FEATURE_SKEW` (``graphdb.pyg``, the GNN and its Cox baseline): ``None``, never;
  the graph features keep the recorded scale (standardised only).

Changing a threshold changes that model's results (stored encoders and embeddings, GNN
inputs, survival figures), which is why they were not made one number.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RECORD_EMBEDDING_SKEW: float = 1.0
SURVIVAL_SCAN_SKEW: float = 0.5
GRAPH_FEATURE_SKEW: float | None = None


def wants_log(observed, skew_threshold: float | None, *, more_symmetric: bool = False) -> bool:
    """Whether the observed (non-missing) values of a field get a log (module docstring).

    ``skew_threshold`` None: never. ``more_symmetric``: also require three distinct values
    and ``|skew(log x)| < skew(x)``.
    """
    if skew_threshold is None:
        return False
    v = observed if isinstance(observed, pd.Series) else pd.Series(observed)
    if len(v) < 3 or v.min() <= 0 or (more_symmetric and v.nunique() < 3):
        return False
    skew = v.skew()
    if not (np.isfinite(skew) and skew > skew_threshold):
        return False
    return not more_symmetric or bool(abs(np.log(v).skew()) < abs(skew))
