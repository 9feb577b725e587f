"""execute_model_splitter beyond the shared vectors: the seed's entrypoint file run as a program, the exit-code
helpers, malformed step results, long errors, and a missing environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from aios_model_splitter import ContextError
from aios_model_splitter.context import Context
from aios_model_splitter.executor import MAX_ERROR_CHARS, execute_model_splitter
from conftest import LocalServer, json_answer

SEED_CONTAINER = textwrap.dedent('''
    from aios_model_splitter.context import Context


    class MyCustomModelSplitter:
        def __init__(self, context: Context):
            self.context = context

        def begin(self):
            # Perform setup, download model, etc.
            return True, {"download_path": "/tmp/gpt2.tar.gz"}

        def main(self, extra_data):
            # Perform model split based on task_data['model_split_config']
            split_info = {"splits": ["split1", "split2"]}
            return True, {**extra_data, **split_info}

        def finish(self, extra_data):
            # Final logging, upload metadata, or generate registry payload
            return True, {"model_plan_data": "", "world_size": self.context.task_data["world_size"]}


    class FailingSplitter(MyCustomModelSplitter):
        def main(self, extra_data):
            return False, "no GPU"
''')

# seed 002, "Example Entrypoint Script (my_splitter_entrypoint.py)", verbatim
SEED_ENTRYPOINT = textwrap.dedent('''
    from aios_model_splitter.executor import execute_model_splitter
    from my_splitter_code.splitter_container import MyCustomModelSplitter

    if __name__ == "__main__":
        execute_model_splitter(MyCustomModelSplitter)
''')


def write_program(tmp_path: Path) -> Path:
    (tmp_path / "my_splitter_code").mkdir()
    (tmp_path / "my_splitter_code" / "__init__.py").write_text("")
    (tmp_path / "my_splitter_code" / "splitter_container.py").write_text(SEED_CONTAINER)
    (tmp_path / "my_splitter_entrypoint.py").write_text(SEED_ENTRYPOINT)
    return tmp_path


def task_env(server: LocalServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}
    env.update({
        "TASK_ID": "t1", "TASK_DATA": json.dumps({"model_name": "gpt2", "world_size": 4}),
        "TASK_STATUS_UPDATE_URL": f"{server.url}/tasks/t1", "MODEL_LAYERS_REGISTRY_URL": server.url,
        "BLOCK_DB_URL": server.url, "TASK_TOKEN": "tok",
    })
    env.update(extra)
    return env


def status_bodies(server: LocalServer) -> list[Any]:
    return [r.json() for r in server.requests_to("PUT", "/tasks/t1")]


def test_the_seeds_entrypoint_file_runs_unchanged(server: LocalServer, tmp_path: Path) -> None:
    server.answer("PUT", "/tasks/t1", 200, {"success": True, "data": {}})
    cwd = write_program(tmp_path)
    done = subprocess.run([sys.executable, "my_splitter_entrypoint.py"], cwd=cwd, env=task_env(server),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert status_bodies(server) == [
        {"status": "running", "progress": 0, "message": "begin"},
        {"status": "running", "message": "main"},
        {"status": "running", "message": "finish"},
        {"status": "complete", "progress": 1, "message": "done", "result": {"model_plan_data": "", "world_size": 4}},
    ]


def test_module_runner_exits_with_the_tasks_outcome(server: LocalServer, tmp_path: Path) -> None:
    server.answer("PUT", "/tasks/t1", 200, {"success": True, "data": {}})
    cwd = write_program(tmp_path)
    ok = subprocess.run([sys.executable, "-m", "aios_model_splitter", "my_splitter_code.splitter_container:MyCustomModelSplitter"],
                        cwd=cwd, env=task_env(server), capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert status_bodies(server)[-1]["status"] == "complete"
    bad = subprocess.run([sys.executable, "-m", "aios_model_splitter", "my_splitter_code.splitter_container:FailingSplitter"],
                         cwd=cwd, env=task_env(server), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert status_bodies(server)[-1] == {"status": "failed", "error": "main: no GPU"}
    usage = subprocess.run([sys.executable, "-m", "aios_model_splitter", "no_colon"], cwd=cwd, env=task_env(server),
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    missing = subprocess.run([sys.executable, "-m", "aios_model_splitter", "my_splitter_code.nope:X"], cwd=cwd,
                             env=task_env(server), capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "cannot load my_splitter_code.nope:X" in missing.stderr
    no_env = subprocess.run([sys.executable, "-m", "aios_model_splitter", "my_splitter_code.splitter_container:MyCustomModelSplitter"],
                            cwd=cwd, env=task_env(server, TASK_STATUS_UPDATE_URL=""), capture_output=True, text=True, timeout=60)
    assert no_env.returncode == 1 and "environment variable TASK_STATUS_UPDATE_URL is not set" in no_env.stderr


def test_run_model_splitter_exits_1_on_failure(server: LocalServer, tmp_path: Path) -> None:
    server.answer("PUT", "/tasks/t1", 200, {"success": True, "data": {}})
    cwd = write_program(tmp_path)
    (cwd / "entry.py").write_text(textwrap.dedent('''
        from aios_model_splitter.executor import run_model_splitter
        from my_splitter_code.splitter_container import FailingSplitter

        if __name__ == "__main__":
            run_model_splitter(FailingSplitter)
            raise SystemExit(99)  # never reached: run_model_splitter ends the process
    '''))
    done = subprocess.run([sys.executable, "entry.py"], cwd=cwd, env=task_env(server), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert status_bodies(server)[-1] == {"status": "failed", "error": "main: no GPU"}


def ctx_for(server: LocalServer) -> Context:
    return Context(task_id="t1", task_data={}, task_status_update_url=f"{server.url}/tasks/t1",
                   model_layers_registry_url=server.url, block_db_url=server.url)


class Steps:
    """A splitter whose begin() returns whatever the test puts in ``begin_result``."""

    begin_result: Any = (True, {})

    def __init__(self, context: Context) -> None:
        self.context = context

    def begin(self) -> Any:
        return type(self).begin_result

    def main(self, extra_data: Any) -> Any:
        return True, extra_data

    def finish(self, extra_data: Any) -> Any:
        return True, {"ok": True}


@pytest.mark.parametrize("result", [None, True, (True,), [True, {}], (True, {}, "extra")])
def test_a_malformed_step_result_fails_the_task_and_says_why(server: LocalServer, result: Any) -> None:
    server.answer("PUT", "/tasks/t1", 200, {"success": True, "data": {}})
    splitter = type("Malformed", (Steps,), {"begin_result": result})
    assert execute_model_splitter(splitter, ctx_for(server)) == 1
    last = status_bodies(server)[-1]
    assert last["status"] == "failed"
    assert last["error"].startswith("error: Traceback")
    assert "begin() must return (True, data) or (False, error)" in last["error"]


def test_a_falsy_first_element_is_a_failure_and_the_error_is_stringified(server: LocalServer) -> None:
    server.answer("PUT", "/tasks/t1", 200, {"success": True, "data": {}})
    splitter = type("Falsy", (Steps,), {"begin_result": (0, {"reason": "disk full"})})
    assert execute_model_splitter(splitter, ctx_for(server)) == 1
    assert status_bodies(server)[-1] == {"status": "failed", "error": "begin: {'reason': 'disk full'}"}


def test_a_very_long_error_is_clipped_keeping_head_and_tail(server: LocalServer) -> None:
    server.answer("PUT", "/tasks/t1", 200, {"success": True, "data": {}})
    long_error = "HEAD" + "x" * 50_000 + "TAIL"
    splitter = type("Long", (Steps,), {"begin_result": (False, long_error)})
    assert execute_model_splitter(splitter, ctx_for(server)) == 1
    error = status_bodies(server)[-1]["error"]
    assert len(error) <= MAX_ERROR_CHARS
    assert error.startswith("begin: HEAD") and error.endswith("TAIL")
    assert "characters left out" in error


def test_a_failure_that_cannot_be_reported_still_returns_1(server: LocalServer) -> None:
    server.route("PUT", "/tasks/t1", lambda _r: json_answer(503, {"success": False, "error": "down"}))
    assert execute_model_splitter(Steps, ctx_for(server)) == 1
    bodies = status_bodies(server)
    assert bodies[0] == {"status": "running", "progress": 0, "message": "begin"}
    assert bodies[1]["status"] == "failed" and "status update failed: 503" in bodies[1]["error"]
    assert len(bodies) == 2


def test_a_missing_environment_raises_before_anything_is_sent(server: LocalServer, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TASK_ID", "t1")
    clean_env.setenv("TASK_DATA", "{}")
    clean_env.setenv("TASK_STATUS_UPDATE_URL", f"{server.url}/tasks/t1")
    clean_env.setenv("MODEL_LAYERS_REGISTRY_URL", server.url)
    with pytest.raises(ContextError) as info:
        execute_model_splitter(Steps)
    assert info.value.variable == "BLOCK_DB_URL"
    assert server.received == []


def test_results_with_paths_are_sent_as_strings(server: LocalServer, tmp_path: Path) -> None:
    server.answer("PUT", "/tasks/t1", 200, {"success": True, "data": {}})

    class WithPath(Steps):
        def finish(self, extra_data: Any) -> Any:
            return True, {"artifact": tmp_path / "registry.json"}

    assert execute_model_splitter(WithPath, ctx_for(server)) == 0
    assert status_bodies(server)[-1]["result"] == {"artifact": str(tmp_path / "registry.json")}
