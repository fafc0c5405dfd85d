"""Lesion tracking: the same physical lesion followed across a patient's studies, and growth.

Each lesion of a study is matched to a track of the patient's earlier studies by a cost that
adds up normalised residuals (a Laplace negative log-likelihood): embedding cosine distance,
location difference per axis (``loc_x``, ``loc_y``, ``loc_z``) and absolute log size ratio
(``long_mm``). The assignment is optimal per study (Hungarian, with "no match" as an
option at ``gate / 2`` per side, so a pair is only linked when its cost is under ``gate``).
A track not seen in the previous study may still be continued from the one before
(``max_gap``), at a penalty.

Two refinements make the cost robust to how archives are acquired:

* **alignment**: normalised in-plane locations shift between studies with the patient's
  position in the field of view; the median displacement of a first assignment is taken
  out before the final one (when enough lesions were matched to estimate it);
* **scales**: the typical residual of each term (its Laplace scale, the mean absolute
  residual) is re-estimated from the first pass's matches over the whole cohort, so that a
  term that separates lesions well (e.g. the cranio-caudal level) counts for more.

Growth: per track, the least-squares slope of ``log(long_mm)`` per day; per patient, the
mean slope of the tracks with at least two measured days.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from patientgraph.errors import InputError
from patientgraph.options import merge_options, signature_defaults

TERMS = ("embedding", "loc_x", "loc_y", "loc_z", "size")
"""The residuals the cost adds up, in order."""
DEFAULT_SCALES: dict[str, float] = {
    "embedding": 0.1, "loc_x": 0.05, "loc_y": 0.05, "loc_z": 0.02, "size": 0.3,
}
"""Starting Laplace scales (mean absolute residual of a true match) of each term."""
LOCATION = ("loc_x", "loc_y", "loc_z")
REQUIRED = ("lesion_id", "patient_id", "study_id", "day", "long_mm", *LOCATION)
TRACK_COLUMNS = ["track_id", "lesion_id", "patient_id", "study_id", "day", "long_mm"]
PAIR_COLUMNS = ["src", "dst", "days"]
_MIN_ADAPT_PAIRS = 30
_SCALE_FLOOR = 0.25  # adapted scales stay within [floor, 1/floor] x the starting scale


class LesionTracker:
    """Match lesions across each patient's studies into tracks, and measure their growth.

    Parameters
    ----------
    gate:
        Largest cost of a link; a lesion with no cheaper partner starts (or ends) a track.
        With every term at its typical residual the cost is about 5 (the number of terms).
    max_gap:
        How many studies a track may go unseen and still be continued (0: only the
        previous study).
    gap_penalty:
        Added to the cost per skipped study, so a lesion prefers a track seen last time.
    align:
        Take out each study pair's median in-plane displacement (see the module docstring).
    min_align:
        Matched lesions a study pair needs before its displacement is estimated.
    adapt_scales:
        Re-estimate the term scales from a first pass over the cohort.
    scales:
        Starting scales per term (``DEFAULT_SCALES`` for those not given).
    weights:
        Weight per term (1 for those not given; ``embedding`` is 0 without embeddings).
    """

    def __init__(self, gate: float = 14.0, max_gap: int = 1, gap_penalty: float = 1.0,
                 align: bool = True, min_align: int = 2, adapt_scales: bool = True,
                 scales: Mapping[str, float] | None = None,
                 weights: Mapping[str, float] | None = None):
        if not gate > 0:
            raise ValueError(f"gate must be positive, got {gate}")
        if int(max_gap) != max_gap or max_gap < 0:
            raise ValueError(f"max_gap must be a whole number >= 0, got {max_gap}")
        if gap_penalty < 0:
            raise ValueError(f"gap_penalty must be >= 0, got {gap_penalty}")
        if int(min_align) != min_align or min_align < 1:
            raise ValueError(f"min_align must be a whole number >= 1, got {min_align}")
        self.gate = float(gate)
        self.max_gap = int(max_gap)
        self.gap_penalty = float(gap_penalty)
        self.align = bool(align)
        self.min_align = int(min_align)
        self.adapt_scales = bool(adapt_scales)
        self.scales = _per_term(scales, DEFAULT_SCALES, "scales", positive=True)
        self.weights = _per_term(weights, dict.fromkeys(TERMS, 1.0), "weights")

    def __repr__(self) -> str:
        return (f"LesionTracker(gate={self.gate}, max_gap={self.max_gap}, "
                f"gap_penalty={self.gap_penalty}, align={self.align})")

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, lesions: pd.DataFrame, embeddings: pd.DataFrame | None = None) -> LesionTracker:
        """Track the lesions (columns ``REQUIRED``; ``day`` from the studies table).

        ``embeddings`` (lesion_id, embedding; L2-normalised) adds the appearance term; every
        lesion needs one. Sets ``tracks_``, ``pairs_``, ``lesion_growth_``,
        ``patient_growth_``, ``scales_`` (the scales used) and ``weights_``.
        """
        obs = _Observations(lesions, embeddings)
        weights = np.array([self.weights[t] for t in TERMS])
        if obs.emb is None:
            weights[0] = 0.0
        scales = np.array([self.scales[t] for t in TERMS])
        if self.adapt_scales:
            # Scales from a first, unaligned pass: its residuals are those of every match,
            # aligned or not, so the final (aligned) pass never finds them too tight.
            _, residuals = self._link_all(obs, scales, weights, align=False)
            if len(residuals) >= _MIN_ADAPT_PAIRS:
                scales = np.clip(residuals.mean(axis=0), scales * _SCALE_FLOOR,
                                 scales / _SCALE_FLOOR)
        links, _ = self._link_all(obs, scales, weights, align=self.align)
        self.scales_ = dict(zip(TERMS, scales.tolist(), strict=True))
        self.weights_ = dict(zip(TERMS, weights.tolist(), strict=True))
        self.tracks_, self.pairs_ = _tables(obs, links)
        self.lesion_growth_ = lesion_growth(self.tracks_)
        self.patient_growth_ = patient_growth(self.lesion_growth_, obs.patients)
        return self

    def _link_all(self, obs: _Observations, scales: np.ndarray, weights: np.ndarray,
                  align: bool) -> tuple[list[tuple[int, int]], np.ndarray]:
        """Links (earlier row, later row) of every patient, and their residuals."""
        links: list[tuple[int, int]] = []
        residuals: list[np.ndarray] = []
        for studies in obs.patient_studies():
            pl, pr = self._link_patient(obs, studies, scales, weights, align)
            links += pl
            residuals += pr
        return links, np.array(residuals).reshape(-1, len(TERMS))

    def _link_patient(self, obs, studies, scales, weights, align):
        last: list[int] = []       # per track: its latest row
        seen: list[int] = []       # per track: the position of the study of that row
        links, residuals = [], []
        for j, rows in enumerate(studies):
            open_tracks = [t for t in range(len(last)) if j - seen[t] - 1 <= self.max_gap]
            matched = {}
            if open_tracks:
                src = np.array([last[t] for t in open_tracks])
                skipped = np.array([j - seen[t] - 1 for t in open_tracks])
                matched, res = self._assign(obs, src, rows, skipped, scales, weights, align)
                for i_src, i_dst in matched.items():
                    links.append((int(src[i_src]), int(rows[i_dst])))
                    residuals.append(res[i_src, i_dst])
            owners = {v: k for k, v in matched.items()}
            for i_dst, row in enumerate(rows):
                owner = owners.get(i_dst)
                if owner is None:
                    last.append(int(row))
                    seen.append(j)
                else:
                    t = open_tracks[owner]
                    last[t], seen[t] = int(row), j
        return links, residuals

    def _assign(self, obs, src, dst, skipped, scales, weights, align):
        """Optimal links between open tracks (their rows ``src``) and a study's rows."""
        res = obs.residuals(src, dst)
        cost = self._cost(res, skipped, scales, weights)
        matched = _gated_assignment(cost, self.gate)
        if align and len(matched) > self.min_align:
            # Leave one out: a track's shift comes from the *other* matches of its study, so
            # that a match never explains its own displacement away (and the residuals that
            # the scales are estimated from stay honest).
            shift = np.zeros((len(src), 1, 3))
            studies = obs.study[src]
            for i in range(len(src)):
                others = [(a, b) for a, b in matched.items() if studies[a] == studies[i]
                          and a != i]
                if len(others) >= self.min_align:
                    a, b = np.array(others).T
                    shift[i, 0] = np.median(obs.loc[dst[b]] - obs.loc[src[a]], axis=0)
            if shift.any():
                res = obs.residuals(src, dst, shift)
                cost = self._cost(res, skipped, scales, weights)
                matched = _gated_assignment(cost, self.gate)
        return matched, res

    def _cost(self, res, skipped, scales, weights) -> np.ndarray:
        return (res / scales * weights).sum(-1) + self.gap_penalty * skipped[:, None]


DEFAULTS: dict[str, Any] = signature_defaults(LesionTracker)
"""The ``config`` keys of :func:`track_lesions`: the :class:`LesionTracker` arguments and
their defaults (read from its signature)."""


def _gated_assignment(cost: np.ndarray, gate: float) -> dict[int, int]:
    """Minimum-cost matching where leaving a row or column unmatched costs ``gate / 2``.

    The classic augmentation: real pairs top left, "unmatched" options on the diagonals of
    the off blocks, so a pair is chosen only if it is cheaper than leaving both alone.
    """
    n, m = cost.shape
    big = gate * 1e3 + float(np.nanmax(cost, initial=0.0))
    aug = np.full((n + m, m + n), big)
    aug[:n, :m] = np.where(np.isfinite(cost), np.minimum(cost, big), big)
    aug[np.arange(n), m + np.arange(n)] = gate / 2
    aug[n + np.arange(m), np.arange(m)] = gate / 2
    aug[n:, m:] = 0.0
    rows, cols = linear_sum_assignment(aug)
    keep = (rows < n) & (cols < m)
    pairs = zip(rows[keep], cols[keep], strict=True)
    return {int(r): int(c) for r, c in pairs if cost[r, c] < gate}


class _Observations:
    """The lesions as arrays, grouped by patient and ordered studies."""

    def __init__(self, lesions: pd.DataFrame, embeddings: pd.DataFrame | None):
        _check_lesions(lesions)
        frame = lesions.reset_index(drop=True)
        self.ids = frame["lesion_id"].astype(str).to_numpy()
        self.patient = frame["patient_id"].astype(str).to_numpy()
        self.study_id = frame["study_id"].astype(str).to_numpy()
        self.day = frame["day"].astype(float).to_numpy()
        self.long_mm = frame["long_mm"].astype(float).to_numpy()
        self.loc = frame[list(LOCATION)].to_numpy(dtype=float)
        self.log_size = np.log(self.long_mm)
        self.study = pd.factorize(self.study_id)[0]
        self.patients = pd.unique(self.patient)
        self.emb = None if embeddings is None else _embedding_matrix(embeddings, self.ids)

    def patient_studies(self):
        """Per patient: its studies in time order (day, then study_id), each an array of rows."""
        rows = self.time_order()
        patient, study = self.patient[rows], self.study_id[rows]
        new_patient = np.flatnonzero(patient[1:] != patient[:-1]) + 1
        new_study = np.flatnonzero((study[1:] != study[:-1]) | (patient[1:] != patient[:-1])) + 1
        study_rows = np.split(rows, new_study)
        study_patient = np.split(np.r_[0, new_study], np.searchsorted(new_study, new_patient) + 1)
        start = 0
        for group in study_patient:
            yield study_rows[start:start + len(group)]
            start += len(group)

    def time_order(self) -> np.ndarray:
        """Row positions by patient, then day (unknown last), study_id and input order."""
        order = pd.DataFrame({"p": self.patient, "d": self.day, "s": self.study_id,
                              "i": np.arange(len(self.ids))})
        return order.sort_values(["p", "d", "s", "i"], na_position="last")["i"].to_numpy()

    def residuals(self, src: np.ndarray, dst: np.ndarray,
                  shift: np.ndarray | None = None) -> np.ndarray:
        """Absolute residuals (len(src), len(dst), len(TERMS))."""
        d_loc = self.loc[dst][None, :, :] - self.loc[src][:, None, :]
        if shift is not None:
            d_loc = d_loc - shift
        d_size = self.log_size[dst][None, :] - self.log_size[src][:, None]
        if self.emb is None:
            d_emb = np.zeros(d_size.shape)
        else:
            d_emb = 1.0 - self.emb[src] @ self.emb[dst].T
        return np.abs(np.concatenate([d_emb[..., None], d_loc, d_size[..., None]], axis=-1))


def _tables(obs: _Observations, links: list[tuple[int, int]]):
    """tracks_ and pairs_ from the links (earlier row -> later row)."""
    n = len(obs.ids)
    nxt = np.full(n, -1)
    has_prev = np.zeros(n, bool)
    for a, b in links:
        nxt[a] = b
        has_prev[b] = True
    rows, track_ids = [], []
    count: dict[str, int] = {}
    for start in obs.time_order():
        if has_prev[start]:
            continue
        pid = obs.patient[start]
        count[pid] = count.get(pid, 0) + 1
        row = start
        while row >= 0:
            rows.append(row)
            track_ids.append(f"{pid}_T{count[pid]}")
            row = nxt[row]
    rows = np.array(rows, dtype=int)
    tracks = pd.DataFrame({
        "track_id": track_ids, "lesion_id": obs.ids[rows], "patient_id": obs.patient[rows],
        "study_id": obs.study_id[rows], "day": obs.day[rows], "long_mm": obs.long_mm[rows],
    })
    src = np.array([a for a, _ in links], dtype=int)
    dst = np.array([b for _, b in links], dtype=int)
    pairs = pd.DataFrame({"src": obs.ids[src], "dst": obs.ids[dst],
                          "days": obs.day[dst] - obs.day[src]})
    pairs = pairs.sort_values(["src", "dst"], ignore_index=True)
    return tracks, pairs


def lesion_growth(tracks: pd.DataFrame) -> pd.DataFrame:
    """Per track: patient_id, n_points, slope (log long_mm per day; NaN below two days)."""
    frame = pd.DataFrame({"track_id": tracks["track_id"].to_numpy(),
                          "day": tracks["day"].to_numpy(float),
                          "y": np.log(tracks["long_mm"].to_numpy(float))})
    by = frame.groupby("track_id", sort=False)
    out = by.size().rename("n_points").to_frame()
    out["patient_id"] = tracks.groupby("track_id", sort=False)["patient_id"].first()
    dated = frame.dropna(subset=["day"])
    g = dated.groupby("track_id", sort=False)
    dc = dated["day"] - g["day"].transform("mean")  # centred per track: a stable slope
    yc = dated["y"] - g["y"].transform("mean")
    sums = pd.DataFrame({"sxy": dc * yc, "sxx": dc * dc, "track_id": dated["track_id"]})
    sums = sums.groupby("track_id", sort=False)[["sxy", "sxx"]].sum()
    days = g["day"].nunique()
    slope = (sums["sxy"] / sums["sxx"]).where(days >= 2)
    out["slope"] = slope.reindex(out.index).astype(float)
    out = out.reset_index()
    return out[["track_id", "patient_id", "n_points", "slope"]]


def patient_growth(growth: pd.DataFrame, patients=None) -> pd.DataFrame:
    """Per patient: growth_rate (mean slope of its tracks with a slope; NaN if none), n_tracks
    (the tracks averaged). ``patients`` lists every patient to report (default: those in
    ``growth``)."""
    measured = growth.dropna(subset=["slope"])
    agg = measured.groupby("patient_id")["slope"].agg(["mean", "size"])
    ids = pd.unique(growth["patient_id"]) if patients is None else patients
    agg = agg.reindex(pd.Index(ids, name="patient_id"))
    return pd.DataFrame({
        "patient_id": agg.index.astype(str),
        "growth_rate": agg["mean"].to_numpy(float),
        "n_tracks": agg["size"].fillna(0).to_numpy(int),
    })


def track_lesions(lesions: pd.DataFrame, studies: pd.DataFrame,
                  embeddings: pd.DataFrame | None,
                  config: Mapping[str, Any] | None = None,
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The discover stage's tracking: (tracks, pairs, patient_growth).

    ``lesions`` is ``cohort/lesions.parquet``, ``studies`` ``cohort/studies.parquet`` (for the
    day of each study), ``embeddings`` ``embeddings/lesions.parquet`` (or None: location and
    size only). ``config`` takes the keys of ``DEFAULTS``.
    """
    cfg = merge_options(DEFAULTS, config, unknown="unknown tracking option {key!r}")
    frame = with_days(lesions, studies)
    tracker = LesionTracker(**cfg).fit(frame, embeddings)
    return tracker.tracks_, tracker.pairs_, tracker.patient_growth_


def with_days(lesions: pd.DataFrame, studies: pd.DataFrame) -> pd.DataFrame:
    """``lesions`` with the ``day`` of its study (from the studies table)."""
    for name, table, cols in (("cohort/studies.parquet", studies, ("study_id", "day")),
                              ("cohort/lesions.parquet", lesions, ("study_id",))):
        missing = [c for c in cols if c not in table.columns]
        if missing:
            raise InputError(name, f"has no column {missing[0]!r}",
                             "re-run the ingest, which writes it")
    days = studies.drop_duplicates("study_id").set_index("study_id")["day"]
    known = lesions["study_id"].isin(days.index).to_numpy()
    if not known.all():
        row = int(np.flatnonzero(~known)[0])
        raise InputError("cohort/lesions.parquet", "the lesion's study is not in "
                         "cohort/studies.parquet", "re-run the ingest so that every study "
                         "of a lesion is listed", row=row, column="study_id",
                         more=int((~known).sum()) - 1)
    out = lesions.drop(columns=["day"], errors="ignore").copy()
    out["day"] = out["study_id"].map(days).astype(float).to_numpy()
    return out


# -- input checks ------------------------------------------------------------------------------
def _per_term(given, defaults, what, positive=False) -> dict[str, float]:
    out = dict(defaults)
    for key, value in (given or {}).items():
        if key not in TERMS:
            raise ValueError(f"unknown {what} term {key!r}; the terms are {', '.join(TERMS)}")
        if not (value > 0 if positive else value >= 0):
            raise ValueError(f"{what}[{key!r}] must be {'> 0' if positive else '>= 0'}")
        out[key] = float(value)
    return out


def _check_lesions(lesions: pd.DataFrame) -> None:
    name = "cohort/lesions.parquet"
    for col in REQUIRED:
        if col not in lesions.columns:
            raise InputError(name, f"has no column {col!r}", "give the lesions table of the "
                             "workspace, with day joined from cohort/studies.parquet")
    dup = lesions["lesion_id"].duplicated().to_numpy()
    if dup.any():
        raise InputError(name, "lists a lesion_id twice", "give each lesion one row",
                         row=int(np.flatnonzero(dup)[0]), column="lesion_id",
                         more=int(dup.sum()) - 1)
    for col in ("long_mm", *LOCATION):
        values = lesions[col].astype(float).to_numpy()
        bad = ~np.isfinite(values) | ((values <= 0) if col == "long_mm" else False)
        if bad.any():
            what = "is missing or not positive" if col == "long_mm" else "is missing"
            raise InputError(name, f"the value {what}", "re-run the ingest, which measures it",
                             row=int(np.flatnonzero(bad)[0]), column=col, more=int(bad.sum()) - 1)


def _embedding_matrix(embeddings: pd.DataFrame, ids: np.ndarray) -> np.ndarray:
    name = "embeddings/lesions.parquet"
    pos = pd.Index(embeddings["lesion_id"].astype(str)).get_indexer(ids)
    if (pos < 0).any():
        raise InputError(name, f"has no embedding for {int((pos < 0).sum())} lesions "
                         f"(e.g. {ids[pos < 0][0]})", "re-run the embed stage "
                         "(`patientgraph run --stages embed --force`)")
    vectors = np.stack(embeddings["embedding"].to_numpy()[pos]).astype(np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)
