"""The explorer as a user meets it, at DeepLesion scale, beside the explorer before the
speed work (:data:`BASELINE_REV`) in the same run.

On a workspace of the DeepLesion-scale synthetic cohort (4,427 patients, ~32,700 lesions;
300 patients with ``quick``; ``--patients N`` for another cached size), built once with
every pipeline stage (embed preset "fast": the figures measure the explorer, not the
embeddings) and kept between runs. Everything goes through HTTP to ``patientgraph serve``
in its own process (waitress, 8 threads, as a user runs it), for this tree and for the
baseline tree (``git archive BASELINE_REV``, imported first through ``PYTHONPATH``) in
turns, so that what else the machine runs falls on both alike:

- start: from launching ``patientgraph serve`` until the first page has answered 200 (the
  index page, the layout, the callback graph and the routing callback that renders the
  overview, what a browser asks for before it shows anything), median of a few launches,
  with the CPU seconds the server spent until then (the wall time on an idle machine);
- each page's full render: the routing callback that builds the page, figures included,
  over HTTP from one user, p50 and p99;
- the main callbacks (select a patient: its similar patients; their survival; its crops;
  its growth with forecasts, and with the similar lesions' trajectories; its graph
  neighbourhood; compare two cohorts) over HTTP from one user, each call on another
  patient or cohort so that no cache answers, p50 and p99;
- 20 closed-loop users posting the similar-patients callback on loopback for a bounded
  time, each request a new (patient, weight) pair so that no cache answers: p50, p99,
  requests/s and errors. The client runs on the same cores as the server, as on a laptop.

Times are what the client sees (the browser's own drawing is not included).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmarks.bench_ingest import CACHE, cached_cohort
from benchmarks.results import latency_ms, record
from benchmarks.trees import export_tree

BENCH = "dashboards"
QUICK = "dashboards-quick"
USERS = 20
WORKERS = 8
BASELINE_REV = "378940f"
"""The explorer before the speed work of issue 23 (torch imported at start, the similar
patients through embed.similar and pandas per request)."""
STARTS = 3
EXPLORER_STAGES = ("ingest", "embed", "index", "graph", "discover")
SHARED = "2 cores shared with other jobs; client on the same cores"


def bench_workspace(n_patients: int) -> Path:
    """A workspace of the cached synthetic cohort with every explorer stage run.

    One that already records every stage the explorer reads is used as it is (whatever
    embed preset built it: the figures measure the explorer, not the embeddings).
    """
    from patientgraph import Workspace, ingest_deeplesion
    from patientgraph.app.pipeline import run_pipeline

    root = CACHE / f"explorer-ws-{n_patients}-0"
    stages = Workspace(root).manifest().get("stages", {}) if (root / "manifest.json").exists() \
        else {}
    if all(name in stages for name in EXPLORER_STAGES):
        return root
    cohort = cached_cohort(n_patients)
    if Workspace(root).stage_record("ingest") is None:
        ingest_deeplesion(cohort / "DL_info.csv", cohort / "Images_png", root,
                          records=cohort / "records.csv", outcomes=cohort / "outcomes.csv",
                          studies=cohort / "studies.csv")
    run_pipeline(root, config={"embed": {"preset": "fast"}}, echo=print)
    return root


def baseline_tree(rev: str = BASELINE_REV) -> Path:
    """The repository's sources at ``rev`` in a temporary folder."""
    return export_tree(rev, Path(tempfile.mkdtemp(prefix="pg-bench-explorer-")))


def record_latency(bench: str, name: str, now: tuple[float, float],
                   before: tuple[float, float] | None, n: int, note: str) -> None:
    for q, label in enumerate(("p50", "p99")):
        record(bench, f"{name} {label}", now[q], "ms",
               baseline_value=None if before is None else before[q], n=n,
               higher_is_better=False, note=note)


@contextmanager
def serving(root: Path, first_page: dict, tree: Path | None = None,
            settle_s: float = 5.0) -> Iterator[str]:
    """``patientgraph serve`` (waitress, :data:`WORKERS` threads) of ``tree`` (default:
    this checkout) on a free loopback port; yields its base URL once it has answered its
    first page and ``settle_s`` more seconds have passed."""
    import requests

    port = _free_port()
    proc = _launch(root, port, tree)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base + "/", proc)
        requests.post(base + "/_dash-update-component", json=first_page, timeout=120)
        time.sleep(settle_s)  # what the server loads after its first page, it loads now
        yield base
    finally:
        _stop(proc)


def _launch(root: Path, port: int, tree: Path | None) -> subprocess.Popen:
    env = {**os.environ, "PATIENTGRAPH_TOKEN": "", "PATIENTGRAPH_USER": ""}
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "patientgraph", "serve", "--workspace", str(root),
           "--port", str(port), "--workers", str(WORKERS)]
    return subprocess.Popen(cmd, env=env, cwd=str(tree) if tree else None,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_seconds(root: Path, first_page: dict,
                  tree: Path | None = None) -> tuple[float, float]:
    """Seconds from launching ``patientgraph serve`` until the first page has answered
    (GET /, the layout and the callback graph, then the routing callback of the overview),
    and the CPU seconds the server process spent until then (what the wall time would be
    on an idle machine, give or take the disk)."""
    import requests

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = _launch(root, port, tree)
    try:
        _wait_until_up(base + "/", proc, poll=0.02)
        with requests.Session() as session:
            for path in ("/_dash-layout", "/_dash-dependencies"):
                session.get(base + path, timeout=60).raise_for_status()
            session.post(base + "/_dash-update-component", json=first_page,
                         timeout=60).raise_for_status()
        wall = time.perf_counter() - t0
        return wall, _cpu_seconds(proc.pid)
    finally:
        _stop(proc)


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_client(app, base: str):
    """A :class:`~dashboards.protocol.CallbackClient` posting to the server at ``base``."""
    import requests

    from dashboards.protocol import CallbackClient

    session = requests.Session()
    return CallbackClient(app, lambda path, **kw: session.post(base + path, timeout=60, **kw))


def page_latencies(client, calls: int,
                   only: str | None = None) -> dict[str, tuple[float, float]]:
    from dashboards.app import PAGES

    out = {}
    for path, (title, _) in PAGES.items():
        if only is not None and title != only:
            continue
        def render(_i, path=path):
            client.call("page.children", {"url.pathname": path})

        out[title] = latency_ms(render, calls)
    return out


def callback_latencies(client, data, calls: int) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(0)
    patients = rng.choice(data.patient_ids, calls + 4, replace=False)

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

    cohorts = _cohort_pairs(data, calls + 2)

    def compare(i):
        a, b = cohorts[i]
        client.call("cohort-km.figure", {"cohort-a.data": a, "cohort-b.data": b})

    out = {}
    for name, fn in (("select patient", select),
                     ("patient survival (similar vs everyone)", survival),
                     ("patient crops", images),
                     ("patient growth and forecast", growth),
                     ("patient growth with similar lesions' trajectories",
                      lambda i: growth(i, ["show"])),
                     ("patient graph neighbourhood", neighbourhood),
                     ("compare cohorts", compare)):
        out[name] = latency_ms(fn, calls)
    return out


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


def similar_bodies(app, patients: list[str], n: int = 20000) -> list[dict]:
    """Similar-patients requests, each a new (patient, weight) pair: no cache answers."""
    from dashboards.protocol import find_callback

    spec = find_callback(app, "patient-similar.data")
    rng = np.random.default_rng(2)
    return [spec.body({"patient-select.value": p, "patient-k.value": 10,
                       "patient-weight.value": round(float(w), 6)})
            for p, w in zip(rng.choice(patients, n), rng.uniform(0.0, 1.0, n), strict=True)]


def hammer(base: str, bodies: list[dict], seconds: float, users: int = USERS) -> dict:
    """``users`` closed-loop users (keep-alive sessions) posting ``bodies`` for
    ``seconds``: each latency (ms), the wall time and the errors."""
    import requests

    url = base + "/_dash-update-component"
    for body in bodies[-3:]:  # untimed: the server's first calls load what they need
        requests.post(url, json=body, timeout=120)
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
            i += users

    threads = [threading.Thread(target=user, args=(k,)) for k in range(users)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "wall": time.monotonic() - t0, "errors": errors[0]}


def pooled(rounds: list[dict]) -> dict:
    """p50, p99 (ms), requests/s, errors and n of several :func:`hammer` rounds."""
    latencies = [x for r in rounds for x in r["latencies"]]
    return {"p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99)),
            "rps": len(latencies) / sum(r["wall"] for r in rounds),
            "errors": sum(r["errors"] for r in rounds), "n": len(latencies)}


def _wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 300.0,
                   poll: float = 0.5) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the explorer exited with code {proc.returncode}")
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(poll)
    raise RuntimeError("the explorer did not start")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(root: Path, app, tree: Path, *, pages: int, calls: int, seconds: float,
            rounds: int = 3) -> dict[str, dict]:
    """Every figure of the baseline ``tree`` ("before") and of this checkout ("now"),
    taken in turns (launch by launch, round by round, page by page) so that a change in
    what else the machine runs falls on both alike."""
    from dashboards.protocol import find_callback

    first = find_callback(app, "page.children").body({"url.pathname": "/"})
    data = app.server.config["explorer"].data
    trees = {"before": tree, "now": None}
    out: dict[str, dict] = {name: {} for name in trees}
    starts: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for _ in range(STARTS):
        for name, where in trees.items():
            starts[name].append(start_seconds(root, first, where))
    bodies = similar_bodies(app, data.patient_ids)
    with serving(root, first, tree) as old, serving(root, first, None) as new:
        bases = {"before": old, "now": new}
        users: dict[str, list[dict]] = {name: [] for name in trees}
        for r in range(rounds):
            for name, base in bases.items():
                part = bodies[r::rounds]  # each round its own requests, the same for both
                users[name].append(hammer(base, part, seconds / rounds))
        clients = {name: http_client(app, base) for name, base in bases.items()}
        for name in trees:
            out[name] = {"start": float(np.median([w for w, _ in starts[name]])),
                         "start cpu": float(np.median([c for _, c in starts[name]])),
                         "users": pooled(users[name]), "pages": {}, "callbacks": {}}
        for title in _page_titles():
            for name, client in clients.items():
                out[name]["pages"].update(page_latencies(client, pages, only=title))
        for name, client in clients.items():
            out[name]["callbacks"] = callback_latencies(client, data, calls)
    return out


def _page_titles() -> list[str]:
    from dashboards.app import PAGES

    return [title for title, _ in PAGES.values()]


def main(quick: bool = False, patients: int | None = None,
         baseline: str = BASELINE_REV) -> None:
    from dashboards.app import create_app

    bench = QUICK if quick else BENCH
    n_patients = patients or (300 if quick else 4427)
    root = bench_workspace(n_patients)
    app = create_app(root)
    data = app.server.config["explorer"].data
    size = f"{len(data.patient_ids)} patients, {len(data.lesion_table)} lesions"
    if n_patients != 4427 and not quick:
        size += " (the largest workspace cached here, not DeepLesion scale)"
    seconds = 8 if quick else 30
    pages, calls = (5, 10) if quick else (20, 40)
    tree = baseline_tree(baseline)
    try:
        figures = measure(root, app, tree, pages=pages, calls=calls, seconds=seconds)
    finally:
        subprocess.run(["rm", "-rf", str(tree)], check=False)
    now, before = figures["now"], figures["before"]
    versus = f"baseline: the explorer at {baseline}, in turns with it in the same run; {SHARED}"
    record(bench, "start: serve launch to first page", now["start"], "s",
           baseline_value=before["start"], n=STARTS, higher_is_better=False,
           note=f"{size}; median of {STARTS} launches; target under 3 s; {versus}")
    record(bench, "start: serve launch to first page, server CPU", now["start cpu"], "s",
           baseline_value=before["start cpu"], n=STARTS, higher_is_better=False,
           note=f"{size}; CPU seconds of the serve process until its first page (the wall "
           f"time on an idle machine), median of {STARTS} launches; {versus}")
    for title, figure in now["pages"].items():
        record_latency(bench, f"page {title.lower()} full render (HTTP)", figure,
                       before["pages"][title], pages,
                       f"{size}; routing callback through waitress, one user; "
                       f"target under 300 ms; {versus}")
    for name, figure in now["callbacks"].items():
        record_latency(bench, f"{name} (HTTP)", figure, before["callbacks"][name], calls,
                       f"{size}; a new patient or cohort each call, one user; {versus}")
    note = (f"{USERS} closed-loop users, 3 rounds of {seconds / 3:.0f} s in turns, waitress "
            f"{WORKERS} threads, {size}; a new (patient, weight) each request; targets "
            f"p50 < 150 ms, p99 < 400 ms; {versus}")
    prod, old = now["users"], before["users"]
    for key, metric, unit, higher in (("p50", "p50", "ms", False), ("p99", "p99", "ms", False),
                                      ("rps", "throughput", "requests/s", True),
                                      ("errors", "errors", "requests", False)):
        record(bench, f"20 users similar-patients {metric} (HTTP, no cache)", prod[key], unit,
               baseline_value=old[key], n=prod["n"], higher_is_better=higher, note=note)
    data.graph.close()


def _args(argv: list[str]) -> dict:
    out: dict = {"quick": "--quick" in argv}
    if "--patients" in argv:
        out["patients"] = int(argv[argv.index("--patients") + 1])
    if "--baseline" in argv:
        out["baseline"] = argv[argv.index("--baseline") + 1]
    return out


if __name__ == "__main__":
    main(**_args(sys.argv[1:]))
