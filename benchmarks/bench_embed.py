"""Lesion and patient embeddings and the vector index, each beside its baseline.

Quality, on the held-out patients of a synthetic cohort (DeepLesion's test split, which the
embed stage never trains on), scored against ``truth.json``:

* lesion-type retrieval precision@10 (neighbours from other held-out patients) vs pixel-PCA
  of the same windowed crops;
* 8-class linear-probe accuracy (fitted on the typed lesions of the training patients, the
  labels an archive gives) vs location alone (k-NN on the normalised x, y, z);
* the same lesion in the patient's next study as the top-1 match among that study's lesions,
  vs the nearest normalised location;
* similar patients sharing planted patient-level traits (precision@10) vs records alone
  (standardised raw fields), with the record encoder and imaging alone beside them.

Speed: encoder training time, inference lesions/s at DeepLesion scale (32,735 lesions), and
the index at 1M x 128 (HNSW32 vs exact: recall@10, single-query p50, build time, kNN-graph
time) on vectors shaped like the encoder's output. On a CUDA machine also the GPU figures of
:mod:`benchmarks.gpu_check`.
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.results import median_time, record
from benchmarks.workspaces import DEEPLESION_PATIENTS, embedded_workspace, subset_cohort
from embed import index_stage
from embed import stage as embed_stage
from embed.config import EmbedConfig, TrainConfig
from embed.crops import LOCATION, CTWindows, lesion_metadata, read_crops
from embed.encoder import ReadingWindowFeatures, load_encoder
from embed.index import VectorIndex
from embed.inference import embed_lesions
from embed.labels import HOLDOUT, VALIDATION, split_patients, type_labels
from embed.metrics import knn_accuracy, linear_probe_accuracy, precision_at_k, same_lesion_top1
from embed.tabular import standardised_raw
from patientgraph import Workspace, ingest_deeplesion
from patientgraph.deeplesion import lesion_ids
from patientgraph.synth import generate

BENCH = "embed"
QUICK = "embed-quick"
"""Quick runs (tiny cohort, fast preset) are smoke tests: kept apart from real figures."""
DEEPLESION_LESIONS = 32_735
TRAITS = ("primary_type", "cea_elevated", "smoking", "stage")


@dataclass
class Cohort:
    """A benchmark cohort: workspace, truth, and the lesions aligned with their embeddings."""

    ws: Workspace
    truth: dict
    lesions: pd.DataFrame
    vectors: np.ndarray
    held: np.ndarray

    @classmethod
    def load(cls, ws: Workspace, truth: dict, holdout_split: int = 3) -> Cohort:
        lesions = ws.table("lesions")
        stored = pd.read_parquet(ws.path(embed_stage.LESIONS)).set_index("lesion_id")
        lesions = lesions[lesions["lesion_id"].isin(stored.index)].reset_index(drop=True)
        vectors = np.stack(stored.loc[lesions["lesion_id"], "embedding"].to_numpy())
        role = split_patients(lesions, holdout_split=holdout_split)
        held = (lesions["patient_id"].map(role) == HOLDOUT).to_numpy()
        truth_rows = truth["lesions"]
        lesions["true_type"] = [truth_rows[i]["true_type"] for i in lesions["lesion_id"]]
        lesions["physical"] = [truth_rows[i]["physical_lesion"] for i in lesions["lesion_id"]]
        return cls(ws, truth, lesions, vectors, held)

    @property
    def probe_train(self) -> np.ndarray:
        """Typed (given, not noisy) lesions of the patients the encoder could train on."""
        return ~self.held & (type_labels(self.lesions) >= 0)


LEARNING_CURVE = (400, 1200)
"""Smaller training sets (first patients of the same cohort) reported beside the full one:
how the encoder's quality grows with the archive."""


def main(quick: bool = False, no_index: bool = False, reuse: bool = False,
         sizes: tuple[int, ...] = (*LEARNING_CURVE, DEEPLESION_PATIENTS),
         train_seed: int = 0, options: dict | None = None) -> None:
    """Run the benchmark; ``no_index`` skips the 1M-vector index and CUDA figures.

    Quality is measured at DeepLesion scale (4,427 patients, the scale of the Yan et al.
    anchor) and on the learning-curve sizes; each is trained afresh (~25 min in all on 2
    cores per training round), or with ``reuse`` taken from the benchmark cache where a
    workspace of the same cohort, config and ``embed/`` sources is there (its training time
    is then that of the cached run). ``sizes`` chooses the cohort sizes; the patient,
    inference and index figures need the DeepLesion-scale one and are skipped without it.
    ``quick``: one 60-patient cohort with the fast preset, a smoke run. ``train_seed``
    other than 0 trains with that seed (same cohort and held-out patients; the seed also
    draws the validation patients, as it does for a user) and reports the training and
    lesion figures under their own names (", training seed N") beside the headline ones:
    how far the training seed alone moves them. ``options`` (a nested embed config, e.g.
    ``{"encoder": {"stem_stride": 4}}``) trains a variant and reports its training and
    lesion figures under their own names (" [encoder.stem_stride 4]"), the way a lever is
    weighed against the default over the same seeds.
    """
    bench = QUICK if quick else BENCH
    root = Path(tempfile.mkdtemp(prefix="pg-bench-embed-"))
    try:
        if quick:
            ws, truth = _make_cohort(root, 60)
            config = {"preset": "fast"}
            runs = [(60, ws, truth, embed_stage.run(ws, config=config, force=True))]
            index_stage.run(ws, force=True)
        else:
            config, runs = _merge(options or {}, {"train": {"seed": train_seed}}
                                  if train_seed else {}), []
            for n in sorted(sizes):
                ws, source, summary = embedded_workspace(n, config, rebuild=not reuse)
                truth = json.loads((source / "truth.json").read_text())
                runs.append((n, ws, truth, summary))
        headline = runs[0][0] if quick else DEEPLESION_PATIENTS
        seeded = bool(train_seed) and not quick
        variant = "".join(f" [{k} {v}]" for k, v in _flatten(options or {})) if not quick else ""
        for n, ws, truth, summary in runs:
            cohort = Cohort.load(ws, truth)
            suffix = variant + (f", training seed {train_seed}" if seeded else "") + (
                "" if n == headline else f" ({n:,} patients)")
            _training(bench, summary, len(cohort.lesions), suffix)
            _lesion_quality(bench, cohort, EmbedConfig.from_dict(config), suffix)
        if seeded or variant:
            return  # the patient, inference and index figures are the default's
        if runs[-1][0] != headline:
            print(f"no {headline:,}-patient cohort: patient, inference and index figures skipped")
            return
        _patient_quality(bench, cohort)
        _inference_speed(bench, ws, quick)
        if no_index:
            return
        _index_speed(bench, cohort.vectors, quick)
        if torch.cuda.is_available():
            _cuda_speed(bench)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _merge(a: dict, b: dict) -> dict:
    """``b`` over ``a``, nested mappings merged."""
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _flatten(options: dict, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, value) pairs of a nested config, in key order."""
    pairs: list[tuple[str, object]] = []
    for k in sorted(options):
        v = options[k]
        pairs += _flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]
    return pairs


def parse_option(text: str) -> dict:
    """``"encoder.stem_stride=4"`` as ``{"encoder": {"stem_stride": 4}}`` (JSON values)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--option {text!r}: give KEY=VALUE, e.g. encoder.stem_stride=4")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def _merge_all(options) -> dict:
    out: dict = {}
    for o in options:
        out = _merge(out, o)
    return out


def _make_cohort(root: Path, n_patients: int) -> tuple[Workspace, dict]:
    cohort = root / "cohort"
    generate(cohort, n_patients=n_patients, seed=0)
    ws = Workspace(root / "ws")
    ingest_deeplesion(cohort / "DL_info.csv", cohort / "Images_png", ws.root,
                      records=cohort / "records.csv", outcomes=cohort / "outcomes.csv",
                      studies=cohort / "studies.csv")
    return ws, json.loads((cohort / "truth.json").read_text())


def label_ceiling(n_patients: int = DEEPLESION_PATIENTS, seed: int = 0) -> None:
    """What the weak labels cost: the default encoder trained with every training lesion
    typed (the true types of ``truth.json``), beside the same encoder trained on the
    archive's own labels (DeepLesion types only its validation and test rows).

    As many validation patients as the default run keeps, so both train on the same number
    of patients; the held-out patients, their scoring and the probe's training lesions are
    the same. Trains once more (~20 min on 2 cores at DeepLesion scale).
    """
    weak_ws, source, _ = embedded_workspace(n_patients, {}, seed)
    truth = json.loads((source / "truth.json").read_text())
    weak = Cohort.load(weak_ws, truth)
    roles = split_patients(weak.lesions, validation_share=TrainConfig().validation_share)
    n_validation = int((roles == VALIDATION).sum())
    share = n_validation / int((roles != HOLDOUT).sum())
    root = Path(tempfile.mkdtemp(prefix="pg-bench-ceiling-"))
    try:
        tables = subset_cohort(source, root / "cohort", n_patients)
        _type_training_rows(tables / "DL_info.csv", truth)
        ws = Workspace(root / "ws")
        ingest_deeplesion(tables / "DL_info.csv", source / "Images_png", ws.root,
                          records=tables / "records.csv", outcomes=tables / "outcomes.csv",
                          studies=tables / "studies.csv")
        embed_stage.run(ws, config={"train": {"validation_share": share}}, force=True)
        full = Cohort.load(ws, truth)
        assert (full.lesions["lesion_id"].to_numpy() == weak.lesions["lesion_id"].to_numpy()).all()
        held, train = weak.held, weak.probe_train
        types = weak.lesions["true_type"].to_numpy()
        patients = weak.lesions["patient_id"].to_numpy()
        given = type_labels(weak.lesions)
        suffix = f", every training lesion typed ({n_patients:,} patients)"
        note = (f"the default encoder trained with true types on every training lesion; "
                f"{n_validation} validation patients as in the default run; baseline the "
                "default run on the archive's labels (same held-out patients)")
        p10 = {name: precision_at_k(c.vectors[held], types[held], patients[held], k=10)
               for name, c in (("full", full), ("weak", weak))}
        record(BENCH, f"type retrieval precision@10{suffix}", p10["full"], "fraction",
               baseline_value=p10["weak"], n=int(held.sum()), note=note)
        probe = {name: linear_probe_accuracy(c.vectors[train], given[train], c.vectors[held],
                                             types[held])
                 for name, c in (("full", full), ("weak", weak))}
        record(BENCH, f"type linear-probe accuracy{suffix}", probe["full"], "fraction",
               baseline_value=probe["weak"], n=int(held.sum()), note=note)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _type_training_rows(dl_info: Path, truth: dict) -> None:
    """Give every training row (Train_Val_Test 1) of a DL_info.csv its true coarse type."""
    with open(dl_info, newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    ids = lesion_ids(pd.Series([row["File_name"] for row in rows]).str.strip())
    for row, lesion_id in zip(rows, ids, strict=True):
        if row["Train_Val_Test"].strip() == "1":
            row["Coarse_lesion_type"] = str(truth["lesions"][lesion_id]["true_type"])
    with open(dl_info, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# --------------------------------------------------------------------------- quality


def _training(bench: str, summary: dict, n_lesions: int, suffix: str = "") -> None:
    training = summary["training"]
    note = (f"{n_lesions} lesions, {training['patients']} patients; "
            f"{training['epochs_run']} epochs (best {training['best_epoch']}, "
            f"{training['metric']} {training['best_score']:.3f}); device {summary['device']}")
    record(bench, f"encoder training seconds{suffix}", training["seconds"], "s", n=n_lesions,
           higher_is_better=False, note=note)


def _lesion_quality(bench: str, c: Cohort, config: EmbedConfig, suffix: str = "") -> None:
    lesions, held = c.lesions, c.held
    types = lesions["true_type"].to_numpy()
    patients = lesions["patient_id"].to_numpy()
    pixels = _pixel_pca(c, config)
    n = int(held.sum())
    ours = precision_at_k(c.vectors[held], types[held], patients[held], k=10)
    base = precision_at_k(pixels[held], types[held], patients[held], k=10)
    record(bench, f"type retrieval precision@10{suffix}", ours, "fraction",
           baseline_value=base, n=n,
           note="held-out patients, true types, neighbours from other patients; baseline "
                "pixel-PCA-128 of the same windowed crops; target >= 0.85 and >= base + 0.10")

    train = c.probe_train
    given = lesions["coarse_type"].astype("Int64").fillna(-1).to_numpy(dtype=int)
    location = lesions[list(LOCATION)].to_numpy(dtype=float)
    probe = linear_probe_accuracy(c.vectors[train], given[train], c.vectors[held], types[held])
    loc_knn = knn_accuracy(location[train], given[train], location[held], types[held], k=15)
    loc_lin = linear_probe_accuracy(location[train], given[train], location[held], types[held])
    window = ReadingWindowFeatures()(torch.from_numpy(lesion_metadata(lesions)[:, 3:])).numpy()
    meta = np.concatenate([location, window], axis=1)
    meta_lin = linear_probe_accuracy(meta[train], given[train], meta[held], types[held])
    pca_probe = linear_probe_accuracy(pixels[train], given[train], pixels[held], types[held])
    record(bench, f"type linear-probe accuracy{suffix}", probe, "fraction",
           baseline_value=loc_knn, n=n,
           note=f"fitted on {int(train.sum())} typed lesions of training patients (given "
                f"labels); baseline location-only 15-NN (location linear probe {loc_lin:.3f}, "
                f"location and reading window {meta_lin:.3f}, pixel-PCA probe "
                f"{pca_probe:.3f}); target >= 0.85; Yan et al. 0.905 / "
                "location 0.597 on DeepLesion")

    query, candidates, answer = _next_study_matches(lesions, held)
    ours = same_lesion_top1(c.vectors, query, candidates, answer)
    base = _nearest_location_top1(location * [1.0, 1.0, 1.5], query, candidates, answer)
    record(bench, f"same lesion next study top-1{suffix}", ours, "fraction", baseline_value=base,
           n=len(query), note="held-out patients; among the lesions of the next study; "
                              "baseline nearest normalised location; target >= 0.90")


def _pixel_pca(c: Cohort, config: EmbedConfig, dim: int = 128, fit_rows: int = 5_000,
               chunk: int = 2_000) -> np.ndarray:
    """Pixel-PCA baseline: the windowed crops, flattened, projected on the top components
    of the training patients' crops (fitted on at most ``fit_rows`` of them, randomised
    SVD; the crops are windowed and projected ``chunk`` at a time)."""
    from sklearn.decomposition import PCA

    crops = read_crops(c.lesions, c.ws.image_root(), config.crop, workers=config.workers)
    windows = CTWindows(config.crop.windows)

    def pixels(rows: np.ndarray) -> np.ndarray:
        return windows(torch.from_numpy(crops.hu[rows].astype(np.float32))).flatten(1).numpy()

    train = np.flatnonzero(~c.held)
    rng = np.random.default_rng(0)
    fit = np.sort(rng.choice(train, min(fit_rows, len(train)), replace=False))
    pca = PCA(n_components=min(dim, len(fit) - 1), svd_solver="randomized",
              random_state=0).fit(pixels(fit))
    rows = np.arange(len(c.lesions))
    return np.concatenate([pca.transform(pixels(rows[i:i + chunk]))
                           for i in range(0, len(rows), chunk)])


def _next_study_matches(lesions: pd.DataFrame, held: np.ndarray):
    """Queries (rows) whose physical lesion is measured again in the patient's next study,
    the rows of that study and the right row."""
    studies = lesions.groupby("patient_id")["study_id"].apply(lambda s: sorted(set(s)))
    rows_of = lesions.groupby("study_id").indices
    query, candidates, answer = [], [], []
    for i in np.flatnonzero(held):
        order = studies[lesions.at[i, "patient_id"]]
        k = order.index(lesions.at[i, "study_id"])
        if k + 1 == len(order):
            continue
        nxt = rows_of[order[k + 1]]
        same = nxt[lesions["physical"].to_numpy()[nxt] == lesions.at[i, "physical"]]
        if len(same) == 1:
            query.append(i)
            candidates.append(nxt)
            answer.append(same[0])
    return np.array(query, dtype=np.int64), candidates, np.array(answer, dtype=np.int64)


def _nearest_location_top1(location: np.ndarray, query, candidates, answer) -> float:
    hits = [cand[np.argmin(np.linalg.norm(location[cand] - location[q], axis=1))] == a
            for q, cand, a in zip(query, candidates, answer, strict=True)]
    return float(np.mean(hits)) if hits else float("nan")


def _patient_quality(bench: str, c: Cohort) -> None:
    patients = pd.read_parquet(c.ws.path(embed_stage.PATIENTS))
    ids = patients["patient_id"].to_numpy()
    held_ids = set(c.lesions.loc[c.held, "patient_id"])
    queries = np.array([p in held_ids for p in ids])
    records = c.ws.table("records").set_index("patient_id").reindex(ids).reset_index()
    views = {
        "fused": np.stack(patients["embedding"].to_numpy()),
        "imaging": np.stack(patients["imaging"].to_numpy()),
        "record encoder": np.stack(patients["records"].to_numpy()),
        "raw records": standardised_raw(records),
    }
    truth = c.truth["patients"]
    for trait in TRAITS:
        labels = pd.Series([_trait(truth[p], trait) for p in ids]).astype(str).to_numpy()
        scores = {name: _patient_precision(v, labels, queries, euclidean=name == "raw records")
                  for name, v in views.items()}
        chance = float((pd.Series(labels).value_counts(normalize=True) ** 2).sum())
        record(bench, f"patient precision@10 {trait}", scores["fused"], "fraction",
               baseline_value=scores["raw records"], n=int(queries.sum()),
               note=f"held-out patients among all; baseline standardised raw records; "
                    f"imaging {scores['imaging']:.3f}, record encoder "
                    f"{scores['record encoder']:.3f}, chance {chance:.3f}")
    record(bench, "record encoder precision@10 smoking", _patient_precision(
        views["record encoder"], _labels(truth, ids, "smoking"), queries), "fraction",
        baseline_value=_patient_precision(views["raw records"], _labels(truth, ids, "smoking"),
                                          queries, euclidean=True),
        n=int(queries.sum()), note="records only: learned encoder vs standardised raw fields")


def _trait(patient: dict, trait: str):
    return patient[trait] if trait in patient else patient["traits"][trait]


def _labels(truth: dict, ids, trait: str) -> np.ndarray:
    return pd.Series([_trait(truth[p], trait) for p in ids]).astype(str).to_numpy()


def _patient_precision(vectors: np.ndarray, labels: np.ndarray, queries: np.ndarray,
                       k: int = 10, euclidean: bool = False) -> float:
    """Mean share of each query patient's k most similar other patients with its label."""
    x = vectors.astype(np.float64)
    if euclidean:
        sims = -((x[queries][:, None, :] - x[None]) ** 2).sum(-1)
    else:
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.where(norm > 0, x / np.where(norm > 0, norm, 1), 0)
        sims = x[queries] @ x.T
    sims[np.arange(queries.sum()), np.flatnonzero(queries)] = -np.inf
    top = np.argsort(-sims, axis=1)[:, :k]
    return float((labels[top] == labels[queries][:, None]).mean())


# --------------------------------------------------------------------------- speed


def _inference_speed(bench: str, ws: Workspace, quick: bool) -> None:
    """Crop reading + network over a DeepLesion-sized table (the cohort's rows repeated)."""
    encoder = load_encoder(ws.path(embed_stage.LESION_MODEL))
    lesions = ws.table("lesions")
    n = 2_000 if quick else DEEPLESION_LESIONS
    table = pd.concat([lesions] * int(np.ceil(n / len(lesions))), ignore_index=True).head(n)
    t0 = time.perf_counter()
    _, problems = embed_lesions(encoder, table, ws.image_root(), workers=2, device="cpu")
    seconds = time.perf_counter() - t0
    rate = n / seconds
    record(bench, "encoder inference lesions/s (CPU)", rate, "lesions/s", n=n,
           note=f"crops read by 2 DataLoader workers + network, {len(problems)} failures; "
                f"32,735 lesions in {DEEPLESION_LESIONS / rate:.0f} s (target < 180 s)"
                + (", extrapolated from 2,000" if quick else "")
                + "; 256 px synthetic slices (DeepLesion's are 512 px)")


def real_like_vectors(embeddings: np.ndarray, n: int, *, components: int = 16,
                      bandwidth: float = 0.3, noise: float = 0.01,
                      seed: int = 0) -> np.ndarray:
    """``n`` unit vectors shaped like ``embeddings``: a kernel density in their top
    principal components plus small isotropic noise (low intrinsic dimension, as real
    embeddings have; i.i.d. Gaussian vectors would measure nothing useful)."""
    rng = np.random.default_rng(seed)
    mean = embeddings.mean(axis=0)
    _, sd, basis = np.linalg.svd(embeddings - mean, full_matrices=False)
    coords = (embeddings - mean) @ basis[:components].T
    scale = sd[:components] / np.sqrt(len(embeddings))
    out = np.empty((n, embeddings.shape[1]), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        c = coords[rng.integers(len(coords), size=m)]
        c = c + bandwidth * scale * rng.standard_normal((m, components))
        x = mean + c @ basis[:components] + noise * rng.standard_normal((m, len(mean)))
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _index_speed(bench: str, embeddings: np.ndarray, quick: bool, k: int = 10) -> None:
    n = 100_000 if quick else 1_000_000
    vectors = real_like_vectors(embeddings, n)
    queries = real_like_vectors(embeddings, 1_000, seed=1)
    ids = np.arange(n).astype(str)
    exact = VectorIndex.build(ids, vectors, factory="Flat")
    t0 = time.perf_counter()
    hnsw = VectorIndex.build(ids, vectors, factory="HNSW32", ef_construction=80, ef_search=128)
    build_s = time.perf_counter() - t0
    size = f"{n:,} x {vectors.shape[1]}"
    record(bench, f"HNSW32 build seconds ({size})", build_s, "s", n=n,
           higher_is_better=False, note="efConstruction 80, 2 threads")

    truth, _ = exact.search(queries, k)
    found, _ = hnsw.search(queries, k)
    recall = np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)])
    record(bench, f"HNSW32 recall@10 vs exact ({size})", recall, "fraction", baseline_value=1.0,
           n=len(queries), note="efSearch 128; vectors: KDE of the encoder's embeddings in 16 "
                                "principal components + noise; target >= 0.95")

    hnsw_ms = _single_query_p50(hnsw, queries[:300], k)
    exact_ms = _single_query_p50(exact, queries[:100], k)
    record(bench, f"single-query p50 ms ({size})", hnsw_ms, "ms", baseline_value=exact_ms,
           n=300, higher_is_better=False, note="HNSW32 vs exact Flat; target < 2 ms")

    t0 = time.perf_counter()
    hnsw.knn_positions(k, device="cpu")
    graph_s = time.perf_counter() - t0
    sample = 20_000
    exact_s, _ = median_time(lambda: exact.index.search(vectors[:sample], k + 1), repeats=1)
    record(bench, f"kNN graph seconds ({size})", graph_s, "s",
           baseline_value=exact_s * n / sample, n=n, higher_is_better=False,
           note=f"all points, k={k}, HNSW32 in batches; baseline exact Flat extrapolated "
                f"from {sample:,} queries")


def _single_query_p50(index: VectorIndex, queries: np.ndarray, k: int) -> float:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q[None], k)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _cuda_speed(bench: str) -> None:
    from benchmarks.gpu_check import inference_throughput, knn_graph_seconds, train_throughput

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    gpu = torch.cuda.get_device_name(0)
    train = train_throughput(cuda, steps=200)
    train_cpu = train_throughput(cpu, steps=2, batch_size=64)
    record(bench, "encoder training lesions/s (CUDA, AMP)", train["lesions_per_s"],
           "lesions/s", baseline_value=train_cpu["lesions_per_s"], n=train["steps"],
           note=f"{gpu}; baseline CPU; random crops, throughput only")
    infer = inference_throughput(cuda, n=DEEPLESION_LESIONS)
    infer_cpu = inference_throughput(cpu, n=1024, batch_size=256)
    record(bench, "encoder inference lesions/s (CUDA, AMP)", infer["lesions_per_s"],
           "lesions/s", baseline_value=infer_cpu["lesions_per_s"], n=DEEPLESION_LESIONS,
           note=f"{gpu}; crops in memory; baseline CPU")
    knn = knn_graph_seconds(cuda, 1_000_000, 1_000_000)
    record(bench, "exact kNN graph seconds (CUDA, 1M x 128)", knn["graph_seconds"], "s",
           n=1_000_000, higher_is_better=False, note=f"{gpu}; torch fp16 brute force")


if __name__ == "__main__":
    import argparse

    from benchmarks.results import render

    parser = argparse.ArgumentParser(description="The embed benchmark alone.")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--no-index", action="store_true",
                        help="skip the 1M-vector index and CUDA figures")
    parser.add_argument("--reuse", action="store_true",
                        help="score cached workspaces of the same config and embed/ sources "
                             "instead of training afresh")
    parser.add_argument("--sizes", type=int, nargs="+", metavar="PATIENTS",
                        default=[*LEARNING_CURVE, DEEPLESION_PATIENTS],
                        help="cohort sizes to train and score (default: %(default)s); the "
                             "patient, inference and index figures need 4427")
    parser.add_argument("--train-seed", type=int, default=0, metavar="SEED",
                        help="train with this seed instead of 0 and report the training "
                             "and lesion figures under their own names (the seed spread)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="train a variant (an embed option, dotted, JSON value; "
                             "repeatable) and report its training and lesion figures under "
                             "their own names")
    parser.add_argument("--label-ceiling", type=int, nargs="*", metavar="PATIENTS",
                        help="instead, train once more with every training lesion typed "
                             "(true types) at these cohort sizes (default 4427) and report "
                             "it beside the default training")
    args = parser.parse_args()
    if args.label_ceiling is not None:
        for n in args.label_ceiling or [DEEPLESION_PATIENTS]:
            label_ceiling(n)
    else:
        main(quick=args.quick, no_index=args.no_index, reuse=args.reuse,
             sizes=tuple(args.sizes), train_seed=args.train_seed,
             options=_merge_all(parse_option(o) for o in args.option))
    render()
