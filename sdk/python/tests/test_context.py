from __future__ import annotations

import json

import pytest

from aios_model_splitter import Context, ContextError, StatusUpdateError
from conftest import LocalServer, json_answer

FULL_ENV = {
    "TASK_ID": "task-1",
    "TASK_DATA": json.dumps({"model_name": "gpt2", "world_size": 4, "model_split_config": {"tp_degree": 2}}),
    "TASK_STATUS_UPDATE_URL": "http://127.0.0.1:9/tasks/task-1",
    "MODEL_LAYERS_REGISTRY_URL": "http://127.0.0.1:9/layers",
    "BLOCK_DB_URL": "http://127.0.0.1:9/blocks",
}


def test_from_env_reads_every_field(clean_env: pytest.MonkeyPatch) -> None:
    for k, v in {**FULL_ENV, "TASK_TOKEN": "tok", "OUTPUT_DIR": "/data/out"}.items():
        clean_env.setenv(k, v)
    ctx = Context.from_env()
    assert ctx.task_id == "task-1"
    assert ctx.task_data == {"model_name": "gpt2", "world_size": 4, "model_split_config": {"tp_degree": 2}}
    assert ctx.task_status_update_url == "http://127.0.0.1:9/tasks/task-1"
    assert ctx.model_layers_registry_url == "http://127.0.0.1:9/layers"
    assert ctx.block_db_url == "http://127.0.0.1:9/blocks"
    assert ctx.token == "tok"
    assert ctx.output_dir == "/data/out"
    assert ctx.headers() == {"content-type": "application/json", "authorization": "Bearer tok"}


def test_optional_fields_default() -> None:
    ctx = Context.from_env(dict(FULL_ENV))
    assert ctx.token is None
    assert ctx.output_dir == "/mnt/splits"
    assert ctx.headers() == {"content-type": "application/json"}


@pytest.mark.parametrize("missing", ["TASK_ID", "TASK_DATA", "TASK_STATUS_UPDATE_URL", "MODEL_LAYERS_REGISTRY_URL", "BLOCK_DB_URL"])
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_a_missing_variable_is_named(missing: str, how: str) -> None:
    env = dict(FULL_ENV)
    if how == "absent":
        del env[missing]
    else:
        env[missing] = ""
    with pytest.raises(ContextError) as info:
        Context.from_env(env)
    assert info.value.variable == missing
    assert str(info.value) == f"environment variable {missing} is not set"
    assert info.value.code == "bad_context"


@pytest.mark.parametrize("raw, reason", [
    ("{not json", "TASK_DATA is not JSON"),
    ("", "environment variable TASK_DATA is not set"),
    ("[1, 2]", "TASK_DATA must be a JSON object, got list"),
    ("null", "TASK_DATA must be a JSON object, got NoneType"),
    ('"gpt2"', "TASK_DATA must be a JSON object, got str"),
])
def test_task_data_must_be_a_json_object(raw: str, reason: str) -> None:
    with pytest.raises(ContextError) as info:
        Context.from_env({**FULL_ENV, "TASK_DATA": raw})
    assert info.value.variable == "TASK_DATA"
    assert str(info.value).startswith(reason)


def _ctx(server: LocalServer, token: str | None = "tok") -> Context:
    return Context(task_id="t", task_data={}, task_status_update_url=f"{server.url}/tasks/t",
                   model_layers_registry_url=server.url, block_db_url=server.url, token=token)


def test_report_and_progress_put_json(server: LocalServer) -> None:
    server.answer("PUT", "/tasks/t", 200, {"success": True, "data": {}})
    ctx = _ctx(server)
    ctx.progress(1.7, "splitting")
    ctx.progress(-0.5, "starting")
    ctx.progress(0.25, "a quarter")
    ctx.report("complete", result={"n": 1})
    puts = server.requests_to("PUT", "/tasks/t")
    assert [p.json() for p in puts] == [
        {"status": "running", "progress": 1, "message": "splitting"},
        {"status": "running", "progress": 0, "message": "starting"},
        {"status": "running", "progress": 0.25, "message": "a quarter"},
        {"status": "complete", "result": {"n": 1}},
    ]
    assert all(p.headers["content-type"] == "application/json" for p in puts)
    assert all(p.headers["authorization"] == "Bearer tok" for p in puts)


def test_report_without_a_token_sends_no_authorization(server: LocalServer) -> None:
    server.answer("PUT", "/tasks/t", 200, {"success": True, "data": {}})
    _ctx(server, token=None).report("running", message="x")
    (put,) = server.requests_to("PUT", "/tasks/t")
    assert "authorization" not in put.headers


def test_a_refused_report_raises_with_the_status(server: LocalServer) -> None:
    server.route("PUT", "/tasks/t", lambda _r: json_answer(400, {"success": False, "error": "progress too big"}))
    with pytest.raises(StatusUpdateError) as info:
        _ctx(server).report("running", message="x")
    assert info.value.status == 400
    assert str(info.value).startswith("status update failed: 400 ")
    assert "progress too big" in str(info.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/tasks/t", "tasks/t"])
def test_an_unreachable_or_bad_status_url_raises(url: str) -> None:
    ctx = Context(task_id="t", task_data={}, task_status_update_url=url, model_layers_registry_url="x", block_db_url="x")
    with pytest.raises(StatusUpdateError) as info:
        ctx.report("running")
    assert info.value.status is None
    assert str(info.value).startswith("status update failed: ")


def test_report_refuses_an_unknown_status(server: LocalServer) -> None:
    with pytest.raises(ValueError):
        _ctx(server).report("done")
    assert server.received == []
