"""aios_init_container: the context from the environment, and run_init_container in a real subprocess serving the
agent's port (readiness, the reported endpoint, teardown on SIGTERM, a failing deploy)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from aios_init_container import ENDPOINT_PATH, InitContext, InitContextError

SDK = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=2) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_for(fn, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except OSError as err:
            last = err
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def test_context_from_env():
    ctx = InitContext.from_env({"PORT": "4321", "BLOCKMESH_BLOCK": "b", "BLOCKMESH_INSTANCE": "i", "BLOCK_INIT_DATA": '{"model": "m"}'})
    assert ctx == InitContext(port=4321, block="b", instance="i", init_data={"model": "m"})
    assert InitContext.from_env({"PORT": "1"}).init_data == {}


@pytest.mark.parametrize("env,variable", [
    ({}, "PORT"),
    ({"PORT": "eighty"}, "PORT"),
    ({"PORT": "70000"}, "PORT"),
    ({"PORT": "80", "BLOCK_INIT_DATA": "{nope"}, "BLOCK_INIT_DATA"),
    ({"PORT": "80", "BLOCK_INIT_DATA": "[1]"}, "BLOCK_INIT_DATA"),
])
def test_context_errors_name_the_variable(env, variable):
    with pytest.raises(InitContextError) as err:
        InitContext.from_env(env)
    assert err.value.variable == variable
    assert variable in str(err.value)


PROGRAM = textwrap.dedent('''
    import http.server, os, sys, threading, time
    from aios_init_container import InitContainer, run_init_container

    class Init(InitContainer):
        health_path = "/"
        def deploy(self):
            if os.environ.get("FAIL_DEPLOY"):
                raise RuntimeError("cannot reach the cluster")
            time.sleep(0.5)  # deploying: /health answers 503 meanwhile
            self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
            threading.Thread(target=self.server.serve_forever, daemon=True).start()
            return f"http://127.0.0.1:{self.server.server_address[1]}"
        def teardown(self):
            open(os.environ["MARKER"], "w").write(self.context.block or "")
            if hasattr(self, "server"):
                self.server.shutdown()

    run_init_container(Init, ready_poll_s=0.05)
''')


def start(tmp_path: Path, **env: str) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    marker = tmp_path / "torn-down"
    script = tmp_path / "init.py"
    script.write_text(PROGRAM)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env={
        **os.environ, "PYTHONPATH": str(SDK), "PORT": str(port), "BLOCKMESH_BLOCK": "blk", "MARKER": str(marker), **env,
    }, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, port, marker


def test_deploys_reports_its_endpoint_and_tears_down_on_sigterm(tmp_path):
    proc, port, marker = start(tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        status, body = wait_for(lambda: get(base + "/health"), "the control port")
        assert status == 503 and body["ready"] is False
        status, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(get(base + "/health")), "readiness")
        endpoint = body["endpoint"]
        assert endpoint.startswith("http://127.0.0.1:") and endpoint != base
        assert get(base + ENDPOINT_PATH) == (200, {"endpoint": endpoint, "ready": True})
        assert get(base + "/nothing")[0] == 404
        # the endpoint is the deployed system itself
        with urllib.request.urlopen(endpoint + "/", timeout=2) as res:
            assert res.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert marker.read_text() == "blk"
    finally:
        proc.kill()
        proc.wait()


def test_a_failing_deploy_exits_1_with_its_traceback_after_teardown(tmp_path):
    proc, _port, marker = start(tmp_path, FAIL_DEPLOY="1")
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert b"RuntimeError: cannot reach the cluster" in out
    assert marker.exists()
