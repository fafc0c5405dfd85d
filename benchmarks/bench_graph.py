"""The graph stores at DeepLesion scale: loads, a Neo4j batch-size sweep, query latency.

- Load 4,427 patients, 10,594 studies, 32,735 lesions and 10 SIMILAR_TO edges per lesion
  and per patient (synthetic frames, no images) into the embedded store and into a real
  local Neo4j 5.26 (``graphdb.server``, started here on a free port), beside a naive
  one-row-per-transaction Neo4j loop run on a subsample and extrapolated.
  Targets (2 cores): embedded >= 500,000 edges/s; Neo4j >= 50,000 edges/s and >= 20x naive.
- Neo4j edges/s for several UNWIND batch sizes (this chose ``neo4j_store.BATCH_SIZE``).
- 1 M lesions with 10 M edges into the embedded store (100 k / 1 M with ``quick``): load
  time and the peak memory of a fresh process that builds the frames and loads them.
- A first load into an empty Neo4j database with the bulk importer (``graphdb.bulk``: the
  server stopped, ``neo4j-admin database import full``, started again) beside the ``UNWIND``
  path in the same run: the whole load (fixed restart costs included) and the import step
  alone. At 1 M lesions (100 k with ``quick``) the same in a fresh process, with the UNWIND
  path measured on a tenth of the cohort and its rate extrapolated, and the peak memory of
  the Python process, the importer and the server. Targets: >= 300,000 edges/s at 1 M.
- Incremental Neo4j loads (a graph holding 90% of the lesion edges gets the whole table;
  then the same table again) beside the former path that merged every edge (target
  >= 100,000 edges/s).
- ``similar_patients`` and a typical ``cohort`` query: p50 and p99 on both backends
  (target p50 < 10 ms).
- The dev server groups a node's relationships by type from 10 of them
  (``NEO4J_DENSE_THRESHOLD``); a second server with Neo4j's default (50) shows what that
  costs the load and gives the cohort query.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import secrets
import shutil
import socket
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np

from benchmarks.results import latency_ms, peak_rss_mib, record
from graphdb import GraphStore, bulk, open_store, server
from graphdb.frames import similarity_edges
from graphdb.synthetic import DEEPLESION, synthetic_cohort

BENCH = "graph"
COHORT_FILTER = {"coarse_type": [4, 5], "age": {"min": 50}, "sex": "F"}


def _load_phases(store: GraphStore, tables) -> tuple[float, float, int, int]:
    """Seconds for the cohort (nodes + structural edges) and for the SIMILAR_TO edges."""
    t0 = time.perf_counter()
    counts = store.write_cohort(tables["patients"], tables["studies"], tables["lesions"],
                                tables["records"])
    t1 = time.perf_counter()
    edges = (store.write_similarity("lesion", tables["lesion_knn"])
             + store.write_similarity("patient", tables["patient_knn"]))
    t2 = time.perf_counter()
    nodes = counts["Patient"] + counts["Study"] + counts["Lesion"]
    return t1 - t0, t2 - t1, nodes, edges


def _median_load(open_fresh, tables, repeats: int) -> tuple[float, float, int, int]:
    runs = []
    for _ in range(repeats):
        with open_fresh() as store:
            runs.append(_load_phases(store, tables))
    node_s = statistics.median(r[0] for r in runs)
    edge_s = statistics.median(r[1] for r in runs)
    return node_s, edge_s, runs[0][2], runs[0][3]


def _median_loads(open_fresh, tables, repeats: int) -> list[tuple[float, float, int, int]]:
    """Like :func:`_median_load` for several ways of loading, run alternately."""
    runs: list[list] = [[] for _ in open_fresh]
    for _ in range(repeats):
        for i, fresh in enumerate(open_fresh):
            with fresh() as store:
                runs[i].append(_load_phases(store, tables))
    return [(statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs),
             rs[0][2], rs[0][3]) for rs in runs]


def _record_latency(name: str, store: GraphStore, patient_ids, calls: int) -> float:
    """Record p50 and p99 of both queries; returns the cohort query's p50."""
    rng = np.random.default_rng(0)
    picks = rng.choice(patient_ids, calls + 20)
    for query, fn in (("similar_patients", lambda i: store.similar_patients(picks[i], k=10)),
                      ("cohort", lambda i: store.cohort(COHORT_FILTER))):
        p50, p99 = latency_ms(fn, calls, warmup=20)
        note = "k=10" if query == "similar_patients" else f"filters {COHORT_FILTER}"
        record(BENCH, f"{name} {query} p50", p50, "ms", n=calls, higher_is_better=False,
               note=f"{note}; target p50 < 10 ms")
        record(BENCH, f"{name} {query} p99", p99, "ms", n=calls, higher_is_better=False,
               note=note)
    return p50


def _naive_rates(uri: str, tables, n_rows: int) -> tuple[float, float]:
    """Rows/s of a plain loop with one ``execute_query`` (one transaction) per row."""
    import neo4j

    auth = (os.environ.get("NEO4J_USER") or "neo4j", os.environ["NEO4J_PASSWORD"])
    edges = tables["lesion_knn"].head(n_rows)
    with neo4j.GraphDatabase.driver(uri, auth=auth) as driver:
        t0 = time.perf_counter()
        for row in edges.itertuples(index=False):
            driver.execute_query(
                "MATCH (a:Lesion {lesion_id: $src}) MATCH (b:Lesion {lesion_id: $dst}) "
                "MERGE (a)-[r:SIMILAR_TO]->(b) SET r.score = $score, r.rank = $rank",
                src=row.src, dst=row.dst, score=float(row.score), rank=int(row.rank))
        edge_rate = n_rows / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(n_rows):
            driver.execute_query("MERGE (n:Lesion {lesion_id: $id}) SET n.long_mm = $long_mm",
                                 id=f"naive-{i}", long_mm=float(i))
        node_rate = n_rows / (time.perf_counter() - t0)
    return node_rate, edge_rate


def _knn(tables) -> dict:
    return {"lesion": tables["lesion_knn"], "patient": tables["patient_knn"]}


def _first_load(uri: str, home: Path, tables, bulk_import: bool) -> tuple[float, int, tuple]:
    """Seconds of one write_graph into the emptied database, its edges and its path."""
    with open_store(uri, bulk_import=bulk_import, server_home=home) as store:
        store.clear()
        t0 = time.perf_counter()
        counts = store.write_graph(tables["patients"], tables["studies"], tables["lesions"],
                                   tables["records"], _knn(tables))
        took = time.perf_counter() - t0
        path = store.load_path
    edges = sum(v for k, v in counts.items() if "->" in k or k.endswith("_edges"))
    return took, edges, path


def bench_first_load(uri: str, home: Path, tables, repeats: int, load_avg: str) -> None:
    """A first load of the DeepLesion-scale graph: bulk import vs UNWIND, alternating."""
    imports, unwinds = [], []
    for _ in range(repeats):
        imports.append(_first_load(uri, home, tables, True))
        unwinds.append(_first_load(uri, home, tables, False))
    assert all(r[2][0] == "import" for r in imports), imports[0][2]
    edges = imports[0][1]
    seconds = statistics.median(r[0] for r in imports)
    step = statistics.median(r[2][1]["import_s"] for r in imports)
    base = statistics.median(r[0] for r in unwinds)
    note = (f"all {edges:,} edges (HAS_STUDY, HAS_LESION, SIMILAR_TO) over the whole "
            f"write_graph into an emptied database, nodes and constraints included; baseline: "
            f"the UNWIND path (bulk_import=False) in the same run, alternating; median of "
            f"{repeats}; {load_avg}")
    record(BENCH, "neo4j first load edges/s: bulk import vs UNWIND", edges / seconds,
           "edges/s", baseline_value=edges / base, n=edges,
           note=note + "; the import restarts the server (fixed cost, dominant at this scale)")
    record(BENCH, "neo4j first load seconds: bulk import vs UNWIND", seconds, "s",
           baseline_value=base, n=edges, higher_is_better=False, note=note)
    record(BENCH, "neo4j bulk import step edges/s", edges / step, "edges/s", n=edges,
           note=f"the neo4j-admin import alone (JVM start included), without stopping, "
           f"restarting and indexing; median of {repeats}; {load_avg}")


def bench_incremental(uri: str, tables, load_avg: str) -> None:
    """Lesion edges into a graph that holds 90% of them, then the same table again."""
    knn = tables["lesion_knn"]
    old_part = knn[np.arange(len(knn)) % 10 != 0]
    n = len(similarity_edges(knn))
    rates: dict[bool, list[float]] = {}
    for skip in (True, False):
        with open_store(uri, bulk_import=False) as store:
            store.clear()
            store.write_cohort(tables["patients"], tables["studies"], tables["lesions"],
                               tables["records"])
            store.write_similarity("lesion", old_part)
            store.skip_unchanged = skip
            for _ in range(2):  # 10% new, then nothing new
                t0 = time.perf_counter()
                assert store.write_similarity("lesion", knn) == n
                rates.setdefault(skip, []).append(n / (time.perf_counter() - t0))
    base = "baseline: the former path (MERGE of every edge by its ends' ids) in the same run"
    for i, what in enumerate(("10% new edges", "nothing new (a rerun)")):
        record(BENCH, f"neo4j incremental load edges/s, {what}", rates[True][i], "edges/s",
               baseline_value=rates[False][i], n=n,
               note=f"{n:,} lesion SIMILAR_TO edges into a graph holding "
               f"{'90%' if i == 0 else 'all'} of them; {base}; target >= 100,000 edges/s; "
               f"{load_avg}")


def _neo4j_scale_run(n_lesions: int, folder: str) -> dict:
    """In a fresh process: build the frames, bulk-import them into a new local server,
    then the UNWIND path on a tenth of the cohort (the same server, emptied)."""
    root = Path(folder)
    tables = synthetic_cohort(n_patients=int(n_lesions / 7.4), n_lesions=n_lesions, k=10)
    tenth = synthetic_cohort(n_patients=int(n_lesions / 74), n_lesions=n_lesions // 10, k=10)
    with _neo4j(root) as uri:
        home = root / "neo4j"
        took, edges, path = _first_load(uri, home, tables, True)
        state = server.status(home)
        server_mib = peak_rss_mib(state["pid"])
        del tables
        server.stop(home=home)
        bulk._drop_database(Path(state["data_dir"]))  # an empty database again
        server.start(state["data_dir"], state["port"], wait_s=300, home=home)
        base_s, base_edges, base_path = _first_load(uri, home, tenth, False)
    return {"seconds": took, "edges": edges, "steps": path[1], "base_s": base_s,
            "base_edges": base_edges, "base_path": base_path[0], "server_mib": server_mib,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "importer_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def bench_neo4j_scale(root: Path, n_lesions: int, load_avg: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        r = pool.submit(_neo4j_scale_run, n_lesions, str(root / "neo4j-scale")).result()
    label = (f"{n_lesions // 10**6}M lesions" if n_lesions >= 10**6
             else f"{n_lesions // 1000}k lesions")
    assert r["base_path"] == "unwind"
    base_rate = r["base_edges"] / r["base_s"]
    steps = ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in r["steps"].items())
    note = (f"{r['edges']:,} edges, whole write_graph into a new local server ({steps}); "
            f"baseline: the UNWIND path on a tenth of the cohort ({r['base_edges']:,} edges "
            f"in {r['base_s']:.0f} s), its rate extrapolated to this load; {load_avg}")
    record(BENCH, f"neo4j {label} first load edges/s: bulk import vs UNWIND",
           r["edges"] / r["seconds"], "edges/s", baseline_value=base_rate, n=r["edges"],
           note=note + "; target >= 300,000 edges/s")
    record(BENCH, f"neo4j {label} first load seconds: bulk import vs UNWIND", r["seconds"],
           "s", baseline_value=r["edges"] / base_rate, n=r["edges"], higher_is_better=False,
           note=note)
    record(BENCH, f"neo4j {label} bulk import step edges/s",
           r["edges"] / r["steps"]["import_s"], "edges/s", n=r["edges"],
           note="the neo4j-admin import alone (JVM start included); " + load_avg)
    for who in ("peak", "importer", "server"):
        record(BENCH, f"neo4j {label} {who} RSS", r[f"{who}_mib"], "MiB", n=r["edges"],
               higher_is_better=False,
               note={"peak": "the Python process: frames of the whole cohort and of the "
                             "tenth, CSV writing",
                     "importer": "the neo4j-admin import JVM (largest child process)",
                     "server": "the Neo4j server JVM after the import and index builds "
                               "(VmHWM)"}[who] + "; limit 8 GiB")
    shutil.rmtree(root / "neo4j-scale", ignore_errors=True)


@contextmanager
def _neo4j(root: Path, dense_threshold: int | None = None):
    """A private local Neo4j server for the run; yields its URI."""
    os.environ.setdefault("NEO4J_PASSWORD", secrets.token_urlsafe(18))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = root / ("neo4j" if dense_threshold is None else f"neo4j-dense-{dense_threshold}")
    setting = {} if dense_threshold is None else {"NEO4J_DENSE_THRESHOLD": str(dense_threshold)}
    with mock.patch.dict(os.environ, setting):  # read by the server at start only
        info = server.start(port=port, home=home, wait_s=300)
    try:
        yield info.uri
    finally:
        server.stop(home=home)


def _grouping_tradeoff(root: Path, tables, ours: tuple, repeats: int, calls: int,
                       ours_cohort_p50: float, load_avg: str) -> None:
    """Load and cohort p50 on a server with Neo4j's default grouping threshold (50)."""
    with _neo4j(root, dense_threshold=50) as uri:

        def fresh():
            store = open_store(uri)
            store.clear()
            return store

        with fresh() as store:  # warm-up load, as for the main server
            _load_phases(store, tables)
        base = _median_load(fresh, tables, repeats)
        with open_store(uri) as store:
            p50, _ = latency_ms(lambda i: store.cohort(COHORT_FILTER), calls, warmup=20)
    note = (f"baseline: a server with Neo4j's default relationship grouping threshold (50), "
            f"same loads, median of {repeats}; ours groups from 10 (NEO4J_DENSE_THRESHOLD); "
            f"{load_avg}")
    record(BENCH, "neo4j load edges/s vs default grouping", ours[3] / ours[1], "edges/s",
           baseline_value=base[3] / base[1], n=ours[3], note=note)
    record(BENCH, "neo4j cohort p50 vs default grouping", ours_cohort_p50, "ms",
           baseline_value=p50, n=calls, higher_is_better=False,
           note=f"filters {COHORT_FILTER}; {note}")


def _scale_run(n_lesions: int, folder: str) -> dict:
    """In a fresh process: build the frames, load them, report times and peak RSS."""
    tables = synthetic_cohort(n_patients=int(n_lesions / 7.4), n_lesions=n_lesions, k=10)
    built_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open_store(folder) as store:
        node_s, edge_s, nodes, edges = _load_phases(store, tables)
    return {"node_s": node_s, "edge_s": edge_s, "nodes": nodes, "edges": edges,
            "built_mib": built_mib,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_scale(root: Path, n_lesions: int) -> None:
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        r = pool.submit(_scale_run, n_lesions, str(root / "scale")).result()
    label = (f"{n_lesions // 10**6}M lesions" if n_lesions >= 10**6
             else f"{n_lesions // 1000}k lesions")
    total = r["node_s"] + r["edge_s"]
    note = (f"{r['nodes']:,} nodes, {r['edges']:,} SIMILAR_TO edges; frames built in the "
            f"same process ({r['built_mib']:.0f} MiB before the load)")
    record(BENCH, f"embedded {label} load seconds", total, "s", n=r["edges"],
           higher_is_better=False, note=note)
    record(BENCH, f"embedded {label} edges/s", r["edges"] / r["edge_s"], "edges/s",
           n=r["edges"], note=note)
    record(BENCH, f"embedded {label} peak RSS", r["peak_mib"], "MiB", n=r["edges"],
           higher_is_better=False, note=note)
    shutil.rmtree(root / "scale", ignore_errors=True)


def main(quick: bool = False) -> None:
    root = Path(tempfile.mkdtemp(prefix="pg-bench-graph-"))
    load_avg = f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at start"
    try:
        bench_scale(root, 100_000 if quick else 1_000_000)
        bench_neo4j_scale(root, 100_000 if quick else 1_000_000, load_avg)
        tables = synthetic_cohort(**DEEPLESION, k=10, seed=0)
        repeats = 1 if quick else 3

        def fresh_embedded():
            shutil.rmtree(root / "embedded", ignore_errors=True)
            return open_store(root / "embedded")

        emb = _median_load(fresh_embedded, tables, repeats)
        with _neo4j(root) as uri:

            def fresh_neo4j(batch_size: int | None = None):
                store = open_store(uri, **({"batch_size": batch_size} if batch_size else {}))
                store.clear()
                return store

            def fresh_neo4j_by_key():
                store = fresh_neo4j()
                store.merge_by_key = True  # the former path: MERGE on keys, every batch
                return store

            with fresh_neo4j() as store:  # warm the server (JIT, caches) before timing
                _load_phases(store, tables)
            bench_first_load(uri, root / "neo4j", tables, 1 if quick else 2, load_avg)
            bench_incremental(uri, tables, load_avg)
            neo, old = _median_loads([fresh_neo4j, fresh_neo4j_by_key], tables, repeats)
            for name, unit, new_v, old_v, n in (
                    ("edges/s", "edges/s", neo[3] / neo[1], old[3] / old[1], neo[3]),
                    ("nodes/s", "nodes/s", neo[2] / neo[0], old[2] / old[0], neo[2])):
                record(BENCH, f"neo4j load {name} vs MERGE by key", new_v, unit,
                       baseline_value=old_v, n=n,
                       note=f"baseline: the former load path (UNWIND MERGE matching ends by "
                       f"key) in the same run, alternating, after a warm-up load; median of "
                       f"{repeats}; {load_avg}")
            for batch in ([2_000, 10_000] if quick else [2_000, 5_000, 20_000]):
                with fresh_neo4j(batch) as store:
                    _, edge_s, _, edges = _load_phases(store, tables)
                record(BENCH, f"neo4j edges/s batch={batch}", edges / edge_s, "edges/s",
                       n=edges, note=load_avg)
            naive_rows = 300 if quick else 2_000
            with fresh_neo4j() as store:
                store.write_cohort(tables["patients"], tables["studies"], tables["lesions"],
                                   tables["records"])
                naive_nodes, naive_edges = _naive_rates(uri, tables, naive_rows)
                store.write_similarity("lesion", tables["lesion_knn"])
                store.write_similarity("patient", tables["patient_knn"])
                cohort_p50 = _record_latency("neo4j", store, tables["patients"]["patient_id"],
                                             100 if quick else 300)
        _grouping_tradeoff(root, tables, neo, repeats, 100 if quick else 300, cohort_p50,
                           load_avg)

        naive = (f"baseline: one execute_query per row on {naive_rows:,} rows, its rate "
                 f"extrapolated to the full load; {load_avg}")
        for name, (node_s, edge_s, nodes, edges), base in (
                ("embedded", emb, (None, None)), ("neo4j", neo, (naive_nodes, naive_edges))):
            record(BENCH, f"{name} load nodes/s", nodes / node_s, "nodes/s",
                   baseline_value=base[0], n=nodes,
                   note=(naive if base[0] else load_avg) + "; includes HAS_STUDY/HAS_LESION")
            record(BENCH, f"{name} load edges/s", edges / edge_s, "edges/s",
                   baseline_value=base[1], n=edges,
                   note=naive if base[1] else f"{load_avg}; target >= 500,000 edges/s")
            record(BENCH, f"{name} load seconds", node_s + edge_s, "s", n=nodes + edges,
                   higher_is_better=False,
                   baseline_value=(nodes / base[0] + edges / base[1]) if base[0] else None,
                   note=f"median of {repeats}; {load_avg}")
        with open_store(root / "embedded", read_only=True) as store:
            _record_latency("embedded", store, tables["patients"]["patient_id"],
                            100 if quick else 300)
    finally:
        shutil.rmtree(root, ignore_errors=True)
