"""aios_init_container: write an init container (seed 001: a third-party system deployed with a block) in Python.

A Blockmesh agent starts an init process before the block's instance and stops it with the block. Written on
this SDK, the process deploys the third-party system (starts it, or provisions it elsewhere), reports its
endpoint, and tears it down when the agent stops it; the endpoint reaches the block as
``blockInitData.initContainer.url`` (and is the base URL of a block of runtime ``external``)::

    from aios_init_container import InitContainer, run_init_container

    class VllmInit(InitContainer):
        def deploy(self) -> str:
            self.server = subprocess.Popen([...])          # the third-party system
            return f"http://127.0.0.1:{port}"               # its endpoint

        def teardown(self) -> None:
            self.server.terminate()

    if __name__ == "__main__":
        run_init_container(VllmInit)

The protocol with the agent: the agent picks a loopback port (env ``PORT``) and polls the init process's
readiness path (``/health`` by default) there. ``run_init_container`` serves that port: ``/health`` answers 503
while the system is being deployed and until ``is_ready`` says yes, then 200 with the endpoint;
``/.well-known/blockmesh-init`` answers ``{"endpoint": URL}`` once deployed, which is how the agent learns the
endpoint. SIGTERM (the agent stopping the block) runs ``teardown`` and ends the process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = ["InitContainer", "InitContext", "InitContextError", "run_init_container", "ENDPOINT_PATH"]
__version__ = "0.1.0"

log = logging.getLogger("aios_init_container")

#: where the agent reads the endpoint of the deployed system
ENDPOINT_PATH = "/.well-known/blockmesh-init"


class InitContextError(Exception):
    """The init process's environment is incomplete or malformed (``variable`` names the culprit)."""

    def __init__(self, message: str, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


@dataclass(frozen=True)
class InitContext:
    """What an init process is given by the agent that runs it."""

    #: PORT: the loopback port this process serves its readiness and endpoint on
    port: int
    #: BLOCKMESH_BLOCK / BLOCKMESH_INSTANCE: the block (and its instance) the system is deployed for
    block: str | None = None
    instance: str | None = None
    #: BLOCK_INIT_DATA: the block's blockInitData (a JSON object)
    init_data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "InitContext":
        env = dict(os.environ) if env is None else env
        raw = env.get("PORT", "")
        try:
            port = int(raw)
        except ValueError as err:
            raise InitContextError(f"PORT is {'not set' if raw == '' else f'not a port: {raw!r}'}", variable="PORT") from err
        if not 0 < port < 65536:
            raise InitContextError(f"PORT is not a port: {raw!r}", variable="PORT")
        data_raw = env.get("BLOCK_INIT_DATA") or "{}"
        try:
            init_data = json.loads(data_raw)
        except ValueError as err:
            raise InitContextError(f"BLOCK_INIT_DATA is not JSON: {err}", variable="BLOCK_INIT_DATA") from err
        if not isinstance(init_data, dict):
            raise InitContextError("BLOCK_INIT_DATA must be a JSON object", variable="BLOCK_INIT_DATA")
        return cls(port=port, block=env.get("BLOCKMESH_BLOCK") or None, instance=env.get("BLOCKMESH_INSTANCE") or None, init_data=init_data)


class InitContainer:
    """Base class of an init container: override ``deploy`` (and usually ``teardown``)."""

    #: the path ``is_ready`` probes on the endpoint (an OpenAI-compatible server answers /v1/models)
    health_path: str = "/v1/models"

    def __init__(self, context: InitContext) -> None:
        self.context = context

    def deploy(self) -> str:
        """Deploys the third-party system and returns its endpoint (base URL). Raising fails the block's start."""
        raise NotImplementedError("an InitContainer must implement deploy() and return the system's endpoint")

    def is_ready(self, endpoint: str) -> bool:
        """Whether the deployed system serves: by default a GET of ``endpoint + health_path`` answering 2xx."""
        try:
            with urllib.request.urlopen(endpoint.rstrip("/") + self.health_path, timeout=2) as res:
                return 200 <= res.status < 300
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def teardown(self) -> None:
        """Stops what ``deploy`` started; called once when the agent stops the process (SIGTERM) or deploy failed."""


class _State:
    def __init__(self) -> None:
        self.endpoint: str | None = None
        self.ready = False
        self.error: str | None = None
        self.lock = threading.Lock()


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            with state.lock:
                endpoint, ready, error = state.endpoint, state.ready, state.error
            path = self.path.split("?", 1)[0]
            if path == ENDPOINT_PATH:
                if endpoint is None:
                    self._send(503, {"endpoint": None, "error": error or "deploying"})
                else:
                    self._send(200, {"endpoint": endpoint, "ready": ready})
            elif path == "/health":
                self._send(200 if ready else 503, {"ready": ready, "endpoint": endpoint, **({"error": error} if error else {})})
            else:
                self._send(404, {"error": f"no {path} here: /health and {ENDPOINT_PATH}"})

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the agent polls every 200 ms
            return

    return Handler


def run_init_container(init_class: Callable[[InitContext], InitContainer], context: InitContext | None = None,
                       ready_poll_s: float = 0.5) -> None:
    """Serves the agent's port, deploys the system (``init_class(context).deploy()``), waits until it is ready,
    and runs until SIGTERM/SIGINT, then tears it down and exits 0. A failing deploy exits 1 (its traceback on
    stderr, which the agent keeps in the init process's log)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ctx = InitContext.from_env() if context is None else context
    state = _State()
    server = ThreadingHTTPServer(("127.0.0.1", ctx.port), _handler(state))
    threading.Thread(target=server.serve_forever, name="init-control", daemon=True).start()
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %s: tearing down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    instance = init_class(ctx)
    code = 0
    try:
        endpoint = instance.deploy()
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise TypeError(f"deploy() must return the system's endpoint as an http(s) URL, not {endpoint!r:.200}")
        with state.lock:
            state.endpoint = endpoint
        log.info("deployed: %s", endpoint)
        while not stop.is_set():
            if not state.ready and instance.is_ready(endpoint):
                with state.lock:
                    state.ready = True
                log.info("ready: %s", endpoint)
            stop.wait(ready_poll_s)
    except Exception:
        with state.lock:
            state.error = traceback.format_exc().rstrip().splitlines()[-1]
        traceback.print_exc()
        code = 1
    finally:
        try:
            instance.teardown()
        except Exception:
            traceback.print_exc()
            code = code or 1
        server.shutdown()
        server.server_close()
    sys.exit(code)
