"""The embed stage on a tiny cohort: outputs, skipping, reuse, bad images, checkpoints."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from embed import stage
from embed.encoder import load_encoder
from embed.fusion import MODALITIES
from patientgraph import ingest_deeplesion
from patientgraph.errors import InputError
from patientgraph.workspace import Workspace
from tests.conftest import tree_digest
from tests.embed.conftest import FAST


def _matrix(column: pd.Series) -> np.ndarray:
    return np.stack(column.to_numpy())


def test_outputs(embedded):
    lesions = pd.read_parquet(embedded.path(stage.LESIONS))
    cohort = embedded.table("lesions")
    assert list(lesions.columns) == ["lesion_id", "embedding"]
    assert set(lesions["lesion_id"]) == set(cohort["lesion_id"])
    vectors = _matrix(lesions["embedding"])
    assert vectors.shape == (len(cohort), 128) and vectors.dtype == np.float32
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(np.ones(len(vectors)), abs=1e-5)

    patients = pd.read_parquet(embedded.path(stage.PATIENTS))
    assert list(patients.columns) == ["patient_id", "embedding", *MODALITIES, "n_lesions",
                                      "has_records"]
    assert set(patients["patient_id"]) == set(embedded.table("patients")["patient_id"])
    assert patients["n_lesions"].sum() == len(cohort) and patients["has_records"].all()
    assert stage.default_weights(patients) == {"imaging": 0.5, "records": 0.5}
    fused = _matrix(patients["embedding"])
    assert np.linalg.norm(fused, axis=1) == pytest.approx(np.ones(len(fused)), abs=1e-5)

    assert pd.read_parquet(embedded.path(stage.FAILURES)).empty
    record = embedded.stage_record("embed")
    assert record["summary"]["lesions"] == len(cohort) and record["summary"]["failed_lesions"] == 0
    assert record["config"]["train"]["max_epochs"] == 2


def test_checkpoint_reproduces_the_embeddings(embedded):
    from embed.crops import lesion_locations
    from embed.inference import embed_lesions

    encoder = load_encoder(embedded.path(stage.LESION_MODEL))
    cohort = embedded.table("lesions")
    vectors, _ = embed_lesions(encoder, cohort, embedded.image_root(), workers=0, device="cpu")
    stored = pd.read_parquet(embedded.path(stage.LESIONS)).set_index("lesion_id")
    expected = _matrix(stored.loc[cohort["lesion_id"], "embedding"])
    assert (vectors * expected).sum(axis=1).min() > 0.999
    assert lesion_locations(cohort).shape == (len(cohort), 3)


def test_rerun_is_skipped_and_force_is_reproducible(embedded_copy):
    before = tree_digest(embedded_copy.path("embeddings"))
    assert stage.run(embedded_copy, config=FAST)["skipped"]
    summary = stage.run(embedded_copy, config=FAST, force=True)
    assert not summary["skipped"] and not summary["reused_lesion_embeddings"]
    assert tree_digest(embedded_copy.path("embeddings")) == before  # same seed, same bytes


def test_a_forced_rerun_reads_no_image_and_gives_the_same_bytes(embedded_copy, monkeypatch):
    import embed.crops

    assert list(embedded_copy.path(stage.CROP_CACHE).glob("crops-*.npz"))  # the first run's
    before = tree_digest(embedded_copy.path("embeddings"))

    def no_reading(*args, **kwargs):
        raise AssertionError("the crops should come from the cache")

    monkeypatch.setattr(embed.crops, "read_crops", no_reading)
    monkeypatch.setattr(stage, "read_crops", no_reading)
    summary = stage.run(embedded_copy, config=FAST, force=True)
    assert not summary["reused_lesion_embeddings"]
    assert tree_digest(embedded_copy.path("embeddings")) == before
    # without the cache the stage reads the images again
    with pytest.raises(AssertionError, match="from the cache"):
        stage.run(embedded_copy, config={**FAST, "cache_crops": False}, force=True)


def test_cache_crops_must_be_true_or_false():
    with pytest.raises(InputError, match="cache_crops"):
        stage.EmbedConfig.from_dict({"cache_crops": "yes"})


def test_new_weights_reuse_the_lesion_embeddings(embedded_copy):
    lesions_before = tree_digest(embedded_copy.path("embeddings"))["lesions.parquet"]
    summary = stage.run(embedded_copy, config={**FAST, "weights": {"imaging": 1, "records": 0}})
    assert not summary["skipped"] and summary["reused_lesion_embeddings"]
    assert tree_digest(embedded_copy.path("embeddings"))["lesions.parquet"] == lesions_before
    patients = pd.read_parquet(embedded_copy.path(stage.PATIENTS))
    assert stage.default_weights(patients) == {"imaging": 1.0, "records": 0.0}
    fused, imaging = _matrix(patients["embedding"]), _matrix(patients["imaging"])
    assert fused[:, :128] == pytest.approx(imaging) and not fused[:, 128:].any()


def _private_cohort(cohort, root) -> Workspace:
    """The cohort copied (images too) and ingested, so that its files can be broken."""
    shutil.copytree(cohort, root / "cohort")
    c = root / "cohort"
    ingest_deeplesion(c / "DL_info.csv", c / "Images_png", root / "ws",
                      records=c / "records.csv", studies=c / "studies.csv")
    return Workspace(root / "ws")


def test_unreadable_image_is_listed_and_skipped(cohort, tmp_path):
    ws = _private_cohort(cohort, tmp_path)
    lesions = ws.table("lesions")
    victim = lesions.iloc[3]
    (ws.image_root() / victim["image_ref"]).write_bytes(b"truncated")
    with pytest.raises(InputError, match="could not be read.*on_image_error to skip") as info:
        stage.run(ws, config={**FAST, "on_image_error": "raise"})
    assert not ws.path("embeddings").exists()
    # the image path names the patient; the message names the lesions row instead
    assert str(victim["image_ref"]) not in str(info.value)
    assert str(victim["image_ref"]).split("/")[0] not in str(info.value)

    summary = stage.run(ws, config=FAST)
    broken = lesions["series_ref"] == victim["series_ref"]  # neighbour slice of others, too
    assert 1 <= summary["failed_lesions"] <= broken.sum()
    failures = pd.read_parquet(ws.path(stage.FAILURES))
    assert victim["lesion_id"] in set(failures["lesion_id"])
    assert "cannot be read as a PNG" in failures["problem"].iloc[0]
    embedded = pd.read_parquet(ws.path(stage.LESIONS))
    assert len(embedded) == len(lesions) - summary["failed_lesions"]
    assert not set(embedded["lesion_id"]) & set(failures["lesion_id"])


def test_pretrained_checkpoint_must_fit_the_config(embedded, ingested_copy):
    checkpoint = str(embedded.path(stage.LESION_MODEL))
    summary = stage.run(ingested_copy, config={**FAST, "encoder_checkpoint": checkpoint})
    assert summary["training"]["checkpoint"] == checkpoint
    trained = pd.read_parquet(embedded.path(stage.LESIONS))
    reused = pd.read_parquet(ingested_copy.path(stage.LESIONS))
    assert (_matrix(trained["embedding"]) * _matrix(reused["embedding"])).sum(1).min() > 0.999
    before = tree_digest(ingested_copy.root)
    with pytest.raises(InputError, match=r"crop\.out_px is 32, not 48"):
        stage.run(ingested_copy, config={**FAST, "encoder_checkpoint": checkpoint,
                                         "crop": {"out_px": 48}})
    assert tree_digest(ingested_copy.root) == before


def test_cohort_without_records(cohort, tmp_path):
    ws = Workspace(tmp_path / "ws")
    ingest_deeplesion(cohort / "DL_info.csv", cohort / "Images_png", ws.root)
    summary = stage.run(ws, config=FAST)
    assert summary["patients_with_records"] == 0
    patients = pd.read_parquet(ws.path(stage.PATIENTS))
    assert not _matrix(patients["records"]).any() and not patients["has_records"].any()
    assert not ws.path(stage.RECORD_MODEL).exists()


def test_bad_config_and_empty_workspace(tmp_path):
    with pytest.raises(InputError, match="no ingested cohort"):
        stage.run(Workspace(tmp_path / "nothing"), config=FAST)
    with pytest.raises(InputError, match="Did you mean 'train'"):
        stage.run(Workspace(tmp_path / "nothing"), config={"trian": {}})
