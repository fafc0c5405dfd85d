"""Who may use the explorer: loopback by default, token or basic auth beyond it."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time

import pytest
import requests
from werkzeug.test import Client
from werkzeug.wrappers import Response

from dashboards.app import create_app
from dashboards.security import (
    COOKIE,
    LOGIN_PATH,
    AuthConfig,
    AuthMiddleware,
    auth_from_env,
    check_host,
    is_loopback,
)
from patientgraph.errors import InputError
from tests.conftest import ctrl_c, run_cli
from tests.dashboards.conftest import free_port

TOKEN = "s3cret-token-0123456789"
NO_CREDENTIALS = {"PATIENTGRAPH_TOKEN": "", "PATIENTGRAPH_USER": "",
                  "PATIENTGRAPH_PASSWORD": ""}


def hello(environ, start_response):
    return Response("hello")(environ, start_response)


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", False), ("localhost", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
    ("example.org", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_serving_beyond_loopback_needs_credentials():
    check_host("127.0.0.1", AuthConfig())
    with pytest.raises(InputError, match="PATIENTGRAPH_TOKEN"):
        check_host("0.0.0.0", AuthConfig())
    check_host("0.0.0.0", AuthConfig(token=TOKEN))
    check_host("0.0.0.0", AuthConfig(user="ana", password="pw"))


def test_credentials_come_from_the_environment():
    assert auth_from_env({}) == AuthConfig()
    assert auth_from_env({"PATIENTGRAPH_TOKEN": TOKEN}).token == TOKEN
    with pytest.raises(InputError, match="shorter than 16"):
        auth_from_env({"PATIENTGRAPH_TOKEN": "short"})
    with pytest.raises(InputError, match="only one of"):
        auth_from_env({"PATIENTGRAPH_USER": "ana"})


def test_token_as_header_or_through_the_login_form():
    client = Client(AuthMiddleware(hello, AuthConfig(token=TOKEN)))
    assert client.get("/").status_code == 401
    page = client.get("/", headers={"Accept": "text/html"})
    assert (page.status_code, page.headers["Location"]) == (303, LOGIN_PATH)
    assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).text == "hello"
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post(LOGIN_PATH, data={"token": "wrong"}).status_code == 401
    login = client.post(LOGIN_PATH, data={"token": TOKEN})
    assert login.status_code == 303
    cookie = login.headers["Set-Cookie"]
    assert TOKEN not in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/").text == "hello"  # the client keeps the session cookie
    client.set_cookie(COOKIE, "forged", domain="localhost")
    assert client.get("/").status_code == 401


def test_basic_auth():
    client = Client(AuthMiddleware(hello, AuthConfig(user="ana", password="pw")))
    denied = client.get("/", headers={"Accept": "text/html"})
    assert denied.status_code == 401 and "Basic" in denied.headers["WWW-Authenticate"]
    assert client.get("/", headers=basic("ana", "pw")).text == "hello"
    assert client.get("/", headers=basic("ana", "nope")).status_code == 401
    assert client.get("/", headers={"Authorization": "Basic %%%"}).status_code == 401


def test_the_app_enforces_the_token_on_pages_and_callbacks(workspace):
    app = create_app(workspace.root, auth=AuthConfig(token=TOKEN))
    client = app.server.test_client()
    assert client.get("/").status_code == 401
    assert client.post("/_dash-update-component", json={}).status_code == 401
    assert client.get("/_dash-layout").status_code == 401
    ok = client.get("/_dash-layout", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200


def test_cli_refuses_a_public_host_without_credentials(workspace):
    result = run_cli("serve", "--workspace", workspace.root, "--host", "0.0.0.0",
                     env=NO_CREDENTIALS)
    assert result.returncode == 2
    assert "refusing to serve on --host 0.0.0.0" in result.stderr
    assert "PATIENTGRAPH_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_refuses_a_folder_that_is_no_workspace(tmp_path):
    result = run_cli("serve", "--workspace", tmp_path, env=NO_CREDENTIALS)
    assert result.returncode == 2
    assert "not an ingested PatientGraph workspace" in result.stderr


def test_served_by_waitress_with_the_token_enforced_and_no_ids_in_the_log(workspace):
    port = free_port()
    env = {**os.environ, **NO_CREDENTIALS, "PATIENTGRAPH_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "patientgraph", "serve", "--workspace", str(workspace.root),
         "--host", "0.0.0.0", "--port", str(port), "--workers", "4"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, proc)
        assert requests.get(url + "/_dash-layout", timeout=10).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        answer = requests.get(url + "/_dash-layout", headers=auth, timeout=10)
        assert answer.status_code == 200 and answer.headers["Server"] == "patientgraph"
        patient_id = sorted(workspace.table("patients")["patient_id"])[-1]
        from dashboards.protocol import find_callback

        spec = find_callback(create_app(workspace.root), "patient-similar.data")
        body = spec.body({"patient-select.value": patient_id, "patient-k.value": 5,
                          "patient-weight.value": 0.5})
        reply = requests.post(url + "/_dash-update-component", json=body, headers=auth,
                              timeout=60)
        assert reply.status_code == 200
        rows = reply.json()["response"]["patient-similar"]["data"]
        assert len(rows) == 5
    finally:
        out, err, _ = ctrl_c(proc, timeout=20)
    assert "waitress, 4 threads, token required" in err
    assert patient_id not in out + err
    assert TOKEN not in out + err


def _wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {proc.stderr.read()}")
        try:
            requests.get(url + "/", timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.5)
    raise AssertionError("the server did not start")
