"""The command line as a newcomer meets it: serving, ``info``, ids as typed, ``--config``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from patientgraph import InputError
from patientgraph.render import SELECTED_COLOUR
from patientgraph.schema import resolve_id
from tests.conftest import MINI, ctrl_c, ingest_args, run_cli

NO_CREDENTIALS = {"PATIENTGRAPH_TOKEN": "", "PATIENTGRAPH_USER": "",
                  "PATIENTGRAPH_PASSWORD": ""}


# -- serve -----------------------------------------------------------------------------------

@pytest.fixture
def served(monkeypatch, request):
    """dashboards.server.serve with the app and both servers replaced by recorders."""
    import waitress
    from threadpoolctl import threadpool_limits

    import dashboards.app
    from dashboards import server

    # serve limits this process's BLAS threads and sets the variables BLAS libraries read
    # when they load: both are put back after the test
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    original = threadpool_limits(limits=None)
    request.addfinalizer(original.restore_original_limits)
    calls: list[tuple[str, dict]] = []
    app = SimpleNamespace(server="wsgi-app",
                          run=lambda **kw: calls.append(("flask", kw)))
    monkeypatch.setattr(dashboards.app, "create_app", lambda *a, **kw: app)
    monkeypatch.setattr(waitress, "serve", lambda wsgi, **kw: calls.append(("waitress", kw)))
    messages: list[str] = []

    def serve(**kw):
        server.serve("W", environ=NO_CREDENTIALS, echo=messages.append, **kw)
        return calls, messages[-1]

    return serve


def test_serve_uses_waitress_by_default(served):
    calls, message = served()
    assert [c[0] for c in calls] == ["waitress"] and calls[0][1]["threads"] == 8
    assert "waitress, 8 threads" in message


def test_serve_gives_blas_one_thread_beside_the_request_threads(served):
    # OpenBLAS's spinning pool beside 8 request threads multiplied a similar-patients
    # request's CPU; the server runs BLAS on the calling thread only
    import numpy as np  # noqa: F401 (loads numpy's BLAS)
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):
        if (os.cpu_count() or 1) >= 2:  # the limit could not be 2 on one core
            assert all(p["num_threads"] == 2 for p in threadpool_info()
                       if p["user_api"] == "blas")
        served()
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas and all(n == 1 for n in blas)
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"  # for the BLAS libraries loaded later


def test_serve_workers_sets_the_threads_and_dev_the_flask_server(served):
    calls, message = served(workers=3)
    assert calls[-1][0] == "waitress" and calls[-1][1]["threads"] == 3
    calls, message = served(dev=True)
    assert calls[-1][0] == "flask" and "development server" in message
    with pytest.raises(InputError, match="one of --dev and --workers"):
        served(dev=True, workers=2)


def test_serve_help_names_dev_and_the_loopback_names():
    text = " ".join(run_cli("serve", "--help").stdout.split())
    assert "--dev" in text and "--workers" in text
    for name in ("127.0.0.1", "::1", "localhost"):
        assert name in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(root, port: int, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "patientgraph", "serve", "--workspace", str(root),
         "--port", str(port)],
        env={**os.environ, **NO_CREDENTIALS}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, **popen)


def test_serve_starts_without_a_warning(discovered):
    port = _free_port()
    proc = _serve(discovered.root, port)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert "waitress, 8 threads" in err
    assert "warning" not in (out + err).lower(), err


def test_serve_stops_on_ctrl_c_when_started_with_sigint_ignored(discovered):
    # a shell without job control (a CI script, `patientgraph serve &` in a script) starts its
    # background jobs with SIGINT ignored; Ctrl+C must stop the server there too, also while
    # the warm-up that the first page starts is loading
    import urllib.request

    port = _free_port()
    proc = _serve(discovered.root, port,
                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 120
        page = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                    page = r.status
                break
            except OSError:
                time.sleep(0.5)
        assert page == 200
    finally:
        _, err, stopped = ctrl_c(proc, timeout=30)
    assert stopped, "serve did not stop within 30 s of Ctrl+C"
    assert proc.returncode == 0, err[-2000:]


# -- run: warnings, the message after an empty run, --config ---------------------------------

def test_importing_the_stages_shows_no_deprecation_warning():
    # torch_geometric's import-time torch.jit.script warns on every run unless silenced
    res = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c",
                          "import patientgraph.app.pipeline, discovery.gnn, graphdb.pyg"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.fixture
def ingested(tmp_path):
    ws = tmp_path / "ws"
    assert run_cli(*ingest_args(MINI, ws)).returncode == 0
    return ws


def test_an_empty_run_says_why_and_nothing_out_of_date(ingested):
    res = run_cli("run", "--workspace", ingested, "--stages", ",")
    assert res.returncode == 0
    assert "no stage was chosen" in res.stderr and "later release" not in res.stderr


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "file"])
def test_config_is_a_file_or_inline_json(ingested, tmp_path, inline):
    text = '{"embedd": {"preset": "fast"}}'  # parsed, then refused by the pipeline
    path = tmp_path / "config.json"
    path.write_text(text)
    res = run_cli("run", "--workspace", ingested, "--stages", ",",
                  "--config", text if inline else path)
    assert res.returncode == 2
    assert "unknown stage 'embedd'" in res.stderr and "Did you mean 'embed'?" in res.stderr
    text = ' {"embed": {"preset": "fast"}}'
    path.write_text(text)
    res = run_cli("run", "--workspace", ingested, "--stages", ",",
                  "--config", text if inline else path)
    assert res.returncode == 0, res.stderr


def test_bad_config_json_names_its_source(ingested, tmp_path):
    res = run_cli("run", "--workspace", ingested, "--config", '{"embed": ')
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "the inline --config value is not valid JSON" in res.stderr and "Fix:" in res.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"embed": {"preset": fast}}')
    res = run_cli("run", "--workspace", ingested, "--config", bad)
    assert res.returncode == 2 and str(bad) in res.stderr
    assert "is not valid JSON" in res.stderr and "line 1" in res.stderr
    res = run_cli("run", "--workspace", ingested, "--config", '{"embed": "fast"}')
    assert res.returncode == 2 and "not an object of stage option objects" in res.stderr
    res = run_cli("run", "--workspace", ingested, "--config", tmp_path / "nope.json")
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_a_relative_workspace_path_works(ingested, tmp_path):
    res = run_cli("render", "--workspace", "ws", "--lesion", "000001_01_01_012_0",
                  "--out", "l.png", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "l.png").exists()


# -- info ------------------------------------------------------------------------------------

def test_info_is_a_short_table(discovered):
    res = run_cli("info", "--workspace", discovered.root)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:4] == ["stage", "finished", "(UTC)", "seconds"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == ["ingest", "embed", "index", "graph", "discover"]
    manifest = json.loads((discovered.root / "manifest.json").read_text())
    for name, line in rows.items():
        finished = manifest["stages"][name]["finished"]  # e.g. 2026-01-02T03:04:05+00:00
        assert f"{finished[:10]} {finished[11:16]}" in line
    assert "patients 60" in rows["ingest"] and "lesions" in rows["ingest"]
    assert "lesions embedded" in rows["embed"] and "training epochs" in rows["embed"]
    assert "lesion vectors" in rows["index"] and "nodes" in rows["graph"]
    assert "edges" in rows["graph"] and "clusters" in rows["discover"]
    assert "tracks forecast" in rows["discover"]
    assert "history" not in res.stdout and "{" not in res.stdout
    assert max(map(len, lines)) < 140


def test_info_json_is_the_whole_manifest(discovered):
    res = run_cli("info", "--workspace", discovered.root, "--json")
    manifest = json.loads((discovered.root / "manifest.json").read_text())
    assert json.loads(res.stdout) == manifest


# -- ids as users type them ------------------------------------------------------------------

def test_resolve_id_takes_the_one_formatting_variant_only():
    assert resolve_id("1", ["000001", "000002"]) == "000001"
    assert resolve_id("000002", ["000001", "000002"]) == "000002"
    assert resolve_id(" l3_1 ", ["L0003_01"]) == "L0003_01"
    assert resolve_id("7", ["07", "007"]) == "7"  # ambiguous: left to the unknown-id error
    assert resolve_id("70", ["000007"]) == "70"


def test_similar_and_render_take_ids_without_zero_padding(discovered, tmp_path):
    padded = run_cli("similar", "--workspace", discovered.root, "--patient", "000001",
                     "-k", "3", "--json")
    typed = run_cli("similar", "--workspace", discovered.root, "--patient", "1", "-k", "3",
                    "--json")
    assert typed.returncode == 0, typed.stderr
    assert typed.stdout == padded.stdout and typed.stdout
    lesion = sorted(discovered.table("lesions")["lesion_id"])[0]  # e.g. 000001_01_01_116_0
    short = "_".join(part.lstrip("0") or "0" for part in lesion.split("_"))
    assert short != lesion
    res = run_cli("similar", "--workspace", discovered.root, "--lesion", short, "-k", "2",
                  "--json")
    assert res.returncode == 0, res.stderr
    assert [json.loads(line)["lesion_id"] for line in res.stdout.splitlines()] != [lesion]
    res = run_cli("render", "--workspace", discovered.root, "--lesion", short, "--out",
                  tmp_path / "l.png")
    assert res.returncode == 0, res.stderr
    img = np.asarray(Image.open(tmp_path / "l.png").convert("RGB"))
    assert np.all(img == SELECTED_COLOUR, axis=-1).any()


def test_an_unknown_typed_id_names_no_other_patient(discovered):
    known = set(discovered.table("patients")["patient_id"])
    res = run_cli("similar", "--workspace", discovered.root, "--patient", "999", "-k", "3")
    assert res.returncode == 2 and "unknown patient_id '999'" in res.stderr
    assert not [p for p in known if p in res.stderr]


def test_a_relative_workspace_reads_its_files_by_either_path(tmp_path, monkeypatch):
    # stages read some files as ws.read_parquet(ws.path(...)): under a relative root that
    # path must not be joined to the root a second time ("ws/ws/...")
    import pandas as pd

    from patientgraph.workspace import Workspace

    monkeypatch.chdir(tmp_path)
    ws = Workspace("ws")
    ws.path("embeddings").mkdir(parents=True)
    pd.DataFrame({"a": [1]}).to_parquet(ws.path("embeddings", "t.parquet"))
    for path in ("embeddings/t.parquet", ws.path("embeddings", "t.parquet")):
        assert ws.read_parquet(path, writer="embed")["a"].tolist() == [1]
    monkeypatch.chdir(tmp_path / "ws")
    assert ws.read_parquet("embeddings/t.parquet", writer="embed")["a"].tolist() == [1]
