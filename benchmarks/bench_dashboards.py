"""The explorer at DeepLesion scale: page renders, main callbacks, 20 concurrent users.

On a workspace of the DeepLesion-scale synthetic cohort (4,427 patients, ~32,700 lesions;
300 patients with ``quick``), built once with every pipeline stage (embed preset "fast":
the figures measure the explorer, not the embeddings) and kept between runs:

- each page's first render: the routing callback that builds the page, its figures
  included, called over HTTP in-process (Flask test client), p50 and p99;
- the main callbacks (select a patient: its similar patients; their survival against
  everyone else; its crops; its growth with forecasts, and with the similar lesions'
  trajectories; its graph neighbourhood; compare two cohorts), each
  call on another patient or cohort so that no cache answers, p50 and p99. Target: p50
  under 500 ms;
- 20 concurrent users posting the similar-patients callback on loopback for a bounded time
  to ``patientgraph serve --workers 8`` (waitress), beside the same load on the Dash
  development server (``serve --dev``): p50, p99, requests/s and errors.

Times are server-side (the browser's own drawing is not included).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_ingest import CACHE, cached_cohort
from benchmarks.results import latency_ms, record

BENCH = "dashboards"
QUICK = "dashboards-quick"
USERS = 20
WORKERS = 8


def bench_workspace(n_patients: int) -> Path:
    """A workspace of the cached synthetic cohort with every available stage run."""
    from patientgraph import Workspace, ingest_deeplesion
    from patientgraph.app.pipeline import run_pipeline

    cohort = cached_cohort(n_patients)
    root = CACHE / f"explorer-ws-{n_patients}-0"
    if Workspace(root).stage_record("ingest") is None:
        ingest_deeplesion(cohort / "DL_info.csv", cohort / "Images_png", root,
                          records=cohort / "records.csv", outcomes=cohort / "outcomes.csv",
                          studies=cohort / "studies.csv")
    run_pipeline(root, config={"embed": {"preset": "fast"}}, echo=print)
    return root


def record_latency(bench: str, name: str, p50: float, p99: float, n: int, note: str) -> None:
    record(bench, f"{name} p50", p50, "ms", n=n, higher_is_better=False, note=note)
    record(bench, f"{name} p99", p99, "ms", n=n, higher_is_better=False, note=note)


def bench_pages(bench: str, client, n_patients: int, calls: int) -> None:
    from dashboards.app import PAGES

    for path, (title, _) in PAGES.items():
        def render(_i, path=path):
            client.call("page.children", {"url.pathname": path})

        p50, p99 = latency_ms(render, calls)
        record_latency(bench, f"page {title.lower()} render", p50, p99, calls,
                       f"{n_patients} patients; routing callback building the page")


def bench_callbacks(bench: str, client, data, calls: int) -> None:
    rng = np.random.default_rng(0)
    patients = rng.choice(data.patient_ids, calls + 4, replace=False)
    note = f"{len(data.patient_ids)} patients; a new patient each call (no cache)"

    def select(i):
        client.call("patient-similar.data", {"patient-select.value": patients[i],
                                             "patient-k.value": 10,
                                             "patient-weight.value": 0.5})

    def survival(i):
        client.call("patient-km.figure", {"patient-select.value": patients[i],
                                          "patient-k.value": 10,
                                          "patient-weight.value": 0.5})

    def images(i):
        client.call("patient-crops.children", {"patient-select.value": patients[i]})

    def growth(i, similar=()):
        client.call("patient-growth.figure", {"patient-select.value": patients[i],
                                              "patient-similar-tracks.value": list(similar)})

    def neighbourhood(i):
        client.call("patient-graph.elements", {"patient-select.value": patients[i]})

    for name, fn in (("select patient", select),
                     ("patient survival (similar vs everyone)", survival),
                     ("patient crops", images),
                     ("patient growth and forecast", growth),
                     ("patient growth with similar lesions' trajectories",
                      lambda i: growth(i, ["show"])),
                     ("patient graph neighbourhood", neighbourhood)):
        p50, p99 = latency_ms(fn, calls)
        record_latency(bench, name, p50, p99, calls, note)

    cohorts = _cohort_pairs(data, calls + 2)

    def compare(i):
        a, b = cohorts[i]
        client.call("cohort-km.figure", {"cohort-a.data": a, "cohort-b.data": b})

    p50, p99 = latency_ms(compare, calls)
    record_latency(bench, "compare cohorts", p50, p99, calls,
                   f"{len(data.patient_ids)} patients; KM + log-rank + Cox of two disjoint "
                   "filtered cohorts")


def _cohort_pairs(data, n: int) -> list[tuple[dict, dict]]:
    """Disjoint cohort pairs of varied filters (sex split, age and lesion type)."""
    from dashboards.cohorts import CohortDefinition

    rng = np.random.default_rng(1)
    pairs = []
    for _ in range(n):
        age = float(rng.integers(30, 70))
        types = sorted(int(t) for t in rng.choice(range(1, 9), 3, replace=False))
        a = CohortDefinition("A", {"sex": "F", "age": {"min": age}, "coarse_type": types})
        b = CohortDefinition("B", {"sex": "M", "age": {"min": age}, "coarse_type": types})
        pairs.append((a.to_dict(), b.to_dict()))
    return pairs


def bench_concurrency(bench: str, app, root: Path, patients: list[str],
                      seconds: float) -> None:
    from dashboards.protocol import find_callback

    spec = find_callback(app, "patient-similar.data")
    rng = np.random.default_rng(2)
    bodies = [spec.body({"patient-select.value": p, "patient-k.value": 10,
                         "patient-weight.value": float(w)})
              for p, w in zip(rng.choice(patients, 2000), rng.choice([0.3, 0.5, 0.8], 2000),
                              strict=True)]
    figures = {}
    for server, workers in (("waitress", WORKERS), ("dev server", None)):
        figures[server] = _hammer(root, bodies, workers, seconds)
    note = (f"{USERS} users on loopback for {seconds:.0f} s, {len(patients)} patients; "
            f"waitress {WORKERS} threads; baseline: Dash development server")
    prod, dev = figures["waitress"], figures["dev server"]
    record(bench, "20 users similar-patients p50", prod["p50"], "ms",
           baseline_value=dev["p50"], n=prod["n"], higher_is_better=False, note=note)
    record(bench, "20 users similar-patients p99", prod["p99"], "ms",
           baseline_value=dev["p99"], n=prod["n"], higher_is_better=False, note=note)
    record(bench, "20 users similar-patients throughput", prod["rps"], "requests/s",
           baseline_value=dev["rps"], n=prod["n"], note=note)
    record(bench, "20 users similar-patients errors", prod["errors"], "requests",
           baseline_value=dev["errors"], n=prod["n"], higher_is_better=False, note=note)


def _hammer(root: Path, bodies: list[dict], workers: int | None, seconds: float) -> dict:
    import requests

    port = _free_port()
    cmd = [sys.executable, "-m", "patientgraph", "serve", "--workspace", str(root),
           "--port", str(port)] + (["--workers", str(workers)] if workers else ["--dev"])
    env = {**os.environ, "PATIENTGRAPH_TOKEN": "", "PATIENTGRAPH_USER": ""}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/_dash-update-component"
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/", proc)
        requests.post(url, json=bodies[0], timeout=120)  # first call loads the index
        latencies: list[float] = []
        errors = [0]
        lock = threading.Lock()
        stop = time.monotonic() + seconds

        def user(k: int) -> None:
            session = requests.Session()
            i = k
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    ok = session.post(url, json=bodies[i % len(bodies)],
                                      timeout=60).status_code == 200
                except requests.RequestException:
                    ok = False
                elapsed = (time.perf_counter() - t0) * 1000
                with lock:
                    latencies.append(elapsed)
                    errors[0] += 0 if ok else 1
                i += USERS

        threads = [threading.Thread(target=user, args=(k,)) for k in range(USERS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99)),
            "rps": len(latencies) / wall, "errors": errors[0], "n": len(latencies)}


def _wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the explorer exited with code {proc.returncode}")
        try:
            requests.get(url, timeout=5)
            return
        except requests.ConnectionError:
            time.sleep(0.5)
    raise RuntimeError("the explorer did not start")


def _start_seconds(root: Path) -> float:
    """Seconds a fresh interpreter takes to import the explorer and build the app."""
    code = ("import time; t = time.perf_counter(); from dashboards.app import create_app; "
            f"create_app({str(root)!r}); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(quick: bool = False) -> None:
    from dashboards.app import create_app
    from dashboards.protocol import CallbackClient

    bench = QUICK if quick else BENCH
    n_patients = 300 if quick else 4427
    root = bench_workspace(n_patients)
    record(bench, "app start (fresh process)", _start_seconds(root), "s", n=n_patients,
           higher_is_better=False,
           note="python -c create_app(W): imports (torch, lifelines), tables, layouts")
    app = create_app(root)
    client = CallbackClient(app, app.server.test_client().post)
    data = app.server.config["explorer"].data
    bench_pages(bench, client, n_patients, calls=5 if quick else 20)
    bench_callbacks(bench, client, data, calls=10 if quick else 50)
    bench_concurrency(bench, app, root, data.patient_ids, seconds=8 if quick else 30)
    data.graph.close()


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
