"""The task's environment as an object (seed 002, "Context Object"), and status reports to the task registry."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _http
from .errors import ContextError, StatusUpdateError

__all__ = ["Context", "ContextError", "StatusUpdateError", "DEFAULT_OUTPUT_DIR", "TASK_STATUSES"]

DEFAULT_OUTPUT_DIR = "/mnt/splits"
#: the statuses a splitter may report
TASK_STATUSES = ("running", "complete", "failed")


def _need(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if value is None or value == "":
        raise ContextError(f"environment variable {name} is not set", variable=name)
    return value


@dataclass(frozen=True)
class Context:
    """What a splitting program is given by its runner.

    Built from the environment by :meth:`from_env` (``execute_model_splitter`` does it) and passed to the
    splitter class's constructor.
    """

    #: TASK_ID: the task this program runs
    task_id: str
    #: TASK_DATA: the task's JSON object (model_name, model_download_url, world_size, model_split_config, ...)
    task_data: dict[str, Any]
    #: TASK_STATUS_UPDATE_URL: where status reports are PUT
    task_status_update_url: str
    #: MODEL_LAYERS_REGISTRY_URL: base URL of the model layers registry
    model_layers_registry_url: str
    #: BLOCK_DB_URL: base URL of the block metadata registry
    block_db_url: str
    #: TASK_TOKEN (optional): bearer token for the URLs above (Blockmesh scopes it to this task)
    token: str | None = None
    #: OUTPUT_DIR (optional, default /mnt/splits): where to write outputs (the runner's volume)
    output_dir: str = DEFAULT_OUTPUT_DIR

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Context":
        """Reads TASK_ID, TASK_DATA, TASK_STATUS_UPDATE_URL, MODEL_LAYERS_REGISTRY_URL, BLOCK_DB_URL (and the
        optional TASK_TOKEN, OUTPUT_DIR) from ``env`` (default: ``os.environ``).

        Raises ContextError naming the variable when one is missing or empty, or when TASK_DATA is not a JSON object.
        """
        env = os.environ if env is None else env
        raw = _need(env, "TASK_DATA")
        try:
            task_data = json.loads(raw)
        except ValueError as err:
            raise ContextError(f"TASK_DATA is not JSON: {err}", variable="TASK_DATA") from err
        if not isinstance(task_data, dict):
            raise ContextError(f"TASK_DATA must be a JSON object, got {type(task_data).__name__}", variable="TASK_DATA")
        return cls(
            task_id=_need(env, "TASK_ID"),
            task_data=task_data,
            task_status_update_url=_need(env, "TASK_STATUS_UPDATE_URL"),
            model_layers_registry_url=_need(env, "MODEL_LAYERS_REGISTRY_URL"),
            block_db_url=_need(env, "BLOCK_DB_URL"),
            token=env.get("TASK_TOKEN") or None,
            output_dir=env.get("OUTPUT_DIR", DEFAULT_OUTPUT_DIR),
        )

    def headers(self) -> dict[str, str]:
        """The headers of a JSON request to the task's URLs (content type, and the bearer token when there is one)."""
        h = {"content-type": "application/json"}
        if self.token:
            h["authorization"] = f"Bearer {self.token}"
        return h

    def report(self, status: str | None = None, *, progress: float | None = None, message: str | None = None,
               result: dict[str, Any] | None = None, error: str | None = None) -> None:
        """PUTs a status update to TASK_STATUS_UPDATE_URL (the seed's ``GlobalTasksDB.update_task``).

        Only the fields given are sent. Raises StatusUpdateError when the update is refused or cannot be sent.
        """
        if status is not None and status not in TASK_STATUSES:
            raise ValueError(f"status must be one of {', '.join(TASK_STATUSES)}, not {status!r}")
        update: dict[str, Any] = {}
        if status is not None:
            update["status"] = status
        if progress is not None:
            update["progress"] = progress
        if message is not None:
            update["message"] = message
        if result is not None:
            update["result"] = result
        if error is not None:
            update["error"] = error
        try:
            code, text = _http.send("PUT", self.task_status_update_url, self.token, update, has_body=True)
        except OSError as err:
            raise StatusUpdateError(f"status update failed: {err}") from err
        if not 200 <= code < 300:
            raise StatusUpdateError(f"status update failed: {code} {text[:300]}", status=code)

    def progress(self, fraction: float, message: str) -> None:
        """Reports progress (clamped to 0..1) and a message while the task runs."""
        self.report("running", progress=min(1.0, max(0.0, float(fraction))), message=message)
