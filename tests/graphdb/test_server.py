"""The local Neo4j 5.26 server (graphdb/server.py + the Java launcher), for real.

These tests build the launcher with Maven if needed, start a real server on a free port with
a temporary data folder, and talk to it with the official ``neo4j`` driver. They fail (never
skip) when Java, Maven or the server is missing.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import neo4j
import pytest
from neo4j import GraphDatabase
from neo4j.exceptions import AuthError

from graphdb import server

USER = os.environ.get("NEO4J_USER", "neo4j")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def password() -> str:
    """NEO4J_PASSWORD as CI exports it, or a fresh one (the servers here have their own data)."""
    pw = os.environ.get("NEO4J_PASSWORD") or f"pg-test-{secrets.token_hex(8)}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEO4J_PASSWORD", pw)
        mp.delenv("NEO4J_PORT", raising=False)
        yield pw


@pytest.fixture(scope="module")
def running(tmp_path_factory, password):
    home = tmp_path_factory.mktemp("neo4j-state")
    info = server.start(data_dir=home / "data", port=free_port(), home=home, wait_s=300)
    try:
        yield info, home
    finally:
        server.stop(home=home)


@pytest.fixture(scope="module")
def driver(running, password):
    info, _ = running
    with GraphDatabase.driver(info.uri, auth=(USER, password)) as drv:
        yield drv


def test_start_reports_bolt_on_loopback(running):
    info, home = running
    assert info.uri == f"bolt://127.0.0.1:{info.port}"
    assert not info.already_running
    assert info.pid > 0
    assert accepts(info.port)
    assert Path(info.log_file).parent == home


def test_return_1(driver):
    records, _, _ = driver.execute_query("RETURN 1 AS one")
    assert records[0]["one"] == 1
    assert driver.get_server_info().agent.startswith("Neo4j/5.26")


def test_relationships_are_grouped_by_type_from_ten(driver):
    # cohort queries read a patient's few HAS_STUDY edges without walking its ~20
    # SIMILAR_TO edges only on nodes whose relationships are grouped (NEO4J_DENSE_THRESHOLD)
    records, _, _ = driver.execute_query(
        "SHOW SETTINGS YIELD name, value WHERE name = 'db.relationship_grouping_threshold' "
        "RETURN value")
    assert [r["value"] for r in records] == ["10"]


def test_bad_server_settings_are_clear_errors(tmp_path, monkeypatch):
    for name, value, message in (("NEO4J_DENSE_THRESHOLD", "0", "whole number >= 1"),
                                 ("NEO4J_DENSE_THRESHOLD", "ten", "whole number >= 1"),
                                 ("NEO4J_HEAP", "lots", "512m or 2g"),
                                 ("NEO4J_PAGECACHE_MB", "1.5", "number of MiB")):
        with monkeypatch.context() as mp:
            mp.setenv(name, value)
            with pytest.raises(server.ServerError, match=f"{name} must.*{message}"):
                server._java_command("java", tmp_path, tmp_path / "data", 7687, False)
    monkeypatch.setenv("NEO4J_DENSE_THRESHOLD", "25")
    command = server._java_command("java", tmp_path, tmp_path / "data", 7687, False)
    assert "-Dpatientgraph.dense=25" in command


def test_create_and_read_node(driver):
    driver.execute_query(
        "MERGE (p:Patient {patient_id: $id}) SET p.age = $age, p.sex = 'F'",
        id="P-test-1", age=61,
    )
    records, _, _ = driver.execute_query(
        "MATCH (p:Patient {patient_id: $id}) RETURN p.age AS age, p.sex AS sex", id="P-test-1",
    )
    assert [(r["age"], r["sex"]) for r in records] == [(61, "F")]


def test_wrong_password_is_refused(running, password):
    info, _ = running
    with GraphDatabase.driver(info.uri, auth=(USER, password + "-wrong")) as drv:
        with pytest.raises(AuthError):
            drv.verify_connectivity()


def test_default_password_is_refused(running):
    info, _ = running
    with GraphDatabase.driver(info.uri, auth=("neo4j", "neo4j")) as drv:
        with pytest.raises(AuthError):
            drv.verify_connectivity()


def test_status_reports_running(running):
    info, home = running
    st = server.status(home=home)
    assert st["running"] is True
    assert st["accepting"] is True
    assert st["pid"] == info.pid
    assert st["uri"] == info.uri
    assert st["port"] == info.port
    assert st["data_dir"] == info.data_dir


def test_start_is_idempotent(running):
    info, home = running
    again = server.start(data_dir=info.data_dir, port=info.port, home=home)
    assert again.already_running
    assert again.pid == info.pid
    assert again.uri == info.uri
    # asking for another port while it runs is an error, not a second server
    with pytest.raises(server.ServerError, match="already runs"):
        server.start(port=free_port(), home=home)


def test_password_is_never_logged(running, password, driver):
    info, _ = running
    driver.verify_connectivity()
    logs = [Path(info.log_file), *sorted((Path(info.data_dir) / "logs").glob("*"))]
    for log in logs:
        assert password not in log.read_text(errors="replace"), log


def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "graphdb.server", *args], capture_output=True, text=True,
        cwd=ROOT, env=env, timeout=600,
    )


def test_cli_lifecycle_stop_status_restart(tmp_path, password):
    """start (CLI) -> status running -> stop -> status stopped -> start on the same data."""
    home = tmp_path / "state"
    data = tmp_path / "data"
    port = free_port()
    env = {**os.environ, "NEO4J_PASSWORD": password, "PATIENTGRAPH_NEO4J_HOME": str(home),
           "NEO4J_PORT": str(port)}
    try:
        out = run_cli("start", "--data-dir", str(data), env=env)
        assert out.returncode == 0, out.stderr
        assert f"bolt://127.0.0.1:{port}" in out.stdout
        assert password not in out.stdout + out.stderr

        st = run_cli("status", env=env)
        assert st.returncode == 0 and "running" in st.stdout, st.stdout + st.stderr
        uri = f"bolt://127.0.0.1:{port}"
        with GraphDatabase.driver(uri, auth=(USER, password)) as drv:
            drv.execute_query("CREATE (:Study {study_id: 'S-1', day: 0})")

        stopped = run_cli("stop", env=env)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
        st = run_cli("status", env=env)
        assert st.returncode == 3 and "stopped" in st.stdout
        assert server.status(home=home)["running"] is False
        assert not accepts(port)
        assert run_cli("stop", env=env).stdout.strip() == "neo4j was not running"

        # a second start on the same data keeps the password and the data
        info = server.start(data_dir=data, home=home, port=port)
        assert not info.already_running
        with GraphDatabase.driver(info.uri, auth=(USER, password)) as drv:
            records, _, _ = drv.execute_query("MATCH (s:Study) RETURN s.study_id AS id")
            assert [r["id"] for r in records] == ["S-1"]
        assert server.stop(home=home) is True
        assert server.status(home=home)["running"] is False
    finally:
        server.stop(home=home)


def test_missing_password_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("NEO4J_PASSWORD", raising=False)
    with pytest.raises(server.ServerError, match="export NEO4J_PASSWORD"):
        server.start(home=tmp_path, port=free_port())
    monkeypatch.setenv("NEO4J_PASSWORD", "short")
    with pytest.raises(server.ServerError, match="at least 8"):
        server.start(home=tmp_path, port=free_port())


def test_missing_java_is_a_clear_error(tmp_path, monkeypatch, password):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(server.ServerError, match="Java was not found.*install"):
        server.start(home=tmp_path / "state", port=free_port())
    assert server.status(home=tmp_path / "state")["running"] is False


def test_missing_maven_is_a_clear_error(tmp_path, monkeypatch, password):
    """With Java but no Maven, and no launcher built yet, start names Maven."""
    java = server.java_executable()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(java)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("PATIENTGRAPH_NEO4J_BUILD", str(tmp_path / "builds"))
    with pytest.raises(server.ServerError, match=r"Maven \(mvn\) was not found.*install"):
        server.start(home=tmp_path / "state", port=free_port())


def test_driver_version():
    assert int(neo4j.__version__.split(".")[0]) >= 5
