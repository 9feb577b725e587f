"""ModelLayerClient and Blocks against a local HTTP server: the seed's paths and bodies, the envelope, RegistryError."""

from __future__ import annotations

from typing import Any

import pytest

from aios_model_splitter import Blocks, ContextError, ModelLayerClient, RegistryError
from conftest import Answer, LocalServer, Received, json_answer

LAYER = {"model_layer_hash": "0cc175b9c0f1b6a831c399e269772661", "model_asset_id": "gpt2-base", "model_layer_rank": 0}


def test_create_get_query_model_layers(server: LocalServer) -> None:
    server.route("POST", "/model-layer", lambda r: json_answer(201, {"success": True, "data": {**r.json(), "created_at": 1}}))
    server.answer("GET", "/model-layer/0cc175b9c0f1b6a831c399e269772661", 200, {"success": True, "data": LAYER})
    server.answer("POST", "/model-layers", 200, {"success": True, "data": [LAYER]})
    client = ModelLayerClient(server.url + "/", token="tok")  # a trailing slash is dropped
    assert client.create_model_layer(LAYER) == {**LAYER, "created_at": 1}
    assert client.get_model_layer("0cc175b9c0f1b6a831c399e269772661") == LAYER
    assert client.query_model_layers({"model_asset_id": "gpt2-base", "model_layer_rank": 0}) == [LAYER]
    assert client.query_model_layers({}, limit=5) == [LAYER]
    post, get, query, limited = server.received
    assert (post.method, post.path, post.json()) == ("POST", "/model-layer", LAYER)
    assert post.headers["content-type"] == "application/json"
    assert (get.method, get.path, get.body) == ("GET", "/model-layer/0cc175b9c0f1b6a831c399e269772661", b"")
    assert "content-type" not in get.headers
    assert (query.path, query.query, query.json()) == ("/model-layers", "", {"model_asset_id": "gpt2-base", "model_layer_rank": 0})
    assert (limited.query, limited.json()) == ("limit=5", {})
    assert all(r.headers["authorization"] == "Bearer tok" for r in server.received)


def test_the_layer_hash_is_escaped_in_the_path(server: LocalServer) -> None:
    server.answer("GET", "/model-layer/a%2Fb%20c", 200, {"success": True, "data": {"ok": 1}})
    assert ModelLayerClient(server.url, token="tok").get_model_layer("a/b c") == {"ok": 1}


def test_the_envelopes_error_raises_registry_error_with_status_and_code(server: LocalServer) -> None:
    server.answer("GET", "/model-layer/nope", 404, {"success": False, "error": "model layer nope not found", "code": "not_found"})
    server.answer("POST", "/model-layer", 409, {"success": False, "error": "duplicate model_layer_hash", "code": "duplicate"})
    client = ModelLayerClient(server.url, token="tok")
    with pytest.raises(RegistryError) as info:
        client.get_model_layer("nope")
    assert (info.value.status, info.value.code) == (404, "not_found")
    assert str(info.value) == f"GET {server.url}/model-layer/nope: 404 model layer nope not found"
    with pytest.raises(RegistryError) as info:
        client.create_model_layer(LAYER)
    assert (info.value.status, info.value.code) == (409, "duplicate")


def test_success_false_with_http_200_is_an_error(server: LocalServer) -> None:
    server.answer("POST", "/model-layers", 200, {"success": False, "error": "bad filter", "code": "invalid_filter"})
    with pytest.raises(RegistryError) as info:
        ModelLayerClient(server.url, token="tok").query_model_layers({"$where": "1"})
    assert (info.value.status, info.value.code) == (200, "invalid_filter")
    assert "bad filter" in str(info.value)


def test_the_agents_other_error_shape_and_non_json_answers(server: LocalServer) -> None:
    server.answer("POST", "/model-layers", 401, {"error": {"code": "unauthorized", "message": "bad token"}})
    server.route("GET", "/model-layer/x", lambda _r: Answer(502, b"<html>bad gateway</html>", {"content-type": "text/html"}))
    server.route("GET", "/model-layer/y", lambda _r: Answer(200, b"not json", {"content-type": "text/plain"}))
    client = ModelLayerClient(server.url, token="tok")
    with pytest.raises(RegistryError) as info:
        client.query_model_layers({})
    assert (info.value.status, info.value.code) == (401, "unauthorized")
    assert str(info.value).endswith("401 bad token")
    with pytest.raises(RegistryError) as info:
        client.get_model_layer("x")
    assert info.value.status == 502 and info.value.code is None and "<html>bad gateway</html>" in str(info.value)
    with pytest.raises(RegistryError) as info:
        client.get_model_layer("y")
    assert info.value.status == 200 and "not json" in str(info.value)


@pytest.mark.parametrize("base", ["http://127.0.0.1:9", "registry", "localhost:8002", "http://[::1"])
def test_an_unreachable_registry_or_a_bad_url_is_a_registry_error(base: str) -> None:
    with pytest.raises(RegistryError) as info:
        ModelLayerClient(base, token="tok").get_model_layer("x")
    assert info.value.status == 0
    assert str(info.value).startswith(f"GET {base}/model-layer/x: ")


def test_clients_read_their_urls_and_token_from_the_environment(server: LocalServer, clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ContextError) as info:
        ModelLayerClient()
    assert info.value.variable == "MODEL_LAYERS_REGISTRY_URL"
    with pytest.raises(ContextError) as info:
        Blocks()
    assert info.value.variable == "BLOCK_DB_URL"
    clean_env.setenv("MODEL_LAYERS_REGISTRY_URL", server.url)
    clean_env.setenv("BLOCK_DB_URL", server.url)
    clean_env.setenv("TASK_TOKEN", "env-token")
    server.answer("GET", "/model-layer/h", 200, {"success": True, "data": {"h": 1}})
    server.answer("POST", "/api/blocks/query", 200, {"blocks": []})
    assert ModelLayerClient().get_model_layer("h") == {"h": 1}
    assert Blocks().query("c", "h") == []
    assert [r.headers.get("authorization") for r in server.received] == ["Bearer env-token"] * 2


def test_blocks_query(server: LocalServer) -> None:
    blocks = [{"block_id": "b1", "peer": "12D3KooW...", "component": "split-runner.torch-split-runner:v0.0.1-beta"}]

    def answer(r: Received) -> Any:
        body = r.json()
        if body == {"component": "split-runner.torch-split-runner:v0.0.1-beta", "model_layer_hash": "abc123"}:
            return json_answer(200, {"blocks": blocks})
        return json_answer(200, {"blocks": []})

    server.route("POST", "/api/blocks/query", answer)
    b = Blocks(server.url, token="tok")
    assert b.query("split-runner.torch-split-runner:v0.0.1-beta", "abc123") == blocks
    assert b.query("split-runner.torch-split-runner:v0.0.1-beta", "other") == []
    assert server.received[0].headers["authorization"] == "Bearer tok"


def test_blocks_query_errors(server: LocalServer) -> None:
    server.answer("POST", "/api/blocks/query", 400, {"error": {"code": "invalid_request", "message": "component is required"}})
    with pytest.raises(RegistryError) as info:
        Blocks(server.url, token="tok").query("", "abc")
    assert (info.value.status, info.value.code) == (400, "invalid_request")
    server.answer("POST", "/api/blocks/query", 200, {"success": True, "data": {"no": "blocks"}})
    with pytest.raises(RegistryError) as info:
        Blocks(server.url, token="tok").query("c", "abc")
    assert "without a blocks list" in str(info.value)
