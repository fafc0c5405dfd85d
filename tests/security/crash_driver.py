"""Fault injection: run an ingest or pipeline stages in a forked child and kill it with
SIGKILL at a chosen point.

Started once per test session (``python -m tests.security.crash_driver``), it imports the
stages once and then serves requests, one JSON line each on stdin, one JSON reply line
each (on the stdout it had when it started; a child's own prints go to stderr). Every
request runs in a child forked from this process, which never computes anything itself, so
each child starts warm (no import time) and clean (no thread pools to inherit).

A request: ``{"op": "ingest", "ws": W, "force": bool, "ingest": {info, images, ...}}`` or
``{"op": "run", "ws": W, "stages": "embed" | null, "force": bool, "config": {...},
"runs": 1}`` (``runs`` > 1 runs the pipeline again in the same child, to see "up to date"),
plus optionally

* ``"kill": {"replace": n}``: SIGKILL just before the n-th ``os.replace`` into W (the
  renames of the atomic writes, the manifest's included), so after n - 1 of them;
* ``"kill": {"call": "module:Class.method"}``: SIGKILL on entering that function;
* ``"replay": path``: :func:`discovery.stage.analyse` returns the pickled (results,
  seconds) instead of computing (the analyses cost seconds of compiling in every new
  process; what is under test is how the stage writes).

The reply: ``{"signal": 9 | null, "exit": code | null, "result": {"echo": [...],
"renames": n} | {"error": message} | null}``.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import signal
import sys
import tempfile
import traceback
from typing import Any


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _count_renames(root: str, kill_at: int | None) -> list[int]:
    count = [0]
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.path.realpath(os.fspath(dst)).startswith(root + os.sep):
            count[0] += 1
            if count[0] == kill_at:
                _kill()
        return real(src, dst, *args, **kwargs)

    os.replace = replace
    return count


def _kill_on_call(spec: str) -> None:
    module_name, _, attr = spec.partition(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)

    def killed(*_args, **_kwargs):
        _kill()

    setattr(owner, name, killed)


_RECORDED: dict[str, Any] = {}


def _load_recording(path: str) -> None:
    """Unpickle a recording once, in the server (it takes seconds), for every child."""
    if path not in _RECORDED:
        with open(path, "rb") as fh:
            _RECORDED[path] = pickle.load(fh)


def _replay(path: str) -> None:
    import discovery.stage

    discovery.stage.analyse = lambda *_args, **_kwargs: _RECORDED[path]


def _serve(req: dict[str, Any]) -> dict[str, Any]:
    from patientgraph.app.pipeline import run_pipeline
    from patientgraph.deeplesion import ingest_deeplesion
    from patientgraph.workspace import Workspace

    kill = req.get("kill") or {}
    renames = _count_renames(os.path.realpath(req["ws"]), kill.get("replace"))
    if "call" in kill:
        _kill_on_call(kill["call"])
    if req.get("replay"):
        _replay(req["replay"])
    echo: list[str] = []
    if req["op"] == "ingest":
        with Workspace(req["ws"]).lock():
            summary = ingest_deeplesion(workspace=req["ws"], force=req.get("force", False),
                                        **req["ingest"])
        echo.append("ingest: " + ("up to date" if summary.get("skipped") else "done"))
    else:
        for _ in range(req.get("runs", 1)):
            run_pipeline(req["ws"], stages=req.get("stages"), force=req.get("force", False),
                         config=req.get("config"), echo=echo.append)
    return {"echo": echo, "renames": renames[0]}


def _child(req: dict[str, Any], out: str) -> int:
    from patientgraph.errors import InputError

    try:
        result, code = _serve(req), 0
    except InputError as exc:
        result, code = {"error": exc.message}, 2
    except BaseException:
        result, code = {"error": traceback.format_exc()}, 1
    with open(out, "w") as fh:
        json.dump(result, fh)
    return code


def main() -> None:
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a child prints goes to stderr, not into the replies
    # what the stages import on first use (torch's compiler, through torch.jit.script, costs
    # seconds), so that no child imports it again
    import pyarrow.parquet  # noqa: F401
    import torch._dynamo  # noqa: F401
    import torch._inductor  # noqa: F401
    import torch.onnx  # noqa: F401

    import discovery.clusters  # noqa: F401  (unpickling the recorded analyses needs it)
    import discovery.stage  # noqa: F401
    import embed.index_stage  # noqa: F401
    import embed.stage  # noqa: F401
    import graphdb.embedded  # noqa: F401
    import graphdb.stage  # noqa: F401
    import patientgraph.app.pipeline  # noqa: F401
    import patientgraph.deeplesion  # noqa: F401

    print(json.dumps({"ready": True}), file=replies, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("replay"):
            _load_recording(req["replay"])
        fd, out = tempfile.mkstemp(prefix="crash-driver-")
        os.close(fd)
        pid = os.fork()
        if pid == 0:
            os._exit(_child(req, out))
        _, status = os.waitpid(pid, 0)
        with open(out) as fh:
            text = fh.read()
        os.unlink(out)
        reply = {"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                 "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                 "result": json.loads(text) if text else None}
        print(json.dumps(reply), file=replies, flush=True)


if __name__ == "__main__":
    main()
