"""execute_model_splitter against the shared test vectors (sdk/test-vectors/splitter-lifecycle.json): each case's
splitter class runs with the task's environment pointing at a local server, which records the status updates."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aios_model_splitter.context import Context
from aios_model_splitter.executor import execute_model_splitter
from conftest import VECTORS, LocalServer, Received, json_answer

with open(VECTORS, encoding="utf-8") as _f:
    CASES: list[dict[str, Any]] = json.load(_f)["cases"]


class SampleContainerClass:
    """The seed's sample, verbatim (seed 002, "2. Sample Container Class")."""

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
        return True, {"model_plan_data": ""}


def splitter_from(behaviour: dict[str, Any], calls: list[dict[str, Any]], contexts: list[Context]) -> type:
    """A splitter class that behaves as a vector's behaviour says, recording its calls."""

    def step(name: str, extra: Any = None) -> Any:
        spec = behaviour.get(name)
        if spec is None:
            raise AssertionError(f"{name}() was called, but the case says it is never reached")
        if spec["outcome"] == "raise":
            raise RuntimeError(spec["error"])
        if spec["outcome"] == "fail":
            return False, spec["error"]
        assert spec["outcome"] == "ok", spec
        data = spec["data"]
        return True, ({**extra, **data} if spec.get("merge_extra") else data)

    class VectorSplitter:
        def __init__(self, context: Context) -> None:
            contexts.append(context)
            ctor = behaviour.get("constructor")
            if ctor is not None:
                assert ctor["outcome"] == "raise"
                raise RuntimeError(ctor["error"])

        def begin(self) -> Any:
            calls.append({"method": "begin"})
            return step("begin")

        def main(self, extra_data: Any) -> Any:
            calls.append({"method": "main", "extra_data": extra_data})
            return step("main", extra_data)

        def finish(self, extra_data: Any) -> Any:
            calls.append({"method": "finish", "extra_data": extra_data})
            return step("finish", extra_data)

    return VectorSplitter


def same(a: Any, b: Any) -> bool:
    """Deep equality, numbers compared as numbers (0 == 0.0) but booleans not as numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def check_body(body: Any, want: dict[str, Any]) -> None:
    """A received status body against one expected entry (see the vector file's format.expected)."""
    assert isinstance(body, dict), body
    keys = {k for k in want if k not in ("error_prefix", "error_contains")}
    if "error_prefix" in want or "error_contains" in want:
        keys.add("error")
    assert set(body) == keys, f"keys {sorted(body)} != {sorted(keys)} in {body}"
    for k, v in want.items():
        if k == "error_prefix":
            assert body["error"].startswith(v), body["error"]
        elif k == "error_contains":
            for s in v:
                assert s in body["error"], f"{s!r} not in {body['error']!r}"
        else:
            assert same(body[k], v), f"{k}: {body[k]!r} != {v!r}"


def serve_status(server: LocalServer, vectors: dict[str, Any], case: dict[str, Any]) -> None:
    plan = case.get("server", {})
    refuse = set(plan.get("refuse", []))
    count = {"n": 0}

    def answer(_req: Received) -> Any:
        i = count["n"]
        count["n"] += 1
        if i in refuse:
            return json_answer(plan["refuse_status"], plan["refuse_body"])
        return json_answer(200, {"success": True, "data": {}})

    server.route(vectors["request"]["method"], vectors["request"]["path"], answer)


def set_task_env(monkeypatch: pytest.MonkeyPatch, server: LocalServer, vectors: dict[str, Any]) -> None:
    task = vectors["task"]
    monkeypatch.setenv("TASK_ID", task["task_id"])
    monkeypatch.setenv("TASK_DATA", json.dumps(task["task_data"]))
    monkeypatch.setenv("TASK_STATUS_UPDATE_URL", server.url + vectors["request"]["path"])
    monkeypatch.setenv("MODEL_LAYERS_REGISTRY_URL", server.url)
    monkeypatch.setenv("BLOCK_DB_URL", server.url)
    monkeypatch.setenv("TASK_TOKEN", task["token"])
    monkeypatch.setenv("OUTPUT_DIR", task["output_dir"])


def check_received(server: LocalServer, vectors: dict[str, Any], case: dict[str, Any]) -> None:
    req = vectors["request"]
    assert [(r.method, r.path) for r in server.received] == [(req["method"], req["path"])] * len(server.received), \
        "only status updates are sent"
    bodies = [r.json() for r in server.received]
    assert len(bodies) == len(case["expected"]), json.dumps(bodies, indent=1)
    for got, want in zip(bodies, case["expected"]):
        check_body(got, want)
    for r in server.received:
        for name, value in req["headers"].items():
            assert r.headers.get(name) == value, (name, r.headers)


def test_the_vector_file_has_the_cases_the_issue_asks_for(vectors: dict[str, Any]) -> None:
    names = [c["name"] for c in vectors["cases"]]
    assert len(names) == len(set(names))
    outcomes = [(step, c["behaviour"][step]["outcome"]) for c in vectors["cases"] for step in ("begin", "main", "finish")
                if step in c["behaviour"]]
    for wanted in [("begin", "fail"), ("main", "fail"), ("main", "raise")]:
        assert wanted in outcomes
    assert any(c.get("seed_sample_class") for c in vectors["cases"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector(case: dict[str, Any], vectors: dict[str, Any], server: LocalServer, clean_env: pytest.MonkeyPatch) -> None:
    serve_status(server, vectors, case)
    set_task_env(clean_env, server, vectors)
    calls: list[dict[str, Any]] = []
    contexts: list[Context] = []
    code = execute_model_splitter(splitter_from(case["behaviour"], calls, contexts))
    assert code == case["exit_code"]
    assert calls == case["calls"]
    check_received(server, vectors, case)
    if contexts:  # the class was given the task's context, built from the environment
        task = vectors["task"]
        (ctx,) = contexts
        assert (ctx.task_id, ctx.task_data, ctx.token, ctx.output_dir) == (task["task_id"], task["task_data"], task["token"], task["output_dir"])
        assert ctx.task_status_update_url == server.url + vectors["request"]["path"]
        assert (ctx.model_layers_registry_url, ctx.block_db_url) == (server.url, server.url)


SEED_CASES = [c for c in CASES if c.get("seed_sample_class")]


@pytest.mark.parametrize("case", SEED_CASES, ids=[c["name"] for c in SEED_CASES])
def test_the_seeds_sample_class_verbatim(case: dict[str, Any], vectors: dict[str, Any], server: LocalServer,
                                         clean_env: pytest.MonkeyPatch) -> None:
    serve_status(server, vectors, case)
    set_task_env(clean_env, server, vectors)
    assert execute_model_splitter(SampleContainerClass) == case["exit_code"]
    check_received(server, vectors, case)
