"""A real HTTP server on loopback (http.server in a thread) that records what it is sent and answers from routes."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

VECTORS = Path(__file__).resolve().parents[2] / "test-vectors" / "splitter-lifecycle.json"


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: send only this many bytes of body (a connection cut short), though Content-Length says len(body)
    truncate_to: int | None = None


def json_answer(status: int, body: Any) -> Answer:
    return Answer(status, json.dumps(body).encode(), {"content-type": "application/json"})


Route = Callable[[Received], Answer]


class LocalServer:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.routes: dict[tuple[str, str], Route] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                req = Received(self.command, parts.path, parts.query,
                               {k.lower(): v for k, v in self.headers.items()}, body)
                with server._lock:
                    server.received.append(req)
                    route = server.routes.get((self.command, parts.path))
                if route is None:
                    answer = json_answer(404, {"error": {"code": "not_found", "message": f"no route {self.command} {parts.path}"}})
                else:
                    answer = route(req)
                self.send_response(answer.status)
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(answer.body)))
                if answer.truncate_to is not None:
                    self.send_header("connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(answer.body if answer.truncate_to is None else answer.body[:answer.truncate_to])

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def route(self, method: str, path: str, fn: Route) -> None:
        self.routes[(method, path)] = fn

    def answer(self, method: str, path: str, status: int, body: Any) -> None:
        self.route(method, path, lambda _req: json_answer(status, body))

    def requests_to(self, method: str, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.method == method and r.path == path]


@pytest.fixture
def server() -> Iterator[LocalServer]:
    s = LocalServer()
    s.thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    with open(VECTORS, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


TASK_ENV_VARS = ("TASK_ID", "TASK_DATA", "TASK_STATUS_UPDATE_URL", "MODEL_LAYERS_REGISTRY_URL", "BLOCK_DB_URL",
                 "TASK_TOKEN", "OUTPUT_DIR")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No task variables inherited from the shell running the tests."""
    for name in TASK_ENV_VARS + ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch
