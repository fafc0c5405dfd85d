"""The candidate biomarker table: one row per patient, outcome, covariates and candidates.

:func:`build_candidates` gathers what the survival scan (:mod:`discovery.survival`) tests:
imaging measurements at the first study, lesion-cluster membership, growth, the leading
components of the patient embeddings, and every field of the non-imaging record. Each
candidate carries a family ("imaging", "cluster", "embedding", "record"); the graph links a
"cluster" biomarker to the cluster numbered by the last integer of its name ("cluster_3").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FAMILIES = ("imaging", "cluster", "embedding", "record")
CLUSTER_FEATURES = ("share", "any")
BASE_COLUMNS = ("patient_id", "time_days", "event", "age", "sex")


def first_study(studies: pd.DataFrame) -> pd.Series:
    """Each patient's first study_id: the smallest ``day`` (then ``study_index`` / id)."""
    s = studies.copy()
    keys = [c for c in ("day", "study_index", "study_id") if c in s.columns]
    s = s.sort_values(["patient_id", *keys], na_position="last", kind="mergesort")
    return s.groupby("patient_id", sort=False)["study_id"].first()


def imaging_at_first_study(lesions: pd.DataFrame, studies: pd.DataFrame) -> pd.DataFrame:
    """lesion_count and lesion_burden (sum of long diameters, mm) at each patient's first study.

    A patient with no lesion measured at the first study has count 0 and burden NaN (a
    burden of 0 would sit far below every measured one on the log scale).
    """
    first = first_study(studies)
    at_first = lesions[lesions["study_id"].isin(first.to_numpy())]
    agg = at_first.groupby("patient_id").agg(
        lesion_count=("lesion_id", "size"), lesion_burden=("long_mm", "sum"))
    out = pd.DataFrame(index=pd.Index(first.index, name="patient_id")).join(agg)
    out["lesion_count"] = out["lesion_count"].fillna(0).astype(float)
    out.loc[out["lesion_count"] == 0, "lesion_burden"] = np.nan
    return out


def cluster_membership(lesions: pd.DataFrame, clusters: pd.DataFrame,
                       feature: str = "share") -> pd.DataFrame:
    """One column ``cluster_<id>`` per cluster (noise, -1, has none).

    ``share``: the fraction of the patient's clustered lesions (all studies, noise included in
    the denominator) in the cluster; ``any``: 1.0 if any of them is. Patients without a
    clustered lesion get NaN.
    """
    if feature not in CLUSTER_FEATURES:
        raise ValueError(f"cluster feature must be one of {CLUSTER_FEATURES}, not {feature!r}")
    merged = clusters[["lesion_id", "cluster"]].merge(
        lesions[["lesion_id", "patient_id"]], on="lesion_id", how="inner")
    counts = pd.crosstab(merged["patient_id"], merged["cluster"].astype(int))
    total = counts.sum(axis=1)
    counts = counts[[c for c in sorted(counts.columns) if c >= 0]]
    values = counts.div(total, axis=0) if feature == "share" else (counts > 0).astype(float)
    values.columns = [f"cluster_{c}" for c in values.columns]
    return values.astype(float)


def embedding_components(patient_embeddings: pd.DataFrame, n_components: int = 5
                         ) -> pd.DataFrame:
    """The leading principal components of the patient embeddings (embedding_pc1..pcN).

    Signs are fixed so that each component's largest loading is positive (a rerun gives the
    same columns).
    """
    from sklearn.decomposition import PCA

    X = np.vstack(patient_embeddings["embedding"].to_numpy()).astype(float)
    k = int(min(n_components, X.shape[0] - 1, X.shape[1]))
    if k < 1:
        return pd.DataFrame(index=pd.Index(patient_embeddings["patient_id"], name="patient_id"))
    pca = PCA(n_components=k, svd_solver="full").fit(X)
    comps = pca.components_
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(1)])
    scores = (X - pca.mean_) @ (comps * signs[:, None]).T
    return pd.DataFrame(scores, columns=[f"embedding_pc{i + 1}" for i in range(k)],
                        index=pd.Index(patient_embeddings["patient_id"], name="patient_id"))


def build_candidates(
    patients: pd.DataFrame,
    records: pd.DataFrame | None,
    outcomes: pd.DataFrame,
    lesions: pd.DataFrame,
    studies: pd.DataFrame,
    clusters: pd.DataFrame | None = None,
    patient_growth: pd.DataFrame | None = None,
    patient_embeddings: pd.DataFrame | None = None,
    n_components: int = 5,
    *,
    cluster_feature: str = "share",
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Assemble the patients x candidates table the survival scan tests.

    Returns ``(table, families)``: ``table`` has one row per patient of ``patients`` with
    patient_id, time_days, event (NaN where the outcome is unknown: the scan counts and
    leaves them out), age, sex, then the candidates; ``families`` maps each candidate to its
    family. Candidates: age and sex ("record"; the scan also adjusts for them),
    lesion_count, lesion_burden (first study) and growth_rate ("imaging"), cluster_<id>
    ("cluster"), embedding_pc<k> ("embedding") and every record field ("record"; a field
    whose name is taken is renamed ``record_<name>``).
    """
    pids = patients["patient_id"].astype(str)
    table = pd.DataFrame({"patient_id": pids.to_numpy()})
    out = outcomes[["patient_id", "time_days", "event"]].astype({"patient_id": str})
    table = table.merge(out, on="patient_id", how="left", validate="one_to_one")
    table["age"] = pd.to_numeric(patients["age"], errors="coerce").to_numpy(float)
    table["sex"] = patients["sex"].astype(object).where(patients["sex"].notna(), None).to_numpy()
    families = {"age": "record", "sex": "record"}

    def add(frame: pd.DataFrame, family: str) -> None:
        nonlocal table
        frame = frame.copy()
        frame.index = frame.index.astype(str)
        frame.index.name = "patient_id"
        table = table.merge(frame, left_on="patient_id", right_index=True, how="left")
        families.update(dict.fromkeys(frame.columns, family))

    add(imaging_at_first_study(lesions.astype({"patient_id": str}),
                               studies.astype({"patient_id": str})), "imaging")
    if patient_growth is not None:
        add(patient_growth.set_index("patient_id")[["growth_rate"]], "imaging")
    if clusters is not None and len(clusters):
        add(cluster_membership(lesions, clusters, cluster_feature), "cluster")
    if patient_embeddings is not None and len(patient_embeddings):
        add(embedding_components(patient_embeddings, n_components), "embedding")
    if records is not None and len(records.columns) > 1:
        rec = records.set_index(records["patient_id"].astype(str)).drop(columns="patient_id")
        taken = set(table.columns)
        rec.columns = [f"record_{c}" if c in taken else c for c in rec.columns]
        add(rec, "record")
    return table.reset_index(drop=True), families
