"""Serving the explorer: checks first, then waitress, or Flask's development server (``--dev``).

The host is checked before anything is loaded, so a refused start is immediate. The app is
served by waitress (a production WSGI server) with ``workers`` threads (default
:data:`DEFAULT_THREADS`); the graph is then shared by the threads of one process under a
lock (see :class:`dashboards.data.GraphAccess`). ``dev`` serves it with Flask's
development server instead (single process, for working on the explorer itself).

Only what the first page needs is loaded before the server answers; the survival modules
and the patient index load in a background thread once that page has been served
(:meth:`dashboards.context.Explorer.warm_in_background`), so neither the start nor, as a
rule, a first click waits for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from dashboards.security import auth_from_env, bind_address, check_host, http_policy_from_env
from patientgraph.errors import InputError

DEFAULT_THREADS = 8


def one_blas_thread() -> None:
    """Let BLAS (numpy's matrix products) run one thread per caller in this process.

    The server runs requests side by side on its own threads. A BLAS thread pool beside
    them (OpenBLAS starts one thread per core and keeps them spinning between calls)
    competes with the request threads for the same cores: under concurrent users a
    similar-patients answer, a few matrix-vector products, then cost several times its own
    CPU in spinning. The process's parallelism is its requests, so BLAS gets one thread:
    the libraries loaded now through threadpoolctl, those loaded later (scipy's own OpenBLAS
    with the survival modules, FAISS's OpenMP) through the variables they read when they
    load, unless the user has set them.
    """
    import os

    from threadpoolctl import threadpool_limits

    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    threadpool_limits(limits=1, user_api="blas")


def serve(workspace: str | Path, *, host: str = "127.0.0.1", port: int = 8050,
          workers: int | None = None, dev: bool = False, graph: str | None = None,
          environ: Mapping[str, str] | None = None,
          allowed_hosts: Iterable[str] = (),
          echo: Callable[[str], None] = print) -> None:
    """Check the host and credentials, load the workspace and serve until interrupted.

    The explorer answers only to Host headers that name ``host`` (and the localhost names
    when that is loopback or a wildcard), ``allowed_hosts`` or ``$PATIENTGRAPH_ALLOWED_HOSTS``
    (e.g. a reverse proxy's public name); a localhost name is served on 127.0.0.1.
    """
    auth = auth_from_env(environ)
    check_host(host, auth)
    http = http_policy_from_env(host, environ, allowed_hosts)
    if workers is not None and workers < 1:
        raise InputError(None, f"--workers is {workers}", "give --workers 1 or more")
    if dev and workers is not None:
        raise InputError(None, "--workers sets the threads of waitress, which --dev replaces "
                         "by Flask's development server", "give one of --dev and --workers")
    threads = workers or DEFAULT_THREADS
    from dashboards.app import create_app

    host = bind_address(host)
    one_blas_thread()
    app = create_app(workspace, graph=graph, auth=auth, http=http, warm=True)
    shown = f"[{host}]" if ":" in host else host
    guard = ("token" if auth.token else "") + (" and " if auth.token and auth.user else "") + (
        "basic auth" if auth.user else "")
    echo(f"explorer on http://{shown}:{port}/ "
         f"({'development server' if dev else f'waitress, {threads} threads'}"
         f"{', ' + guard + ' required' if auth.enabled else ''}); Ctrl+C stops it")
    if dev:
        app.run(host=host, port=port, debug=False)
        return
    import waitress

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    waitress.serve(app.server, host=host, port=port, threads=threads, ident="patientgraph")
