"""Workspace tables -> the node and edge frames the stores write (pure functions).

A node frame has the label's key first, then the properties to set. An edge frame has
``src`` and ``dst`` (the keys of the end nodes) and then the edge's properties. Properties
left out of a frame are left alone by a write.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from graphdb.schema import (
    BIOMARKER,
    FORECAST_HORIZONS,
    LESION,
    PATIENT,
    STUDY,
    NodeType,
)
from patientgraph.errors import InputError

KNN_COLUMNS = ("src", "dst", "score", "rank")


def _require(df: pd.DataFrame, columns, source: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(source, f"the table lacks the column(s) {missing}",
                         f"write it with the columns {list(columns)}")


def _nodes(df: pd.DataFrame, node: NodeType, source: str) -> pd.DataFrame:
    cols = [c for c in node.properties if c in df.columns]
    _require(df, [node.key], source)
    return df[cols].reset_index(drop=True)


def patient_nodes(patients: pd.DataFrame, records: pd.DataFrame | None = None) -> pd.DataFrame:
    """Patients with their record fields (records of unknown patients are left out)."""
    nodes = _nodes(patients, PATIENT, "cohort/patients.parquet")
    if records is None or len(records.columns) <= 1:
        return nodes
    return nodes.merge(records, on="patient_id", how="left")


def study_nodes(studies: pd.DataFrame) -> pd.DataFrame:
    return _nodes(studies, STUDY, "cohort/studies.parquet")


def lesion_nodes(lesions: pd.DataFrame) -> pd.DataFrame:
    return _nodes(lesions, LESION, "cohort/lesions.parquet")


def has_study(studies: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"src": studies["patient_id"].to_numpy(),
                         "dst": studies["study_id"].to_numpy()})


def has_lesion(lesions: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"src": lesions["study_id"].to_numpy(),
                         "dst": lesions["lesion_id"].to_numpy()})


def similarity_edges(knn: pd.DataFrame, source: str = "index/*_knn.parquet") -> pd.DataFrame:
    """kNN rows (src, dst, score, rank) as SIMILAR_TO edges, in their order.

    Self-pairs are dropped, and of repeated (src, dst) pairs the best-ranked is kept, so
    that loading the same table twice, or in either backend, gives the same edges. (Ids are
    compared as integer codes: this runs on tens of millions of rows.)
    """
    _require(knn, KNN_COLUMNS, source)
    n = len(knn)
    codes, uniques = pd.factorize(np.concatenate([knn["src"].to_numpy(), knn["dst"].to_numpy()]))
    src, dst = codes[:n].astype(np.int64), codes[n:].astype(np.int64)
    by_rank = np.argsort(knn["rank"].to_numpy(), kind="stable")
    pair = (src * len(uniques) + dst)[by_rank]
    first = ~pd.Series(pair).duplicated().to_numpy() & (src != dst)[by_rank]
    edges = knn[list(KNN_COLUMNS)]
    if not first.all():  # (usually every row is kept: no copy by row then)
        edges = edges.iloc[np.sort(by_rank[first])].reset_index(drop=True)
    elif not knn.index.equals(pd.RangeIndex(n)):
        edges = edges.reset_index(drop=True)
    return edges.astype({"score": "float64", "rank": "int64"}, copy=False)


def cluster_frames(clusters: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``clusters.parquet`` as Cluster nodes, IN_CLUSTER edges and each lesion's ``cluster``.

    Noise (cluster -1) gets no Cluster node and no edge; its lesions get ``cluster = -1``.
    """
    source = "discovery/clusters.parquet"
    _require(clusters, ["lesion_id", "cluster", "probability"], source)
    member = clusters[clusters["cluster"] >= 0]
    size = member.groupby("cluster").size()
    return {
        "clusters": pd.DataFrame({"cluster_id": size.index.astype("int64"),
                                  "size": size.to_numpy().astype("int64")}),
        "members": pd.DataFrame({"src": member["lesion_id"].to_numpy(),
                                 "dst": member["cluster"].astype("int64").to_numpy(),
                                 "probability": member["probability"].astype(float).to_numpy()}),
        "lesions": pd.DataFrame({"lesion_id": clusters["lesion_id"].to_numpy(),
                                 "cluster": clusters["cluster"].astype("int64").to_numpy()}),
    }


def same_lesion_edges(tracks: pd.DataFrame) -> pd.DataFrame:
    """SAME_LESION edges from each lesion of a track to its next sighting, with ``days``."""
    _require(tracks, ["track_id", "lesion_id", "day"], "discovery/tracks.parquet")
    t = tracks.sort_values(["track_id", "day", "lesion_id"], kind="stable")
    nxt = t.groupby("track_id", sort=False).shift(-1)
    keep = nxt["lesion_id"].notna().to_numpy()
    return pd.DataFrame({
        "src": t["lesion_id"].to_numpy()[keep],
        "dst": nxt["lesion_id"].to_numpy()[keep],
        "days": (nxt["day"] - t["day"]).astype(float).to_numpy()[keep],
    })


def biomarker_frames(biomarkers: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Biomarker nodes and DESCRIBES edges to the cluster a biomarker is.

    A candidate of family ``cluster`` names its cluster by its last integer
    (``"cluster 3"``, ``"cluster_3"``); other candidates describe no cluster. A categorical
    candidate tested level by level gives one node per level, keyed by the scan's
    ``biomarker`` column (else ``"<candidate>=<level>"`` from a ``level`` column).
    """
    source = "discovery/biomarkers.parquet"
    _require(biomarkers, ["candidate", "family"], source)
    name = biomarkers["candidate"].astype(str)
    if "biomarker" in biomarkers.columns:  # the scan's own key of each row
        biomarkers = biomarkers.assign(candidate=biomarkers["biomarker"].astype(str))
    elif "level" in biomarkers.columns:  # one node per level of a categorical candidate
        level = biomarkers["level"]
        has_level = level.notna() & level.astype(str).ne("")
        biomarkers = biomarkers.assign(candidate=name.where(
            ~has_level, name + "=" + level.astype(str)), level=level.where(has_level))
    nodes = _nodes(biomarkers, BIOMARKER, source)
    is_cluster = biomarkers["family"].astype(str).str.lower().eq("cluster")
    number = name.str.extract(r"(-?\d+)\s*$")[0]
    bad = is_cluster & number.isna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise InputError(source, f"the cluster candidate {biomarkers['candidate'].iloc[row]!r} "
                         "does not end in a cluster number", "name cluster candidates "
                         "'cluster <id>'", row=row, column="candidate")
    describes = pd.DataFrame({"src": biomarkers.loc[is_cluster, "candidate"].to_numpy(),
                              "dst": number[is_cluster].astype("int64").to_numpy()})
    return {"biomarkers": nodes, "describes": describes}


def forecast_updates(forecasts: pd.DataFrame) -> pd.DataFrame:
    """``forecasts.parquet`` as Lesion property updates on each track's last lesion: the
    forecast at the patient's next study day (``forecast_next_*``, the earliest target that
    is not one of :data:`FORECAST_HORIZONS` days ahead) and at each horizon."""
    source = "discovery/forecasts.parquet"
    _require(forecasts, ["lesion_id", "last_day", "target_day", "long_mm", "long_mm_lo",
                         "long_mm_hi", "method"], source)
    f = forecasts.assign(ahead=(forecasts["target_day"] - forecasts["last_day"]).round(6))
    out = pd.DataFrame({"lesion_id": pd.unique(f["lesion_id"])}).set_index("lesion_id")
    out["forecast_method"] = f.groupby("lesion_id")["method"].first()
    horizon = f["ahead"].isin([float(h) for h in FORECAST_HORIZONS])
    whens = [("next", f[~horizon].sort_values("target_day").drop_duplicates("lesion_id"))]
    whens += [(str(h), f[f["ahead"] == float(h)].drop_duplicates("lesion_id"))
              for h in FORECAST_HORIZONS]
    for when, rows in whens:
        rows = rows.set_index("lesion_id")
        for what, col in (("mm", "long_mm"), ("lo", "long_mm_lo"), ("hi", "long_mm_hi")):
            out[f"forecast_{when}_{what}"] = rows[col].reindex(out.index).astype(float)
        if when == "next":
            out["forecast_next_day"] = rows["target_day"].reindex(out.index).astype(float)
    return out.reset_index()


def risk_updates(risk: pd.DataFrame) -> pd.DataFrame:
    """``risk.parquet`` as Patient property updates (``risk``, ``risk_cox``)."""
    _require(risk, ["patient_id", "risk"], "discovery/risk.parquet")
    return risk[[c for c in ("patient_id", "risk", "risk_cox") if c in risk.columns]]

