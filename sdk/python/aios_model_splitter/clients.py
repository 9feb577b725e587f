"""Registry clients (seed 002, "Registry Clients"): the model layers registry and the block metadata registry.

Answers come in the seed's envelope ``{"success": true, "data": ...}``; errors as ``{"success": false, "error": "...",
"code": "..."}`` (or, on other Blockmesh routes, ``{"error": {"code": ..., "message": ...}}``) and raise RegistryError.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from typing import Any

from . import _http
from .errors import ContextError, RegistryError

__all__ = ["ModelLayerClient", "Blocks", "RegistryError"]


def _call(method: str, url: str, token: str | None, body: Any = None, *, has_body: bool = False) -> Any:
    try:
        status, text = _http.send(method, url, token, body, has_body=has_body)
    except OSError as err:
        raise RegistryError(0, f"{method} {url}: {err}") from err
    try:
        env: Any = json.loads(text)
    except ValueError:
        env = None
    failed = isinstance(env, dict) and env.get("success") is False
    if not 200 <= status < 300 or env is None or failed:
        err_field = env.get("error") if isinstance(env, dict) else None
        code = env.get("code") if isinstance(env, dict) else None
        if isinstance(err_field, str):
            message = err_field
        elif isinstance(err_field, dict) and isinstance(err_field.get("message"), str):
            message = err_field["message"]
            code = code if code is not None else err_field.get("code")
        else:
            message = text[:300]
        raise RegistryError(status, f"{method} {url}: {status} {message}", code if isinstance(code, str) else None)
    if isinstance(env, dict) and "data" in env:
        return env["data"]
    return env


def _base(base_url: str | None, variable: str) -> str:
    url = os.environ.get(variable, "") if base_url is None else base_url
    if url == "":
        raise ContextError(f"environment variable {variable} is not set", variable=variable)
    return url.rstrip("/")


def _token(token: str | None) -> str | None:
    return (os.environ.get("TASK_TOKEN") or None) if token is None else token


class ModelLayerClient:
    """The model layers registry (seed: ``ModelLayerClient()``, reading MODEL_LAYERS_REGISTRY_URL).

    ``base_url`` and ``token`` default to MODEL_LAYERS_REGISTRY_URL and TASK_TOKEN.
    """

    def __init__(self, base_url: str | None = None, token: str | None = None) -> None:
        self.base_url = _base(base_url, "MODEL_LAYERS_REGISTRY_URL")
        self.token = _token(token)

    def create_model_layer(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /model-layer: registers a model layer; returns the stored layer. Raises RegistryError (e.g. 409
        ``duplicate`` for a hash already registered, 400 for a bad payload)."""
        result: dict[str, Any] = _call("POST", f"{self.base_url}/model-layer", self.token, payload, has_body=True)
        return result

    def get_model_layer(self, layer_hash: str) -> dict[str, Any]:
        """GET /model-layer/{layer_hash}: one layer's metadata. Raises RegistryError (404 ``not_found`` when unknown)."""
        url = f"{self.base_url}/model-layer/{urllib.parse.quote(layer_hash, safe='')}"
        result: dict[str, Any] = _call("GET", url, self.token)
        return result

    def query_model_layers(self, query_filter: dict[str, Any], limit: int | None = None) -> list[dict[str, Any]]:
        """POST /model-layers with a MongoDB-style filter (e.g. ``{"model_asset_id": "gpt2-base"}``); the layers that
        match (at most ``limit`` when given). Raises RegistryError."""
        url = f"{self.base_url}/model-layers" + (f"?limit={int(limit)}" if limit is not None else "")
        result: list[dict[str, Any]] = _call("POST", url, self.token, query_filter, has_body=True)
        return result


class Blocks:
    """Running blocks by component and model layer hash (seed: ``Blocks()``), from BLOCK_DB_URL.

    ``base_url`` and ``token`` default to BLOCK_DB_URL and TASK_TOKEN.
    """

    def __init__(self, base_url: str | None = None, token: str | None = None) -> None:
        self.base_url = _base(base_url, "BLOCK_DB_URL")
        self.token = _token(token)

    def query(self, component_uri: str, hash: str) -> list[dict[str, Any]]:  # noqa: A002 (the seed's name)
        """POST /api/blocks/query ``{"component": component_uri, "model_layer_hash": hash}``: the blocks in the mesh that
        run this component with a model file of this MD5. Raises RegistryError."""
        body = _call("POST", f"{self.base_url}/api/blocks/query", self.token,
                     {"component": component_uri, "model_layer_hash": hash}, has_body=True)
        if not isinstance(body, dict) or not isinstance(body.get("blocks"), list):
            raise RegistryError(200, f"POST {self.base_url}/api/blocks/query: answer without a blocks list: {json.dumps(body)[:300]}")
        blocks: list[dict[str, Any]] = body["blocks"]
        return blocks
