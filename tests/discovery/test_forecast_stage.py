"""Growth forecasts in the discover stage, the graph and ``patientgraph forecast``."""

from __future__ import annotations

import json
import shutil
import stat

import numpy as np
import pandas as pd
import pytest

from discovery import load_results
from discovery.forecast import CATEGORIES, FORECAST_COLUMNS
from discovery.results import BATCH_COLUMNS, forecast_batch, forecast_patient
from graphdb import open_store, resolve_target
from patientgraph.errors import InputError
from patientgraph.workspace import Workspace
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def results(discovered):
    return load_results(discovered)


def _followed_patient(results) -> tuple[str, float]:
    """A patient with at least two study days, and its last day."""
    days = results.tracks.groupby("patient_id")["day"].agg(["nunique", "max"])
    pid = days.index[days["nunique"] >= 2][0]
    return str(pid), float(days.loc[pid, "max"])


def test_every_track_is_forecast_from_its_last_lesion(results):
    f, tracks = results.forecasts, results.tracks
    assert list(f.columns) == FORECAST_COLUMNS
    last = tracks.sort_values("day").groupby("track_id").tail(1).set_index("track_id")
    assert set(f["track_id"]) == set(last.index)
    assert (f["lesion_id"].to_numpy() == last["lesion_id"].reindex(f["track_id"])).all()
    assert (f["last_day"].to_numpy() == last["day"].reindex(f["track_id"])).all()
    ahead = f["target_day"] - f["last_day"]
    for h in (90.0, 180.0):  # both horizons for every track
        assert set(f.loc[ahead == h, "track_id"]) == set(last.index)
    assert ((f["long_mm_lo"] <= f["long_mm"]) & (f["long_mm"] <= f["long_mm_hi"])).all()
    assert (f["long_mm_lo"] > 0).all() and set(f["method"]) == {"similarity"}
    summary = results.patient_forecasts
    assert set(summary["category"]) <= set(CATEGORIES)
    one = summary.iloc[0]
    rows = f[(f["patient_id"] == one["patient_id"]) & (f["target_day"] == one["target_day"])]
    assert one["sum_long_mm"] == pytest.approx(rows["long_mm"].sum())
    assert results.metrics["forecast"]["fitted"] is True


def test_the_graph_holds_the_forecasts(discovered, results):
    f = results.forecasts
    row = f[(f["target_day"] - f["last_day"]) == 90].iloc[0]
    target = resolve_target(discovered.root, None)
    with open_store(target, read_only=True) as store:
        got = store.query("MATCH (l:Lesion {lesion_id: $id}) RETURN l.forecast_90_mm AS mm, "
                          "l.forecast_90_lo AS lo, l.forecast_90_hi AS hi",
                          {"id": row["lesion_id"]})
        n = store.query("MATCH (l:Lesion) WHERE l.forecast_180_mm IS NOT NULL "
                        "RETURN count(l) AS n")["n"][0]
    assert got.iloc[0].tolist() == pytest.approx([row["long_mm"], row["long_mm_lo"],
                                                  row["long_mm_hi"]])
    assert n == f["track_id"].nunique()


def test_one_patient_from_the_command_line(discovered, results):
    pid, last = _followed_patient(results)
    typed = str(int(pid)) if pid.isdigit() else pid  # as a user types DeepLesion's index
    done = run_cli("forecast", "--workspace", discovered.root, "--patient", typed,
                   "--on-day", last + 100, "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    n_tracks = results.tracks.loc[results.tracks["patient_id"] == pid, "track_id"].nunique()
    assert out["patient_id"] == pid and len(out["tracks"]) == n_tracks
    assert out["sum_long_mm"] == pytest.approx(sum(t["long_mm"] for t in out["tracks"]))
    assert out["category"] in CATEGORIES
    api = forecast_patient(discovered, pid, last + 100)
    assert api.sum_long_mm == pytest.approx(out["sum_long_mm"])
    text = run_cli("forecast", "--workspace", discovered.root, "--patient", pid,
                   "--on-day", last + 100)
    assert text.returncode == 0 and "sum of long diameters" in text.stdout


def test_batch_forecasts_match_the_single_ones(discovered, results, tmp_path):
    pid, last = _followed_patient(results)
    other = str(results.tracks["patient_id"].iloc[-1])
    other_last = float(results.tracks.loc[results.tracks["patient_id"] == other, "day"].max())
    targets = tmp_path / "targets.csv"
    pd.DataFrame({"patient_id": [pid, other, pid],
                  "day": [last + 100, other_last + 30, last + 200]}).to_csv(targets,
                                                                            index=False)
    out = tmp_path / "forecasts.csv"
    done = run_cli("forecast", "--workspace", discovered.root, "--targets", targets,
                   "--out", out)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out, dtype={"patient_id": str})
    assert list(table.columns) == BATCH_COLUMNS
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    n = results.tracks.groupby("patient_id")["track_id"].nunique()
    assert len(table) == 2 * n[pid] + n[other]
    for day in (last + 100, last + 200):
        rows = table[(table["patient_id"] == pid) & (table["day"] == day)]
        assert rows["long_mm"].sum() == pytest.approx(
            forecast_patient(discovered, pid, day).sum_long_mm)
    api = forecast_batch(discovered, pd.read_csv(targets, dtype=str))
    assert np.allclose(api["long_mm"], table["long_mm"])


@pytest.mark.parametrize("rows, column, row", [
    ("patient_id,when\n1,400\n", "day", None),
    ("patient_id,day\n{pid},{late}\n{pid},soon\n", "day", 1),
    ("patient_id,day\n{pid},{late}\nP-unknown-77,400\n", "patient_id", 1),
    ("patient_id,day\n{pid},{early}\n", "day", 0),
])
def test_bad_targets_name_the_row_and_column(discovered, results, tmp_path, rows, column, row):
    pid, last = _followed_patient(results)
    targets = tmp_path / "targets.csv"
    targets.write_text(rows.format(pid=pid, late=last + 50, early=last - 1))
    out = tmp_path / "out.csv"
    done = run_cli("forecast", "--workspace", discovered.root, "--targets", targets,
                   "--out", out)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
    assert str(targets) in done.stderr and f"column '{column}'" in done.stderr
    if row is not None:
        assert f"row {row} " in done.stderr
    assert "P-unknown-77" not in done.stderr  # the row says which; no cell is quoted


@pytest.mark.parametrize("args, says", [
    (["--patient", "1"], "--on-day"),
    (["--patient", "1", "--on-day", "9", "--targets", "t.csv", "--out", "o.csv"], "either"),
    (["--targets", "t.csv"], "--out"),
    ([], "either"),
])
def test_options_that_do_not_go_together(discovered, args, says):
    done = run_cli("forecast", "--workspace", discovered.root, *args)
    assert done.returncode == 2 and says in done.stderr


def test_a_day_before_the_last_study_or_an_unknown_patient(discovered, results):
    pid, last = _followed_patient(results)
    early = run_cli("forecast", "--workspace", discovered.root, "--patient", pid,
                    "--on-day", last)
    assert early.returncode == 2 and "not after the patient's last study" in early.stderr
    with pytest.raises(InputError, match="unknown patient_id"):
        forecast_patient(discovered, "no-such-patient", last + 10)


def test_a_replaced_forecaster_file_is_refused_not_unpickled(discovered, tmp_path):
    ws = Workspace(shutil.copytree(discovered.root, tmp_path / "ws"))
    ws.path("models/forecaster.pkl").write_bytes(b"\x80\x04K\x01.")  # pickle of 1
    done = run_cli("forecast", "--workspace", ws.root, "--patient", "1", "--on-day", "9999")
    assert done.returncode == 2 and "not the one the discover stage wrote" in done.stderr
