"""A local Neo4j 5.26 Community server for development and tests.

The server is a tiny Java program (``graphdb/launcher``, a Maven project) that runs the
embedded Neo4j DBMS with only the Bolt connector, on 127.0.0.1, authentication on. This
module builds it with Maven on first use (and again whenever its pom or Java source
changes), starts it detached so it outlives the Python process, and stops it.

    export NEO4J_PASSWORD=...            # password of user neo4j, at least 8 characters
    python -m graphdb.server start       # builds on first use, waits for Bolt, prints the URI
    python -m graphdb.server status      # exit code 0 running, 3 stopped
    python -m graphdb.server stop

Environment:
    NEO4J_PASSWORD           password of user ``neo4j`` (required to start; never printed or
                             logged; set on the system database at the data folder's first start)
    NEO4J_PORT               Bolt port on 127.0.0.1 (default 7687)
    PATIENTGRAPH_NEO4J_HOME  state folder: pid file, log file, server.json and, by default, the
                             data folder ``data/`` (default ``~/.cache/patientgraph/neo4j``)
    PATIENTGRAPH_NEO4J_BUILD where built launchers are kept, one folder per source hash
                             (default ``~/.cache/patientgraph/neo4j-launcher``)
    NEO4J_HEAP               JVM heap, as for ``java -Xmx`` (default ``1g``)
    NEO4J_PAGECACHE_MB       page cache in MiB (default 256)
    NEO4J_DENSE_THRESHOLD    relationships from which a node keeps them grouped by type
                             (default 10; Neo4j's own default is 50); applies as nodes are
                             written, so set it before a load
    NEO4J_IMPORT_OFFHEAP     memory outside the heap of the bulk importer (default 2G), which
                             :mod:`graphdb.bulk` runs from the launcher's class path to load a
                             new graph into this server's empty database
    JAVA_HOME                which Java to use (else ``java`` on PATH); Java 17 or 21

Needs Java 17+ and, to build the launcher the first time, Maven 3.8+ reaching Maven Central
(later builds and starts work offline from ``~/.m2``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServerError", "ServerInfo", "start", "stop", "status", "main"]

HOST = "127.0.0.1"
DEFAULT_PORT = 7687
USER = "neo4j"
MAIN_CLASS = "org.patientgraph.launcher.Neo4jLauncher"
LAUNCHER_SRC = Path(__file__).resolve().parent / "launcher"
MIN_JAVA = 17
MIN_PASSWORD = 8

PID_FILE = "neo4j.pid"
LOG_FILE = "neo4j.log"
INFO_FILE = "server.json"

# Keeps the Popen objects of servers started by this process, so that a server which
# exits while we live is reaped (no zombie that looks alive) and no ResourceWarning fires.
_CHILDREN: dict[int, subprocess.Popen] = {}
_JAVA_MAJOR: dict[str, int] = {}  # java executable -> major version, filled by java_executable()


class ServerError(RuntimeError):
    """The local Neo4j server could not be built, started, reached or stopped."""


@dataclass(frozen=True)
class ServerInfo:
    uri: str
    host: str
    port: int
    pid: int
    data_dir: str
    log_file: str
    already_running: bool = False
    start_s: float = 0.0  # seconds from launch to Bolt accepting connections (0 if already running)
    build_s: float = 0.0  # seconds spent building the launcher in this call (0 if it was built)


# ---------------------------------------------------------------------------------------------
# places and settings


def state_home(home: str | os.PathLike | None = None) -> Path:
    """The state folder (pid file, log file, server.json, default data folder)."""
    if home is not None:
        return Path(home).expanduser().absolute()
    env = os.environ.get("PATIENTGRAPH_NEO4J_HOME")
    if env:
        return Path(env).expanduser().absolute()
    return _cache_root() / "neo4j"


def _cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "patientgraph"


def build_root() -> Path:
    env = os.environ.get("PATIENTGRAPH_NEO4J_BUILD")
    return Path(env).expanduser().absolute() if env else _cache_root() / "neo4j-launcher"


def _port(port: int | None) -> int:
    if port is None:
        raw = os.environ.get("NEO4J_PORT", "").strip()
        if not raw:
            return DEFAULT_PORT
        try:
            port = int(raw)
        except ValueError:
            raise ServerError(f"NEO4J_PORT must be a port number, got {raw!r}") from None
    if not 1 <= int(port) <= 65535:
        raise ServerError(f"the Bolt port must be in 1..65535, got {port}")
    return int(port)


def _password() -> str:
    pw = os.environ.get("NEO4J_PASSWORD")
    if not pw:
        raise ServerError(
            "NEO4J_PASSWORD is not set. The local Neo4j server runs with authentication on; "
            f"export NEO4J_PASSWORD=<a password of at least {MIN_PASSWORD} characters> (it becomes "
            "the password of user neo4j on the first start of a data folder) and try again."
        )
    if len(pw) < MIN_PASSWORD:
        raise ServerError(
            f"NEO4J_PASSWORD is too short: Neo4j requires at least {MIN_PASSWORD} characters."
        )
    return pw


def uri_for(port: int) -> str:
    return f"bolt://{HOST}:{port}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _private_dir(path: Path) -> None:
    """Make ``path`` (and missing parents) a folder only its owner can enter: it holds
    patient data, the server's log and the hash of its password."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Java and Maven


def java_executable() -> str:
    """The ``java`` to run (JAVA_HOME first, then PATH), checked to be Java 17 or newer."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    found = shutil.which("java")
    if found:
        candidates.append(found)
    java = next((c for c in candidates if os.access(c, os.X_OK)), None)
    if java is None:
        raise ServerError(
            "Java was not found (no JAVA_HOME/bin/java, no java on PATH). The local Neo4j "
            f"server needs a Java {MIN_JAVA} or 21 runtime: install a JDK, e.g. `apt-get "
            "install openjdk-17-jdk-headless` (Debian/Ubuntu) or `brew install openjdk@17`."
        )
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerError(f"could not run {java} -version: {exc}") from exc
    text = out.stderr + out.stdout
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if m is None:
        raise ServerError(f"could not read the Java version from `{java} -version`: {text[:200]}")
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8.0_x"
        major = int(m.group(2))
    if major < MIN_JAVA:
        raise ServerError(
            f"{java} is Java {major}; Neo4j 5.26 needs Java {MIN_JAVA} or 21. Install a newer JDK "
            "(e.g. `apt-get install openjdk-17-jdk-headless`) and point JAVA_HOME at it."
        )
    _JAVA_MAJOR[java] = major
    return java


def maven_executable() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServerError(
            "Maven (mvn) was not found on PATH. It is needed once to build the Neo4j launcher "
            "(it downloads Neo4j 5.26 from Maven Central): install Maven 3.8+, e.g. "
            "`apt-get install maven` (Debian/Ubuntu) or `brew install maven`."
        )
    return mvn


def _source_files() -> list[Path]:
    pom = LAUNCHER_SRC / "pom.xml"
    if not pom.is_file():
        raise ServerError(f"the launcher's Maven project is missing: {pom} does not exist")
    return [pom, *sorted(p for p in (LAUNCHER_SRC / "src").rglob("*") if p.is_file())]


def source_hash() -> str:
    h = hashlib.sha256()
    for p in _source_files():
        h.update(str(p.relative_to(LAUNCHER_SRC)).encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def classpath(build_dir: Path) -> str:
    """The launcher's class path: its jar and the Neo4j jars (the bulk importer among them)."""
    target = build_dir / "target"
    return f"{target / 'neo4j-launcher.jar'}{os.pathsep}{target / 'lib' / '*'}"


def ensure_built() -> tuple[Path, float]:
    """Build the launcher unless a build of the current sources exists.

    Returns the build folder and the seconds spent building (0.0 when it was already built).
    Builds are kept under :func:`build_root`, one folder per hash of pom.xml + src/, so that
    a changed pom or Java file gives a fresh build and an unchanged one is never rebuilt.
    """
    digest = source_hash()
    root = build_root()
    build_dir = root / digest
    done = build_dir / "BUILT"
    if done.is_file():
        return build_dir, 0.0
    with _locked(root / ".lock"):
        if done.is_file():  # built by a concurrent caller meanwhile
            return build_dir, 0.0
        mvn = maven_executable()
        java = java_executable()
        t0 = time.monotonic()
        work = root / f".{digest}.{os.getpid()}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        shutil.copy2(LAUNCHER_SRC / "pom.xml", work / "pom.xml")
        shutil.copytree(LAUNCHER_SRC / "src", work / "src")
        env = dict(os.environ)
        env.setdefault("JAVA_HOME", str(Path(os.path.realpath(java)).parent.parent))
        env.pop("NEO4J_PASSWORD", None)
        log = work / "build.log"
        with open(log, "w") as fh:
            proc = subprocess.run(
                [mvn, "-q", "-B", "-Dstyle.color=never", "package"], cwd=work, env=env,
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
            )
        jar = work / "target" / "neo4j-launcher.jar"
        if proc.returncode != 0 or not jar.is_file():
            tail = _tail(log, 30)
            raise ServerError(
                f"building the Neo4j launcher with Maven failed (exit {proc.returncode}); the "
                f"first build downloads Neo4j 5.26 from Maven Central. Build log: {log}\n{tail}"
            )
        shutil.rmtree(build_dir, ignore_errors=True)
        os.replace(work, build_dir)
        took = time.monotonic() - t0
        _write_atomic(done, json.dumps({"hash": digest, "build_s": round(took, 1)}) + "\n")
        # Keep the newest few builds (a server may still run from an older one), drop the rest.
        olds = sorted((p for p in root.iterdir() if p.is_dir() and p.name != digest
                       and not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
        for old in olds[:-2]:
            shutil.rmtree(old, ignore_errors=True)
        return build_dir, took


# ---------------------------------------------------------------------------------------------
# processes


def _is_launcher(pid: int) -> bool:
    """Whether ``pid`` is alive and is our launcher (guards against a reused pid)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)
            return False
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                _reap(pid)
                return False
            return MAIN_CLASS.encode() in (proc / "cmdline").read_bytes()
        except (OSError, IndexError):
            return False
    out = subprocess.run(["ps", "-p", str(pid), "-o", "stat=,command="],
                         capture_output=True, text=True)
    line = out.stdout.strip()
    return bool(line) and not line.startswith("Z") and MAIN_CLASS in line


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(Exception):
            child.wait(timeout=0)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _accepts(port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((HOST, port))
            return True
        except OSError:
            return False


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _read_info(home: Path) -> dict | None:
    try:
        return json.loads((home / INFO_FILE).read_text())
    except (OSError, ValueError):
        pass
    try:  # a pid file without server.json: still worth stopping
        return {"pid": int((home / PID_FILE).read_text().strip())}
    except (OSError, ValueError):
        return None


def _clear(home: Path) -> None:
    for name in (PID_FILE, INFO_FILE):
        with contextlib.suppress(FileNotFoundError):
            (home / name).unlink()


def _java_command(java: str, build_dir: Path, data_dir: Path, port: int,
                  reset_password: bool) -> list[str]:
    heap = os.environ.get("NEO4J_HEAP", "1g").strip() or "1g"
    if not re.fullmatch(r"\d+[kKmMgG]?", heap):
        raise ServerError(f"NEO4J_HEAP must look like 512m or 2g, got {heap!r}")
    pagecache = os.environ.get("NEO4J_PAGECACHE_MB", "256").strip() or "256"
    if not pagecache.isdigit():
        raise ServerError(f"NEO4J_PAGECACHE_MB must be a number of MiB, got {pagecache!r}")
    dense = os.environ.get("NEO4J_DENSE_THRESHOLD", "10").strip() or "10"
    if not dense.isdigit() or int(dense) < 1:
        raise ServerError(f"NEO4J_DENSE_THRESHOLD must be a whole number >= 1, got {dense!r}")
    cmd = [
        java, f"-Xmx{heap}", "-Xms64m", "-XX:+ExitOnOutOfMemoryError", "-Dfile.encoding=UTF-8",
        f"-Dpatientgraph.pagecache={pagecache}", f"-Dpatientgraph.dense={dense}",
        # as Neo4j's own scripts do, so that the page cache and Netty use their fast paths
        "--add-opens=java.base/java.nio=ALL-UNNAMED",
        "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
        "--add-opens=java.base/java.io=ALL-UNNAMED",
        "--add-opens=java.base/java.lang=ALL-UNNAMED",
    ]
    if _JAVA_MAJOR.get(java, MIN_JAVA) >= 21:  # JNA loads native code (warns from Java 24 on)
        cmd.append("--enable-native-access=ALL-UNNAMED")
    cmd += ["-cp", classpath(build_dir), MAIN_CLASS, str(data_dir), str(port)]
    if reset_password:
        cmd.append("--reset-password")
    return cmd


# ---------------------------------------------------------------------------------------------
# public API


def status(home: str | os.PathLike | None = None) -> dict:
    """Whether the server of this state folder runs: ``running``, ``pid``, ``uri``, ``port``, ...

    A server whose process is alive but whose Bolt port does not (yet) accept connections is
    reported as running with ``accepting: False``.
    """
    h = state_home(home)
    info = _read_info(h)
    base = {"running": False, "pid": None, "uri": None, "port": None, "data_dir": None,
            "accepting": False, "home": str(h), "log_file": str(h / LOG_FILE)}
    if not info or not info.get("pid"):
        return base
    pid = int(info["pid"])
    if not _is_launcher(pid):
        return base
    port = info.get("port")
    return {**base, "running": True, "pid": pid, "port": port,
            "uri": uri_for(port) if port else None, "data_dir": info.get("data_dir"),
            "accepting": bool(port) and _accepts(int(port))}


def start(data_dir: str | os.PathLike | None = None, port: int | None = None,
          wait_s: float = 120, *, home: str | os.PathLike | None = None,
          reset_password: bool = False) -> ServerInfo:
    """Start the local Neo4j server (building the launcher first if needed) and wait for Bolt.

    Idempotent: when this state folder's server already runs, returns its info with
    ``already_running=True`` (a ``ServerError`` if a different port or data folder was asked
    for). ``reset_password`` sets the password of user neo4j from NEO4J_PASSWORD even when the
    data folder has one already. Raises :class:`ServerError` with the reason and the fix.
    """
    h = state_home(home)
    _private_dir(h)
    explicit_port = port is not None or bool(os.environ.get("NEO4J_PORT", "").strip())
    port = _port(port)
    data = Path(data_dir).expanduser().absolute() if data_dir is not None else h / "data"
    password = _password()
    with _locked(h / ".lock"):
        current = status(h)
        if current["running"]:
            if ((explicit_port and current["port"] != port)
                    or (data_dir is not None and current["data_dir"] != str(data))):
                raise ServerError(
                    f"a Neo4j server from {h} already runs on port {current['port']} with data "
                    f"{current['data_dir']} (pid {current['pid']}); stop it first "
                    "(python -m graphdb.server stop) to start one on "
                    f"port {port} with data {data}."
                )
            port = int(current["port"])
            if not current["accepting"]:
                _wait_accepting(port, current["pid"], wait_s, h / LOG_FILE)
            _check_auth(port, password, current["data_dir"])
            return ServerInfo(uri=uri_for(port), host=HOST, port=port, pid=current["pid"],
                              data_dir=str(current["data_dir"]), log_file=str(h / LOG_FILE),
                              already_running=True)
        _clear(h)
        if _accepts(port):
            raise ServerError(
                f"port {port} on {HOST} is already in use by another program (another Neo4j?). "
                "Stop it, or choose another port with NEO4J_PORT / --port."
            )
        java = java_executable()
        build_dir, build_s = ensure_built()
        _private_dir(data)
        cmd = _java_command(java, build_dir, data, port, reset_password)
        env = {**os.environ, "NEO4J_PASSWORD": password}
        log_path = h / LOG_FILE
        log_path.touch(mode=0o600)
        log_path.chmod(0o600)
        with open(log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start port={port} "
                      f"data={data}\n".encode())
            log.flush()
            offset = log.tell()
            t0 = time.monotonic()
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=h, start_new_session=True, close_fds=True, umask=0o077,
            )
        _CHILDREN[proc.pid] = proc
        _write_atomic(h / PID_FILE, f"{proc.pid}\n")
        _write_atomic(h / INFO_FILE, json.dumps({
            "pid": proc.pid, "port": port, "uri": uri_for(port), "data_dir": str(data),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build": build_dir.name,
        }, indent=1) + "\n")
        try:
            _wait_ready(proc, log_path, offset, port, wait_s)
        except ServerError:
            _terminate(proc.pid, 10)
            _clear(h)
            raise
        _check_auth(port, password, str(data))
        return ServerInfo(uri=uri_for(port), host=HOST, port=port, pid=proc.pid,
                          data_dir=str(data), log_file=str(log_path),
                          start_s=round(time.monotonic() - t0, 2), build_s=round(build_s, 2))


def _wait_ready(proc: subprocess.Popen, log_path: Path, offset: int, port: int,
                wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        with open(log_path, "rb") as fh:
            fh.seek(offset)
            new = fh.read().decode(errors="replace")
        if f"READY {uri_for(port)}" in new and _accepts(port):
            return
        code = proc.poll()
        if code is not None:
            _CHILDREN.pop(proc.pid, None)
            errors = [ln for ln in new.splitlines() if ln.startswith("ERROR ")]
            why = errors[-1][6:] if errors else f"it exited with code {code}"
            raise ServerError(
                f"the Neo4j server did not start: {why}. Log: {log_path}\n"
                + "\n".join(new.splitlines()[-15:])
            )
        if time.monotonic() > deadline:
            raise ServerError(
                f"the Neo4j server did not accept Bolt connections on {HOST}:{port} within "
                f"{wait_s:.0f} s; it was stopped. Log: {log_path}\n"
                + "\n".join(new.splitlines()[-15:])
            )
        time.sleep(0.2)


def _check_auth(port: int, password: str, data_dir: str | None) -> None:
    """With the ``neo4j`` driver installed: check that NEO4J_PASSWORD logs in.

    The password is set only at a data folder's first start, so a later change of
    NEO4J_PASSWORD would otherwise show up as puzzling auth errors elsewhere.
    """
    try:
        from neo4j import GraphDatabase
        from neo4j.exceptions import AuthError
    except ImportError:
        return
    try:
        with GraphDatabase.driver(uri_for(port), auth=(USER, password)) as driver:
            driver.verify_connectivity()
    except AuthError:
        raise ServerError(
            f"the Neo4j server runs on {uri_for(port)}, but NEO4J_PASSWORD is not the password "
            f"of user neo4j stored in its data folder {data_dir} (set at that folder's first "
            "start). Export the old password, or restart with the new one: "
            "python -m graphdb.server stop && python -m graphdb.server start --reset-password"
        ) from None
    except Exception:  # connectivity trouble shows up in the caller's own use
        return


def _wait_accepting(port: int, pid: int, wait_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + wait_s
    while not _accepts(port):
        if not _is_launcher(pid):
            raise ServerError(f"the Neo4j server (pid {pid}) exited while starting. "
                              f"Log: {log_path}")
        if time.monotonic() > deadline:
            raise ServerError(f"the Neo4j server (pid {pid}) runs but does not accept Bolt "
                              f"connections on {HOST}:{port} after {wait_s:.0f} s. "
                              f"Log: {log_path}")
        time.sleep(0.2)


def _terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM (clean shutdown through the launcher's hook), then SIGKILL after timeout_s."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _is_launcher(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 10
            while _is_launcher(pid) and time.monotonic() < kill_deadline:
                time.sleep(0.1)
            break
        time.sleep(0.1)
    _reap(pid)


def stop(timeout_s: float = 60, *, home: str | os.PathLike | None = None) -> bool:
    """Stop this state folder's server: SIGTERM, wait up to ``timeout_s``, then SIGKILL.

    Returns True when a running server was stopped, False when none was running.
    """
    h = state_home(home)
    h.mkdir(parents=True, exist_ok=True)
    with _locked(h / ".lock"):
        info = _read_info(h)
        pid = int(info["pid"]) if info and info.get("pid") else None
        if pid is None or not _is_launcher(pid):
            _clear(h)
            return False
        _terminate(pid, timeout_s)
        if _is_launcher(pid):
            raise ServerError(f"could not stop the Neo4j server (pid {pid})")
        _clear(h)
        return True


# ---------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m graphdb.server",
        description="The local Neo4j 5.26 server for development and tests (Bolt on 127.0.0.1, "
                    "user neo4j, password from NEO4J_PASSWORD).",
    )
    parser.add_argument("--home", help="state folder (default $PATIENTGRAPH_NEO4J_HOME or "
                                       "~/.cache/patientgraph/neo4j)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="build if needed, start, wait until Bolt accepts")
    p_start.add_argument("--data-dir", help="data folder (default HOME/data)")
    p_start.add_argument("--port", type=int, help="Bolt port (default $NEO4J_PORT or 7687)")
    p_start.add_argument("--wait", type=float, default=120, help="seconds to wait (default 120)")
    p_start.add_argument("--reset-password", action="store_true",
                         help="set the password of user neo4j from NEO4J_PASSWORD even if the "
                              "data folder has one")
    p_stop = sub.add_parser("stop", help="stop the server (SIGTERM, then SIGKILL)")
    p_stop.add_argument("--timeout", type=float, default=60)
    p_status = sub.add_parser("status", help="exit code 0 when running, 3 when stopped")
    p_status.add_argument("--json", action="store_true", help="print the status as JSON")
    args = parser.parse_args(argv)

    try:
        if args.command == "start":
            info = start(args.data_dir, args.port, args.wait, home=args.home,
                         reset_password=args.reset_password)
            if info.already_running:
                print(f"neo4j already running: {info.uri} (pid {info.pid})")
            else:
                built = f", built in {info.build_s:.0f} s" if info.build_s else ""
                print(f"neo4j started: {info.uri} (pid {info.pid}, ready in "
                      f"{info.start_s:.1f} s{built}; log {info.log_file})")
            return 0
        if args.command == "stop":
            print("neo4j stopped" if stop(args.timeout, home=args.home)
                  else "neo4j was not running")
            return 0
        st = status(args.home)
        if args.json:
            print(json.dumps(st, indent=1))
        elif st["running"]:
            print(f"neo4j running: {st['uri']} (pid {st['pid']}, data {st['data_dir']}"
                  + ("" if st["accepting"] else ", not accepting connections yet") + ")")
        else:
            print("neo4j stopped")
        return 0 if st["running"] else 3
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
