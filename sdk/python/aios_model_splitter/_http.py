"""A small JSON-over-HTTP helper on the standard library (urllib), shared by Context and the registry clients."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

DEFAULT_TIMEOUT_S = 30.0


def _json_default(value: Any) -> str:
    # paths and other plain values a splitter may put in its result
    return str(value)


def encode_json(body: Any) -> bytes:
    return json.dumps(body, default=_json_default).encode("utf-8")


def send(method: str, url: str, token: str | None, body: Any = None, *, has_body: bool = False,
         timeout: float = DEFAULT_TIMEOUT_S) -> tuple[int, str]:
    """Sends one request; returns (status, response text) for any HTTP answer, 2xx or not.

    Raises OSError (urllib.error.URLError, socket.timeout, ConnectionError) when no answer comes, or when ``url`` is
    not a URL at all.
    """
    headers: dict[str, str] = {}
    data: bytes | None = None
    if has_body:
        headers["content-type"] = "application/json"
        data = encode_json(body)
    if token:
        headers["authorization"] = f"Bearer {token}"
    try:
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
    except ValueError as err:  # not a URL urllib can use: reported like an unreachable one
        raise urllib.error.URLError(f"bad URL {url!r}: {err}") from err
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            return res.status, res.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as err:
        try:
            text = err.read().decode("utf-8", errors="replace")
        except (OSError, socket.timeout):
            text = ""
        finally:
            err.close()
        return err.code, text
