"""The prepared GPU check: every part runs (tiny, on the CPU) and reports what it measured,
so that a session lent a GPU runs one script that works."""

from __future__ import annotations

import json

import pytest

from benchmarks.gpu_check import fake_cohort, main
from embed.labels import mine_same_lesion_pairs, split_patients, type_labels


def test_fake_cohort_has_the_shape_training_needs():
    lesions, studies = fake_cohort(3000)
    assert len(lesions) == 3000 and lesions["lesion_id"].is_unique
    per_patient = lesions.groupby("patient_id").size().mean()
    assert 6 < per_patient < 9  # DeepLesion: ~7.4 lesions per patient
    typed = (type_labels(lesions) >= 0).mean()
    assert 0.25 < typed < 0.4 and set(type_labels(lesions)) <= set(range(-1, 9))
    roles = split_patients(lesions).value_counts()
    assert {"train", "validation", "holdout"} <= set(roles.index)
    assert len(mine_same_lesion_pairs(lesions, studies)) > 100  # lesions seen again


@pytest.mark.slow
def test_smoke_run_reports_every_part(tmp_path):
    out = tmp_path / "report.json"
    report = main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report, default=float))
    cuda = report["cuda"]
    assert {"train", "inference", "knn_graph", "stage_training", "stage_training_batch_256",
            "batch_sweep", "resnet18"} <= set(cuda)
    stage = cuda["stage_training"]
    assert stage["lesions"] == 400 and stage["lesions_per_s"] > 0
    assert stage["default_schedule_seconds"] == pytest.approx(stage["seconds"] * 28)
    assert cuda["stage_training_batch_256"]["batch_lesions"] == 256
    assert [r["batch_lesions"] for r in cuda["batch_sweep"]] == [8, 16, 8, 16]
    assert [r["cudnn_benchmark"] for r in cuda["batch_sweep"]] == [False, False, True, True]
