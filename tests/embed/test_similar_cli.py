"""``patientgraph similar`` and ``run --config`` from the command line, on the embedded
tiny cohort."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_similar_patients_json(embedded):
    patient = embedded.table("patients")["patient_id"].iloc[0]
    res = run_cli("similar", "--workspace", embedded.root, "--patient", patient, "-k", "3",
                  "--json")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 3 and patient not in {r["patient_id"] for r in rows}
    for r in rows:
        assert abs(r["score"] - (r["imaging"] + r["records"])) < 1e-5
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)


def test_similar_lesions_table(embedded):
    lesion = embedded.table("lesions")["lesion_id"].iloc[0]
    res = run_cli("similar", "--workspace", embedded.root, "--lesion", lesion, "-k", "2")
    assert res.returncode == 0, res.stderr
    assert "lesion_id" in res.stdout and lesion not in res.stdout.split("\n", 1)[1]


def test_similar_bad_input(embedded):
    res = run_cli("similar", "--workspace", embedded.root, "--patient", "nobody")
    assert res.returncode == 2 and "Fix:" in res.stderr
    res = run_cli("similar", "--workspace", embedded.root)
    assert res.returncode == 2 and "exactly one of --patient and --lesion" in res.stderr
    res = run_cli("similar", "--workspace", embedded.root, "--patient", "x",
                  "--weights", "imaging=lots")
    assert res.returncode == 2 and "name=number" in res.stderr


def test_run_config_file(ingested_copy, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"embd": {}}')
    res = run_cli("run", "--workspace", ingested_copy.root, "--config", bad)
    assert res.returncode == 2 and "Did you mean 'embed'?" in res.stderr
    bad.write_text("{not json")
    res = run_cli("run", "--workspace", ingested_copy.root, "--config", bad)
    assert res.returncode == 2 and "not valid JSON" in res.stderr
